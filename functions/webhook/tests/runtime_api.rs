//! The webhook binary (its main.rs: lambda_http over the runtime, the queue clients built on the
//! first request) run against a Lambda Runtime API double, fed the API Gateway HTTP API events
//! (payload 2.0) of `POST /webhooks/{source}`, sending to real queues (moto).

#[path = "../../../tests/e2e/support/mod.rs"]
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pipeline::message::{Message, decode};
use serde_json::{Value, json};
use support::lambda::apigw_v2_event;
use support::moto::{Deployment, Moto, Queues};
use support::runtime_api::{LambdaProcess, REQUEST_ID_PREFIX};

const SECRET: &str = "contract-secret-for-the-binary";

const CONFIG: &str = r#"
[[sources]]
id = "salesforce"
kind = "salesforce"
crm_choice = 1
base_url = "https://acme.my.salesforce.com"
[sources.webhook]
auth = "contract"
secret = "env:CRM_SYNC_WEBHOOK_SECRET"
"#;

struct Setup {
    moto: Moto,
    queues: Queues,
}

async fn setup() -> Setup {
    let moto = Moto::start().await;
    let queues = moto.deployment(&Deployment::default()).await;
    Setup { moto, queues }
}

/// The environment `template.yaml` gives the function (less `omit`), pointed at moto.
async fn spawn(s: &Setup, omit: &str) -> LambdaProcess {
    let mut env = s.moto.lambda_env();
    env.extend([
        ("CRM_SYNC_CONFIG", CONFIG.to_string()),
        ("CRM_SYNC_WEBHOOK_SECRET", SECRET.to_string()),
        ("UPSERT_QUEUE_URL", s.queues.upsert.url.clone()),
        ("SYNC_QUEUE_URL", s.queues.sync.url.clone()),
        ("WEBHOOK_DLQ_URL", s.queues.webhook_dlq.url.clone()),
    ]);
    env.retain(|(k, _)| *k != omit);
    LambdaProcess::spawn(env!("CARGO_BIN_EXE_webhook"), "crm-sync-webhook", &env).await
}

/// What the Apex notifier posts for an account change, as API Gateway hands it over.
fn notification(id: &str, name: &str, secret: &str) -> Value {
    let body = json!({"entity": "account", "operation": "update", "id": id,
        "modified_at": "2026-11-28T12:00:00.000Z",
        "record": {"attributes": {"type": "Account"}, "Id": id, "Name": name}})
    .to_string();
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sig = webhook::verify::contract_signature(secret, &ts, body.as_bytes());
    apigw_v2_event(
        "POST",
        "/webhooks/{source}",
        "/webhooks/salesforce",
        "",
        &[("source", "salesforce")],
        &[
            ("Content-Type".into(), "application/json".into()),
            ("User-Agent".into(), "SFDC-Callout/62.0".into()),
            ("X-CrmSync-Timestamp".into(), ts),
            ("X-CrmSync-Signature".into(), sig),
        ],
        body.as_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_notification_is_queued_and_answered_202() {
    let s = setup().await;
    let mut f = spawn(&s, "").await;
    let r = f
        .invoke(notification("001D000000IRFmaIAH", "Acme", SECRET))
        .await
        .response();
    // The API Gateway v2 response lambda_http posted.
    assert_eq!(r["statusCode"], 202, "{r}");
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["changes"], 1, "{body}");
    // The correlation id is the Lambda request id from the runtime API.
    let corr = r["headers"]["x-correlation-id"]
        .as_str()
        .unwrap_or_default();
    assert!(corr.starts_with(REQUEST_ID_PREFIX), "{r}");

    let queued = s
        .moto
        .take_all(&s.queues.upsert, Duration::from_secs(2))
        .await;
    assert_eq!(queued.len(), 1);
    let env = decode(queued[0].body().unwrap()).unwrap();
    assert_eq!(env.correlation_id, corr);
    let Message::Changes(batch) = env.body else {
        panic!("not a changes message")
    };
    assert_eq!(batch.changes.len(), 1);
    assert_eq!(batch.changes[0].source_id, "001D000000IRFmaIAH");

    // A wrong signature: 401, nothing queued.
    let r = f
        .invoke(notification("001D000000IRFmbIAH", "Evil", "not-the-secret"))
        .await
        .response();
    assert_eq!(r["statusCode"], 401, "{r}");
    for q in [&s.queues.upsert, &s.queues.sync, &s.queues.webhook_dlq] {
        assert_eq!(s.moto.depth(q).await.total(), 0, "{}", q.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_configuration_answers_503_and_the_runtime_keeps_serving() {
    let s = setup().await;
    let mut f = spawn(&s, "WEBHOOK_DLQ_URL").await;
    for n in 1..=2 {
        let r = f
            .invoke(notification("001D000000IRFmaIAH", "Acme", SECRET))
            .await
            .response();
        // A response, not a function error: the CRM gets a 503 and retries later.
        assert_eq!(r["statusCode"], 503, "{r}");
        assert!(
            r["body"].as_str().is_some_and(|b| b.contains("not ready")),
            "{r}"
        );
        f.wait_for_next_call(n + 1).await;
    }
    assert!(f.is_running());
    assert!(f.api.init_errors().is_empty());
    assert!(f.logs().contains("WEBHOOK_DLQ_URL"), "{}", f.logs());
    assert_eq!(s.moto.depth(&s.queues.upsert).await.total(), 0);
}
