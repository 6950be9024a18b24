//! A small initial sync and a few webhook changes driven through all three steps over the
//! in-process queues, ending in exact rows in the in-memory Dataverse.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crm::{CrmReader, MemoryCrm};
use dataverse::{MemoryDataverse, WriteError};
use mapping::identity::record_guid;
use mapping::{CrmKind, Entity, IdentityStrategy, SourceConfig, SourceId};
use pipeline::MemoryQueueConfig;
use pipeline::runner::{LocalPipeline, LocalQueues};
use pipeline::sync::{SyncSettings, start_sync};
use pipeline::upsert::UpsertPolicy;
use pipeline::webhook::{WebhookError, handle_webhook};
use serde_json::{Map, Value, json};

const A1: &str = "001000000000001AAA";
const A2: &str = "001000000000002AAA";
const A3: &str = "001000000000003AAA";
const C1: &str = "003000000000001AAA";
const C2: &str = "003000000000002AAA";
const C3: &str = "003000000000003AAA";
const C4: &str = "003000000000004AAA";

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
}

fn src() -> SourceId {
    SourceId::new("sf").unwrap()
}

fn account(id: &str, name: &str, phone: &str, at: i64) -> Value {
    json!({"attributes": {"type": "Account"}, "Id": id, "Name": name, "Phone": phone,
           "SystemModstamp": t(at).to_rfc3339()})
}

fn contact(id: &str, last: &str, email: &str, account: Option<&str>, at: i64) -> Value {
    json!({"attributes": {"type": "Contact"}, "Id": id, "LastName": last, "Email": email,
           "AccountId": account, "SystemModstamp": t(at).to_rfc3339()})
}

fn key(e: Entity, id: &str) -> String {
    format!("{}({})", e.entity_set(), record_guid(&src(), e, id, false))
}

fn url(object: &str, id: &str) -> String {
    format!("https://acme.my.salesforce.com/lightning/r/{object}/{id}/view")
}

fn account_row(id: &str, name: &str, phone: &str) -> Map<String, Value> {
    json!({"name": name, "telephone1": phone, "msdyn_source_crm": 1, "msdyn_source_crm_id": id,
           "msdyn_source_crm_url": url("Account", id)})
    .as_object()
    .unwrap()
    .clone()
}

fn contact_row(id: &str, last: &str, email: &str, account: Option<&str>) -> Map<String, Value> {
    let mut m = json!({"lastname": last, "emailaddress1": email, "msdyn_source_crm": 1,
                       "msdyn_source_crm_id": id, "msdyn_source_crm_url": url("Contact", id)})
    .as_object()
    .unwrap()
    .clone();
    m.insert(
        "_parentcustomerid_account_value".into(),
        account.map_or(Value::Null, |a| Value::String(key(Entity::Account, a))),
    );
    m
}

struct Setup {
    crm: Arc<MemoryCrm>,
    dataverse: Arc<MemoryDataverse>,
    pipeline: LocalPipeline,
}

fn setup() -> Setup {
    let crm = Arc::new(MemoryCrm::new());
    crm.put(
        Entity::Account,
        A1,
        t(1),
        account(A1, "Acme", "+1 415 555 0101", 1),
    );
    crm.put(
        Entity::Account,
        A2,
        t(2),
        account(A2, "Globex", "(415) 555-0102", 2),
    );
    crm.put(
        Entity::Account,
        A3,
        t(3),
        account(A3, "Initech", "+14155550103", 3),
    );
    crm.put(
        Entity::Contact,
        C1,
        t(4),
        contact(C1, "Ng", "ANN@ACME.COM", Some(A1), 4),
    );
    crm.put(
        Entity::Contact,
        C2,
        t(5),
        contact(C2, "Ruiz", "bo@globex.com", Some(A2), 5),
    );
    crm.put(
        Entity::Contact,
        C3,
        t(6),
        contact(C3, "Kim", "cy@example.com", None, 6),
    );
    let mut cfg = SourceConfig::new(src(), CrmKind::Salesforce, "https://acme.my.salesforce.com");
    cfg.crm_choice = Some(1);
    cfg.phone_country = Some("1".into());
    let sources =
        Arc::new(pipeline::Sources::new(&[cfg], IdentityStrategy::DeterministicId).unwrap());
    let dataverse = Arc::new(MemoryDataverse::new());
    let mut crms: HashMap<SourceId, Arc<dyn CrmReader>> = HashMap::new();
    crms.insert(src(), crm.clone());
    let pipeline = LocalPipeline {
        metrics: Default::default(),
        versions: Default::default(),
        sources,
        crms,
        writer: dataverse.clone(),
        queues: LocalQueues::new(MemoryQueueConfig {
            visibility_timeout: Duration::from_millis(200),
            ..MemoryQueueConfig::default()
        }),
        settings: SyncSettings {
            page_size: 2,
            ..SyncSettings::default()
        },
        policy: UpsertPolicy {
            parent_retries: 3,
            parent_delay: Duration::from_millis(10),
            max_receives: None,
            // Every redelivered page is re-read, however young: the re-read is what these
            // tests follow.
            refetch_after: Duration::ZERO,
        },
        batch_size: 10,
        recent: Default::default(),
    };
    Setup {
        crm,
        dataverse,
        pipeline,
    }
}

fn expected(rows: Vec<(String, Map<String, Value>)>) -> BTreeMap<String, Map<String, Value>> {
    rows.into_iter().collect()
}

#[tokio::test]
async fn initial_sync_then_webhooks_end_in_exact_rows() {
    let s = setup();
    let p = &s.pipeline;
    // A throttle and a 5xx on the first writes: retried, not lost.
    s.dataverse.inject([
        WriteError::Throttled { retry_after_ms: 5 },
        WriteError::Retryable {
            code: "0x80044339".into(),
            message: "deadlock".into(),
        },
    ]);
    start_sync(&src(), &[Entity::Contact, Entity::Account], &p.sync_ports())
        .await
        .unwrap();
    let (totals, idle) = p.run_until_idle(Duration::from_secs(20)).await;
    assert!(idle, "queues did not drain: {totals:?}");
    assert_eq!(totals.upsert.dead_lettered, 0);
    // The counters say the same per source and entity: three of each read and written, the
    // throttle and the deadlock retried.
    let m = p.metrics.snapshot();
    for entity in ["account", "contact"] {
        let d = pipeline::Dims::new("sf", entity);
        assert!(m.get(&d, pipeline::Metric::RecordsRead) >= 3, "{m:?}");
        let written = [
            pipeline::Metric::Created,
            pipeline::Metric::Updated,
            pipeline::Metric::Upserted,
        ]
        .iter()
        .map(|x| m.get(&d, *x))
        .sum::<u64>();
        assert!(written >= 3, "{entity}: {m:?}");
    }
    assert_eq!(m.total(pipeline::Metric::Retried), 2, "{m:?}");
    assert_eq!(m.total(pipeline::Metric::Throttled), 1, "{m:?}");
    assert_eq!(m.total(pipeline::Metric::FailedPermanently), 0);
    let want = expected(vec![
        (
            key(Entity::Account, A1),
            account_row(A1, "Acme", "+14155550101"),
        ),
        (
            key(Entity::Account, A2),
            account_row(A2, "Globex", "+14155550102"),
        ),
        (
            key(Entity::Account, A3),
            account_row(A3, "Initech", "+14155550103"),
        ),
        (
            key(Entity::Contact, C1),
            contact_row(C1, "Ng", "ann@acme.com", Some(A1)),
        ),
        (
            key(Entity::Contact, C2),
            contact_row(C2, "Ruiz", "bo@globex.com", Some(A2)),
        ),
        (
            key(Entity::Contact, C3),
            contact_row(C3, "Kim", "cy@example.com", None),
        ),
    ]);
    assert_eq!(s.dataverse.rows(), want);
    // Accounts (3 in 2 pages) + contacts (3 in 2 pages) + the catch-up pass (all records are
    // older than the job, so one empty page per entity) + one fetch job: the first page's write
    // failed (the injected throttle and deadlock), so when it came back it was re-read.
    assert_eq!(totals.sync_messages, 7);
    assert_eq!(totals.upsert.refetched, 2);

    // Webhooks: a contact arrives before its account; an update with the full record; a
    // change event that names a record (fetched from the CRM); a delete.
    let ports = p.webhook_ports();
    let c4_first = json!({"entity": "contact", "operation": "create", "id": C4,
        "modified_at": t(20).to_rfc3339(), "record": contact(C4, "Ode", "di@new.co", Some("001000000000004AAA"), 20)});
    handle_webhook("sf", c4_first.to_string().as_bytes(), "w1", &ports)
        .await
        .unwrap();
    let a4 = json!({"entity": "account", "operation": "create", "id": "001000000000004AAA",
        "record": account("001000000000004AAA", "Hooli", "+1 650 555 0104", 21)});
    // The account's webhook comes after the contact has already been tried once.
    let mut early = pipeline::runner::RunTotals::default();
    p.upsert_batch(Duration::from_millis(50), &mut early).await;
    assert_eq!(
        early.upsert.parked, 1,
        "the early contact is parked: {early:?}"
    );
    handle_webhook("sf", a4.to_string().as_bytes(), "w2", &ports)
        .await
        .unwrap();
    let c1_update = json!({"entity": "contact", "operation": "update", "id": C1,
        "record": contact(C1, "Ng-Smith", "ann@acme.com", Some(A2), 22)});
    handle_webhook("sf", c1_update.to_string().as_bytes(), "w3", &ports)
        .await
        .unwrap();
    s.crm.put(
        Entity::Account,
        A2,
        t(23),
        account(A2, "Globex Corp", "+1 415 555 0199", 23),
    );
    let cdc = json!({"payload": {"ChangeEventHeader": {"entityName": "Account", "changeType": "UPDATE",
        "recordIds": [A2], "commitTimestamp": t(23).timestamp_millis(), "changedFields": ["Name", "Phone"]},
        "Name": "Globex Corp"}});
    handle_webhook("sf", cdc.to_string().as_bytes(), "w4", &ports)
        .await
        .unwrap();
    s.crm.remove(Entity::Contact, C3);
    let del = json!({"entity": "contact", "operation": "delete", "id": C3, "modified_at": t(24).to_rfc3339()});
    handle_webhook("sf", del.to_string().as_bytes(), "w5", &ports)
        .await
        .unwrap();
    // A retried webhook is harmless.
    handle_webhook("sf", del.to_string().as_bytes(), "w5", &ports)
        .await
        .unwrap();

    let (totals, idle) = p.run_until_idle(Duration::from_secs(20)).await;
    assert!(idle, "queues did not drain: {totals:?}");
    let want = expected(vec![
        (
            key(Entity::Account, A1),
            account_row(A1, "Acme", "+14155550101"),
        ),
        (
            key(Entity::Account, A2),
            account_row(A2, "Globex Corp", "+14155550199"),
        ),
        (
            key(Entity::Account, A3),
            account_row(A3, "Initech", "+14155550103"),
        ),
        (
            key(Entity::Account, "001000000000004AAA"),
            account_row("001000000000004AAA", "Hooli", "+16505550104"),
        ),
        (
            key(Entity::Contact, C1),
            contact_row(C1, "Ng-Smith", "ann@acme.com", Some(A2)),
        ),
        (
            key(Entity::Contact, C2),
            contact_row(C2, "Ruiz", "bo@globex.com", Some(A2)),
        ),
        (
            key(Entity::Contact, C4),
            contact_row(C4, "Ode", "di@new.co", Some("001000000000004AAA")),
        ),
    ]);
    assert_eq!(s.dataverse.rows(), want);
    assert!(p.queues.upsert_dlq.is_empty() && p.queues.sync_dlq.is_empty());
}

#[tokio::test]
async fn rejected_requests_enqueue_nothing_and_bad_records_reach_the_dlq_with_a_reason() {
    let s = setup();
    let p = &s.pipeline;
    let ports = p.webhook_ports();
    let err = handle_webhook("nope", b"{}", "c", &ports)
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), &err),
        (404, &WebhookError::UnknownSource("nope".into()))
    );
    let err = handle_webhook("sf", b"{not json", "c", &ports)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 400);
    let err = handle_webhook(
        "sf",
        br#"{"entity":"account","operation":"melt","id":"x"}"#,
        "c",
        &ports,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("operation"), "{err}");
    assert!(p.queues.is_idle() && p.queues.upsert_dlq.is_empty());

    // A record without its required name is reported, not written and not lost.
    let body = json!([
        account(A1, "", "1", 1),
        account(A2, "Fine", "+14155550102", 2)
    ]);
    let ok = handle_webhook("sf", body.to_string().as_bytes(), "c2", &ports)
        .await
        .unwrap();
    assert_eq!((ok.changes, ok.failed), (1, 1));
    let dlq = p.queues.upsert_dlq.peek_all();
    assert_eq!(dlq.len(), 1);
    assert!(dlq[0].1["crm_sync_error"].contains("could not be mapped"));
    assert!(dlq[0].0.contains("required column `name`"), "{}", dlq[0].0);

    // A poison message on the upsert queue goes to the DLQ with its reason.
    use pipeline::Queue;
    p.queues
        .upsert
        .send(vec![pipeline::OutMessage::new(
            r#"{"v":9,"kind":"changes"}"#.into(),
        )])
        .await
        .unwrap();
    let (_, idle) = p.run_until_idle(Duration::from_secs(5)).await;
    assert!(idle);
    let dlq = p.queues.upsert_dlq.peek_all();
    assert_eq!(dlq.len(), 2);
    assert!(dlq[1].1["crm_sync_error"].contains("version 9 is not supported"));
}

#[tokio::test]
async fn a_dead_cursor_resumes_from_the_checkpoint() {
    let s = setup();
    let p = &s.pipeline;
    start_sync(&src(), &[Entity::Account], &p.sync_ports())
        .await
        .unwrap();
    let mut totals = Default::default();
    p.sync_batch(Duration::ZERO, &mut totals).await; // first page, 2 accounts
    s.crm.expire_cursors(true);
    let (_, idle) = p.run_until_idle(Duration::from_secs(10)).await;
    assert!(idle);
    assert_eq!(s.dataverse.rows().len(), 3);
}

#[tokio::test]
async fn a_contact_whose_account_never_comes_is_dead_lettered_after_the_budget() {
    let s = setup();
    let p = &s.pipeline;
    let body = json!({"entity": "contact", "operation": "create", "id": C4,
        "record": contact(C4, "Ode", "di@new.co", Some("001000000000009AAA"), 20)});
    handle_webhook("sf", body.to_string().as_bytes(), "w", &p.webhook_ports())
        .await
        .unwrap();
    let (totals, idle) = p.run_until_idle(Duration::from_secs(10)).await;
    assert!(idle);
    assert_eq!(totals.upsert.parked, 3);
    let dlq = p.queues.upsert_dlq.peek_all();
    assert_eq!(dlq.len(), 1);
    assert!(dlq[0].1["crm_sync_error"].contains("parent account does not exist yet"));
    assert!(dlq[0].1["crm_sync_error"].contains("gave up after 4 attempts"));
    assert!(s.dataverse.rows().is_empty());
}

#[tokio::test]
async fn changes_during_the_walk_are_right_after_the_catch_up_pass() {
    let s = setup();
    let p = &s.pipeline;
    start_sync(&src(), &[], &p.sync_ports()).await.unwrap();
    let mut totals = Default::default();
    p.sync_batch(Duration::ZERO, &mut totals).await; // accounts A1, A2 read
    let now = Utc::now();
    // Behind the walk: A1 changed, A2 deleted. Ahead of it: C3 deleted, C1 changed. New: A5.
    s.crm.put(
        Entity::Account,
        A1,
        now,
        account(A1, "Acme Renamed", "+1 415 555 0111", now.timestamp()),
    );
    s.crm.remove(Entity::Account, A2);
    s.crm.remove(Entity::Contact, C3);
    s.crm.put(
        Entity::Contact,
        C1,
        now,
        contact(C1, "Ng", "ann@new.example", Some(A1), now.timestamp()),
    );
    const A5: &str = "001000000000005AAA";
    s.crm.put(
        Entity::Account,
        A5,
        now,
        account(A5, "Umbrella", "+1 415 555 0105", now.timestamp()),
    );
    let (totals, idle) = p.run_until_idle(Duration::from_secs(20)).await;
    assert!(idle, "queues did not drain: {totals:?}");
    let want = expected(vec![
        (
            key(Entity::Account, A1),
            account_row(A1, "Acme Renamed", "+14155550111"),
        ),
        (
            key(Entity::Account, A3),
            account_row(A3, "Initech", "+14155550103"),
        ),
        (
            key(Entity::Account, A5),
            account_row(A5, "Umbrella", "+14155550105"),
        ),
        (
            key(Entity::Contact, C1),
            contact_row(C1, "Ng", "ann@new.example", Some(A1)),
        ),
        (
            key(Entity::Contact, C2),
            contact_row(C2, "Ruiz", "bo@globex.com", Some(A2)),
        ),
    ]);
    let rows = s.dataverse.rows();
    assert_eq!(rows, want);
    assert!(p.queues.upsert_dlq.is_empty() && p.queues.sync_dlq.is_empty());
}

#[tokio::test]
async fn a_page_that_comes_back_after_a_failure_is_re_read_not_rewritten() {
    let s = setup();
    let p = &s.pipeline;
    start_sync(&src(), &[Entity::Account], &p.sync_ports())
        .await
        .unwrap();
    let mut totals = Default::default();
    p.sync_batch(Duration::ZERO, &mut totals).await; // page 1: A1, A2
    // Dataverse fails both writes: the page's message comes back later.
    let outage = || WriteError::Retryable {
        code: "0x80040216".into(),
        message: "unavailable".into(),
    };
    s.dataverse.inject([outage(), outage()]);
    p.upsert_batch(Duration::ZERO, &mut totals).await;
    assert!(s.dataverse.rows().is_empty());
    // Meanwhile A1 is renamed and A2 deleted in the CRM, and their webhooks are applied.
    let now = Utc::now();
    s.crm.put(
        Entity::Account,
        A1,
        now,
        account(A1, "Acme Renamed", "+1 415 555 0111", now.timestamp()),
    );
    s.crm.remove(Entity::Account, A2);
    let ports = p.webhook_ports();
    let update = json!({"entity": "account", "operation": "update", "id": A1,
        "modified_at": now.to_rfc3339(), "record": account(A1, "Acme Renamed", "+1 415 555 0111", now.timestamp())});
    handle_webhook("sf", update.to_string().as_bytes(), "w1", &ports)
        .await
        .unwrap();
    let delete = json!({"entity": "account", "operation": "delete", "id": A2, "modified_at": now.to_rfc3339()});
    handle_webhook("sf", delete.to_string().as_bytes(), "w2", &ports)
        .await
        .unwrap();
    // The page comes back: its records are re-read, so neither change is undone.
    let (totals, idle) = p.run_until_idle(Duration::from_secs(20)).await;
    assert!(idle, "{totals:?}");
    assert_eq!(totals.upsert.refetched, 2, "{totals:?}");
    let want = expected(vec![
        (
            key(Entity::Account, A1),
            account_row(A1, "Acme Renamed", "+14155550111"),
        ),
        (
            key(Entity::Account, A3),
            account_row(A3, "Initech", "+14155550103"),
        ),
    ]);
    assert_eq!(s.dataverse.rows(), want);
}

#[tokio::test]
async fn a_generic_sources_page_that_comes_back_is_written_not_re_read() {
    // A generic REST source may have no fetch_url: its pages cannot be re-read by id.
    let crm = Arc::new(MemoryCrm::new());
    for (id, name) in [("g-1", "Alpha"), ("g-2", "Beta")] {
        crm.put(
            Entity::Account,
            id,
            t(1),
            json!({"uid": id, "title": name, "changed": t(1).to_rfc3339()}),
        );
    }
    let source = SourceId::new("gen").unwrap();
    let mut cfg = SourceConfig::new(source.clone(), CrmKind::Generic, "https://crm.example.com");
    cfg.crm_choice = Some(9);
    cfg.mapping = toml::from_str(
        r#"
        [account]
        id = "/uid"
        modified = "/changed"
        record_url = "{base_url}/companies/{id}"
        [account.columns]
        name = "/title"
        [contact]
        id = "/uid"
        record_url = "{base_url}/people/{id}"
        [contact.columns]
        lastname = "/family"
        "#,
    )
    .unwrap();
    let dataverse = Arc::new(MemoryDataverse::new());
    let mut crms: HashMap<SourceId, Arc<dyn CrmReader>> = HashMap::new();
    crms.insert(source.clone(), crm.clone());
    let p = LocalPipeline {
        metrics: Default::default(),
        versions: Default::default(),
        sources: Arc::new(
            pipeline::Sources::new(&[cfg], IdentityStrategy::DeterministicId).unwrap(),
        ),
        crms,
        writer: dataverse.clone(),
        queues: LocalQueues::new(MemoryQueueConfig {
            visibility_timeout: Duration::from_millis(200),
            ..MemoryQueueConfig::default()
        }),
        settings: SyncSettings {
            page_size: 2,
            ..SyncSettings::default()
        },
        policy: UpsertPolicy::default(),
        batch_size: 10,
        recent: Default::default(),
    };
    start_sync(&source, &[Entity::Account], &p.sync_ports())
        .await
        .unwrap();
    let mut totals = Default::default();
    p.sync_batch(Duration::ZERO, &mut totals).await;
    let outage = || WriteError::Retryable {
        code: "0x80040216".into(),
        message: "unavailable".into(),
    };
    dataverse.inject([outage(), outage()]);
    p.upsert_batch(Duration::ZERO, &mut totals).await;
    let (totals, idle) = p.run_until_idle(Duration::from_secs(20)).await;
    assert!(idle, "{totals:?}");
    assert_eq!(totals.upsert.refetched, 0, "{totals:?}");
    assert_eq!(dataverse.rows().len(), 2);
}
