//! Latency of the webhook step in-process: verify + parse + map + build the queue messages, with
//! a queue that accepts and discards (the queue itself is not measured). Two requests: a
//! 10-event HubSpot batch (v3 signature) and a one-record contract body (HMAC). Prints p50, p99
//! and requests/second on one core. Run: `cargo bench -p pipeline --bench webhook_handler`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use dataverse::Secret;
use hmac::Mac;
use mapping::{CrmKind, IdentityStrategy, SourceConfig, SourceId};
use pipeline::queue::{OutMessage, Queue, QueueError, Received};
use pipeline::sources::Sources;
use pipeline::webhook::{WebhookAuth, WebhookPorts, WebhookRequest, handle_request};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Discard;

#[async_trait]
impl Queue for Discard {
    fn name(&self) -> &str {
        "discard"
    }
    async fn send(&self, _: Vec<OutMessage>) -> Result<(), QueueError> {
        Ok(())
    }
    async fn receive(&self, _: usize, _: Duration) -> Result<Vec<Received>, QueueError> {
        Ok(vec![])
    }
    async fn delete(&self, _: &str) -> Result<(), QueueError> {
        Ok(())
    }
    async fn release(&self, _: &str, _: Duration) -> Result<(), QueueError> {
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(name: &str, n: usize, run: impl AsyncFn() -> u16) {
    for _ in 0..1000 {
        assert_eq!(run().await, 202);
    }
    let mut times = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let status = run().await;
        times.push(t.elapsed());
        assert_eq!(status, 202);
    }
    let total = t0.elapsed();
    times.sort();
    println!(
        "{name:<28} | p50 {:>7.1} µs | p99 {:>7.1} µs | {:>8.0} req/s",
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6,
        n as f64 / total.as_secs_f64()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut hs = SourceConfig::new(
        SourceId::new("hs").unwrap(),
        CrmKind::Hubspot,
        "https://api.hubapi.com",
    );
    hs.crm_choice = Some(4);
    hs.vars.insert("portal_id".into(), "62515".into());
    let mut sn = SourceConfig::new(
        SourceId::new("sn").unwrap(),
        CrmKind::Servicenow,
        "https://x.service-now.com",
    );
    sn.crm_choice = Some(2);
    let mut sources = Sources::new(&[hs, sn], IdentityStrategy::DeterministicId).unwrap();
    let secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    let url = "https://hooks.example.com/webhooks/hs";
    sources.set_webhook(
        &SourceId::new("hs").unwrap(),
        WebhookAuth::Hubspot {
            secret: Secret::new(secret),
            public_url: url.into(),
        },
    );
    sources.set_webhook(
        &SourceId::new("sn").unwrap(),
        WebhookAuth::Contract {
            secret: Secret::new("sn-secret"),
        },
    );
    let ports = WebhookPorts {
        metrics: &pipeline::Metrics::new(),
        sources: &sources,
        upsert: &Discard,
        sync: &Discard,
        dlq: &Discard,
        // The same bodies are sent over and over: a duplicate window would answer them unread.
        recent: None,
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;

    // 10 HubSpot events: creations, property changes and a deletion, as HubSpot batches them.
    let events: Vec<serde_json::Value> = (0..10)
        .map(|i| {
            let kind = ["contact.creation", "contact.propertyChange", "company.propertyChange", "contact.deletion"][i % 4];
            serde_json::json!({"eventId": 1000 + i, "subscriptionId": 12345, "portalId": 62515, "appId": 54321,
                "occurredAt": now_ms, "subscriptionType": kind, "attemptNumber": 0, "objectId": 500 + i,
                "changeSource": "CRM", "propertyName": "email", "propertyValue": "a@b.co"})
        })
        .collect();
    let hs_body = serde_json::to_vec(&events).unwrap();
    let ts = now_ms.to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("POST{url}").as_bytes());
    mac.update(&hs_body);
    mac.update(ts.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let hs_headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-hubspot-signature-v3".to_string(), sig),
        ("x-hubspot-request-timestamp".to_string(), ts),
    ];

    let sn_body = serde_json::json!({"entity": "contact", "operation": "update", "id": "60beb5e7db1c1e00a7a5b0bd0b961948",
        "modified_at": "2024-02-03 11:00:00",
        "record": {"sys_id": "60beb5e7db1c1e00a7a5b0bd0b961948", "first_name": "Julie", "last_name": "Lewis",
                   "email": "julie.lewis@boxeo.example", "phone": "858 555 0143", "mobile_phone": "",
                   "title": "Procurement Manager", "account": {"link": "https://x.service-now.com/api/now/table/customer_account/86837a386f0331003b3c498f5d3ee4ca", "value": "86837a386f0331003b3c498f5d3ee4ca"},
                   "sys_updated_on": "2024-02-03 11:00:00"}})
    .to_string();
    let sts = (now_ms / 1000).to_string();
    let ssig = webhook::verify::contract_signature("sn-secret", &sts, sn_body.as_bytes());
    let sn_headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-crmsync-timestamp".to_string(), sts),
        ("x-crmsync-signature".to_string(), ssig),
    ];

    println!("webhook step, in-process, one core (queue excluded)");
    measure("hubspot batch of 10 (v3)", 20_000, async || {
        let req = WebhookRequest {
            method: "POST",
            query: None,
            headers: &hs_headers,
            body: &hs_body,
        };
        handle_request("hs", &req, "bench", &ports, now_ms)
            .await
            .status
    })
    .await;
    measure("contract body, 1 record", 20_000, async || {
        let req = WebhookRequest {
            method: "POST",
            query: None,
            headers: &sn_headers,
            body: sn_body.as_bytes(),
        };
        handle_request("sn", &req, "bench", &ports, now_ms)
            .await
            .status
    })
    .await;
}
