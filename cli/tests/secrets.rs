//! No secret leaks: a full run of `crm-sync serve` (debug logs, as JSON) with recognisable
//! secret values — the Dataverse client secret, the Salesforce client secret, the webhook
//! secret — through an initial sync, signed webhooks, a wrongly signed one, a notification that
//! cannot be mapped (a DLQ entry with its reason), `sync status`, `check`, `dlq list|show`, and a
//! serve whose Dataverse secret is wrong (its errors logged). None of the values may appear in a
//! log line, a command's output, an HTTP answer, or anywhere in the state file (every queue
//! message and DLQ entry, the ledger).

#[path = "support/world.rs"]
mod world;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use chrono::Utc;
use crm_emulator::notify::ContractNotifier;
use serde_json::json;
use world::{DATAVERSE_SECRET, SALESFORCE_SECRET, WEBHOOK_SECRET, World, obj};

const SECRETS: [&str; 3] = [DATAVERSE_SECRET, SALESFORCE_SECRET, WEBHOOK_SECRET];

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crm-sync"))
}

fn output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Starts serve with debug JSON logs into `log`; returns it and its webhook base URL.
fn serve(w: &World, config: &Path, log: &Path) -> (Child, String) {
    let mut child = bin()
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--state", w.state.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--page-size", "200"])
        .args(["--parent-retry-delay", "1", "--log", "debug", "--log-json"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("serve printed its URL: {line}"))
        .trim_end_matches("{source},")
        .to_string();
    (child, base)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    for _ in 0..300 {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn read_bytes(path: &Path) -> Vec<u8> {
    let mut b = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        f.read_to_end(&mut b).unwrap();
    }
    b
}

fn leaked(bytes: &[u8]) -> Option<&'static str> {
    SECRETS
        .into_iter()
        .find(|s| bytes.windows(s.len()).any(|w| w == s.as_bytes()))
}

fn assert_clean(what: &str, bytes: &[u8]) {
    if let Some(s) = leaked(bytes) {
        panic!("{what} contains the secret {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_outputs_answers_or_queues() {
    let w = World::start("secrets", 120).await;
    let log = w.dir.join("serve.log");
    let (child, base) = serve(&w, &w.config, &log);
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut run = |name: &str, args: &[&str]| {
        let o = bin().args(args).output().unwrap();
        outputs.push((name.to_string(), output(&o)));
        o
    };

    let config = w.config.to_str().unwrap().to_string();
    let state = w.state.to_str().unwrap().to_string();
    let o = run(
        "sync start",
        &[
            "sync",
            "start",
            "--config",
            &config,
            "--state",
            &state,
            "--source",
            "salesforce",
        ],
    );
    assert!(o.status.success(), "{}", output(&o));
    let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = run(
        "sync status",
        &["sync", "status", "--state", &state, "--wait", "180", &job],
    );
    assert!(output(&o).contains("finished"), "{}", output(&o));

    // Signed webhooks, one the mapping refuses (a contact without a last name: a DLQ entry with
    // its reason), and one signed with the wrong secret (401).
    let notifier = w.sf.notify_to(&format!("{base}salesforce"), WEBHOOK_SECRET);
    let acc =
        w.sf.put_account(obj(json!({"Name": "Leak Check Account"})))
            .unwrap();
    w.sf.put_contact(obj(json!({"LastName": "Leak", "AccountId": acc})))
        .unwrap();
    assert!(notifier.idle(Duration::from_secs(60)).await);
    let unmappable = ContractNotifier::start(format!("{base}salesforce"), WEBHOOK_SECRET.into());
    unmappable.send(
        "contact",
        "create",
        "003000000000ZZZAAA",
        Utc::now(),
        Some(json!({"Id": "003000000000ZZZAAA", "Email": "nobody@example.com"})),
    );
    assert!(unmappable.idle(Duration::from_secs(30)).await);
    let wrong = ContractNotifier::start(format!("{base}salesforce"), "not-the-secret".into());
    wrong.send("account", "delete", "001000000000ZZZAAA", Utc::now(), None);
    assert!(wrong.idle(Duration::from_secs(30)).await);
    let answers: Vec<String> = [&notifier, &unmappable, &wrong]
        .iter()
        .flat_map(|n| n.deliveries())
        .map(|d| format!("{d:?}"))
        .collect();
    assert!(
        wrong.deliveries().iter().all(|d| d.status == Some(401)),
        "{answers:?}"
    );
    let c = w.converged(Duration::from_secs(60)).await;
    assert!(c.is_exact(), "{c}");

    let o = run("dlq list", &["dlq", "list", "--state", &state]);
    let listing = output(&o);
    assert!(listing.contains("could not be mapped"), "{listing}");
    run("check", &["check", "--config", &config]);
    stop(child);
    let o = run(
        "dlq list --json",
        &["dlq", "list", "--state", &state, "--json"],
    );
    assert!(o.status.success(), "{}", output(&o));
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .expect("a DLQ entry"),
    )
    .unwrap();
    let id = first["id"].as_str().expect("an id").to_string();
    let o = run("dlq show", &["dlq", "show", "--state", &state, &id]);
    assert!(o.status.success(), "{}", output(&o));

    // A serve whose Dataverse secret is wrong: its token errors are logged.
    let bad_config = w.dir.join("bad.toml");
    let wrong_secret = w.dir.join("wrong-dataverse-secret");
    std::fs::write(&wrong_secret, "dv-wrong-Hh3Jk9\n").unwrap();
    let text = std::fs::read_to_string(&w.config).unwrap().replace(
        &w.dir.join("dataverse-secret").display().to_string(),
        &wrong_secret.display().to_string(),
    );
    std::fs::write(&bad_config, text).unwrap();
    let bad_log = w.dir.join("bad-serve.log");
    let (child, base) = serve(&w, &bad_config, &bad_log);
    let again = w.sf.notify_to(&format!("{base}salesforce"), WEBHOOK_SECRET);
    w.sf.put_account(obj(json!({"Name": "Never Written"})))
        .unwrap();
    assert!(again.idle(Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop(child);
    let bad = read_bytes(&bad_log);
    assert!(
        String::from_utf8_lossy(&bad).contains("auth"),
        "the refused token is logged: {}",
        String::from_utf8_lossy(&bad)
    );
    assert!(!String::from_utf8_lossy(&bad).contains("dv-wrong-Hh3Jk9"));

    // The search finds them where they are meant to be: the secret files serve reads.
    for file in ["dataverse-secret", "salesforce-secret", "webhook-secret"] {
        assert!(leaked(&read_bytes(&w.dir.join(file))).is_some(), "{file}");
    }
    // Nowhere: the logs (debug level), every command's output, the HTTP answers, the state
    // file with every queue message, DLQ entry and ledger row.
    let logs = read_bytes(&log);
    assert!(logs.len() > 1000, "serve logged at debug level");
    assert_clean("serve's debug log", &logs);
    assert_clean("the second serve's log", &bad);
    for (name, text) in &outputs {
        assert_clean(name, text.as_bytes());
    }
    assert_clean("the webhook answers", answers.join("\n").as_bytes());
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = format!("{}{suffix}", w.state.display());
        assert_clean(&path, &read_bytes(Path::new(&path)));
    }
    assert!(
        read_bytes(&w.state).len() > 10_000,
        "the state file was read"
    );
}
