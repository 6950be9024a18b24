//! `crm-sync sync start --sqs-queue-url`: the binary, given only the environment's AWS
//! credentials, puts the first page job on a deployed stack's sync queue (moto here, created as
//! the template declares it), as the initial-sync function does on a direct invoke; with
//! `--jobs-table` it records the job in the stack's run ledger, and `sync status --jobs-table`
//! follows it there.

#[path = "../../tests/e2e/support/jobs_table.rs"]
mod jobs_table;
#[path = "../../tests/e2e/support/moto.rs"]
#[allow(dead_code)]
mod moto;
mod support {
    pub(crate) use crate::moto;
}

use std::process::Command;
use std::time::Duration;

use pipeline::message::{Message, decode};

const CONFIG: &str = r#"
[[sources]]
id = "sf"
kind = "salesforce"
crm_choice = 1
base_url = "https://acme.my.salesforce.com"
[sources.connection]
auth = "salesforce-client-credentials"
token_url = "https://acme.my.salesforce.com/services/oauth2/token"
client_id = "k"
client_secret = "env:CRM_SYNC_TEST_UNUSED_SECRET"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_start_puts_the_first_page_job_on_the_stacks_sync_queue() {
    let moto = moto::Moto::start().await;
    let queues = moto.deployment(&moto::Deployment::default()).await;
    let dir = std::env::temp_dir().join(format!("crm-sync-sqs-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("crm-sync.toml");
    std::fs::write(&config, CONFIG).unwrap();

    let run = |source: &str| {
        Command::new(env!("CARGO_BIN_EXE_crm-sync"))
            .args(["sync", "start", "--config"])
            .arg(&config)
            .args(["--source", source, "--entity", "contact", "--sqs-queue-url"])
            .arg(&queues.sync.url)
            .args(["--sqs-endpoint", moto.endpoint()])
            .env_clear()
            .envs(moto.lambda_env())
            .output()
            .unwrap()
    };
    let out = run("sf");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let got = moto.take_all(&queues.sync, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1);
    let env = decode(got[0].body().unwrap()).unwrap();
    let Message::SyncPage(job) = env.body else {
        panic!("not a page job: {:?}", got[0].body())
    };
    assert_eq!(job.job_id, job_id);
    assert_eq!(job.source.as_str(), "sf");
    assert_eq!(job.entities, [mapping::Entity::Contact]);
    assert_eq!(job.counts.pages, 0);

    // An unknown source is refused before anything is sent.
    let out = run("nope");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no source `nope`"));
    assert!(
        moto.take_all(&queues.sync, Duration::from_secs(1))
            .await
            .is_empty()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_status_follows_a_job_in_the_stacks_run_ledger() {
    use ledger_dynamodb::DynamoLedger;
    use pipeline::ledger::{JobLedger, JobWrites};
    use pipeline::message::{Phase, SyncCounts};
    use pipeline::sync::PageDone;

    let moto = moto::Moto::start().await;
    let queues = moto.deployment(&moto::Deployment::default()).await;
    let dynamodb = jobs_table::dynamodb_client(moto.endpoint());
    jobs_table::create_jobs_table(&dynamodb, "stack-jobs").await;
    let dir = std::env::temp_dir().join(format!("crm-sync-sqs-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("crm-sync.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_crm-sync"))
            .args(args)
            .env_clear()
            .envs(moto.lambda_env())
            .output()
            .unwrap()
    };

    let out = cli(&[
        "sync",
        "start",
        "--config",
        config.to_str().unwrap(),
        "--source",
        "sf",
        "--sqs-queue-url",
        &queues.sync.url,
        "--sqs-endpoint",
        moto.endpoint(),
        "--jobs-table",
        "stack-jobs",
        "--dynamodb-endpoint",
        moto.endpoint(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let status = |extra: &[&str]| {
        let mut args = vec![
            "sync",
            "status",
            "--jobs-table",
            "stack-jobs",
            "--dynamodb-endpoint",
            moto.endpoint(),
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let out = status(&[&job_id]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("job {job_id}  queued")), "{text}");
    assert!(text.contains("sf (account, contact)"), "{text}");

    // What the functions record as the job runs: its pages, then its writes.
    let ledger = DynamoLedger::new(dynamodb.clone(), "stack-jobs");
    let first = {
        let got = moto.take_all(&queues.sync, Duration::from_secs(2)).await;
        let Message::SyncPage(job) = decode(got[0].body().unwrap()).unwrap().body else {
            panic!("not a page job")
        };
        job
    };
    let counts = SyncCounts {
        pages: 1,
        read: 3,
        enqueued: 3,
        skipped: 0,
        deleted: 0,
    };
    ledger
        .page_done(
            &first,
            &PageDone {
                counts,
                total: Some(3),
                next: None,
            },
        )
        .await
        .unwrap();
    // A page recorded again later (a redelivery) with older counts changes nothing.
    let mut stale = first.clone();
    stale.phase = Phase::Snapshot;
    ledger
        .page_done(
            &stale,
            &PageDone {
                counts: SyncCounts::default(),
                total: None,
                next: Some(first.clone()),
            },
        )
        .await
        .unwrap();
    ledger
        .writes(
            &job_id,
            &JobWrites {
                written: 2,
                failed: 0,
            },
        )
        .await
        .unwrap();
    let out = status(&["--json", &job_id]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "writing", "{v}");
    assert_eq!(v["read"], 3, "{v}");
    assert_eq!(v["written"], 2, "{v}");
    ledger
        .writes(
            &job_id,
            &JobWrites {
                written: 1,
                failed: 0,
            },
        )
        .await
        .unwrap();
    // Writes for a correlation id that is not a job (a webhook request) record nothing.
    ledger
        .writes(
            "webhook-request-1",
            &JobWrites {
                written: 5,
                failed: 0,
            },
        )
        .await
        .unwrap();
    let out = status(&["--wait", "10", &job_id]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("finished"), "{text}");
    assert!(text.contains("3 of 3 applied"), "{text}");
    let out = status(&[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text.matches("job ").count(), 1, "{text}");

    // A job the table does not have: exit 2, naming it and the table.
    let out = status(&["no-such-job"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no job no-such-job in table stack-jobs"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
