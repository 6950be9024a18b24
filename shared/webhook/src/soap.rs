//! Salesforce Outbound Messages: the SOAP `notifications` request, and the `Ack` answer.
//!
//! Shape per Salesforce's outbound messaging WSDL: `soapenv:Envelope/soapenv:Body/notifications`
//! (namespace `http://soap.sforce.com/2005/09/outbound`) with `OrganizationId`, `ActionId`,
//! `SessionId` (nillable), `EnterpriseUrl`, `PartnerUrl` and 1 to 100 `Notification` elements,
//! each an `Id` and an `sObject` of `xsi:type="sf:Account"` (namespace
//! `urn:sobject.enterprise.soap.sforce.com`) holding the fields chosen in setup. Salesforce
//! retries until it gets the `notificationsResponse` with `<Ack>true</Ack>`.
//!
//! The parser refuses any document type declaration, so external entities and entity expansion
//! ("billion laughs") cannot happen, and bounds depth, element count and notifications.

use quick_xml::events::Event;
use quick_xml::reader::Reader;
use serde_json::{Map, Value};
use thiserror::Error;

const MAX_NOTIFICATIONS: usize = 100;
const MAX_DEPTH: usize = 16;
const MAX_ELEMENTS: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    pub organization_id: String,
    pub action_id: String,
    pub notifications: Vec<Notification>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The notification's own id (Salesforce's dedupe key for retries).
    pub id: String,
    /// The sObject type, e.g. `Account`.
    pub object: String,
    /// The record's fields as JSON strings (or null for `xsi:nil`), named as in the REST API.
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SoapError {
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("document type declarations are refused (external entities, entity expansion)")]
    DocType,
    #[error("not a Salesforce outbound message: {0}")]
    Shape(&'static str),
    #[error("more than {MAX_NOTIFICATIONS} notifications")]
    TooMany,
    #[error("document nested or sized beyond what an outbound message needs")]
    TooLarge,
}

/// The acknowledgement Salesforce waits for.
pub const ACK: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">"#,
    r#"<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">"#,
    r#"<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#
);

fn local(name: &[u8]) -> &[u8] {
    name.rsplit(|b| *b == b':').next().unwrap_or(name)
}

pub fn parse(xml: &[u8]) -> Result<OutboundMessage, SoapError> {
    // Salesforce sends UTF-8 (the messages declare it). Checked once, up front: quick-xml decodes
    // text strictly but CDATA, names and attribute values are read lossily below, which let
    // invalid bytes through as U+FFFD; a document in another encoding is not Salesforce's.
    std::str::from_utf8(xml).map_err(|e| SoapError::Xml(format!("not UTF-8: {e}")))?;
    let mut reader = Reader::from_reader(xml);
    // Text is kept exactly: an entity reference splits it into several events.
    reader.config_mut().trim_text(false);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut elements = 0usize;
    let mut msg = OutboundMessage {
        organization_id: String::new(),
        action_id: String::new(),
        notifications: Vec::new(),
    };
    let mut current: Option<Notification> = None;
    let mut field: Option<(String, bool)> = None; // (name, nil)
    let mut text = String::new();
    let mut saw_notifications = false;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| SoapError::Xml(e.to_string().chars().take(200).collect()))?;
        match ev {
            Event::DocType(_) => return Err(SoapError::DocType),
            Event::Start(ref e) | Event::Empty(ref e) => {
                elements += 1;
                if elements > MAX_ELEMENTS || path.len() >= MAX_DEPTH {
                    return Err(SoapError::TooLarge);
                }
                let name = local(e.name().as_ref()).to_vec();
                let mut nil = false;
                let mut xsi_type = None;
                for a in e.attributes() {
                    let a = a.map_err(|e| SoapError::Xml(e.to_string()))?;
                    let key = local(a.key.as_ref()).to_vec();
                    let val = a
                        .unescape_value()
                        .map_err(|e| SoapError::Xml(e.to_string()))?
                        .into_owned();
                    if key == b"nil" && val == "true" {
                        nil = true;
                    }
                    if key == b"type" {
                        xsi_type = Some(val);
                    }
                }
                let parent = path.last().map(Vec::as_slice);
                match (parent, name.as_slice()) {
                    (Some(b"Body"), b"notifications") => saw_notifications = true,
                    (Some(b"notifications"), b"Notification") => {
                        if msg.notifications.len() == MAX_NOTIFICATIONS {
                            return Err(SoapError::TooMany);
                        }
                        current = Some(Notification {
                            id: String::new(),
                            object: String::new(),
                            fields: Map::new(),
                        });
                    }
                    (Some(b"Notification"), b"sObject") => {
                        let t = xsi_type.ok_or(SoapError::Shape("sObject without xsi:type"))?;
                        if let Some(n) = current.as_mut() {
                            n.object = t.rsplit(':').next().unwrap_or(&t).to_string();
                        }
                    }
                    (Some(b"sObject"), f) => {
                        field = Some((String::from_utf8_lossy(f).into_owned(), nil));
                    }
                    _ => {}
                }
                text.clear();
                path.push(name.clone());
                // An empty element has no end event: close it now.
                if matches!(ev, Event::Empty(_)) {
                    close(&name, &mut path, &mut msg, &mut current, &mut field, "")?;
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| SoapError::Xml(e.to_string()))?;
                let s =
                    quick_xml::escape::unescape(&s).map_err(|e| SoapError::Xml(e.to_string()))?;
                text.push_str(&s);
            }
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(r) => {
                // The five predefined entities and character references only.
                let name = String::from_utf8_lossy(&r).into_owned();
                let resolved = match name.as_str() {
                    "lt" => "<".to_string(),
                    "gt" => ">".to_string(),
                    "amp" => "&".to_string(),
                    "apos" => "'".to_string(),
                    "quot" => "\"".to_string(),
                    n if n.starts_with('#') => {
                        let code = if let Some(h) = n.strip_prefix("#x") {
                            u32::from_str_radix(h, 16).ok()
                        } else {
                            n[1..].parse().ok()
                        };
                        code.and_then(char::from_u32)
                            .ok_or(SoapError::Xml("bad character reference".into()))?
                            .to_string()
                    }
                    _ => return Err(SoapError::DocType),
                };
                text.push_str(&resolved);
            }
            Event::End(e) => {
                let name = local(e.name().as_ref()).to_vec();
                close(&name, &mut path, &mut msg, &mut current, &mut field, &text)?;
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_notifications {
        return Err(SoapError::Shape(
            "no notifications element in the SOAP body",
        ));
    }
    if msg.organization_id.is_empty() {
        return Err(SoapError::Shape("no OrganizationId"));
    }
    if msg.notifications.is_empty() {
        return Err(SoapError::Shape("no Notification"));
    }
    Ok(msg)
}

fn close(
    name: &[u8],
    path: &mut Vec<Vec<u8>>,
    msg: &mut OutboundMessage,
    current: &mut Option<Notification>,
    field: &mut Option<(String, bool)>,
    text: &str,
) -> Result<(), SoapError> {
    path.pop();
    let parent = path.last().map(Vec::as_slice);
    match (parent, name) {
        (Some(b"notifications"), b"OrganizationId") => {
            msg.organization_id = text.trim().to_string()
        }
        (Some(b"notifications"), b"ActionId") => msg.action_id = text.trim().to_string(),
        (Some(b"Notification"), b"Id") => {
            if let Some(n) = current.as_mut() {
                n.id = text.trim().to_string();
            }
        }
        (Some(b"notifications"), b"Notification") => {
            let n = current
                .take()
                .ok_or(SoapError::Shape("unbalanced Notification"))?;
            if n.object.is_empty() {
                return Err(SoapError::Shape("Notification without sObject"));
            }
            msg.notifications.push(n);
        }
        (Some(b"sObject"), _) => {
            if let (Some((f, nil)), Some(n)) = (field.take(), current.as_mut()) {
                let v = if nil {
                    Value::Null
                } else {
                    Value::String(text.to_string())
                };
                n.fields.insert(f, v);
            }
        }
        _ => {}
    }
    Ok(())
}
