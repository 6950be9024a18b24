//! Webhook requests end to end through `handle_request`: every CRM's verification, and every
//! rejection enqueueing nothing.

use std::sync::Arc;

use base64::Engine;
use dataverse::Secret;
use mapping::{CrmKind, IdentityStrategy, SourceConfig, SourceId};
use pipeline::recent::RecentEvents;
use pipeline::sources::Sources;
use pipeline::webhook::{
    WebhookAuth, WebhookPorts, WebhookRequest, WebhookResponse, handle_request,
};
use pipeline::{MemoryQueue, MemoryQueueConfig, Queue};
use serde_json::json;

const NOW_MS: i64 = 1_700_000_000_000;
const ORG: &str = "00D000000000062EAA";

struct Q {
    upsert: Arc<MemoryQueue>,
    sync: Arc<MemoryQueue>,
    dlq: Arc<MemoryQueue>,
    recent: RecentEvents,
}

impl Q {
    fn new() -> Self {
        let q = |n: &str| Arc::new(MemoryQueue::new(n, MemoryQueueConfig::default(), None));
        Q {
            upsert: q("upsert"),
            sync: q("sync"),
            dlq: q("dlq"),
            recent: RecentEvents::default(),
        }
    }
    fn total(&self) -> usize {
        self.upsert.len() + self.sync.len() + self.dlq.len()
    }
}

fn sources() -> Sources {
    let src = |id: &str, kind| {
        let mut c = SourceConfig::new(SourceId::new(id).unwrap(), kind, "https://acme.example.com");
        c.crm_choice.get_or_insert(1);
        c.vars.insert("portal_id".into(), "62515".into());
        c
    };
    let cfgs = vec![
        src("sf-apex", CrmKind::Salesforce),
        src("sf-om", CrmKind::Salesforce),
        src("hs", CrmKind::Hubspot),
        src("pd", CrmKind::Pipedrive),
        src("sn", CrmKind::Servicenow),
        src("quiet", CrmKind::Salesforce),
        src("zd", CrmKind::Zendesk),
        {
            let mut g = src("gen", CrmKind::Generic);
            g.mapping = toml::from_str(
                r#"
                [account]
                id = "/uid"
                record_url = "{base_url}/companies/{id}"
                [account.columns]
                name = "/title"
                [contact]
                id = "/uid"
                parent = "/company"
                record_url = "{base_url}/people/{id}"
                [contact.columns]
                lastname = "/family"
                "#,
            )
            .unwrap();
            g
        },
    ];
    let mut s = Sources::new(&cfgs, IdentityStrategy::DeterministicId).unwrap();
    let id = |s: &str| SourceId::new(s).unwrap();
    s.set_webhook(
        &id("sf-apex"),
        WebhookAuth::Contract {
            secret: Secret::new("apex-secret"),
        },
    );
    s.set_webhook(
        &id("sn"),
        WebhookAuth::Contract {
            secret: Secret::new("sn-secret"),
        },
    );
    s.set_webhook(
        &id("sf-om"),
        WebhookAuth::SalesforceOutbound {
            organization_id: ORG.into(),
        },
    );
    s.set_webhook(
        &id("hs"),
        WebhookAuth::Hubspot {
            secret: Secret::new("yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"),
            public_url: "https://hooks.example.com/webhooks/hs".into(),
        },
    );
    s.set_webhook(
        &id("zd"),
        WebhookAuth::Zendesk {
            secret: Secret::new("zd-secret"),
        },
    );
    s.set_webhook(
        &id("gen"),
        WebhookAuth::Contract {
            secret: Secret::new("gen-secret"),
        },
    );
    s.set_webhook(
        &id("pd"),
        WebhookAuth::Basic {
            user: "pipedrive".into(),
            password: Secret::new("pw"),
        },
    );
    s
}

async fn call(
    s: &Sources,
    q: &Q,
    source: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> WebhookResponse {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ports = WebhookPorts {
        metrics: &pipeline::Metrics::new(),
        sources: s,
        upsert: q.upsert.as_ref(),
        sync: q.sync.as_ref(),
        dlq: q.dlq.as_ref(),
        recent: Some(&q.recent),
    };
    let req = WebhookRequest {
        method: "POST",
        query: None,
        headers: &headers,
        body,
    };
    handle_request(source, &req, "corr-1", &ports, NOW_MS).await
}

fn contract_body() -> Vec<u8> {
    json!({"entity": "account", "operation": "update", "id": "001D000000IRFmaIAH",
           "modified_at": "2023-11-14T22:13:20Z",
           "record": {"attributes": {"type": "Account"}, "Id": "001D000000IRFmaIAH", "Name": "Acme"}})
    .to_string()
    .into_bytes()
}

fn signed(secret: &str, ts: &str, body: &[u8]) -> String {
    webhook::verify::contract_signature(secret, ts, body)
}

#[tokio::test]
async fn contract_requests_verified_then_queued() {
    let (s, q) = (sources(), Q::new());
    let body = contract_body();
    let ts = (NOW_MS / 1000).to_string();
    let sig = signed("apex-secret", &ts, &body);
    let ok = [
        ("content-type", "application/json"),
        ("x-crmsync-timestamp", ts.as_str()),
        ("x-crmsync-signature", sig.as_str()),
    ];
    let r = call(&s, &q, "sf-apex", &ok, &body).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(q.upsert.len(), 1);
}

#[tokio::test]
async fn every_rejection_enqueues_nothing() {
    let (s, q) = (sources(), Q::new());
    let body = contract_body();
    let ts = (NOW_MS / 1000).to_string();
    let good = signed("apex-secret", &ts, &body);
    let stale_ts = (NOW_MS / 1000 - 301).to_string();
    let stale = signed("apex-secret", &stale_ts, &body);
    let other_source = signed("sn-secret", &ts, &body);
    let json = ("content-type", "application/json");
    // (source, headers, body, expected status)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        ("sf-apex", vec![json], body.clone(), 401), // unsigned
        (
            "sf-apex",
            vec![
                json,
                ("x-crmsync-timestamp", &ts),
                ("x-crmsync-signature", "v1=00"),
            ],
            body.clone(),
            401,
        ), // wrong
        (
            "sf-apex",
            vec![
                json,
                ("x-crmsync-timestamp", &stale_ts),
                ("x-crmsync-signature", &stale),
            ],
            body.clone(),
            401,
        ), // replayed
        (
            "sf-apex",
            vec![
                json,
                ("x-crmsync-timestamp", &ts),
                ("x-crmsync-signature", &other_source),
            ],
            body.clone(),
            401,
        ), // another source's secret
        (
            "sf-apex",
            vec![
                json,
                ("x-crmsync-timestamp", &ts),
                ("x-crmsync-signature", &good),
            ],
            b"{\"entity\":\"account\"}".to_vec(),
            401,
        ), // body swapped
        (
            "sf-apex",
            vec![
                ("content-type", "text/plain"),
                ("x-crmsync-timestamp", &ts),
                ("x-crmsync-signature", &good),
            ],
            body.clone(),
            415,
        ),
        ("sf-apex", vec![json], vec![b'x'; 1024 * 1024 + 1], 413),
        ("nobody", vec![json], body.clone(), 404),
        ("quiet", vec![json], body.clone(), 404), // webhooks not enabled for the source
        (
            "pd",
            vec![json, ("authorization", "Basic cGlwZWRyaXZlOndyb25n")],
            b"{}".to_vec(),
            401,
        ),
        ("pd", vec![json], b"{}".to_vec(), 401),
    ];
    for (i, (source, headers, body, status)) in cases.into_iter().enumerate() {
        let r = call(&s, &q, source, &headers, &body).await;
        assert_eq!(r.status, status, "case {i}: {}", r.body);
        assert!(
            !r.body.contains("apex-secret") && !r.body.contains("sn-secret"),
            "case {i} leaks"
        );
        assert_eq!(q.total(), 0, "case {i} enqueued something");
    }
    // Signed, but not JSON / invalid UTF-8 / nested 100,000 deep (under the size limit; the
    // parser's depth limit refuses it without exhausting the stack): 400, nothing queued.
    let deep = [vec![b'['; 100_000], vec![b']'; 100_000]].concat();
    let deep_object = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000)).into_bytes();
    for bad in [
        &b"{not json"[..],
        &[0xff, 0xfe, 0x00][..],
        &deep[..],
        &deep_object[..],
    ] {
        let sig = signed("apex-secret", &ts, bad);
        let r = call(
            &s,
            &q,
            "sf-apex",
            &[
                json,
                ("x-crmsync-timestamp", &ts),
                ("x-crmsync-signature", &sig),
            ],
            bad,
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.body);
    }
    assert_eq!(q.total(), 0);
}

#[tokio::test]
async fn hubspot_v3_and_v1_signatures() {
    let (s, q) = (sources(), Q::new());
    let body = br#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    let ts = NOW_MS.to_string();
    let msg = format!(
        "POSThttps://hooks.example.com/webhooks/hs{}{ts}",
        std::str::from_utf8(body).unwrap()
    );
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(b"yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy")
            .unwrap();
    mac.update(msg.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let h = [
        ("content-type", "application/json"),
        ("x-hubspot-signature-v3", sig.as_str()),
        ("x-hubspot-request-timestamp", ts.as_str()),
    ];
    let r = call(&s, &q, "hs", &h, body).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        (q.sync.len(), q.upsert.len()),
        (1, 0),
        "an id-only event becomes a fetch job"
    );
    // v1, with the published vector (the fixture body and its expected signature).
    let v1 = [
        ("content-type", "application/json"),
        (
            "x-hubspot-signature",
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de",
        ),
        ("x-hubspot-signature-version", "v1"),
    ];
    // The same event again (HubSpot retries): answered, not queued twice.
    let r = call(&s, &q, "hs", &v1, body).await;
    assert_eq!(r.status, 202);
    assert!(r.body.contains(r#""duplicates":1"#), "{}", r.body);
    assert_eq!(q.sync.len(), 1);
    let stale = (NOW_MS - 6 * 60_000).to_string();
    let h = [
        ("content-type", "application/json"),
        ("x-hubspot-signature-v3", sig.as_str()),
        ("x-hubspot-request-timestamp", stale.as_str()),
    ];
    assert_eq!(call(&s, &q, "hs", &h, body).await.status, 401);
}

#[tokio::test]
async fn salesforce_outbound_messages_are_acknowledged_after_queueing() {
    let (s, q) = (sources(), Q::new());
    let om = |org: &str| {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound">
  <OrganizationId>{org}</OrganizationId><ActionId>04k000000000001AAA</ActionId>
  <Notification><Id>04l000000000001AAA</Id>
   <sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
    <sf:Id>003D000000QmZzTIAV</sf:Id><sf:LastName>Ng</sf:LastName><sf:AccountId>001D000000IRFmaIAH</sf:AccountId>
   </sObject></Notification>
 </notifications></soapenv:Body></soapenv:Envelope>"#
        )
    };
    let xml = [("content-type", "text/xml; charset=utf-8")];
    let r = call(&s, &q, "sf-om", &xml, om(ORG).as_bytes()).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<Ack>true</Ack>"));
    assert_eq!(q.upsert.len(), 1);
    // Salesforce resends the same notification until acknowledged: acknowledged again, queued once.
    let r = call(&s, &q, "sf-om", &xml, om(ORG).as_bytes()).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<Ack>true</Ack>"));
    assert_eq!(q.upsert.len(), 1);
    let r = call(&s, &q, "sf-om", &xml, om("00D000000000999AAA").as_bytes()).await;
    assert_eq!(r.status, 401);
    let xxe =
        r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>"#;
    assert_eq!(
        call(&s, &q, "sf-om", &xml, xxe.as_bytes()).await.status,
        400
    );
    assert_eq!(
        call(
            &s,
            &q,
            "sf-om",
            &[("content-type", "application/json")],
            b"{}"
        )
        .await
        .status,
        415
    );
    assert_eq!(q.upsert.len(), 1);
}

#[tokio::test]
async fn an_event_whose_queueing_failed_is_queued_on_the_retry() {
    let s = sources();
    let full = |n: &str| {
        Arc::new(MemoryQueue::new(
            n,
            MemoryQueueConfig {
                capacity: 0,
                ..MemoryQueueConfig::default()
            },
            None,
        ))
    };
    let q = Q {
        sync: full("sync"),
        ..Q::new()
    };
    let body = br#"[{"eventId":7,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"company.propertyChange","propertyName":"name","objectId":9}]"#;
    let sig = hubspot_v1("yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy", body);
    let h = [
        ("content-type", "application/json"),
        ("x-hubspot-signature", sig.as_str()),
        ("x-hubspot-signature-version", "v1"),
    ];
    assert_eq!(call(&s, &q, "hs", &h, body).await.status, 503);
    // The queue is back: the CRM's retry is queued, not taken for a duplicate.
    let q = Q {
        recent: q.recent,
        ..Q::new()
    };
    let r = call(&s, &q, "hs", &h, body).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(q.sync.len(), 1);
}

fn hubspot_v1(secret: &str, body: &[u8]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(secret.as_bytes());
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The changes an upsert-queue message carries, as JSON.
async fn queued_changes(q: &Q) -> Vec<serde_json::Value> {
    let got = q
        .upsert
        .receive(10, std::time::Duration::ZERO)
        .await
        .unwrap();
    got.iter()
        .flat_map(|m| {
            let v: serde_json::Value = serde_json::from_str(&m.body).unwrap();
            v["changes"].as_array().cloned().unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn zendesk_pipedrive_and_generic_webhooks_become_exact_changes() {
    let (s, q) = (sources(), Q::new());
    // Zendesk event webhook ("Webhooks: event types", user.created), signed as Zendesk signs.
    let body = json!({"id": "01HXYZ", "type": "zen:event-type:user.created", "time": "2023-11-14T22:13:20Z",
        "detail": {"id": "7", "name": "  Ann   Ng ", "email": "Ann@Example.COM", "organization_id": "42",
                   "updated_at": "2023-11-14T22:13:20Z"}})
    .to_string();
    let ts = "2023-11-14T22:13:20Z";
    let sig = {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"zd-secret").unwrap();
        mac.update(ts.as_bytes());
        mac.update(body.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let h = [
        ("content-type", "application/json"),
        ("x-zendesk-webhook-signature", sig.as_str()),
        ("x-zendesk-webhook-signature-timestamp", ts),
    ];
    let r = call(&s, &q, "zd", &h, body.as_bytes()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let wrong = [
        ("content-type", "application/json"),
        ("x-zendesk-webhook-signature", "AAAA"),
        ("x-zendesk-webhook-signature-timestamp", ts),
    ];
    assert_eq!(
        call(&s, &q, "zd", &wrong, body.as_bytes()).await.status,
        401
    );
    let zd = queued_changes(&q).await;
    assert_eq!(
        zd,
        [
            json!({"source": "zd", "entity": "contact", "source_id": "7", "op": "upsert",
            "fields": {"emailaddress1": "ann@example.com", "lastname": "Ann Ng"},
            "modified_at": "2023-11-14T22:13:20Z", "parent": {"account": "42"},
            "record_url": "https://acme.example.com/agent/users/7"})
        ]
    );

    // Pipedrive webhooks v2 with Basic auth: a delete carries no data.
    let body =
        json!({"meta": {"action": "delete", "entity": "person", "entity_id": "9", "id": "b1",
        "timestamp": "2023-11-14T22:13:20.000Z", "version": "2.0"}, "data": null,
        "previous": {"id": 9, "name": "Bo"}})
        .to_string();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("pipedrive:pw")
    );
    let h = [
        ("content-type", "application/json"),
        ("authorization", basic.as_str()),
    ];
    let r = call(&s, &q, "pd", &h, body.as_bytes()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let pd = queued_changes(&q).await;
    assert_eq!(pd.len(), 1);
    assert_eq!(
        (&pd[0]["entity"], &pd[0]["source_id"], &pd[0]["op"]),
        (&json!("contact"), &json!("9"), &json!("delete")),
        "{}",
        pd[0]
    );

    // A home-grown CRM ("generic") posting our contract, mapped entirely from config.
    let body = json!({"entity": "contact", "operation": "update", "id": "p-1",
        "modified_at": "2023-11-14T22:13:20Z", "record": {"uid": "p-1", "family": "Okafor", "company": "c-9"}})
    .to_string();
    let ts = (NOW_MS / 1000).to_string();
    let sig = signed("gen-secret", &ts, body.as_bytes());
    let h = [
        ("content-type", "application/json"),
        ("x-crmsync-timestamp", ts.as_str()),
        ("x-crmsync-signature", sig.as_str()),
    ];
    let r = call(&s, &q, "gen", &h, body.as_bytes()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let g = queued_changes(&q).await;
    assert_eq!(g.len(), 1);
    assert_eq!(g[0]["fields"]["lastname"], json!("Okafor"), "{}", g[0]);
    assert_eq!(g[0]["parent"], json!({"account": "c-9"}), "{}", g[0]);
    assert_eq!(
        g[0]["record_url"],
        json!("https://acme.example.com/people/p-1")
    );
    assert!(q.sync.is_empty() && q.dlq.is_empty());
}
