//! `crm-sync dlq list|show|replay` (the command functions) on the state file of a running `crm-sync serve`: Dataverse
//! (the emulator) fails every write for longer than the retry budget, so each record's change
//! lands in the upsert DLQ with the error of its last receive; once Dataverse is back, a replay
//! sends them to the upsert queue and Dataverse ends equal to the CRM, record for record.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crm_emulator::{SalesforceConfig, SalesforceEmulator};
use crm_sync::dlq::Selection;
use crm_sync::dlq_cmd::{self, Target};
use crm_sync::emulated::{Comparison, Expected, compare};
use crm_sync::jobs::LocalState;
use crm_sync::serve::{Serve, ServeOptions};
use crm_sync::sync_cmd::{self, StartArgs};
use dataverse_emulator::{Emulator, EmulatorConfig, Faults};
use mapping::{Entity, SourceId};
use pipeline::config::Config;
use pipeline::queue::ERROR_ATTRIBUTE;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("dlq-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every live Salesforce record and, for contacts, its account.
fn expected(sf: &SalesforceEmulator) -> Vec<Expected> {
    crm_sync::emulated::salesforce_expected(sf)
}

fn comparison(config: &Path, sf: &SalesforceEmulator, dv: &Emulator) -> Comparison {
    let config = Config::load(config).unwrap();
    let sources = config.mappers().unwrap();
    let mapper = sources.get(&SourceId::new("salesforce").unwrap()).unwrap();
    compare(&expected(sf), dv, mapper)
}

/// Waits until the work queues are empty and the job's pages are read: what is left is in the
/// DLQs.
async fn settled(state: &Path, job: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let state = LocalState::open(state).unwrap();
        let depths = state.store.depths().unwrap();
        let busy = depths
            .iter()
            .any(|(q, n, _)| (q == "sync" || q == "upsert") && *n > 0);
        let status = state.ledger().status(job).unwrap().expect("known job");
        if !busy && status.pages_done {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataverse_outage_longer_than_the_retries_is_listed_and_replayed_from_the_dlq() {
    let dv = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let sf = SalesforceEmulator::start(SalesforceConfig {
        accounts: 8,
        contacts_per_account: 2,
        orphan_contacts: 2,
        daily_limit: 10_000_000,
        ..SalesforceConfig::default()
    })
    .await
    .unwrap();
    let dir = scratch("outage");
    let secret = |file: &str, value: &str| {
        let p = dir.join(file);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        p.display().to_string()
    };
    let dv_secret = secret("dataverse-secret", &EmulatorConfig::default().client_secret);
    let sf_secret = secret("salesforce-secret", &sf.config().client_secret);
    let config = dir.join("crm-sync.toml");
    std::fs::write(
        &config,
        format!(
            r#"[dataverse]
url = "{dv_url}"
token_url = "{dv_token}"
client_id = "{dv_client}"
client_secret = "file:{dv_secret}"
write_mode = "batch"

[[sources]]
id = "salesforce"
kind = "salesforce"
crm_choice = 1
base_url = "{sf_base}"
[sources.connection]
auth = "salesforce-client-credentials"
token_url = "{sf_token}"
client_id = "{sf_client}"
client_secret = "file:{sf_secret}"
"#,
            dv_url = dv.base_url(),
            dv_token = dv.token_url(),
            dv_client = EmulatorConfig::default().client_id,
            sf_base = sf.instance_url(),
            sf_token = sf.token_url(),
            sf_client = sf.config().client_id,
        ),
    )
    .unwrap();
    let state = dir.join("crm-sync.sqlite");

    // Dataverse answers every API request 500 or 503, through every retry of every receive.
    dv.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    });
    let serve = Serve::start(&ServeOptions {
        listen: ([127, 0, 0, 1], 0).into(),
        page_size: 200,
        max_receives: Some(2),
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
    assert!(
        settled(&state, &job, Duration::from_secs(300)).await,
        "the work queues did not drain"
    );
    assert_eq!(dv.rows("account").len() + dv.rows("contact").len(), 0);

    // Every record's change is in the upsert DLQ with the error of its last receive; nothing
    // in the sync DLQ (the CRM was fine).
    let local = |queue: Option<&str>| Target::Local {
        state: state.clone(),
        queue: queue.map(str::to_string),
    };
    let rows = dlq_cmd::list(&local(None)).await.unwrap();
    let crm: BTreeSet<String> = expected(&sf).into_iter().map(|e| e.source_id).collect();
    let dead: BTreeSet<String> = rows.iter().flat_map(|r| r.records.clone()).collect();
    assert_eq!(dead, crm, "{rows:#?}");
    for r in &rows {
        assert_eq!(
            (r.dlq.as_str(), r.origin.as_deref()),
            ("upsert-dlq", Some("upsert"))
        );
        assert_eq!(
            (r.kind.as_str(), r.source.as_deref()),
            ("changes", Some("salesforce"))
        );
        assert_eq!(r.correlation_id.as_deref(), Some(job.as_str()));
        assert!(
            r.reason.contains("Dataverse is unavailable")
                && r.reason.ends_with("(still failing after 2 receives)"),
            "{}",
            r.reason
        );
    }
    assert!(
        dlq_cmd::list(&local(Some("sync-dlq")))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(dlq_cmd::list(&local(Some("nope"))).await.is_err());

    // One message whole.
    let one = dlq_cmd::show(&local(None), &rows[0].id).await.unwrap();
    assert_eq!(one.attributes[ERROR_ATTRIBUTE], rows[0].reason);
    assert!(dlq_cmd::show(&local(None), "upsert-dlq-0").await.is_err());

    // A dry run, and a replay with no criterion, send nothing.
    let all = Selection {
        all: true,
        ..Selection::default()
    };
    let dry = dlq_cmd::replay(&local(None), &all, true).await.unwrap();
    assert_eq!(
        (dry.would_replay.len(), dry.replayed.len()),
        (rows.len(), 0)
    );
    assert!(
        dlq_cmd::replay(&local(None), &Selection::default(), false)
            .await
            .is_err()
    );
    let left = LocalState::open(&state).unwrap();
    assert_eq!(left.upsert_dlq.len(), rows.len());

    // Dataverse is back: replay what failed because of it; serve writes it.
    dv.set_faults(Faults::default());
    let fixed = Selection {
        error_contains: Some("STILL FAILING".into()),
        source: Some("salesforce".into()),
        ..Selection::default()
    };
    let done = dlq_cmd::replay(&local(None), &fixed, false).await.unwrap();
    assert_eq!(
        (done.replayed.len(), done.failed.len()),
        (rows.len(), 0),
        "{done:?}"
    );
    assert!(done.replayed.iter().all(|(_, to)| to == "upsert"));
    assert!(left.upsert_dlq.is_empty());

    let deadline = Instant::now() + Duration::from_secs(120);
    let c = loop {
        let c = comparison(&config, &sf, &dv);
        if c.is_exact() || Instant::now() >= deadline {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(c.is_exact(), "{c}");
    assert_eq!(c.matched, crm.len());
    assert!(settled(&state, &job, Duration::from_secs(60)).await);
    assert!(left.upsert_dlq.is_empty() && left.sync_dlq.is_empty());
    serve.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A sync job whose page job was dead-lettered (serve records the job failed): the replay puts
/// the page job back on the sync queue in the job's FIFO group, with a new deduplication id, and
/// the job is no longer failed; a message that is not work for its queue stays, and says why.
#[tokio::test]
async fn a_dead_lettered_page_job_is_replayed_to_the_sync_queue_and_its_job_goes_on() {
    use pipeline::message::{Message, Phase, SyncCounts, SyncPageJob, encode};
    use pipeline::queue::{OutMessage, Queue};

    let dir = scratch("page");
    let state_path = dir.join("crm-sync.sqlite");
    let state = LocalState::open(&state_path).unwrap();
    let job = SyncPageJob {
        job_id: "job-1".into(),
        source: SourceId::new("salesforce").unwrap(),
        entities: vec![Entity::Account],
        entity: Entity::Account,
        phase: Phase::Snapshot,
        started_at: chrono::Utc::now(),
        cursor: Some("c-3".into()),
        checkpoint: None,
        counts: SyncCounts::default(),
        total: None,
    };
    let page = encode("job-1", Message::SyncPage(job));
    let mut dead = OutMessage::new(page.clone());
    dead.attributes.insert(
        ERROR_ATTRIBUTE.into(),
        "Salesforce refused the token (still failing after 5 receives)".into(),
    );
    // Changes on the sync DLQ: not work for the sync queue.
    let mut misplaced = OutMessage::new(encode(
        "c-2",
        Message::Changes(pipeline::message::ChangeBatch {
            attempt: 0,
            from_page: false,
            changes: vec![],
        }),
    ));
    misplaced.attributes.insert(
        ERROR_ATTRIBUTE.into(),
        "a changes message belongs on the upsert queue".into(),
    );
    state.sync_dlq.send(vec![dead, misplaced]).await.unwrap();
    let ledger = state.ledger();
    ledger
        .started("job-1", "salesforce", &["account".into()])
        .unwrap();
    ledger
        .failed("job-1", "Salesforce refused the token")
        .unwrap();
    assert_eq!(ledger.status("job-1").unwrap().unwrap().state(), "failed");

    let target = Target::Local {
        state: state_path.clone(),
        queue: Some("sync-dlq".into()),
    };
    let rows = dlq_cmd::list(&target).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].kind.as_str(), rows[0].origin.as_deref()),
        ("sync_page", Some("sync"))
    );
    assert_eq!(rows[0].correlation_id.as_deref(), Some("job-1"));
    let all = Selection {
        all: true,
        ..Selection::default()
    };
    let done = dlq_cmd::replay(&target, &all, false).await.unwrap();
    assert_eq!(done.replayed, [(rows[0].id.clone(), "sync".to_string())]);
    assert_eq!(done.failed.len(), 1);
    assert!(
        done.failed[0]
            .1
            .contains("does not belong on the sync queue"),
        "{done:?}"
    );

    assert_ne!(ledger.status("job-1").unwrap().unwrap().state(), "failed");
    let left = state.sync_dlq.stored().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, rows[1].id);
    let queued = state.sync.stored().unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].body, page);
    assert_eq!(queued[0].group_id, Some(pipeline::sync::digest("job-1")));
    assert!(!queued[0].attributes.contains_key(ERROR_ATTRIBUTE));
    let _ = std::fs::remove_dir_all(dir);
}
