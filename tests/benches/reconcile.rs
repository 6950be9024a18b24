//! `crm-sync reconcile` of a large table: records per second, and peak memory, which must not
//! grow with the record count (the CRM side is spilled to a temporary SQLite file, Dataverse is
//! read a page at a time).
//!
//! A child process (this binary, re-executed) runs the Salesforce emulator with about N records
//! and the Dataverse emulator, fills Dataverse through the real pipeline (an initial sync), then
//! drifts 1% of the accounts behind the pipeline's back (updated in the CRM without a webhook),
//! so the stores, whose size is the org's, are not counted here. This process reconciles both
//! sides over HTTP and measures. Peak heap is the Rust allocator's (as in `initial_sync`);
//! SQLite allocates through its own malloc, so its page cache (bounded by `cache_size`) shows in
//! the peak RSS only. Run: `cargo bench -p e2e --bench reconcile [-- SIZE ...]` (default 50,000).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crm_sync::reconcile::{Options, reconcile};
use dataverse::{Secret, WebApiClient, WebApiConfig, WriteMode};
use mapping::SourceId;
use pipeline::config::Config;
use pipeline::sync::start_sync;

#[path = "support/memory.rs"]
mod memory;

#[global_allocator]
static GLOBAL: memory::Counting = memory::Counting;

const CHILD: &str = "CRM_SYNC_BENCH_RECONCILE_RECORDS";
const CONTACTS_PER_ACCOUNT: usize = 4;

fn sf_toml(token_url: &str, client_id: &str, secret: &str) -> String {
    format!(
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
    )
}

fn main() {
    if let Ok(n) = std::env::var(CHILD) {
        serve_emulators(n.parse().expect("record count"));
        return;
    }
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![50_000]
    } else {
        sizes
    };
    println!(
        "{:>9} {:>8} {:>10} {:>9} {:>9} {:>14} {:>12}",
        "records", "secs", "records/s", "in sync", "different", "peak heap", "peak RSS"
    );
    for n in sizes {
        run(n);
    }
}

/// Child process: a synced org of about `n` records with 1% of its accounts drifted, until
/// stdin closes.
fn serve_emulators(n: usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let accounts = n / (CONTACTS_PER_ACCOUNT + 1);
        let sf = crm_emulator::SalesforceEmulator::start(crm_emulator::SalesforceConfig {
            accounts,
            contacts_per_account: CONTACTS_PER_ACCOUNT,
            orphan_contacts: n - accounts * (CONTACTS_PER_ACCOUNT + 1),
            daily_limit: 10_000_000,
            ..crm_emulator::SalesforceConfig::default()
        })
        .await
        .expect("emulator");
        let dv = dataverse_emulator::Emulator::start(dataverse_emulator::EmulatorConfig::default())
            .await
            .expect("emulator");
        let cfg = sf.config();
        let toml = sf_toml(&sf.token_url(), &cfg.client_id, &cfg.client_secret);
        let config = Config::parse(&toml, "bench.toml").expect("config");
        let sources = config.sources().expect("sources");
        let crms = config.crm_readers(&sources).expect("readers");
        let p = crm_sync::emulated::local_pipeline(sources, crms, &dv, 2000);
        start_sync(&SourceId::new("sf").expect("id"), &[], &p.sync_ports())
            .await
            .expect("start");
        let (_, idle) = p.run_until_idle(Duration::from_secs(1800)).await;
        assert!(idle, "the initial sync did not finish");
        for id in sf.ids("Account").iter().step_by(100) {
            let fields = serde_json::json!({"Name": "Drifted Without A Webhook"});
            sf.update(id, fields.as_object().cloned().unwrap_or_default())
                .expect("update");
        }
        let def = dataverse_emulator::EmulatorConfig::default();
        println!(
            "{} {} {} {} {} {} {}",
            sf.token_url(),
            cfg.client_id,
            cfg.client_secret,
            dv.api_url(),
            dv.token_url(),
            def.client_id,
            def.client_secret
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
        .expect("emulator URLs");
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [
        sf_token,
        sf_client,
        sf_secret,
        api_url,
        dv_token,
        dv_client,
        dv_secret,
    ] = parts[..]
    else {
        panic!("unexpected emulator line {line:?}");
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (secs, report) = rt.block_on(async {
        let config =
            Config::parse(&sf_toml(sf_token, sf_client, sf_secret), "bench.toml").expect("config");
        let sources = config.mappers().expect("sources");
        let crms = config.crm_readers(&sources).expect("readers");
        let src = SourceId::new("sf").expect("id");
        let dataverse = WebApiClient::new(WebApiConfig {
            api_url: api_url.to_string(),
            token_url: dv_token.to_string(),
            client_id: dv_client.to_string(),
            client_secret: Secret::new(dv_secret),
            client_certificate: None,
            scope: format!("{}/.default", api_url.trim_end_matches("/api/data/v9.2/")),
            mode: WriteMode::Auto,
            max_concurrency: 4,
            request_timeout: Duration::from_secs(60),
            max_attempts: 5,
            max_throttle_wait: Duration::from_secs(30),
        })
        .expect("client");
        let opts = Options {
            crm_page_size: 2000,
            ..Options::default()
        };
        memory::reset_peak_heap();
        let started = Instant::now();
        let report = reconcile(
            sources.get(&src).expect("source"),
            sources.identity,
            crms[&src].as_ref(),
            &dataverse,
            &opts,
            None,
        )
        .await
        .expect("reconcile");
        (started.elapsed().as_secs_f64(), report)
    });
    drop(child.stdin.take());
    let _ = child.wait();
    let in_sync: u64 = report.entities.iter().map(|e| e.in_sync).sum();
    let different: u64 = report.entities.iter().map(|e| e.different).sum();
    assert_eq!(
        report
            .entities
            .iter()
            .map(|e| e.missing.count + e.orphaned.count)
            .sum::<u64>(),
        0,
        "{report}"
    );
    println!(
        "{:>9} {:>8.2} {:>10.0} {:>9} {:>9} {:>10.1} MiB {:>8} MiB",
        n,
        secs,
        n as f64 / secs,
        in_sync,
        different,
        memory::peak_heap_mib(),
        memory::peak_rss_mib().map_or("?".into(), |m| m.to_string()),
    );
}
