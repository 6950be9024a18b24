//! Nothing is lost while everything misbehaves: an initial sync of 20,000 Salesforce records
//! through a stack's SQS queues (moto) into Dataverse, worked by the `crm-sync serve` binary in
//! stack mode, while
//! - Dataverse throttles in storms whose Retry-After grows, answers 500/503 and deadlocks, drops
//!   connections, answers some requests only after the client's timeout (the write done), and
//!   revokes its tokens;
//! - Salesforce times queries out, refuses them over its concurrency limit, kills its cursors
//!   and sessions, and its records change and are deleted during the walk;
//! - SQS delivers every message twice and shuffles its standard queue (`support/sqs_chaos.rs`);
//!   the worker process is killed with SIGKILL in the middle of its batches and restarted;
//! - the CRM's webhooks for the changes arrive repeated and out of order, and poison messages
//!   are put on the upsert queue.
//!
//! At the end: every CRM record is in Dataverse exactly once, under its account, with the values
//! of its latest version (`crm-sync reconcile` finds no difference); every deletion is applied;
//! the only dead letters are the poison messages, each with its reason; every webhook was
//! accepted. The figures are printed as the last lines.
//!
//! `CRM_SYNC_SOAK=1` runs the long variant: 100,000 records and a kill every 15 % of the way.

#[path = "../../tests/e2e/support/jobs_table.rs"]
mod jobs_table;
#[path = "../../tests/e2e/support/moto.rs"]
#[allow(dead_code)]
mod moto;
#[path = "support/sqs_chaos.rs"]
mod sqs_chaos;
#[path = "support/world.rs"]
mod world;
mod support {
    pub(crate) use crate::moto;
}

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crm_emulator::QueryFaults;
use crm_emulator::notify::Disorder;
use dataverse_emulator::{Faults, Limits};
use pipeline::queue::ERROR_ATTRIBUTE;
use serde_json::{Value, json};
use sqs_chaos::SqsChaos;
use world::{WEBHOOK_SECRET, World, obj};

const JOBS_TABLE: &str = "chaos-jobs";
/// Share of SQS messages delivered twice: every one. (Each redelivered sync page checks its
/// records against the version store, DynamoDB on the same moto process as SQS, which makes
/// this test take 6 to 7 minutes.)
const REDELIVER_RATE: f64 = 1.0;
const POISON: [&str; 3] = [
    "{not json at all",
    r#"{"v":99,"correlation_id":"x","body":{}}"#,
    r#"{"v":1,"correlation_id":"poison","kind":"mystery"}"#,
];

struct Size {
    accounts: usize,
    /// Kill the worker when Dataverse has received this share of the records, for each entry.
    kills_at: Vec<f64>,
}

fn size() -> Size {
    if std::env::var_os("CRM_SYNC_SOAK").is_some() {
        Size {
            accounts: 20_000,
            kills_at: vec![0.15, 0.3, 0.45, 0.6, 0.75, 0.9],
        }
    } else {
        // 4,000 accounts with 4 contacts each and 7 private contacts: 20,007 records.
        Size {
            accounts: 4_000,
            kills_at: vec![0.3, 0.65],
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `crm-sync serve --stack-outputs`, killed with SIGKILL on drop.
struct Worker {
    child: Child,
}

impl Worker {
    fn start(w: &World, outputs: &Path, aws: &str, listen: &str, env: &[(&str, String)]) -> Worker {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(w.dir.join("serve.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_crm-sync"))
            .args(["serve", "--config", w.config.to_str().unwrap()])
            .args(["--stack-outputs", outputs.to_str().unwrap()])
            .args(["--aws-endpoint", aws, "--listen", listen])
            .args([
                "--page-size",
                "2000",
                "--upsert-workers",
                "2",
                "--batch-size",
                "2",
            ])
            .args(["--parent-retry-delay", "1", "--log", "warn"])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("queues of the stack"), "serve: {line}");
        Worker { child }
    }

    /// SIGKILL: no shutdown, no flush; whatever it held comes back from SQS.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_everything_misbehaves() {
    let started = Instant::now();
    let size = size();
    let moto = moto::Moto::start().await;
    // Short visibility timeouts, so that redeliveries and a killed worker's batches come back in
    // seconds rather than the template's minutes.
    let queues = moto
        .deployment(&moto::Deployment {
            upsert_visibility: 4,
            sync_visibility: 4,
            max_receive_count: 10,
        })
        .await;
    let dynamodb = jobs_table::dynamodb_client(moto.endpoint());
    jobs_table::create_jobs_table(&dynamodb, JOBS_TABLE).await;
    let sqs = SqsChaos::start(moto.endpoint(), REDELIVER_RATE, 7).await;
    let w = World::start("chaos", size.accounts).await;
    // A client timeout shorter than the slow answers below.
    let config = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        config.replace(
            "max_concurrency = 8\n",
            "max_concurrency = 8\nrequest_timeout_secs = 2\n",
        ),
    )
    .unwrap();
    let records = w.sf.count("Account") + w.sf.count("Contact");

    let outputs = w.dir.join("outputs.json");
    std::fs::write(&outputs, queues.stack_outputs(JOBS_TABLE)).unwrap();
    let env = moto.lambda_env();
    let listen = format!("127.0.0.1:{}", free_port());
    let endpoint = sqs.endpoint();
    let mut worker = Some(Worker::start(&w, &outputs, &endpoint, &listen, &env));

    // Faults on both services from the first request.
    let dv_faults = Faults {
        error_5xx_rate: 0.03,
        drop_rate: 0.02,
        deadlock_rate: 0.02,
        slow_rate: 0.02,
        slow: Duration::from_secs(3),
        seed: 11,
        ..Faults::default()
    };
    w.dv.set_faults(dv_faults.clone());
    w.sf.set_query_faults(QueryFaults {
        timeout_rate: 0.15,
        concurrency_limit_rate: 0.1,
        seed: 13,
    });
    let notifier = w.sf.notify_to_disordered(
        &format!("http://{listen}/webhooks/salesforce"),
        WEBHOOK_SECRET,
        Disorder {
            repeat_rate: 0.3,
            delay_rate: 0.3,
            max_delay: Duration::from_secs(3),
            seed: 17,
        },
    );

    let o = Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .args(["sync", "start", "--config", w.config.to_str().unwrap()])
        .args([
            "--source",
            "salesforce",
            "--sqs-queue-url",
            &queues.sync.url,
        ])
        .args(["--sqs-endpoint", &endpoint, "--jobs-table", JOBS_TABLE])
        .args(["--dynamodb-endpoint", moto.endpoint()])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
    for p in POISON {
        moto.send(
            &queues.upsert,
            p,
            Some("poison"),
            Some(&format!("{:x}", p.len())),
        )
        .await;
    }

    // The weather (storms, token and cursor expiry) and CRM edits run while the walk runs; the
    // worker is killed in the middle of its batches and started again along the way.
    let walking = AtomicBool::new(true);
    let counts = Counts::default();
    let mut kills = 0;
    let mut kills_with_batches_in_hand = 0;
    let walk = async {
        for at in &size.kills_at {
            let target = (*at * records as f64) as u64;
            let until = Instant::now() + Duration::from_secs(600);
            while w.dv.stats().operations < target && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Mid-batch: wait (a little) for the worker to hold upsert messages.
            let until = Instant::now() + Duration::from_secs(30);
            let mut in_hand = moto.depth(&queues.upsert).await.in_flight;
            while in_hand == 0 && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
                in_hand = moto.depth(&queues.upsert).await.in_flight;
            }
            worker.take().unwrap().kill();
            kills += 1;
            kills_with_batches_in_hand += usize::from(in_hand > 0);
            worker = Some(Worker::start(&w, &outputs, &endpoint, &listen, &env));
        }
        // The walk ends (`sync status --wait` reads the run ledger).
        let mut status = std::process::Command::new(env!("CARGO_BIN_EXE_crm-sync"));
        status
            .args(["sync", "status", "--jobs-table", JOBS_TABLE])
            .args(["--dynamodb-endpoint", moto.endpoint()])
            .args(["--wait", "900", "--json", &job])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let o = tokio::task::spawn_blocking(move || status.output().unwrap())
            .await
            .unwrap();
        walking.store(false, Ordering::SeqCst);
        o
    };
    let (o, (), ()) = tokio::join!(
        walk,
        weather(&w, &walking, &counts),
        edits(&w, &walking, &counts)
    );
    assert!(o.status.success(), "{}", text(&o));
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["state"], "finished", "{status}");
    let dv_stats_at_walk_end = w.dv.stats();
    let sf_stats = w.sf.stats();
    // What is still in flight settles without faults: late webhooks, redeliveries, parked
    // contacts.
    w.dv.set_faults(Faults::default());
    w.sf.set_query_faults(QueryFaults::default());
    assert!(
        notifier.idle(Duration::from_secs(120)).await,
        "webhooks still pending"
    );
    let undelivered: Vec<_> = notifier
        .deliveries()
        .into_iter()
        .filter(|d| !d.status.is_some_and(|s| (200..300).contains(&s)))
        .collect();
    assert!(undelivered.is_empty(), "webhooks refused: {undelivered:?}");
    let quiet = Instant::now() + Duration::from_secs(300);
    let c = loop {
        let mut busy = 0;
        for q in [&queues.sync, &queues.upsert, &queues.retry] {
            busy += moto.depth(q).await.total();
        }
        let c = w.comparison();
        if (busy == 0 && c.is_exact()) || Instant::now() >= quiet {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    drop(worker);

    // Invariants.
    // 1. Every CRM record exactly once, under its account; every deletion applied.
    assert!(c.is_exact(), "{c}");
    let now_records = w.sf.count("Account") + w.sf.count("Contact");
    assert_eq!(c.matched, now_records, "{c}");
    // 2. ... with the values of its latest version: reconcile compares every mapped column.
    let o = Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .args([
            "reconcile",
            "--source",
            "salesforce",
            "--json",
            "--page-size",
            "2000",
        ])
        .args(["--config", w.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "reconcile found drift: {}", text(&o));
    // 3. The only dead letters are the poison messages, each with its reason.
    let dead = moto
        .take_all(&queues.upsert_dlq, Duration::from_secs(2))
        .await;
    let mut bodies: Vec<&str> = dead.iter().filter_map(|m| m.body()).collect();
    bodies.sort_unstable();
    let mut poison = POISON.to_vec();
    poison.sort_unstable();
    assert_eq!(bodies, poison, "the upsert DLQ");
    for m in &dead {
        let reason = m
            .message_attributes()
            .and_then(|a| a.get(ERROR_ATTRIBUTE))
            .and_then(|v| v.string_value())
            .unwrap_or("");
        assert!(
            !reason.is_empty(),
            "a dead letter without its reason: {m:?}"
        );
    }
    for q in [&queues.sync_dlq, &queues.webhook_dlq] {
        assert_eq!(moto.depth(q).await.total(), 0, "{}", q.name);
    }

    // Figures.
    let dv = w.dv.stats();
    let by = |s: u16| dv_stats_at_walk_end.by_status.get(&s).copied().unwrap_or(0);
    let disorder = notifier.disorder();
    let secs = started.elapsed().as_secs_f64();
    println!("chaos: {records} records at the start, {now_records} at the end");
    println!(
        "  CRM edits during the walk: {} updates, {} creates, {} deletes; {} webhooks ({} repeated, {} held back and overtaken)",
        counts.updates.load(Ordering::SeqCst),
        counts.creates.load(Ordering::SeqCst),
        counts.deletes.load(Ordering::SeqCst),
        notifier.deliveries().len(),
        disorder.repeated,
        disorder.delayed
    );
    println!(
        "  Dataverse faults: {} throttled (429) in {} storms, {} 500, {} 503, {} dropped connections, {} answers past the client timeout, {} token revocations",
        by(429),
        counts.storms.load(Ordering::SeqCst),
        by(500),
        by(503),
        dv_stats_at_walk_end.dropped,
        dv_stats_at_walk_end.slowed,
        counts.token_expiries.load(Ordering::SeqCst)
    );
    println!(
        "  Salesforce faults: {} query timeouts or concurrency refusals, {} cursor deaths, {} session expiries",
        sf_stats.faults_injected,
        counts.cursor_deaths.load(Ordering::SeqCst),
        counts.session_expiries.load(Ordering::SeqCst)
    );
    println!(
        "  SQS: {} messages delivered twice, {} standard-queue receives reordered; {kills} worker kills (SIGKILL), {kills_with_batches_in_hand} with batches in hand; {} poison messages dead-lettered",
        sqs.redelivered(),
        sqs.reordered(),
        POISON.len()
    );
    let log = std::fs::read_to_string(w.dir.join("serve.log")).unwrap_or_default();
    let failed_answers: u64 = dv
        .by_status
        .iter()
        .filter(|(s, _)| **s >= 400)
        .map(|(_, n)| n)
        .sum::<u64>()
        + dv.dropped;
    println!(
        "  retries: {} Dataverse requests answered with an error or not at all (each retried or its message redelivered), {} sync messages retried",
        failed_answers,
        log.matches("sync message will be retried").count()
    );
    println!(
        "  Dataverse: {} requests for {} write operations ({:.2} requests per record)",
        dv.requests,
        dv.operations,
        dv.requests as f64 / now_records as f64
    );
    println!(
        "  result: {} rows match the CRM exactly, 0 lost, 0 duplicated; {secs:.0} s",
        c.matched
    );
    assert!(
        kills_with_batches_in_hand > 0,
        "no kill hit a batch in hand"
    );
}

/// Dataverse storms whose Retry-After grows, revoked tokens; Salesforce cursors and sessions
/// that die.
async fn weather(w: &World, walking: &AtomicBool, counts: &Counts) {
    let mut tick = 0u64;
    let mut storm = 0u32;
    while walking.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tick += 1;
        if tick.is_multiple_of(6) && storm < 4 {
            // A storm: few requests per window, the window (and so Retry-After) doubling from one
            // storm to the next: 1, 2, 4, 8 s.
            storm += 1;
            w.dv.set_limits(Limits {
                window: Duration::from_secs(1 << (storm - 1)),
                max_requests: 8,
                ..Limits::default()
            });
            counts.storms.fetch_add(1, Ordering::SeqCst);
        } else if tick % 6 == 4 {
            w.dv.set_limits(Limits::default());
        }
        if tick.is_multiple_of(5) {
            w.dv.expire_tokens();
            counts.token_expiries.fetch_add(1, Ordering::SeqCst);
        }
        if tick.is_multiple_of(4) {
            w.sf.expire_cursors();
            counts.cursor_deaths.fetch_add(1, Ordering::SeqCst);
        }
        if tick.is_multiple_of(9) {
            w.sf.expire_sessions();
            counts.session_expiries.fetch_add(1, Ordering::SeqCst);
        }
    }
    w.dv.set_limits(Limits::default());
}

/// The CRM's users at work during the walk: renames, new accounts with a contact (some deleted
/// at once), contacts moved and deleted. Each change is announced by the webhook notifier.
async fn edits(w: &World, walking: &AtomicBool, counts: &Counts) {
    let contacts = w.sf.ids("Contact");
    let accounts = w.sf.ids("Account");
    let pick = |v: &Vec<String>, k: usize| v[(k * 7919) % v.len()].clone();
    let mut i = 0usize;
    while walking.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        i += 1;
        match i % 5 {
            0 => {
                let fields =
                    json!({"Name": format!("Renamed {i}"), "Phone": format!("+1 555 {i:04}")});
                let _ = w.sf.update(&pick(&accounts, i), obj(fields));
                counts.updates.fetch_add(1, Ordering::SeqCst);
            }
            1 | 2 => {
                let fields = json!({"Email": format!("moved{i}@example.com")});
                let _ = w.sf.update(&pick(&contacts, i), obj(fields));
                counts.updates.fetch_add(1, Ordering::SeqCst);
            }
            3 => {
                if w.sf.delete(&pick(&contacts, i + 1)) {
                    counts.deletes.fetch_add(1, Ordering::SeqCst);
                }
            }
            _ => {
                let acc =
                    w.sf.put_account(obj(json!({"Name": format!("New {i}")})))
                        .unwrap();
                let contact = json!({"LastName": format!("New {i}"), "AccountId": acc});
                w.sf.put_contact(obj(contact)).unwrap();
                counts.creates.fetch_add(2, Ordering::SeqCst);
            }
        }
    }
}

#[derive(Default)]
struct Counts {
    storms: AtomicU64,
    token_expiries: AtomicU64,
    cursor_deaths: AtomicU64,
    session_expiries: AtomicU64,
    updates: AtomicU64,
    creates: AtomicU64,
    deletes: AtomicU64,
}
