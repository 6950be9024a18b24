//! Verification against the vendors' published signature vectors, and the SOAP parser against
//! Salesforce's documented outbound message shape and against hostile XML.

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::Value;
use webhook::soap::{self, SoapError};
use webhook::verify::{self, VerifyError};

fn fixtures() -> PathBuf {
    std::env::var("CRM_SYNC_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        })
}

#[test]
fn hubspot_published_vectors() {
    let text =
        std::fs::read_to_string(fixtures().join("hubspot-webhook-signature-vectors.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for v in doc["vectors"].as_array().unwrap() {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let secret = s("client_secret");
        let body = match v.get("request_body_file").and_then(Value::as_str) {
            // The body file is byte-exact (no trailing newline): it is the signature input.
            Some(f) => std::fs::read(fixtures().join(f)).unwrap(),
            None => s("request_body").into_bytes(),
        };
        let sig = s("expected_signature");
        match s("version").as_str() {
            "v1" => {
                assert_eq!(verify::hubspot_v1(&secret, &body, &sig), Ok(()));
                assert_eq!(
                    verify::hubspot_v1(&secret, b"[]", &sig),
                    Err(VerifyError::BadSignature)
                );
            }
            "v2" => {
                assert_eq!(
                    verify::hubspot_v2(&secret, &s("http_method"), &s("uri"), &body, &sig),
                    Ok(())
                );
                assert!(verify::hubspot_v2(&secret, "PUT", &s("uri"), &body, &sig).is_err());
            }
            "v3" => {
                let ts = s("timestamp");
                // The vector's timestamp is far in the past: check the signature at that time,
                // and that the window refuses it now.
                let at: i64 = ts.parse().unwrap();
                assert_eq!(
                    verify::hubspot_v3(&secret, &s("http_method"), &s("uri"), &body, &ts, &sig, at),
                    Ok(())
                );
                assert_eq!(
                    verify::hubspot_v3(
                        &secret,
                        &s("http_method"),
                        &s("uri"),
                        &body,
                        &ts,
                        &sig,
                        at + 5 * 60_000 + 1
                    ),
                    Err(VerifyError::Stale(5))
                );
                assert_eq!(
                    verify::hubspot_v3("wrong", &s("http_method"), &s("uri"), &body, &ts, &sig, at),
                    Err(VerifyError::BadSignature)
                );
            }
            other => panic!("unknown version {other}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 4);
}

const OM: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D000000000062EAA</OrganizationId>
   <ActionId>04k000000000001AAA</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/62.0/00D000000000062</EnterpriseUrl>
   <PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/62.0/00D000000000062</PartnerUrl>
   <Notification>
    <Id>04l000000000001AAA</Id>
    <sObject xsi:type="sf:Account" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>001D000000IRFmaIAH</sf:Id>
     <sf:Name>Smith &amp; Sons &#x2014; Ltd</sf:Name>
     <sf:Phone xsi:nil="true"/>
     <sf:NumberOfEmployees>120</sf:NumberOfEmployees>
    </sObject>
   </Notification>
   <Notification>
    <Id>04l000000000002AAA</Id>
    <sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>003D000000QmZzTIAV</sf:Id>
     <sf:LastName><![CDATA[O'Neil <x>]]></sf:LastName>
     <sf:AccountId>001D000000IRFmaIAH</sf:AccountId>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#;

#[test]
fn parses_the_documented_outbound_message() {
    let m = soap::parse(OM.as_bytes()).unwrap();
    assert_eq!(m.organization_id, "00D000000000062EAA");
    assert_eq!(m.notifications.len(), 2);
    let a = &m.notifications[0];
    assert_eq!(
        (a.id.as_str(), a.object.as_str()),
        ("04l000000000001AAA", "Account")
    );
    assert_eq!(a.fields["Name"], "Smith & Sons \u{2014} Ltd");
    assert_eq!(a.fields["Phone"], Value::Null);
    assert_eq!(a.fields["NumberOfEmployees"], "120");
    let c = &m.notifications[1];
    assert_eq!(c.object, "Contact");
    assert_eq!(c.fields["LastName"], "O'Neil <x>");
    assert!(soap::ACK.contains("<Ack>true</Ack>"));
}

#[test]
fn hostile_xml_is_refused() {
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notifications><OrganizationId>&xxe;</OrganizationId></notifications></soapenv:Body></soapenv:Envelope>"#;
    assert_eq!(soap::parse(xxe.as_bytes()), Err(SoapError::DocType));
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><a>&lol2;</a>"#;
    assert_eq!(soap::parse(laughs.as_bytes()), Err(SoapError::DocType));
    // An undeclared entity without a DOCTYPE is refused too.
    let undeclared = OM.replace("&amp;", "&nope;");
    assert!(soap::parse(undeclared.as_bytes()).is_err());
    let deep = format!("{}{}", "<a>".repeat(50), "</a>".repeat(50));
    assert_eq!(soap::parse(deep.as_bytes()), Err(SoapError::TooLarge));
    let one = OM
        .split("<Notification>")
        .nth(1)
        .unwrap()
        .split("</Notification>")
        .next()
        .unwrap();
    let many = OM.replacen(
        "<Notification>",
        &format!(
            "{}<Notification>",
            format!("<Notification>{one}</Notification>").repeat(100)
        ),
        1,
    );
    assert_eq!(soap::parse(many.as_bytes()), Err(SoapError::TooMany));
    assert!(matches!(
        soap::parse(b"<notjson"),
        Err(SoapError::Xml(_)) | Err(SoapError::Shape(_))
    ));
    assert!(matches!(soap::parse(b"{}"), Err(SoapError::Shape(_))));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn no_input_panics(bytes in prop::collection::vec(any::<u8>(), 0..400), s in ".{0,60}") {
        let _ = soap::parse(&bytes);
        let mutated = OM.replacen("Account", &s, 1);
        let _ = soap::parse(mutated.as_bytes());
        let _ = verify::hubspot_v3(&s, "POST", &s, &bytes, &s, &s, 0);
        let _ = verify::contract(&s, &s, &bytes, &s, 0);
        let _ = verify::zendesk(&s, &s, &bytes, &s);
        let _ = verify::basic(&s, "u", "p");
        let _ = verify::hubspot_decode_uri(&s);
    }
}

#[test]
fn invalid_utf8_anywhere_is_refused() {
    // Outbound messages are UTF-8 (the WSDL's and the messages' own declaration); bytes that are
    // not are no Salesforce message, and must not reach Dataverse as replacement characters.
    for (from, to) in [
        ("Smith &amp; Sons", &b"Smith \xff Sons"[..]),
        ("<![CDATA[O'Neil <x>]]>", b"<![CDATA[O'Neil \xc3\x28]]>"),
        ("<sf:LastName>", b"<sf:Last\xffName>"),
        ("xsi:type=\"sf:Contact\"", b"xsi:type=\"sf:Con\xfftact\""),
    ] {
        let at = OM.find(from).unwrap();
        let bad = [&OM.as_bytes()[..at], to, &OM.as_bytes()[at + from.len()..]].concat();
        assert!(
            matches!(soap::parse(&bad), Err(SoapError::Xml(_))),
            "{from}: {:?}",
            soap::parse(&bad)
        );
    }
}
