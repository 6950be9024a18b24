//! The Lambda functions' shape: for each release binary, the time from process start to ready
//! for its first event (the runtime's first `GET .../invocation/next` on a local Runtime API
//! double), and its peak resident memory after handling a realistic event: a 10-message SQS
//! batch of 200 records each for dataverse-upsert, a 2,000-record page for initial-sync
//! (BatchSize 1), a signed notification for webhook. Queues are moto's, the CRM and Dataverse
//! are the emulators. Sizes are printed by `scripts/bench.sh`, which builds the binaries.
//!
//! Run: `cargo build --release -p dataverse-upsert -p initial-sync -p webhook-fn` then
//! `CRM_SYNC_MOTO_SERVER=... cargo bench -p e2e --bench lambda_shape`.

#[path = "../e2e/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dataverse_emulator::{Emulator, EmulatorConfig};
use mapping::{Change, Entity, Operation, Parent, SourceId};
use pipeline::message::{self, ChangeBatch, Message};
use serde_json::{Value, json};
use support::lambda::{apigw_v2_event, now_ms};
use support::moto::{Deployment, Moto, Queues};
use support::runtime_api::{LambdaProcess, Outcome};

const RUNS: usize = 5;

/// `target/release/<name>`, next to this bench's `target/release/deps/`.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/release");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: cargo build --release -p {name}",
        p.display()
    );
    p
}

fn vm_hwm_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn ready(p: &LambdaProcess) -> Duration {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(t) = p.api.first_next() {
            return t - p.spawned_at;
        }
        assert!(Instant::now() < until, "not ready: {}", p.logs());
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn sqs_record(body: &str, i: usize, queue: &str) -> Value {
    json!({
        "messageId": format!("m-{i}"),
        "receiptHandle": format!("r-{i}"),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": now_ms().to_string(),
            "MessageGroupId": format!("page-{i}"),
            "ApproximateFirstReceiveTimestamp": now_ms().to_string(),
            "SenderId": "AIDAEXAMPLE",
            "MessageDeduplicationId": format!("d-{i}"),
            "SequenceNumber": format!("{i}"),
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{queue}"),
        "awsRegion": "us-east-1",
    })
}

fn upsert_batch() -> Value {
    let src = SourceId::new("sf").expect("id");
    let records: Vec<Value> = (0..10)
        .map(|m| {
            let changes = (0..200)
                .map(|r| Change {
                    source: src.clone(),
                    entity: Entity::Account,
                    source_id: format!("001B{m:05}{r:09}"),
                    op: Operation::Upsert {
                        fields: json!({"name": format!("Account {m}-{r}"), "telephone1": "+1 555 0100", "websiteurl": "https://example.com", "address1_city": "Lyon"})
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                    },
                    modified_at: None,
                    parent: Parent::Unchanged,
                    record_url: None,
                })
                .collect();
            let body = message::encode(
                "bench",
                Message::Changes(ChangeBatch {
                    from_page: true,
                    attempt: 0,
                    changes,
                }),
            );
            sqs_record(&body, m, "upsert.fifo")
        })
        .collect();
    json!({ "Records": records })
}

struct World {
    moto: Moto,
    queues: Queues,
    dv: Emulator,
    sf: crm_emulator::SalesforceEmulator,
}

fn sf_config(sf: &crm_emulator::SalesforceEmulator) -> String {
    format!(
        r#"
[[sources]]
id = "sf"
kind = "salesforce"
crm_choice = 1
base_url = "https://acme.my.salesforce.com"
[sources.connection]
auth = "salesforce-client-credentials"
token_url = "{}"
client_id = "{}"
client_secret = "{}"
[sources.webhook]
auth = "contract"
secret = "bench-secret"
"#,
        sf.token_url(),
        sf.config().client_id,
        sf.config().client_secret
    )
}

fn env(w: &World, function: &str) -> Vec<(&'static str, String)> {
    let mut env = w.moto.lambda_env();
    env.push(("CRM_SYNC_CONFIG", sf_config(&w.sf)));
    match function {
        "dataverse-upsert" => env.extend([
            ("DATAVERSE_URL", w.dv.base_url()),
            ("DATAVERSE_TENANT", "tenant-1".into()),
            ("DATAVERSE_CLIENT_ID", "client-1".into()),
            ("DATAVERSE_CLIENT_SECRET", "secret-1".into()),
            ("DATAVERSE_TOKEN_URL", w.dv.token_url()),
            ("RETRY_QUEUE_URL", w.queues.retry.url.clone()),
            ("DLQ_URL", w.queues.upsert_dlq.url.clone()),
        ]),
        "initial-sync" => env.extend([
            ("SYNC_QUEUE_URL", w.queues.sync.url.clone()),
            ("UPSERT_QUEUE_URL", w.queues.upsert.url.clone()),
            ("SYNC_DLQ_URL", w.queues.sync_dlq.url.clone()),
            ("PAGE_SIZE", "2000".into()),
        ]),
        _ => env.extend([
            ("UPSERT_QUEUE_URL", w.queues.upsert.url.clone()),
            ("SYNC_QUEUE_URL", w.queues.sync.url.clone()),
            ("WEBHOOK_DLQ_URL", w.queues.webhook_dlq.url.clone()),
        ]),
    }
    env
}

/// The event each function gets, as its trigger sends it.
fn event(function: &str) -> Value {
    match function {
        "dataverse-upsert" => upsert_batch(),
        "initial-sync" => {
            // The first page job of a sync, as the sync queue delivers it (BatchSize 1).
            let body = message::encode(
                "bench",
                Message::SyncPage(pipeline::message::SyncPageJob {
                    job_id: "bench-job".into(),
                    source: SourceId::new("sf").expect("id"),
                    entities: vec![Entity::Account, Entity::Contact],
                    entity: Entity::Account,
                    phase: pipeline::message::Phase::Snapshot,
                    started_at: chrono::Utc::now(),
                    cursor: None,
                    checkpoint: None,
                    counts: Default::default(),
                    total: None,
                }),
            );
            json!({ "Records": [sqs_record(&body, 0, "sync.fifo")] })
        }
        _ => {
            let body = json!({"entity": "account", "operation": "update", "id": "001D000000IRFmaIAH",
                "modified_at": "2026-11-28T12:00:00.000Z",
                "record": {"attributes": {"type": "Account"}, "Id": "001D000000IRFmaIAH", "Name": "Acme"}})
            .to_string();
            let ts = (now_ms() / 1000).to_string();
            let sig = webhook::verify::contract_signature("bench-secret", &ts, body.as_bytes());
            apigw_v2_event(
                "POST",
                "/webhooks/{source}",
                "/webhooks/sf",
                "",
                &[("source", "sf")],
                &[
                    ("Content-Type".into(), "application/json".into()),
                    ("X-CrmSync-Timestamp".into(), ts),
                    ("X-CrmSync-Signature".into(), sig),
                ],
                body.as_bytes(),
            )
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let moto = Moto::start().await;
        let queues = moto.deployment(&Deployment::default()).await;
        let dv = Emulator::start(EmulatorConfig::default())
            .await
            .expect("dataverse emulator");
        let sf = crm_emulator::SalesforceEmulator::start(crm_emulator::SalesforceConfig {
            accounts: 2000,
            contacts_per_account: 1,
            ..crm_emulator::SalesforceConfig::default()
        })
        .await
        .expect("salesforce emulator");
        let w = World {
            moto,
            queues,
            dv,
            sf,
        };
        println!(
            "{:<18} {:>16} {:>16} {:>14}  event",
            "function", "start→ready p50", "start→ready max", "peak RSS"
        );
        for (bin, name, what) in [
            (
                "dataverse-upsert",
                "dataverse-upsert",
                "10 SQS messages, 2,000 records",
            ),
            (
                "initial-sync",
                "initial-sync",
                "1 page job: 2,000 records read and queued",
            ),
            ("webhook", "webhook", "1 signed notification"),
        ] {
            let path = binary(bin);
            let mut starts = Vec::new();
            let mut rss = 0f64;
            for run in 0..RUNS {
                let mut p = LambdaProcess::spawn(
                    path.to_str().expect("utf-8 path"),
                    &format!("crm-sync-{name}"),
                    &env(&w, name),
                )
                .await;
                starts.push(ready(&p).await);
                if run == 0 {
                    let e = event(name);
                    match p.invoke(e).await {
                        Outcome::Response(r) => {
                            let failures = r["batchItemFailures"].as_array().map_or(0, Vec::len);
                            assert_eq!(failures, 0, "{name}: {r}");
                            if name == "webhook" {
                                assert_eq!(r["statusCode"], 202, "{r}");
                            }
                        }
                        Outcome::Error { error_type, body } => {
                            panic!("{name} failed: {error_type:?} {body}\n{}", p.logs())
                        }
                    }
                    rss = vm_hwm_mib(p.pid());
                }
            }
            let max = starts.iter().max().copied().unwrap_or_default();
            println!(
                "{:<18} {:>13.1} ms {:>13.1} ms {:>10.1} MiB  {what}",
                bin,
                median(starts).as_secs_f64() * 1000.0,
                max.as_secs_f64() * 1000.0,
                rss
            );
        }
    });
}
