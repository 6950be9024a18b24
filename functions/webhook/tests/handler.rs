//! The webhook function's handler with HTTP requests as API Gateway hands them over.

use std::sync::Arc;

use dataverse::Secret;
use lambda_http::{Body, Request};
use mapping::{CrmKind, IdentityStrategy, SourceConfig, SourceId};
use pipeline::sources::Sources;
use pipeline::webhook::WebhookAuth;
use pipeline::{MemoryQueue, MemoryQueueConfig};
use webhook_fn::{App, handle};

fn app() -> (App, Arc<MemoryQueue>) {
    let mut c = SourceConfig::new(
        SourceId::new("sn").unwrap(),
        CrmKind::Servicenow,
        "https://x.service-now.com",
    );
    c.crm_choice = Some(2);
    let mut sources = Sources::new(&[c], IdentityStrategy::DeterministicId).unwrap();
    sources.set_webhook(
        &SourceId::new("sn").unwrap(),
        WebhookAuth::Contract {
            secret: Secret::new("br-secret"),
        },
    );
    let q = |n: &str| Arc::new(MemoryQueue::new(n, MemoryQueueConfig::default(), None));
    let upsert = q("upsert");
    (
        App {
            metrics: Default::default(),
            sources,
            upsert: Box::new(upsert.clone()),
            sync: Box::new(q("sync")),
            dlq: Box::new(q("dlq")),
            recent: Default::default(),
        },
        upsert,
    )
}

fn request(path: &str, ts: &str, sig: &str, body: &str) -> Request {
    lambda_http::http::Request::builder()
        .method("POST")
        .uri(format!("https://hooks.example.com{path}"))
        .header("content-type", "application/json")
        .header("x-crmsync-timestamp", ts)
        .header("x-crmsync-signature", sig)
        .body(Body::Text(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn signed_business_rule_body_is_accepted_and_queued() {
    let (app, upsert) = app();
    let body = serde_json::json!({"entity": "contact", "operation": "create", "id": "60beb5e7db1c1e00a7a5b0bd0b961948",
        "record": {"sys_id": "60beb5e7db1c1e00a7a5b0bd0b961948", "last_name": "Lewis", "account": {"value": "86837a386f0331003b3c498f5d3ee4ca", "link": "x"}}}).to_string();
    let ts = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs())
    .to_string();
    let sig = webhook::verify::contract_signature("br-secret", &ts, body.as_bytes());
    let r = handle(&app, request("/webhooks/sn", &ts, &sig, &body)).await;
    assert_eq!(r.status(), 202);
    assert!(r.headers().contains_key("x-correlation-id"));
    assert_eq!(upsert.len(), 1);
    let r = handle(&app, request("/webhooks/sn", &ts, "v1=bad", &body)).await;
    assert_eq!(r.status(), 401);
    let r = handle(&app, request("/webhooks/other", &ts, &sig, &body)).await;
    assert_eq!(r.status(), 404);
    assert_eq!(upsert.len(), 1);
}
