//! The initial-sync binary (its main.rs) run against a Lambda Runtime API double: started by a
//! direct invoke, refused over the HTTP trigger, then fed the sync queue's messages (moto) one
//! per invocation, as the template's event source mapping does, until the Salesforce emulator
//! has been read; and a broken configuration.

#[path = "../../../tests/e2e/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crm_emulator::{SalesforceConfig, SalesforceEmulator};
use pipeline::message::{Message, decode};
use serde_json::{Value, json};
use support::lambda::{MappingStats, apigw_v2_event, poll_once};
use support::moto::{Deployment, Moto, Queues};
use support::runtime_api::{LambdaProcess, Outcome, process_invoker};
use tokio::sync::Mutex;

fn config(sf: &SalesforceEmulator) -> String {
    format!(
        r#"
[[sources]]
id = "salesforce"
kind = "salesforce"
crm_choice = 1
base_url = "{base}"
[sources.connection]
auth = "salesforce-client-credentials"
token_url = "{token}"
client_id = "{id}"
client_secret = "{secret}"
"#,
        base = sf.instance_url(),
        token = sf.token_url(),
        id = sf.config().client_id,
        secret = sf.config().client_secret,
    )
}

struct Setup {
    moto: Moto,
    queues: Queues,
    sf: SalesforceEmulator,
}

async fn setup() -> Setup {
    let moto = Moto::start().await;
    let queues = moto.deployment(&Deployment::default()).await;
    let sf = SalesforceEmulator::start(SalesforceConfig {
        accounts: 250,
        contacts_per_account: 1,
        orphan_contacts: 0,
        ..SalesforceConfig::default()
    })
    .await
    .unwrap();
    Setup { moto, queues, sf }
}

/// The environment `template.yaml` gives the function, pointed at moto and the emulator.
async fn spawn(s: &Setup, page_size: &str) -> Arc<Mutex<LambdaProcess>> {
    let mut env = s.moto.lambda_env();
    env.extend([
        ("CRM_SYNC_CONFIG", config(&s.sf)),
        ("SYNC_QUEUE_URL", s.queues.sync.url.clone()),
        ("UPSERT_QUEUE_URL", s.queues.upsert.url.clone()),
        ("SYNC_DLQ_URL", s.queues.sync_dlq.url.clone()),
        ("PAGE_SIZE", page_size.to_string()),
    ]);
    let p = LambdaProcess::spawn(
        env!("CARGO_BIN_EXE_initial-sync"),
        "crm-sync-initial-sync",
        &env,
    )
    .await;
    Arc::new(Mutex::new(p))
}

fn post_sync(body: &Value) -> Value {
    apigw_v2_event(
        "POST",
        "/sync",
        "/sync",
        "",
        &[],
        &[("content-type".into(), "application/json".into())],
        body.to_string().as_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_by_invoke_then_paged_through_the_sync_queue() {
    let s = setup().await;
    let f = spawn(&s, "200").await;

    // `aws lambda invoke` with {"source", "entities"}: the job's first page goes to sync.fifo.
    let started = f
        .lock()
        .await
        .invoke(json!({"source": "salesforce", "entities": ["contact", "account"]}))
        .await
        .response();
    assert_eq!(started["source"], "salesforce", "{started}");
    assert!(started["job_id"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(s.moto.depth(&s.queues.sync).await.visible, 1);

    // POST /sync through API Gateway (payload 2.0): an unknown source is a 404 in the body.
    let refused = f
        .lock()
        .await
        .invoke(post_sync(&json!({"source": "hubspot"})))
        .await
        .response();
    assert_eq!(refused["statusCode"], 404, "{refused}");
    let body: Value = serde_json::from_str(refused["body"].as_str().unwrap()).unwrap();
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("hubspot")),
        "{body}"
    );
    assert_eq!(s.moto.depth(&s.queues.sync).await.total(), 1);

    // The event source mapping: one message per invocation until the job is done.
    let stats = MappingStats::default();
    let invoke = process_invoker(f.clone());
    while let Some(polled) = poll_once(
        &s.moto.client(),
        &s.queues.sync,
        1,
        Duration::from_secs(1),
        &invoke,
        &stats,
    )
    .await
    {
        assert_eq!(polled.event.records.len(), 1);
        assert_eq!(polled.result, Ok(json!({"batchItemFailures": []})));
        assert_eq!(polled.deleted.len(), 1);
    }
    // 250 accounts, 250 contacts: two snapshot pages each, then an empty catch-up page each.
    assert_eq!(stats.get(|s| &s.invocations), 6, "{stats:?}");
    assert_eq!(s.moto.depth(&s.queues.sync).await.total(), 0);
    assert_eq!(s.moto.depth(&s.queues.sync_dlq).await.total(), 0);

    // Every record is on the upsert queue, once.
    let mut by_entity: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in s
        .moto
        .take_all(&s.queues.upsert, Duration::from_secs(2))
        .await
    {
        let Message::Changes(batch) = decode(m.body().unwrap()).unwrap().body else {
            panic!("not a changes message")
        };
        for c in batch.changes {
            by_entity
                .entry(c.entity.to_string())
                .or_default()
                .push(c.source_id);
        }
    }
    for (entity, object) in [("account", "Account"), ("contact", "Contact")] {
        let mut got = by_entity.remove(entity).unwrap_or_default();
        got.sort();
        assert_eq!(got, s.sf.ids(object), "{entity}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_setting_fails_each_invocation_and_the_runtime_keeps_polling() {
    let s = setup().await;
    let f = spawn(&s, "lots").await;
    let first = f.lock().await.invoke(json!({"source": "salesforce"})).await;
    let Outcome::Error { error_type, body } = first else {
        panic!("expected an error, got {first:?}")
    };
    assert!(error_type.is_some(), "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("PAGE_SIZE")),
        "{body}"
    );
    assert_eq!(s.moto.depth(&s.queues.sync).await.total(), 0);

    // A sync-queue message: the invocation fails as a whole and the message stays.
    s.moto
        .send(&s.queues.sync, r#"{"v":1}"#, Some("job"), Some("job-1"))
        .await;
    let stats = MappingStats::default();
    let polled = poll_once(
        &s.moto.client(),
        &s.queues.sync,
        1,
        Duration::from_secs(2),
        &process_invoker(f.clone()),
        &stats,
    )
    .await
    .expect("a message");
    assert!(polled.result.is_err(), "{:?}", polled.result);
    assert_eq!(polled.kept.len(), 1);
    let mut p = f.lock().await;
    p.wait_for_next_call(3).await;
    assert!(p.is_running());
    assert!(p.api.init_errors().is_empty());
    drop(p);
    assert_eq!(s.moto.depth(&s.queues.sync).await.total(), 1);
}
