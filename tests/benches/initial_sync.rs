//! A 100,000-record initial sync from the Salesforce emulator through the real client and
//! mapping into the upsert queue: records per second, and peak memory at several sizes, which
//! must stay flat as the record count grows (one page in memory at a time, not the whole org).
//!
//! The emulator runs in a child process (this binary, re-executed), so its store, whose size
//! is the org's, is not counted. The upsert queue is a sink that counts what it is given and
//! keeps nothing, as SQS keeps messages on its side. Run:
//! `cargo bench -p e2e --bench initial_sync [-- SIZE ...]` (default 25,000 50,000 100,000).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mapping::SourceId;
use pipeline::MemoryQueueConfig;
use pipeline::config::Config;
use pipeline::memory_queue::MemoryQueue;
use pipeline::queue::{OutMessage, Queue, QueueError, Received};
use pipeline::sync::{SyncPorts, SyncSettings, handle_sync_message, start_sync};

#[path = "support/memory.rs"]
mod memory;

#[global_allocator]
static GLOBAL: memory::Counting = memory::Counting;

const CHILD: &str = "CRM_SYNC_BENCH_EMULATOR_RECORDS";
const CONTACTS_PER_ACCOUNT: usize = 4;

/// The upsert queue as seen from the sync step: accepts, counts, keeps nothing.
#[derive(Default)]
struct Sink {
    messages: AtomicU64,
    bytes: AtomicU64,
    changes: AtomicU64,
}

#[async_trait]
impl Queue for Sink {
    fn name(&self) -> &str {
        "upsert-sink"
    }
    async fn send(&self, messages: Vec<OutMessage>) -> Result<(), QueueError> {
        self.messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        for m in &messages {
            self.bytes.fetch_add(m.body.len() as u64, Ordering::Relaxed);
            // Decoded to count the changes: proof that every record reached the queue.
            if let Ok(env) = pipeline::message::decode(&m.body)
                && let pipeline::message::Message::Changes(batch) = env.body
            {
                self.changes
                    .fetch_add(batch.changes.len() as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }
    async fn receive(&self, _: usize, _: Duration) -> Result<Vec<Received>, QueueError> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &str) -> Result<(), QueueError> {
        Ok(())
    }
    async fn release(&self, _: &str, _: Duration) -> Result<(), QueueError> {
        Ok(())
    }
}

fn main() {
    if let Ok(n) = std::env::var(CHILD) {
        serve_emulator(n.parse().expect("record count"));
        return;
    }
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![25_000, 50_000, 100_000]
    } else {
        sizes
    };
    println!(
        "{:>9} {:>8} {:>10} {:>7} {:>9} {:>9} {:>9} {:>14} {:>12}",
        "records",
        "secs",
        "records/s",
        "pages",
        "changes",
        "messages",
        "MiB sent",
        "peak heap",
        "peak RSS"
    );
    for n in sizes {
        run(n);
    }
}

/// Child process: an org of about `n` records, until stdin closes.
fn serve_emulator(n: usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let accounts = n / (CONTACTS_PER_ACCOUNT + 1);
        let emu = crm_emulator::SalesforceEmulator::start(crm_emulator::SalesforceConfig {
            accounts,
            contacts_per_account: CONTACTS_PER_ACCOUNT,
            orphan_contacts: n - accounts * (CONTACTS_PER_ACCOUNT + 1),
            daily_limit: 10_000_000,
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
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).unwrap_or(0) > 0 {}
        })
        .await
        .ok();
    });
}

fn run(n: usize) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD, n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("emulator child");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("emulator URL");
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [token_url, client_id, secret] = parts[..] else {
        panic!("unexpected emulator line {line:?}");
    };
    let toml = format!(
        r#"
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
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (pages, secs, sink) = rt.block_on(async {
        let config = Config::parse(&toml, "bench.toml").expect("config");
        let sources = config.sources().expect("sources");
        let crms = config.crm_readers(&sources).expect("readers");
        let sync = MemoryQueue::new("sync", MemoryQueueConfig::default(), None);
        let sink = Arc::new(Sink::default());
        let ports = SyncPorts {
            metrics: &pipeline::Metrics::new(),
            sources: &sources,
            crms: &crms,
            upsert: sink.as_ref(),
            sync: &sync,
        };
        let settings = SyncSettings {
            page_size: 2000,
            ..SyncSettings::default()
        };
        let src = SourceId::new("sf").expect("id");
        memory::reset_peak_heap();
        let started = Instant::now();
        start_sync(&src, &[], &ports).await.expect("start");
        let mut pages = 0u64;
        loop {
            let batch = sync.receive(1, Duration::ZERO).await.expect("receive");
            let Some(m) = batch.into_iter().next() else {
                break;
            };
            handle_sync_message(&m.body, &ports, &settings)
                .await
                .expect("page");
            sync.delete(&m.receipt).await.expect("delete");
            if let Ok(env) = pipeline::message::decode(&m.body)
                && let pipeline::message::Message::SyncPage(job) = env.body
            {
                pages = job.counts.pages + 1;
            }
        }
        (pages, started.elapsed().as_secs_f64(), sink)
    });
    drop(child.stdin.take());
    let _ = child.wait();
    let sent = sink.messages.load(Ordering::Relaxed);
    let mib = sink.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64;
    println!(
        "{:>9} {:>8.2} {:>10.0} {:>7} {:>9} {:>9} {:>9.1} {:>10.1} MiB {:>8} MiB",
        n,
        secs,
        n as f64 / secs,
        pages,
        sink.changes.load(Ordering::Relaxed),
        sent,
        mib,
        memory::peak_heap_mib(),
        memory::peak_rss_mib().map_or("?".into(), |m| m.to_string()),
    );
}
