//! `crm-sync serve --stack-outputs`: the binary works a deployed stack's SQS queues (moto here,
//! created as the template declares them) instead of its state file, as the stack's functions
//! would, and records the job in the stack's run ledger (DynamoDB on moto). An initial sync
//! started with `sync start --sqs-queue-url --jobs-table`, followed with `sync status
//! --jobs-table --wait`, then signed webhooks to serve's endpoint; Dataverse ends equal to the
//! CRM record for record.

#[path = "../../tests/e2e/support/jobs_table.rs"]
mod jobs_table;
#[path = "../../tests/e2e/support/moto.rs"]
#[allow(dead_code)]
mod moto;
#[path = "support/world.rs"]
mod world;
mod support {
    pub(crate) use crate::moto;
}

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;
use world::{WEBHOOK_SECRET, World, obj};

fn cli(moto: &moto::Moto, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .args(args)
        .env_clear()
        .envs(moto.lambda_env())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Kills serve when the test ends, passing or not.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_works_a_stacks_queues_and_records_in_its_ledger() {
    let moto = moto::Moto::start().await;
    let queues = moto.deployment(&moto::Deployment::default()).await;
    let dynamodb = jobs_table::dynamodb_client(moto.endpoint());
    jobs_table::create_jobs_table(&dynamodb, "stack-jobs").await;
    let w = World::start("stack", 150).await;

    // The stack's Outputs, as `aws cloudformation describe-stacks` prints them.
    let outputs = w.dir.join("outputs.json");
    std::fs::write(&outputs, queues.stack_outputs("stack-jobs")).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .args(["serve", "--config", w.config.to_str().unwrap()])
        .args(["--stack-outputs", outputs.to_str().unwrap()])
        .args(["--aws-endpoint", moto.endpoint()])
        .args(["--listen", "127.0.0.1:0", "--page-size", "200"])
        .args(["--parent-retry-delay", "1", "--log", "warn"])
        .env_clear()
        .envs(moto.lambda_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let serving = Serving(child);
    assert!(line.contains("queues of the stack"), "{line}");
    assert!(!w.state.exists(), "no state file in stack mode");
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("serve printed its URL: {line}"))
        .trim_end_matches("{source},")
        .to_string();

    let o = cli(
        &moto,
        &[
            "sync",
            "start",
            "--config",
            w.config.to_str().unwrap(),
            "--source",
            "salesforce",
            "--sqs-queue-url",
            &queues.sync.url,
            "--sqs-endpoint",
            moto.endpoint(),
            "--jobs-table",
            "stack-jobs",
            "--dynamodb-endpoint",
            moto.endpoint(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = cli(
        &moto,
        &[
            "sync",
            "status",
            "--jobs-table",
            "stack-jobs",
            "--dynamodb-endpoint",
            moto.endpoint(),
            "--wait",
            "180",
            "--json",
            &job,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["state"], "finished", "{status}");
    let records = (w.sf.count("Account") + w.sf.count("Contact")) as u64;
    assert!(status["read"].as_u64() >= Some(records), "{status}");
    assert_eq!(status["write_failed"], 0, "{status}");
    let c = w.comparison();
    assert!(c.is_exact(), "{c}");
    assert_eq!(c.matched as u64, records);

    // Signed webhooks to serve's endpoint go through the stack's queues too.
    let notifier = w.sf.notify_to(&format!("{base}salesforce"), WEBHOOK_SECRET);
    let acc =
        w.sf.put_account(obj(json!({"Name": "Queued Account"})))
            .unwrap();
    w.sf.put_contact(obj(
        json!({"LastName": "Queued", "Email": "q@example.com", "AccountId": acc}),
    ))
    .unwrap();
    let contacts = w.sf.ids("Contact");
    assert!(w.sf.delete(&contacts[0]));
    assert!(notifier.idle(Duration::from_secs(60)).await);
    let c = w.converged(Duration::from_secs(60)).await;
    assert!(c.is_exact(), "{c}");
    // Nothing was given up anywhere.
    for q in [&queues.upsert_dlq, &queues.sync_dlq, &queues.webhook_dlq] {
        assert_eq!(moto.depth(q).await.total(), 0, "{}", q.url);
    }
    drop(serving);
}

/// A stack outputs file that lacks a queue is refused before anything starts, naming it.
#[test]
fn missing_outputs_are_named() {
    let dir = world::scratch("outputs");
    let outputs = dir.join("outputs.json");
    std::fs::write(
        &outputs,
        r#"[{"OutputKey": "SyncQueueUrl", "OutputValue": "http://x/q.fifo"}]"#,
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .args(["serve", "--config", "unused.toml", "--stack-outputs"])
        .arg(&outputs)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("missing outputs: UpsertQueueUrl"), "{err}");
    assert!(err.contains("outputs.json"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
