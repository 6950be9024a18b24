//! The dataverse-upsert binary (its main.rs: configuration from the environment, clients built
//! on the first invocation, the lambda_runtime loop) run against a Lambda Runtime API double,
//! fed SQS events from real queues (moto) as the event source mapping feeds it, writing to the
//! Dataverse emulator.

#[path = "../../../tests/e2e/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use dataverse_emulator::{Emulator, EmulatorConfig};
use mapping::identity::record_guid;
use mapping::{Change, Entity, Operation, Parent, SourceId};
use pipeline::message::{self, ChangeBatch, Message};
use pipeline::queue::ERROR_ATTRIBUTE;
use serde_json::{Value, json};
use support::lambda::{MappingStats, now_ms, poll_once};
use support::moto::{Deployment, Moto, Queues};
use support::runtime_api::{LambdaProcess, Outcome, process_invoker};
use tokio::sync::Mutex;

const CONFIG: &str = r#"
[[sources]]
id = "sf"
kind = "salesforce"
crm_choice = 1
base_url = "https://acme.my.salesforce.com"
"#;

fn src() -> SourceId {
    SourceId::new("sf").unwrap()
}

fn change(entity: Entity, id: &str, fields: Value, parent: Parent) -> Change {
    Change {
        source: src(),
        entity,
        source_id: id.into(),
        op: Operation::Upsert {
            fields: fields.as_object().unwrap().clone(),
        },
        modified_at: None,
        parent,
        record_url: None,
    }
}

fn changes_body(changes: Vec<Change>) -> String {
    message::encode(
        "runtime-test",
        Message::Changes(ChangeBatch {
            from_page: false,
            attempt: 0,
            changes,
        }),
    )
}

struct Setup {
    moto: Moto,
    queues: Queues,
    dv: Emulator,
}

async fn setup() -> Setup {
    let moto = Moto::start().await;
    let queues = moto
        .deployment(&Deployment {
            upsert_visibility: 1,
            ..Deployment::default()
        })
        .await;
    let dv = Emulator::start(EmulatorConfig::default()).await.unwrap();
    Setup { moto, queues, dv }
}

/// The environment `template.yaml` gives the function, pointed at moto and the emulator.
fn env(s: &Setup, config: &str) -> Vec<(&'static str, String)> {
    let mut env = s.moto.lambda_env();
    env.extend([
        ("CRM_SYNC_CONFIG", config.to_string()),
        ("DATAVERSE_URL", s.dv.base_url()),
        ("DATAVERSE_TENANT", "tenant-1".into()),
        ("DATAVERSE_CLIENT_ID", "client-1".into()),
        ("DATAVERSE_CLIENT_SECRET", "secret-1".into()),
        ("DATAVERSE_TOKEN_URL", s.dv.token_url()),
        ("RETRY_QUEUE_URL", s.queues.retry.url.clone()),
        ("DLQ_URL", s.queues.upsert_dlq.url.clone()),
    ]);
    env
}

async fn spawn(s: &Setup, config: &str) -> Arc<Mutex<LambdaProcess>> {
    let p = LambdaProcess::spawn(
        env!("CARGO_BIN_EXE_dataverse-upsert"),
        "crm-sync-dataverse-upsert",
        &env(s, config),
    )
    .await;
    Arc::new(Mutex::new(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_batch_is_written_parked_and_dead_lettered_by_the_binary() {
    let s = setup().await;
    let (acc, con, orphan) = ("001A", "003C", "003D");
    s.moto
        .send(
            &s.queues.upsert,
            &changes_body(vec![
                change(
                    Entity::Account,
                    acc,
                    json!({"name": "Acme"}),
                    Parent::Unchanged,
                ),
                change(
                    Entity::Contact,
                    con,
                    json!({"lastname": "Ode"}),
                    Parent::Account(acc.into()),
                ),
            ]),
            Some("page-1"),
            None,
        )
        .await;
    // A contact whose account Dataverse does not have: parked on the retry queue.
    s.moto
        .send(
            &s.queues.upsert,
            &changes_body(vec![change(
                Entity::Contact,
                orphan,
                json!({"lastname": "Early"}),
                Parent::Account("001-not-yet".into()),
            )]),
            Some("003D"),
            None,
        )
        .await;
    s.moto
        .send(&s.queues.upsert, "{oops", Some("poison"), None)
        .await;

    let f = spawn(&s, CONFIG).await;
    let stats = MappingStats::default();
    let polled = poll_once(
        &s.moto.client(),
        &s.queues.upsert,
        10,
        Duration::from_secs(2),
        &process_invoker(f.clone()),
        &stats,
    )
    .await
    .expect("a batch");
    assert_eq!(polled.event.records.len(), 3);
    // The response the binary posted: nothing to retry, so every message is deleted.
    let response = polled.result.expect("a response");
    assert_eq!(response, json!({"batchItemFailures": []}));
    assert_eq!(polled.deleted.len(), 3);
    assert_eq!(s.moto.depth(&s.queues.upsert).await.total(), 0);

    let acc_guid = record_guid(&src(), Entity::Account, acc, false).to_string();
    let contacts = s.dv.rows("contact");
    assert_eq!(s.dv.rows("account").len(), 1);
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0]["_parentcustomerid_value"], acc_guid.as_str());
    // The early contact waits on the retry queue with a delay (a standard queue's DelaySeconds).
    assert_eq!(s.moto.depth(&s.queues.retry).await.delayed, 1);
    // The poison message is in the DLQ with its reason.
    let dead = s
        .moto
        .take_all(&s.queues.upsert_dlq, Duration::from_secs(2))
        .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some("{oops"));
    let why = dead[0]
        .message_attributes()
        .and_then(|a| a.get(ERROR_ATTRIBUTE))
        .and_then(|v| v.string_value())
        .unwrap_or_default();
    assert!(why.contains("not JSON"), "{why}");

    // What the invocation did, as CloudWatch Embedded Metric Format on stdout: one document
    // per source and entity, and the Dataverse request latencies.
    let logs = f.lock().await.logs();
    let docs: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let emf = |entity: &str| {
        docs.iter()
            .find(|d| d["_aws"].is_object() && d["Source"] == "sf" && d["Entity"] == entity)
            .unwrap_or_else(|| panic!("no EMF document for sf/{entity} in:\n{logs}"))
    };
    let account = emf("account");
    assert_eq!(
        account["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "CrmSync"
    );
    assert_eq!(account["Function"], "crm-sync-dataverse-upsert");
    let applied = |d: &Value| {
        ["Created", "Upserted"]
            .iter()
            .filter_map(|m| d[*m].as_u64())
            .sum::<u64>()
    };
    assert_eq!(applied(account), 1);
    assert_eq!(applied(emf("contact")), 1);
    assert_eq!(emf("contact")["Parked"], 1);
    let unreadable = docs
        .iter()
        .find(|d| d["_aws"].is_object() && d["Source"] == "-")
        .expect("the poison message is counted");
    assert_eq!(unreadable["FailedPermanently"], 1);
    assert!(
        docs.iter().any(|d| d["DataverseRequestLatency"]
            .as_array()
            .is_some_and(|a| !a.is_empty())),
        "{logs}"
    );
    // One info line for the batch, naming the units of work it advanced; no secret anywhere.
    let batch = docs
        .iter()
        .find(|d| d["fields"]["message"] == "upsert batch done")
        .unwrap_or_else(|| panic!("no batch line in:\n{logs}"));
    assert!(
        batch["fields"]["correlation_ids"]
            .as_str()
            .is_some_and(|c| c.contains("runtime-test")),
        "{batch}"
    );
    assert!(!logs.contains("secret-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_past_its_deadline_is_reported_failed_and_applied_when_it_comes_back() {
    let s = setup().await;
    for i in 0..3 {
        s.moto
            .send(
                &s.queues.upsert,
                &changes_body(vec![change(
                    Entity::Account,
                    &format!("001-{i}"),
                    json!({"name": format!("A{i}")}),
                    Parent::Unchanged,
                )]),
                Some(&format!("g{i}")),
                None,
            )
            .await;
    }
    let f = spawn(&s, CONFIG).await;
    let client = s.moto.client();
    let out = client
        .receive_message()
        .queue_url(&s.queues.upsert.url)
        .max_number_of_messages(10)
        .wait_time_seconds(2)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    assert_eq!(out.messages().len(), 3);
    let event = support::lambda::sqs_event(out.messages(), &s.queues.upsert);
    // Lambda-Runtime-Deadline-Ms two seconds away: inside the function's 5 s margin, so it
    // writes nothing and lists every message for a retry.
    let outcome = f
        .lock()
        .await
        .invoke_with_deadline(serde_json::to_value(&event).unwrap(), now_ms() + 2_000)
        .await;
    let response = outcome.response();
    let mut failed: Vec<&str> = response["batchItemFailures"]
        .as_array()
        .expect("a batch response")
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap())
        .collect();
    failed.sort_unstable();
    let mut ids: Vec<&str> = out
        .messages()
        .iter()
        .filter_map(|m| m.message_id())
        .collect();
    ids.sort_unstable();
    assert_eq!(failed, ids);
    assert!(s.dv.rows("account").is_empty());

    // Not deleted, they come back after the visibility timeout and are applied.
    let stats = MappingStats::default();
    let invoke = process_invoker(f.clone());
    let mut applied = 0;
    while applied < 3 {
        let polled = poll_once(
            &client,
            &s.queues.upsert,
            10,
            Duration::from_secs(5),
            &invoke,
            &stats,
        )
        .await
        .expect("the messages come back");
        assert_eq!(polled.result, Ok(json!({"batchItemFailures": []})));
        applied += polled.deleted.len();
    }
    assert_eq!(stats.get(|s| &s.max_receive_count), 2);
    assert_eq!(s.dv.rows("account").len(), 3);
    assert_eq!(s.moto.depth(&s.queues.upsert).await.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_configuration_fails_each_invocation_and_the_runtime_keeps_polling() {
    let s = setup().await;
    s.moto
        .send(
            &s.queues.upsert,
            &changes_body(vec![change(
                Entity::Account,
                "001A",
                json!({"name": "Acme"}),
                Parent::Unchanged,
            )]),
            Some("g"),
            None,
        )
        .await;
    let f = spawn(&s, "[[sources]]\nid = \"sf\"\nkind = ").await;
    let stats = MappingStats::default();
    let polled = poll_once(
        &s.moto.client(),
        &s.queues.upsert,
        10,
        Duration::from_secs(2),
        &process_invoker(f.clone()),
        &stats,
    )
    .await
    .expect("a batch");
    // A function error: the whole batch stays for a retry.
    let err = polled.result.expect_err("an invocation error");
    assert!(err.contains("CRM_SYNC_CONFIG"), "{err}");
    assert_eq!(polled.kept.len(), 1);
    assert_eq!(stats.get(|s| &s.batch_failures), 1);

    let mut p = f.lock().await;
    // Posted to /invocation/{id}/error, not a crash: the runtime asks for the next event, and
    // the next invocation fails the same way (the clients are built again, not cached broken).
    p.wait_for_next_call(2).await;
    assert!(p.is_running());
    assert!(p.api.init_errors().is_empty());
    let again = p.invoke(json!({"Records": []})).await;
    let Outcome::Error { error_type, body } = again else {
        panic!("expected an error, got {again:?}")
    };
    assert!(error_type.is_some(), "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("CRM_SYNC_CONFIG")),
        "{body}"
    );
    p.wait_for_next_call(3).await;
    drop(p);
    // The message is still on the queue.
    assert_eq!(s.moto.depth(&s.queues.upsert).await.total(), 1);
}
