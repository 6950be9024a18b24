//! `crm-sync sync start --sqs-queue-url`: the binary, given only the environment's AWS
//! credentials, puts the first page job on a deployed stack's sync queue (moto here, created as
//! the template declares it), as the initial-sync function does on a direct invoke.

#[path = "../../tests/e2e/support/moto.rs"]
#[allow(dead_code)]
mod moto;

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
