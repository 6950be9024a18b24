//! Throughput of the dataverse-upsert function against the Dataverse emulator configured like real
//! Dataverse for one application user on one web server (6,000 requests and 1,200 s of execution
//! time per 5 minutes, 52 concurrent requests), with the window scaled down to 10 s and a fixed
//! cost per operation. Prints records/second and the ratio to the ceiling, per write mode. With
//! a sliding window of W holding a budget of B operations, the fastest possible run of N
//! operations spends B at once, waits out the window, and so on: it takes
//! floor((N-1)/B) x W plus the last part at full concurrency. The ratio is that time over the
//! time taken (Retry-After is whole seconds, so a window much shorter than the run would be
//! unfair to any client). Run: `cargo bench -p dataverse-upsert --bench upsert_throughput`.
//! `RECORDS` (default 50,000) and `MODES` (default `auto,batch,bulk`) adjust it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use dataverse::{Secret, WebApiClient, WebApiConfig, WriteMode};
use dataverse_emulator::{Emulator, EmulatorConfig, Limits};
use dataverse_upsert::{App, handle};
use mapping::{
    Change, CrmKind, Entity, IdentityStrategy, Operation, Parent, SourceConfig, SourceId,
};
use pipeline::message::{self, ChangeBatch, Message};
use pipeline::sources::Sources;
use pipeline::upsert::UpsertPolicy;
use pipeline::{MemoryQueue, MemoryQueueConfig};
use serde_json::json;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WINDOW: Duration = Duration::from_secs(10);
const COST: Duration = Duration::from_millis(2);
/// Messages per invocation (SQS BatchSize) and changes per message (a sync page's chunk).
const MESSAGES: usize = 10;
const CHANGES: usize = 100;
/// Concurrent invocations sharing one client (the event source mapping's MaximumConcurrency).
const INVOCATIONS: usize = 4;

fn limits() -> Limits {
    // Real limits scaled by 10 s / 300 s.
    Limits {
        window: WINDOW,
        max_requests: 6000 * 10 / 300,
        max_execution: Duration::from_secs(1200 * 10 / 300),
        cost_per_operation: COST,
        max_concurrency: 52,
        dop_hint: 50,
        simulate_cost: true,
    }
}

/// The most operations one window's budget allows when each request carries `per_request`.
fn window_budget(l: &Limits, per_request: f64) -> f64 {
    let by_requests = l.max_requests as f64 * per_request;
    let by_time = l.max_execution.as_secs_f64() / l.cost_per_operation.as_secs_f64();
    let by_concurrency =
        l.max_concurrency as f64 * l.window.as_secs_f64() / l.cost_per_operation.as_secs_f64();
    by_requests.min(by_time).min(by_concurrency)
}

fn change(i: usize) -> Change {
    Change {
        source: SourceId::new("sf").unwrap(),
        entity: Entity::Account,
        source_id: format!("001{i:015}"),
        op: Operation::Upsert {
            fields: json!({"name": format!("Account {i}"), "telephone1": "+14155550100", "address1_city": "Austin"})
                .as_object()
                .unwrap()
                .clone(),
        },
        modified_at: None,
        parent: Parent::Unchanged,
        record_url: None,
    }
}

async fn run(mode_name: &str, records: usize) {
    let mut cfg = EmulatorConfig {
        limits: limits(),
        ..EmulatorConfig::default()
    };
    cfg.tables.account.bulk_supported = mode_name == "bulk";
    let emu = Emulator::start(cfg).await.unwrap();
    let mode = match mode_name {
        "batch" => WriteMode::Batch { size: 100 },
        "bulk" => WriteMode::Bulk { size: 100 },
        "single" => WriteMode::Single,
        _ => WriteMode::Auto,
    };
    let dv = WebApiConfig {
        api_url: emu.api_url(),
        token_url: emu.token_url(),
        client_id: "client-1".into(),
        client_secret: Secret::new("secret-1"),
        client_certificate: None,
        scope: format!("{}/.default", emu.base_url()),
        mode,
        max_concurrency: 52,
        request_timeout: Duration::from_secs(30),
        max_attempts: 5,
        max_throttle_wait: Duration::from_secs(120),
    };
    let mut sc = SourceConfig::new(
        SourceId::new("sf").unwrap(),
        CrmKind::Salesforce,
        "https://a.my.salesforce.com",
    );
    sc.crm_choice = Some(1);
    let client = Arc::new(WebApiClient::new(dv).unwrap());
    let app = Arc::new(App {
        metrics: Default::default(),
        ledger: None,
        versions: None,
        sources: Sources::new(&[sc], IdentityStrategy::DeterministicId).unwrap(),
        writer: Box::new(ArcWriter(client.clone())),
        retry: Box::new(Arc::new(MemoryQueue::new(
            "retry",
            MemoryQueueConfig::default(),
            None,
        ))),
        dlq: Box::new(Arc::new(MemoryQueue::new(
            "dlq",
            MemoryQueueConfig::default(),
            None,
        ))),
        refetch: None,
        origins: Vec::new(),
        policy: UpsertPolicy::default(),
    });
    // Build every event first: the clock measures the function, not the test data.
    let per_event = MESSAGES * CHANGES;
    let mut events: Vec<SqsEvent> = Vec::new();
    for e in 0..records.div_ceil(per_event) {
        let mut ev = SqsEvent::default();
        for m in 0..MESSAGES {
            let start = e * per_event + m * CHANGES;
            let changes: Vec<Change> = (start..(start + CHANGES).min(records))
                .map(change)
                .collect();
            if changes.is_empty() {
                continue;
            }
            let mut msg = SqsMessage::default();
            msg.message_id = Some(format!("{e}-{m}"));
            msg.body = Some(message::encode(
                "bench",
                Message::Changes(ChangeBatch {
                    from_page: false,
                    attempt: 0,
                    changes,
                }),
            ));
            ev.records.push(msg);
        }
        events.push(ev);
    }
    let queue = Arc::new(tokio::sync::Mutex::new(events));
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..INVOCATIONS {
        let (app, queue) = (app.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            let mut failed = 0usize;
            loop {
                let Some(mut ev) = queue.lock().await.pop() else {
                    break;
                };
                // Lambda redelivers failed messages: do the same until the event is done.
                loop {
                    let r = handle(&app, ev.clone(), 0).await;
                    if r.batch_item_failures.is_empty() {
                        break;
                    }
                    failed += r.batch_item_failures.len();
                    let ids: Vec<String> = r
                        .batch_item_failures
                        .iter()
                        .map(|f| f.item_identifier.clone())
                        .collect();
                    ev.records
                        .retain(|m| ids.contains(m.message_id.as_ref().unwrap()));
                }
            }
            failed
        }));
    }
    let mut redelivered = 0;
    for w in workers {
        redelivered += w.await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let rows = emu.rows("account").len();
    let stats = emu.stats();
    let per_request = stats.operations as f64 / (stats.requests as f64).max(1.0);
    let l = limits();
    // The ceiling of the best shape the limits allow (bulk and $batch both carry up to 1,000
    // operations a request); for single requests, one operation per request.
    let budget = window_budget(&l, if mode_name == "single" { 1.0 } else { 1000.0 });
    let sustained = budget / l.window.as_secs_f64();
    let n = records as f64;
    let full = ((n - 1.0) / budget).floor();
    let fastest = full * l.window.as_secs_f64()
        + (n - full * budget) * l.cost_per_operation.as_secs_f64() / l.max_concurrency as f64;
    let rate = records as f64 / secs;
    println!(
        "{mode_name:>6} | {records:>7} | {rows:>7} | {secs:>7.1} | {rate:>9.0} | {sustained:>7.0} | {fastest:>9.1} | {:>8.1} % | {:>8} | {:>7.1} | {:>6} | {:>7} | {:>7.3}",
        100.0 * fastest / secs,
        stats.requests,
        per_request,
        stats.throttled,
        redelivered,
        cpu * 1_000_000.0 / records as f64,
    );
    assert_eq!(rows, records, "every record applied");
    emu.shutdown().await;
}

/// Lets the bench keep a handle on the client it gives the app.
struct ArcWriter(Arc<WebApiClient>);

#[async_trait::async_trait]
impl dataverse::DataverseWriter for ArcWriter {
    async fn apply(
        &self,
        ops: &[mapping::DataverseOp],
        deadline: Option<tokio::time::Instant>,
    ) -> Vec<Result<dataverse::Applied, dataverse::WriteError>> {
        self.0.apply(ops, deadline).await
    }
}

/// User + system CPU time of this process (emulator included: it runs in-process).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let records: usize = std::env::var("RECORDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50_000);
    let modes = std::env::var("MODES").unwrap_or_else(|_| "auto,batch,bulk".into());
    println!(
        "limits: {} requests and {} s execution per {} s window, {} ms per operation, 52 concurrent; {} invocations x {} messages x {} changes",
        limits().max_requests,
        limits().max_execution.as_secs(),
        WINDOW.as_secs(),
        COST.as_millis(),
        INVOCATIONS,
        MESSAGES,
        CHANGES
    );
    println!(
        "  mode | records |    rows |  time s | records/s | limit/s | fastest s | of ceiling | requests | ops/req |   429s | redeliv | cpu ms/1k (incl. emulator)"
    );
    for m in modes.split(',') {
        run(m.trim(), records).await;
    }
}
