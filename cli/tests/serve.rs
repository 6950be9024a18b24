//! `crm-sync serve` and `crm-sync sync start|status` end to end, on the embedded Dataverse and
//! Salesforce emulators: a config file a user would write (pointed at the emulators), the
//! initial sync through the durable queues, a stop and a crash in the middle, signed webhooks to
//! the endpoint, and the comparison of Dataverse with the CRM record for record.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crm_sync::jobs::{JobStatus, LocalState};
use crm_sync::serve::Serve;
use crm_sync::sync_cmd;
use serde_json::{Value, json};
use world::{WEBHOOK_SECRET, World, obj, scratch};

#[path = "support/world.rs"]
mod world;

async fn wait_for_pages(w: &World, job: &str, pages: u64) -> JobStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = w.status(job);
        if s.counts.pages >= pages || Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The initial sync runs through serve's durable queues, is stopped after a few pages and
/// resumed by a new serve on the same state file; then signed webhooks posted to the endpoint
/// land. Dataverse ends equal to the CRM, record for record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_syncs_survives_a_restart_and_takes_webhooks() {
    let w = World::start("restart", 1000).await;
    let serve = Serve::start(&w.options()).await.unwrap();
    let job = sync_cmd::start(&w.start_args()).await.unwrap();
    assert_eq!(w.status(&job).entities, ["account", "contact"]);
    let before = wait_for_pages(&w, &job, 3).await;
    serve.shutdown().await;
    let stopped = w.status(&job);
    assert!(
        stopped.counts.pages >= before.counts.pages && !stopped.is_finished(),
        "stopped in the middle: {stopped}"
    );
    assert!(!w.comparison().is_exact(), "not everything is written yet");

    // A new serve on the same state file takes up where the first stopped.
    let serve = Serve::start(&w.options()).await.unwrap();
    let state = LocalState::open(&w.state).unwrap();
    let done = sync_cmd::wait(&state, Some(&job), Duration::from_secs(180))
        .await
        .unwrap();
    let s = &done[0];
    assert_eq!(s.state(), "finished", "{s}");
    let (accounts, contacts) = (w.sf.count("Account") as u64, w.sf.count("Contact") as u64);
    assert!(s.counts.read >= accounts + contacts, "{s}");
    assert_eq!(s.dead_lettered, 0, "{s}");
    assert_eq!(
        (
            s.snapshot_totals.get("account").copied(),
            s.snapshot_totals.get("contact").copied()
        ),
        (Some(accounts), Some(contacts)),
        "{s}"
    );
    let c = w.comparison();
    assert!(c.is_exact(), "{c}");
    assert_eq!(c.matched as u64, accounts + contacts);

    // Signed webhooks (the contract HMAC, as the Apex notifier sends them) to serve's endpoint.
    let notifier = w.sf.notify_to(
        &format!("{}salesforce", serve.webhook_base_url()),
        WEBHOOK_SECRET,
    );
    let acc =
        w.sf.put_account(obj(
            json!({"Name": "Webhook Account", "Phone": "+1 415 555 0100"}),
        ))
        .unwrap();
    w.sf.put_contact(obj(
        json!({"LastName": "Hooked", "FirstName": "Web", "Email": "web@example.com", "AccountId": acc}),
    ))
    .unwrap();
    let contacts = w.sf.ids("Contact");
    w.sf.update(&contacts[0], obj(json!({"Email": "moved@example.org"})))
        .unwrap();
    assert!(w.sf.delete(&contacts[1]));
    assert!(notifier.idle(Duration::from_secs(60)).await);
    for d in notifier.deliveries() {
        assert!(d.status.is_some_and(|s| (200..300).contains(&s)), "{d:?}");
    }
    let c = w.converged(Duration::from_secs(60)).await;
    assert!(c.is_exact(), "{c}");
    let moved =
        w.dv.rows("contact")
            .into_iter()
            .filter(|r| r.get("emailaddress1") == Some(&json!("moved@example.org")))
            .count();
    assert_eq!(moved, 1);

    // The counters of this serve (the second one) on GET /metrics, per source and entity.
    let metrics_url = serve.webhook_base_url().replace("/webhooks/", "/metrics");
    let m: serde_json::Value = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let contacts = &m["counters"]["salesforce/contact"];
    assert!(contacts["ChangesReceived"].as_u64() >= Some(3), "{m}");
    assert!(contacts["RecordsRead"].as_u64() > Some(0), "{m}");
    assert!(contacts["Deleted"].as_u64() >= Some(1), "{m}");
    assert!(
        m["counters"]["salesforce/account"]["SyncPages"].as_u64() > Some(0),
        "{m}"
    );
    assert!(m["dataverse_latency_ms"]["count"].as_u64() > Some(0), "{m}");
    serve.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The binary, as a user runs it.

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crm-sync"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("runs")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Starts `crm-sync serve` on any free port; returns the child and the webhook base URL it
/// printed.
fn spawn_serve(w: &World) -> (Child, String) {
    let mut child = bin()
        .args([
            "serve",
            "--config",
            w.config.to_str().unwrap(),
            "--state",
            w.state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--page-size",
            "200",
            "--parent-retry-delay",
            "1",
            "--log",
            "warn",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("serve printed its URL: {line}"))
        .trim_end_matches("{source},")
        .to_string();
    (child, url)
}

fn status_json(w: &World, job: &str) -> Value {
    let o = run(&[
        "sync",
        "status",
        "--json",
        "--state",
        w.state.to_str().unwrap(),
        job,
    ]);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)))
}

/// serve is killed (SIGKILL, no chance to clean up) in the middle of a sync; a new serve on the
/// same state file finishes it and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_a_sync_loses_nothing() {
    let w = World::start("crash", 1000).await;
    let (mut child, _) = spawn_serve(&w);
    let o = run(&[
        "sync",
        "start",
        "--config",
        w.config.to_str().unwrap(),
        "--state",
        w.state.to_str().unwrap(),
        "--source",
        "salesforce",
        "--entity",
        "contact",
        "--entity",
        "account",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while status_json(&w, &job)["pages"].as_u64() < Some(3) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_crash = status_json(&w, &job);
    assert_ne!(at_crash["state"], "finished", "{at_crash}");

    let (mut child, _) = spawn_serve(&w);
    let o = run(&[
        "sync",
        "status",
        "--wait",
        "180",
        "--state",
        w.state.to_str().unwrap(),
        &job,
    ]);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains(&format!("job {job}  finished")), "{out}");
    assert!(out.contains("0 dead-lettered"), "{out}");
    let c = w.comparison();
    assert!(c.is_exact(), "{c}");
}

/// A second serve on a state file in use is refused, naming the file; the first stops on
/// Ctrl-C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_serve_per_state_file() {
    let w = World::start("lock", 5).await;
    let (mut child, url) = spawn_serve(&w);
    assert!(url.ends_with("/webhooks/"), "{url}");
    let o = run(&[
        "serve",
        "--config",
        w.config.to_str().unwrap(),
        "--state",
        w.state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("in use by another"),
        "{}",
        text(&o)
    );
    // Ctrl-C (SIGINT) stops the first one gracefully: exit code 0.
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGINT");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

/// Unusable input is exit code 2 with an error naming the file and the key.
#[test]
fn bad_input_is_exit_2_naming_the_key() {
    let dir = scratch("bad");
    let state = dir.join("s.sqlite").display().to_string();
    let source = "[[sources]]\nid = \"sf\"\nkind = \"salesforce\"\ncrm_choice = 1\nbase_url = \"https://acme.my.salesforce.com\"\n";
    let cases = [
        (
            "[dataverse]\nurl = \"https://contoso.crm.dynamics.com\"\ntenant = \"t\"\nclient_id = \"c\"\nclient_secret = \"env:X\"\nmax_concurrency = 100\n",
            "dataverse.max_concurrency",
        ),
        (
            "[dataverse]\nurl = \"http://contoso.crm.dynamics.com\"\ntenant = \"t\"\nclient_id = \"c\"\nclient_secret = \"env:X\"\n",
            "dataverse.url",
        ),
        // serve needs to know where Dataverse is.
        (source, "dataverse.url"),
        (
            "[dataverse]\nurl = \"https://contoso.crm.dynamics.com\"\ntenant = \"t\"\nclient_id = \"c\"\n",
            "dataverse.client_secret",
        ),
        (
            "[dataverse]\nurl = \"https://contoso.crm.dynamics.com\"\ntenant = \"t\"\nclient_id = \"c\"\nclient_secret = \"env:CRM_SYNC_TEST_SURELY_UNSET\"\n",
            "CRM_SYNC_TEST_SURELY_UNSET",
        ),
        ("[dataverse]\nidentity = \"by-magic\"\n", "line 2"),
    ];
    for (i, (content, key)) in cases.iter().enumerate() {
        let config = write(&dir, &format!("c{i}.toml"), content);
        let o = run(&[
            "serve",
            "--config",
            &config,
            "--state",
            &state,
            "--listen",
            "127.0.0.1:0",
        ]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{out}");
        assert!(out.contains(key) && out.contains(&config), "{key}: {out}");
    }
    // sync start: an unknown source, a source without a connection.
    let config = write(&dir, "src.toml", source);
    let o = run(&[
        "sync", "start", "--config", &config, "--state", &state, "--source", "nope",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no source `nope`"), "{}", text(&o));
    let o = run(&[
        "sync", "start", "--config", &config, "--state", &state, "--source", "sf",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("sources[0].connection"), "{}", text(&o));
    // status: no state file (and none is created), an unknown job.
    let missing = dir.join("missing.sqlite");
    let o = run(&["sync", "status", "--state", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!missing.exists());
    drop(LocalState::open(Path::new(&state)).unwrap());
    let o = run(&["sync", "status", "--state", &state]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no sync jobs yet"), "{}", text(&o));
    let o = run(&["sync", "status", "--state", &state, "no-such-job"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no job no-such-job"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
