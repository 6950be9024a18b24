//! `crm-sync reconcile` as a user runs it: the binary, a config file pointed at the Salesforce
//! and Dataverse emulators, and `crm-sync serve` on a state file. After an initial sync, drift
//! is made behind the pipeline's back; the report names it (text and `--json`, exit code 1),
//! `--repair` queues the fixes on the state file's upsert queue, serve applies them, and a second
//! reconcile exits 0. And `--repair --sqs-queue-url`: the fixes land on a deployed stack's
//! upsert queue (moto), in the envelopes the upsert function reads.

#[path = "../../tests/e2e/support/moto.rs"]
#[allow(dead_code)]
mod moto;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crm_emulator::{SalesforceConfig, SalesforceEmulator};
use crm_sync::emulated::{Expected, compare, dataverse_client};
use crm_sync::jobs::LocalState;
use crm_sync::serve::{Serve, ServeOptions};
use crm_sync::sync_cmd::{self, StartArgs};
use dataverse::DataverseWriter;
use dataverse_emulator::{Emulator, EmulatorConfig};
use mapping::identity::record_guid;
use mapping::{DataverseOp, Entity, Method, SourceId};
use pipeline::config::Config;
use serde_json::{Map, Value, json};

/// The `[dataverse]` and Salesforce source sections, pointed at the emulators.
fn config_text(dv: &Emulator, sf: &SalesforceEmulator, dv_secret: &std::path::Path) -> String {
    format!(
        r#"[dataverse]
url = "{}"
token_url = "{}"
client_id = "{}"
client_secret = "file:{}"

[[sources]]
id = "salesforce"
kind = "salesforce"
crm_choice = 1
base_url = "{}"
[sources.connection]
auth = "salesforce-client-credentials"
token_url = "{}"
client_id = "{}"
client_secret = "{}"
"#,
        dv.base_url(),
        dv.token_url(),
        EmulatorConfig::default().client_id,
        dv_secret.display(),
        sf.instance_url(),
        sf.token_url(),
        sf.config().client_id,
        sf.config().client_secret,
    )
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

async fn reconcile(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_crm-sync"))
            .arg("reconcile")
            .args(args)
            .output()
            .expect("runs")
    })
    .await
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

fn expected(sf: &SalesforceEmulator) -> Vec<Expected> {
    let mut out = Vec::new();
    for (object, entity) in [("Account", Entity::Account), ("Contact", Entity::Contact)] {
        for id in sf.ids(object) {
            let parent = (entity == Entity::Contact)
                .then(|| {
                    sf.record(&id)
                        .and_then(|r| r["AccountId"].as_str().map(String::from))
                })
                .flatten();
            out.push(Expected {
                entity,
                source_id: id,
                parent,
            });
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_and_repairs_through_serve() {
    let dv = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let sf = SalesforceEmulator::start(SalesforceConfig {
        accounts: 30,
        contacts_per_account: 2,
        orphan_contacts: 2,
        ..SalesforceConfig::default()
    })
    .await
    .unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("reconcile-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("dataverse-secret");
    std::fs::write(&secret, &EmulatorConfig::default().client_secret).unwrap();
    let config = dir.join("crm-sync.toml");
    std::fs::write(&config, config_text(&dv, &sf, &secret)).unwrap();
    let state = dir.join("crm-sync.sqlite");
    let serve = Serve::start(&ServeOptions {
        listen: ([127, 0, 0, 1], 0).into(),
        parent_retry_delay: Duration::from_millis(200),
        ..ServeOptions::new(config.clone(), state.clone())
    })
    .await
    .unwrap();
    let job = sync_cmd::start(&StartArgs {
        config: config.clone(),
        source: "salesforce".into(),
        entities: vec![],
        state: state.clone(),
        sqs: None,
    })
    .await
    .unwrap();
    let local = LocalState::open(&state).unwrap();
    let done = sync_cmd::wait(&local, Some(&job), Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(done[0].state(), "finished", "{}", done[0]);
    let mapper = Config::load(&config).unwrap().mappers().unwrap();
    let mapper = mapper.get(&SourceId::new("salesforce").unwrap()).unwrap();
    let converged = |limit: Duration| {
        let deadline = Instant::now() + limit;
        let (sf, dv) = (&sf, &dv);
        async move {
            loop {
                let c = compare(&expected(sf), dv, mapper);
                if c.is_exact() || Instant::now() >= deadline {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let c = converged(Duration::from_secs(60)).await;
    assert!(c.is_exact(), "{c}");

    let args = |extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "--config".to_string(),
            config.display().to_string(),
            "--source".into(),
            "salesforce".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let o = reconcile(args(&[])).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Dataverse matches the CRM"),
        "{}",
        text(&o)
    );

    // Drift: a missed create, a silent delete, a row edited in Dataverse.
    let new_account = sf
        .put_account(obj(json!({"Name": "Missed Webhook Ltd"})))
        .unwrap();
    let contacts = sf.ids("Contact");
    assert!(sf.delete(&contacts[0]));
    let edited = &contacts[1];
    let op = DataverseOp {
        method: Method::Patch,
        path: format!(
            "contacts({})",
            record_guid(&mapper.source, Entity::Contact, edited, false)
        ),
        if_match_any: true,
        body: Some(obj(
            json!({"firstname": "Edited", "lastname": "In Dataverse"}),
        )),
    };
    assert!(dataverse_client(&dv).apply(&[op], None).await[0].is_ok());

    let o = reconcile(args(&["--json"])).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let [accounts, contacts_report] = [&report["entities"][0], &report["entities"][1]];
    assert_eq!(
        accounts["missing"],
        json!({"count": 1, "ids": [new_account]})
    );
    assert_eq!(accounts["orphaned"]["count"], 0);
    assert_eq!(accounts["different"], 0);
    assert_eq!(contacts_report["missing"]["count"], 0);
    assert_eq!(
        contacts_report["orphaned"],
        json!({"count": 1, "ids": [contacts[0]]})
    );
    assert_eq!(
        contacts_report["different_ids"],
        json!([{"id": edited, "columns": ["firstname", "lastname"]}])
    );

    let o = reconcile(args(&["--show", "0"])).await;
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("1 missing, 0 orphaned, 0 different"), "{out}");
    assert!(out.contains("missing    1 not listed"), "{out}");
    assert!(out.contains("--repair"), "{out}");

    let o = reconcile(args(&["--repair", "--state", &state.display().to_string()])).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("2 upserts and 1 deletes queued"),
        "{}",
        text(&o)
    );
    let c = converged(Duration::from_secs(60)).await;
    assert!(c.is_exact(), "{c}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let o = loop {
        // Serve applies the last upsert after the row count already matches: wait for it.
        let o = reconcile(args(&[])).await;
        if o.status.code() == Some(0) || Instant::now() >= deadline {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serve.shutdown().await;

    // Unusable input is exit 2, naming the cause.
    let o = reconcile(vec![
        "--config".into(),
        config.display().to_string(),
        "--source".into(),
        "nope".into(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no source `nope`"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repairs_go_to_a_deployed_stacks_upsert_queue() {
    let moto = moto::Moto::start().await;
    let queues = moto.deployment(&moto::Deployment::default()).await;
    let dv = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let sf = SalesforceEmulator::start(SalesforceConfig {
        accounts: 10,
        contacts_per_account: 2,
        orphan_contacts: 0,
        ..SalesforceConfig::default()
    })
    .await
    .unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("reconcile-sqs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("dataverse-secret");
    std::fs::write(&secret, &EmulatorConfig::default().client_secret).unwrap();
    let config = dir.join("crm-sync.toml");
    std::fs::write(&config, config_text(&dv, &sf, &secret)).unwrap();

    // The initial sync, through the pipeline in-process.
    let cfg = Config::load(&config).unwrap();
    let sources = cfg.mappers().unwrap();
    let crms = cfg.crm_readers(&sources).unwrap();
    let p = crm_sync::emulated::local_pipeline(sources, crms, &dv, 50);
    let src = SourceId::new("salesforce").unwrap();
    pipeline::sync::start_sync(&src, &[], &p.sync_ports())
        .await
        .unwrap();
    assert!(p.run_until_idle(Duration::from_secs(60)).await.1);

    let new_account = sf.put_account(obj(json!({"Name": "Missed Ltd"}))).unwrap();
    let gone = sf.ids("Contact")[0].clone();
    assert!(sf.delete(&gone));

    let out = tokio::task::spawn_blocking({
        let (config, url, endpoint, env) = (
            config.clone(),
            queues.upsert.url.clone(),
            moto.endpoint().to_string(),
            moto.lambda_env(),
        );
        move || {
            Command::new(env!("CARGO_BIN_EXE_crm-sync"))
                .args([
                    "reconcile",
                    "--source",
                    "salesforce",
                    "--repair",
                    "--json",
                    "--config",
                ])
                .arg(&config)
                .args(["--sqs-queue-url", &url, "--sqs-endpoint", &endpoint])
                .env_clear()
                .envs(env)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["repair"]["upserts"], 1);
    assert_eq!(report["repair"]["deletes"], 1);

    let got = moto.take_all(&queues.upsert, Duration::from_secs(2)).await;
    let mut changes = Vec::new();
    for m in &got {
        let env = pipeline::message::decode(m.body().unwrap()).unwrap();
        assert_eq!(env.correlation_id, report["repair"]["correlation_id"]);
        let pipeline::message::Message::Changes(batch) = env.body else {
            panic!("not a changes message: {:?}", m.body());
        };
        changes.extend(batch.changes);
    }
    let mut seen: Vec<(String, bool)> = changes
        .iter()
        .map(|c| (c.source_id.clone(), c.is_delete()))
        .collect();
    seen.sort();
    let mut want = vec![(new_account.clone(), false), (gone.clone(), true)];
    want.sort();
    assert_eq!(seen, want);

    // The same bodies, applied by the upsert step, leave nothing to reconcile.
    use pipeline::queue::{OutMessage, Queue};
    let bodies: Vec<OutMessage> = got
        .iter()
        .map(|m| OutMessage::new(m.body().unwrap().to_string()))
        .collect();
    p.queues.upsert.send(bodies).await.unwrap();
    assert!(p.run_until_idle(Duration::from_secs(60)).await.1);
    let again = crm_sync::reconcile::reconcile(
        p.sources.get(&src).unwrap(),
        p.sources.identity,
        p.crms[&src].as_ref(),
        &dataverse_client(&dv),
        &crm_sync::reconcile::Options::default(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(again.drift(), 0, "{again}");
    let _ = std::fs::remove_dir_all(&dir);
}
