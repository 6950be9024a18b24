//! crm-sync against the limit Dataverse allows, and against the pattern people use today.
//!
//! 1. The initial sync end to end: the Salesforce emulator → the real Salesforce client and
//!    mapping → the in-process upsert queue → the real upsert step and Web API client → the
//!    Dataverse emulator, configured as real Dataverse is for one application user ("Service
//!    protection API limits": 6,000 requests and 1,200 s of execution time per sliding 5 minutes,
//!    52 concurrent requests), with the window scaled down and a stated execution cost per write
//!    operation. Records/s, the share of the ceiling that configuration allows, Dataverse
//!    requests per record, 429s, our CPU per 1,000 records and our peak memory.
//! 2. The same data written with the request pattern of Microsoft's any-CRM Power Automate
//!    template: per record a `$filter` lookup by `msdyn_source_crm_id`, then a create or an
//!    update, one record at a time, against the same emulator configuration.
//!
//! Both emulators run in child processes (this binary, re-executed), so their memory and CPU
//! are not counted as ours: the CPU figure is this process's user + system time. Run:
//! `cargo bench -p e2e --bench ceiling [-- SIZE ...]` (default 10,000 100,000 1,000,000);
//! `--baseline-secs S` bounds the baseline (default 60).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dataverse_emulator::{Emulator, EmulatorConfig, Limits};
use mapping::SourceId;
use pipeline::MemoryQueueConfig;
use pipeline::config::Config;
use pipeline::queue::Queue;
use pipeline::runner::{LocalPipeline, LocalQueues, RunTotals};
use pipeline::sync::{SyncSettings, start_sync};
use pipeline::upsert::UpsertPolicy;
use serde_json::{Value, json};

#[path = "support/memory.rs"]
mod memory;

#[global_allocator]
static GLOBAL: memory::Counting = memory::Counting;

const CHILD: &str = "CRM_SYNC_BENCH_CHILD";
const CONTACTS_PER_ACCOUNT: usize = 4;
/// The service-protection window, scaled from 300 s: limits and Retry-After scale with it.
const WINDOW_SECS: u64 = 30;
/// Execution time the emulator charges (and sleeps) per write operation.
const COST_PER_OPERATION: Duration = Duration::from_millis(2);
/// Upsert-queue messages the sync worker lets wait before it reads the next page.
const MAX_BACKLOG: usize = 100;
/// Operations per `$batch` request crm-sync sends here (Dataverse's maximum is 1,000).
const BATCH_OPERATIONS: usize = 1000;

/// Dataverse's per-user limits with the window scaled to `WINDOW_SECS`.
fn limits() -> Limits {
    let scale = WINDOW_SECS as f64 / 300.0;
    Limits {
        window: Duration::from_secs(WINDOW_SECS),
        max_requests: (6000.0 * scale) as u32,
        max_execution: Duration::from_secs_f64(1200.0 * scale),
        cost_per_operation: COST_PER_OPERATION,
        max_concurrency: 52,
        dop_hint: 50,
        simulate_cost: true,
    }
}

/// Records per second the limits allow: the request budget times operations per request, or
/// the execution budget over the cost of one operation, whichever is lower.
fn ceiling(ops_per_request: f64) -> f64 {
    let l = limits();
    let w = l.window.as_secs_f64();
    let by_requests = l.max_requests as f64 / w * ops_per_request;
    let by_execution = l.max_execution.as_secs_f64() / w / l.cost_per_operation.as_secs_f64();
    by_requests.min(by_execution)
}

fn main() {
    if let Ok(what) = std::env::var(CHILD) {
        child(&what);
        return;
    }
    let mut sizes = Vec::new();
    let mut baseline_secs = 60u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--baseline-secs" {
            baseline_secs = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
        } else if let Ok(n) = a.replace('_', "").parse() {
            sizes.push(n);
        }
    }
    if sizes.is_empty() {
        sizes = vec![10_000, 100_000, 1_000_000];
    }
    let l = limits();
    println!(
        "Dataverse emulator: per user {} requests and {} s of execution per {} s window (6,000 and 1,200 s per 300 s, scaled), {} concurrent, {} ms execution per write operation; crm-sync writes $batch requests of up to {BATCH_OPERATIONS} operations",
        l.max_requests,
        l.max_execution.as_secs(),
        WINDOW_SECS,
        l.max_concurrency,
        COST_PER_OPERATION.as_millis()
    );
    println!(
        "ceiling: {:.0} records/s (execution time binds; requests would allow {:.0}/s at {BATCH_OPERATIONS} per request)",
        ceiling(BATCH_OPERATIONS as f64),
        l.max_requests as f64 / WINDOW_SECS as f64 * BATCH_OPERATIONS as f64
    );
    println!();
    println!("1. initial sync, end to end");
    println!(
        "{:>9} {:>8} {:>10} {:>9} {:>10} {:>6} {:>12} {:>10} {:>10} {:>7}",
        "records",
        "secs",
        "records/s",
        "ceiling",
        "req/record",
        "429s",
        "CPU ms/1k",
        "peak heap",
        "peak RSS",
        "failed"
    );
    // The largest size is the steady state: the window's allowance no longer flatters it.
    let mut steady_rate = None;
    for n in &sizes {
        steady_rate = Some(sync_run(*n));
    }
    println!();
    println!(
        "2. the Power Automate any-CRM template's pattern (lookup, then create or update; one record at a time)"
    );
    let base = baseline(Duration::from_secs(baseline_secs));
    if let Some(ours) = steady_rate {
        println!(
            "   crm-sync / template pattern: {:.0}x ({ours:.0} vs {base:.1} records/s)",
            ours / base
        );
    }
}

/// A child: `salesforce:N` (an org of about N records) or `dataverse` (the emulator with the
/// scaled limits). Prints how to reach it, serves until stdin closes, then (Dataverse) prints
/// its counters as JSON.
fn child(what: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let wait_stdin = || {
            tokio::task::spawn_blocking(|| {
                let mut sink = String::new();
                while std::io::stdin().read_line(&mut sink).unwrap_or(0) > 0 {}
            })
        };
        if let Some(n) = what.strip_prefix("salesforce:") {
            let n: usize = n.parse().expect("record count");
            let accounts = n / (CONTACTS_PER_ACCOUNT + 1);
            let emu = crm_emulator::SalesforceEmulator::start(crm_emulator::SalesforceConfig {
                accounts,
                contacts_per_account: CONTACTS_PER_ACCOUNT,
                orphan_contacts: n - accounts * (CONTACTS_PER_ACCOUNT + 1),
                overlong_values: 0,
                daily_limit: 100_000_000,
                ..crm_emulator::SalesforceConfig::default()
            })
            .await
            .expect("emulator");
            let cfg = emu.config();
            println!(
                "{} {} {}",
                emu.token_url(),
                cfg.client_id,
                cfg.client_secret
            );
            std::io::stdout().flush().ok();
            wait_stdin().await.ok();
        } else {
            let emu = Emulator::start(EmulatorConfig {
                limits: limits(),
                ..EmulatorConfig::default()
            })
            .await
            .expect("emulator");
            let cfg = EmulatorConfig::default();
            println!(
                "{} {} {} {}",
                emu.base_url(),
                emu.token_url(),
                cfg.client_id,
                cfg.client_secret
            );
            std::io::stdout().flush().ok();
            wait_stdin().await.ok();
            let s = emu.stats();
            println!(
                "{}",
                json!({
                    "requests": s.requests,
                    "throttled": s.throttled,
                    "operations": s.operations,
                    "accounts": emu.rows("account").len(),
                    "contacts": emu.rows("contact").len(),
                })
            );
        }
    });
}

struct ChildProcess {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    first: Vec<String>,
}

impl ChildProcess {
    fn start(what: &str) -> ChildProcess {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .env(CHILD, what)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("emulator child");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("emulator line");
        let first = line.split_whitespace().map(str::to_string).collect();
        ChildProcess { child, out, first }
    }

    /// Closes its stdin and returns what it printed last.
    fn finish(mut self) -> Value {
        drop(self.child.stdin.take());
        let mut line = String::new();
        let _ = self.out.read_line(&mut line);
        let _ = self.child.wait();
        serde_json::from_str(&line).unwrap_or(Value::Null)
    }
}

fn config_toml(sf: &ChildProcess, dv: &ChildProcess) -> String {
    let [token_url, client_id, secret] = &sf.first[..] else {
        panic!("salesforce child: {:?}", sf.first);
    };
    let [dv_base, dv_token, dv_id, dv_secret] = &dv.first[..] else {
        panic!("dataverse child: {:?}", dv.first);
    };
    format!(
        r#"
[dataverse]
url = "{dv_base}"
token_url = "{dv_token}"
client_id = "{dv_id}"
client_secret = "{dv_secret}"
write_mode = "batch"
write_batch_size = {BATCH_OPERATIONS}
max_concurrency = 52

[[sources]]
id = "sf"
kind = "salesforce"
crm_choice = 1
base_url = "https://acme.my.salesforce.com"
[sources.connection]
auth = "salesforce-client-credentials"
token_url = "{token_url}"
client_id = "{client_id}"
client_secret = "{secret}"
"#
    )
}

/// This process's user + system CPU time.
fn cpu_time() -> Duration {
    let mut u = std::mem::MaybeUninit::<libc_rusage::Rusage>::zeroed();
    // SAFETY: getrusage writes a `struct rusage` into the pointer it is given.
    unsafe { libc_rusage::getrusage(0, u.as_mut_ptr()) };
    let u = unsafe { u.assume_init() };
    let tv = |t: libc_rusage::Timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// `getrusage(2)` without a libc dependency: the two leading `timeval`s of `struct rusage` on
/// 64-bit Linux, then fourteen longs.
mod libc_rusage {
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Timeval {
        pub tv_sec: i64,
        pub tv_usec: i64,
    }
    #[repr(C)]
    pub struct Rusage {
        pub ru_utime: Timeval,
        pub ru_stime: Timeval,
        pub rest: [i64; 14],
    }
    unsafe extern "C" {
        pub fn getrusage(who: i32, usage: *mut Rusage) -> i32;
    }
}

fn sync_run(n: usize) -> f64 {
    let sf = ChildProcess::start(&format!("salesforce:{n}"));
    let dv = ChildProcess::start("dataverse");
    let toml = config_toml(&sf, &dv);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    memory::reset_peak_rss();
    memory::reset_peak_heap();
    let cpu0 = cpu_time();
    let started = Instant::now();
    rt.block_on(async {
        let config = Config::parse(&toml, "bench.toml").expect("config");
        let sources = config.mappers().expect("sources");
        let crms = config.crm_readers(&sources).expect("readers");
        let pipeline = Arc::new(LocalPipeline {
            sources: Arc::new(sources),
            crms,
            writer: Arc::new(config.dataverse_writer().expect("dataverse client")),
            queues: LocalQueues::new(MemoryQueueConfig::default()),
            settings: SyncSettings {
                page_size: 2000,
                ..SyncSettings::default()
            },
            policy: UpsertPolicy {
                parent_delay: Duration::from_millis(200),
                ..UpsertPolicy::default()
            },
            batch_size: 10,
            recent: Default::default(),
            metrics: Default::default(),
            versions: Default::default(),
        });
        let src = SourceId::new("sf").expect("id");
        start_sync(&src, &[], &pipeline.sync_ports())
            .await
            .expect("start");
        work(pipeline).await
    });
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_time() - cpu0;
    let heap = memory::peak_heap_mib();
    let rss = memory::peak_rss_mib();
    drop(sf.finish());
    let stats = dv.finish();
    let rows = stats["accounts"].as_u64().unwrap_or(0) + stats["contacts"].as_u64().unwrap_or(0);
    let requests = stats["requests"].as_u64().unwrap_or(0);
    let rate = rows as f64 / secs;
    // Records not in Dataverse at the end (the dead-letter queues were checked empty).
    let failed = (n as u64).saturating_sub(rows);
    println!(
        "{:>9} {:>8.1} {:>10.0} {:>8.0}% {:>10.4} {:>6} {:>12.1} {:>6.1} MiB {:>6} MiB {:>7}",
        n,
        secs,
        rate,
        100.0 * rate / ceiling(BATCH_OPERATIONS as f64),
        requests as f64 / n as f64,
        stats["throttled"].as_u64().unwrap_or(0),
        cpu.as_secs_f64() * 1000.0 / (n as f64 / 1000.0),
        heap,
        rss.map_or("?".into(), |m| m.to_string()),
        failed,
    );
    rate
}

/// One sync worker and four upsert workers, as `crm-sync serve` runs them, until both queues
/// stay empty.
async fn work(pipeline: Arc<LocalPipeline>) {
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let sync = {
        let (p, done) = (pipeline.clone(), done.clone());
        tokio::spawn(async move {
            let mut t = RunTotals::default();
            while !done.load(Ordering::Relaxed) {
                // As serve does: the CRM is not read further ahead of Dataverse than this, so
                // memory stays flat however large the org (on AWS, SQS holds the backlog).
                if p.queues.upsert.len() > MAX_BACKLOG {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                if p.sync_batch(Duration::ZERO, &mut t).await == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    for _ in 0..4 {
        let (p, done) = (pipeline.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = RunTotals::default();
            while !done.load(Ordering::Relaxed) {
                if p.upsert_batch(Duration::ZERO, &mut t).await == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    let mut quiet = 0;
    while quiet < 3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        quiet = if pipeline.queues.is_idle() {
            quiet + 1
        } else {
            0
        };
    }
    done.store(true, Ordering::Relaxed);
    sync.await.expect("sync worker");
    for t in tasks {
        t.await.expect("upsert worker");
    }
    assert!(
        pipeline.queues.sync_dlq.is_empty() && pipeline.queues.upsert_dlq.is_empty(),
        "dead letters in a clean run"
    );
}

/// The template's pattern over the records of a 2,000-record org, for at most `limit`:
/// records/s.
fn baseline(limit: Duration) -> f64 {
    let n = 2000;
    let sf = ChildProcess::start(&format!("salesforce:{n}"));
    let dv = ChildProcess::start("dataverse");
    let toml = config_toml(&sf, &dv);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (done, secs, requests) = rt.block_on(async {
        let config = Config::parse(&toml, "bench.toml").expect("config");
        let sources = config.mappers().expect("sources");
        let crms = config.crm_readers(&sources).expect("readers");
        // The records as the CRM hands them over (the template is triggered per record), mapped
        // to the rows to write: the sync step into a queue that keeps them.
        let pipeline = LocalPipeline {
            sources: Arc::new(sources),
            crms,
            writer: Arc::new(config.dataverse_writer().expect("client")),
            queues: LocalQueues::new(MemoryQueueConfig::default()),
            settings: SyncSettings {
                page_size: 2000,
                ..SyncSettings::default()
            },
            policy: UpsertPolicy::default(),
            batch_size: 10,
            recent: Default::default(),
            metrics: Default::default(),
            versions: Default::default(),
        };
        let src = SourceId::new("sf").expect("id");
        start_sync(&src, &[], &pipeline.sync_ports())
            .await
            .expect("start");
        let mut t = RunTotals::default();
        while pipeline.sync_batch(Duration::ZERO, &mut t).await > 0 {}
        let mapper = pipeline.sources.get(&src).expect("source");
        let ctx = mapper.row_context(config.dataverse.identity);
        let mut ops = Vec::new();
        while let Ok(batch) = pipeline.queues.upsert.receive(10, Duration::ZERO).await {
            if batch.is_empty() {
                break;
            }
            for m in batch {
                if let Ok(env) = pipeline::message::decode(&m.body)
                    && let pipeline::message::Message::Changes(c) = env.body
                {
                    for change in c.changes {
                        if let Ok(Some(op)) = mapping::row::build(&change, &ctx) {
                            ops.push((change.entity, change.source_id.clone(), op));
                        }
                    }
                }
                let _ = pipeline.queues.upsert.delete(&m.receipt).await;
            }
        }
        let [dv_base, dv_token, dv_id, dv_secret] = &dv.first[..] else {
            panic!("dataverse child");
        };
        let http = reqwest::Client::new();
        let token: Value = http
            .post(dv_token)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", dv_id.as_str()),
                ("client_secret", dv_secret.as_str()),
                ("scope", &format!("{dv_base}/.default")),
            ])
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("token JSON");
        let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap_or(""));
        let api = format!("{dv_base}/api/data/v9.2");
        let started = Instant::now();
        let (mut done, mut requests) = (0usize, 0u64);
        for (entity, source_id, op) in ops {
            if started.elapsed() >= limit {
                break;
            }
            let (set, id_col) = match entity {
                mapping::Entity::Account => ("accounts", "accountid"),
                mapping::Entity::Contact => ("contacts", "contactid"),
            };
            let filter = format!(
                "msdyn_source_crm_id eq '{}' and msdyn_source_crm eq 1",
                source_id.replace('\'', "''")
            );
            // Lookup, then create or update: each request waits out a 429 as the flow's
            // connector does (Retry-After).
            let found = send(&http, &bearer, &mut requests, |h| {
                let q = format!("$filter={}&$select={id_col}", url_escape(&filter));
                h.get(format!("{api}/{set}?{q}"))
            })
            .await;
            let existing = found["value"][0][id_col].as_str().map(str::to_string);
            let body = op.body.clone().unwrap_or_default();
            match existing {
                Some(id) => {
                    send(&http, &bearer, &mut requests, |h| {
                        h.patch(format!("{api}/{set}({id})")).json(&body)
                    })
                    .await;
                }
                None => {
                    // The same row id crm-sync derives, so contacts' account binds resolve.
                    let mut body = body.clone();
                    if let Some(id) = op
                        .path
                        .split_once('(')
                        .and_then(|(_, r)| r.strip_suffix(')'))
                    {
                        body.insert(id_col.into(), json!(id));
                    }
                    send(&http, &bearer, &mut requests, |h| {
                        h.post(format!("{api}/{set}")).json(&body)
                    })
                    .await;
                }
            }
            done += 1;
        }
        (done, started.elapsed().as_secs_f64(), requests)
    });
    drop(sf.finish());
    let stats = dv.finish();
    let rate = done as f64 / secs;
    println!(
        "   {done} records in {secs:.1} s: {rate:.1} records/s, {:.1} requests per record, {} 429s",
        requests as f64 / done.max(1) as f64,
        stats["throttled"].as_u64().unwrap_or(0)
    );
    rate
}

/// One request of the baseline, retried after a 429's Retry-After; its JSON body (or null).
async fn send(
    http: &reqwest::Client,
    bearer: &str,
    requests: &mut u64,
    build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Value {
    loop {
        *requests += 1;
        let r = build(http)
            .header("authorization", bearer)
            .send()
            .await
            .expect("request");
        if r.status().as_u16() == 429 {
            let wait = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        assert!(
            r.status().is_success(),
            "baseline request failed: {}",
            r.status()
        );
        return r.json().await.unwrap_or(Value::Null);
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
