//! The Metadata API's SOAP endpoint (`POST /services/Soap/m/{version}`), for the one component
//! crm-sync deploys: a ConnectedApp for the OAuth 2.0 client credentials flow.
//!
//! Metadata API Developer Guide: "createMetadata()", "readMetadata()" and "deleteMetadata()"
//! (CRUD-based calls: a SaveResult / ReadResult / DeleteResult per component, `success` with
//! `errors {statusCode, message}`), "ConnectedApp" (`fullName`, `label`, `contactEmail`,
//! `oauthConfig {callbackUrl, consumerKey, consumerSecret, isAdminApproved,
//! isClientCredentialEnabled, oauthClientCredentialUser, scopes}`; the consumer key and secret
//! may be given on create). The session travels in the SOAP `SessionHeader`; a bad one is a
//! `sf:INVALID_SESSION_ID` fault, and a user without "Modify Metadata" gets
//! `sf:INSUFFICIENT_ACCESS`. `readMetadata` of a component that does not exist returns a
//! result without a record carrying a `fullName`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use quick_xml::events::Event;
use quick_xml::reader::Reader;

use super::routes::{Shared, lock};
use super::setup::{ConnectedApp, Principal};

/// An element: its local name, text and children (attributes are not needed here).
#[derive(Debug, Default)]
struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    fn text_of(&self, name: &str) -> String {
        self.child(name)
            .map(|c| c.text.trim().to_string())
            .unwrap_or_default()
    }

    fn path(&self, names: &[&str]) -> Option<&Node> {
        names.iter().try_fold(self, |n, name| n.child(name))
    }
}

fn local(name: &[u8]) -> String {
    let n = name.rsplit(|b| *b == b':').next().unwrap_or(name);
    String::from_utf8_lossy(n).into_owned()
}

/// Parses a SOAP envelope into a tree; DTDs are refused (no entity expansion).
fn parse(body: &[u8]) -> Result<Node, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the request is not UTF-8".to_string())?;
    let mut reader = Reader::from_str(text);
    let mut stack = vec![Node::default()];
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::DocType(_) => return Err("DOCTYPE is not allowed".into()),
            Event::Start(e) => stack.push(Node {
                name: local(e.name().as_ref()),
                ..Node::default()
            }),
            Event::Empty(e) => {
                let n = Node {
                    name: local(e.name().as_ref()),
                    ..Node::default()
                };
                if let Some(top) = stack.last_mut() {
                    top.children.push(n);
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| e.to_string())?;
                let s = quick_xml::escape::unescape(&s).map_err(|e| e.to_string())?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::GeneralRef(r) => {
                let s = match &*String::from_utf8_lossy(&r) {
                    "lt" => "<",
                    "gt" => ">",
                    "amp" => "&",
                    "apos" => "'",
                    "quot" => "\"",
                    _ => return Err("unsupported entity reference".into()),
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(s);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::End(_) => {
                let done = stack.pop().ok_or("unbalanced XML")?;
                stack
                    .last_mut()
                    .ok_or("unbalanced XML")?
                    .children
                    .push(done);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    stack
        .pop()
        .and_then(|mut root| root.children.pop())
        .ok_or_else(|| "empty document".into())
}

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="http://soap.sforce.com/2006/04/metadata" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#
    )
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A SOAP fault (HTTP 500, as SOAP 1.1 over HTTP sends faults).
fn fault(code: &str, message: &str) -> Response {
    xml(
        StatusCode::INTERNAL_SERVER_ERROR,
        envelope(&format!(
            "<soapenv:Fault><faultcode xmlns:sf=\"urn:fault.soap.sforce.com\">sf:{code}</faultcode><faultstring>{code}: {}</faultstring></soapenv:Fault>",
            esc(message)
        )),
    )
}

fn result(ok: Result<(), (&'static str, String)>, full_name: &str) -> String {
    match ok {
        Ok(()) => format!(
            "<result><fullName>{}</fullName><success>true</success></result>",
            esc(full_name)
        ),
        Err((code, message)) => format!(
            "<result><errors><message>{}</message><statusCode>{code}</statusCode></errors><fullName>{}</fullName><success>false</success></result>",
            esc(&message),
            esc(full_name)
        ),
    }
}

pub async fn soap(
    State(sh): State<Arc<Shared>>,
    Path(_version): Path<String>,
    body: Bytes,
) -> Response {
    let env = match parse(&body) {
        Ok(n) => n,
        Err(e) => return fault("INVALID_XML", &e),
    };
    let token = env
        .path(&["Header", "SessionHeader", "sessionId"])
        .map(|n| n.text.trim().to_string())
        .unwrap_or_default();
    let principal: Option<Principal> = lock(&sh.setup).principal(&token);
    let Some(principal) = principal else {
        return fault(
            "INVALID_SESSION_ID",
            "Invalid Session ID found in SessionHeader: Illegal Session",
        );
    };
    if !lock(&sh.setup).is_admin(&principal) {
        return fault(
            "INSUFFICIENT_ACCESS",
            "use of the Metadata API requires a user with the ModifyAllData or ModifyMetadata permissions",
        );
    }
    let Some(call) = env.child("Body").and_then(|b| b.children.first()) else {
        return fault("INVALID_XML", "no call in the SOAP body");
    };
    let mut out = String::new();
    match call.name.as_str() {
        "createMetadata" => {
            for m in call.all("metadata") {
                let full_name = m.text_of("fullName");
                let oauth = m.child("oauthConfig");
                let o = |k: &str| oauth.map(|n| n.text_of(k)).unwrap_or_default();
                let missing = [
                    ("label", m.text_of("label")),
                    ("contactEmail", m.text_of("contactEmail")),
                ]
                .into_iter()
                .chain(
                    [("oauthConfig.callbackUrl", o("callbackUrl"))]
                        .into_iter()
                        .filter(|_| oauth.is_some()),
                )
                .find(|(_, v)| v.is_empty());
                let res = if let Some((k, _)) = missing {
                    Err((
                        "REQUIRED_FIELD_MISSING",
                        format!("Required field is missing: {k}"),
                    ))
                } else {
                    let key = match o("consumerKey") {
                        k if k.is_empty() => format!("3MVG9{}", uuid::Uuid::new_v4().simple()),
                        k => k,
                    };
                    lock(&sh.setup).create_app(ConnectedApp {
                        full_name: full_name.clone(),
                        label: m.text_of("label"),
                        contact_email: m.text_of("contactEmail"),
                        consumer_key: key,
                        consumer_secret: o("consumerSecret"),
                        client_credentials: o("isClientCredentialEnabled") == "true",
                        run_as: Some(o("oauthClientCredentialUser")).filter(|u| !u.is_empty()),
                        admin_approved: o("isAdminApproved") == "true",
                        scopes: oauth
                            .map(|n| n.all("scopes").map(|s| s.text.trim().to_string()).collect())
                            .unwrap_or_default(),
                    })
                };
                out.push_str(&result(res, &full_name));
            }
            out = format!("<createMetadataResponse>{out}</createMetadataResponse>");
        }
        "deleteMetadata" => {
            for n in call.all("fullNames") {
                let name = n.text.trim();
                let res = if call.text_of("type") == "ConnectedApp" {
                    lock(&sh.setup).delete_app(name)
                } else {
                    Err((
                        "INVALID_TYPE",
                        format!("type {} is not supported here", call.text_of("type")),
                    ))
                };
                out.push_str(&result(res, name));
            }
            out = format!("<deleteMetadataResponse>{out}</deleteMetadataResponse>");
        }
        "readMetadata" => {
            let setup = lock(&sh.setup);
            let mut records = String::new();
            for n in call.all("fullNames") {
                match setup.apps.get(n.text.trim()) {
                    Some(a) if call.text_of("type") == "ConnectedApp" => {
                        records.push_str(&format!(
                            "<records xsi:type=\"ConnectedApp\"><fullName>{}</fullName><contactEmail>{}</contactEmail><label>{}</label><oauthConfig><consumerKey>{}</consumerKey><isAdminApproved>{}</isAdminApproved><isClientCredentialEnabled>{}</isClientCredentialEnabled>{}{}</oauthConfig></records>",
                            esc(&a.full_name),
                            esc(&a.contact_email),
                            esc(&a.label),
                            esc(&a.consumer_key),
                            a.admin_approved,
                            a.client_credentials,
                            a.run_as.as_deref().map(|u| format!("<oauthClientCredentialUser>{}</oauthClientCredentialUser>", esc(u))).unwrap_or_default(),
                            a.scopes.iter().map(|s| format!("<scopes>{}</scopes>", esc(s))).collect::<String>(),
                        ));
                    }
                    _ => records.push_str("<records xsi:nil=\"true\"/>"),
                }
            }
            out =
                format!("<readMetadataResponse><result>{records}</result></readMetadataResponse>");
        }
        other => {
            return fault(
                "INVALID_OPERATION",
                &format!("{other} is not supported by the emulator"),
            );
        }
    }
    xml(StatusCode::OK, envelope(&out))
}
