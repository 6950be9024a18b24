//! The initial-sync handler driven as Lambda drives it: a direct start, the HTTP trigger, and
//! sync-queue messages delivered as SQS events until the job is done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use crm::{CrmReader, MemoryCrm};
use initial_sync::{App, handle};
use mapping::{CrmKind, Entity, IdentityStrategy, SourceConfig, SourceId};
use pipeline::message::{self, Message};
use pipeline::sources::Sources;
use pipeline::sync::SyncSettings;
use pipeline::{MemoryQueue, MemoryQueueConfig, Queue};
use serde_json::{Value, json};

fn t(s: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
}

struct Setup {
    app: App,
    sync: Arc<MemoryQueue>,
    upsert: Arc<MemoryQueue>,
    dlq: Arc<MemoryQueue>,
}

fn setup(accounts: usize, contacts: usize) -> Setup {
    let crm = Arc::new(MemoryCrm::new());
    for i in 0..accounts {
        let id = format!("001{i:012}AAA");
        crm.put(
            Entity::Account,
            &id,
            t(i as i64),
            json!({"attributes": {"type": "Account"}, "Id": id, "Name": format!("A{i}")}),
        );
    }
    for i in 0..contacts {
        let id = format!("003{i:012}AAA");
        crm.put(Entity::Contact, &id, t(i as i64), json!({"attributes": {"type": "Contact"}, "Id": id, "LastName": format!("C{i}"), "AccountId": format!("001{:012}AAA", i % accounts.max(1))}));
    }
    let src = SourceId::new("sf").unwrap();
    let mut sc = SourceConfig::new(
        src.clone(),
        CrmKind::Salesforce,
        "https://a.my.salesforce.com",
    );
    sc.crm_choice = Some(1);
    let mut crms: HashMap<SourceId, Arc<dyn CrmReader>> = HashMap::new();
    crms.insert(src, crm);
    let q = |n: &str| Arc::new(MemoryQueue::new(n, MemoryQueueConfig::default(), None));
    let (sync, upsert, dlq) = (q("sync"), q("upsert"), q("dlq"));
    Setup {
        app: App {
            metrics: Default::default(),
            ledger: None,
            sources: Sources::new(&[sc], IdentityStrategy::DeterministicId).unwrap(),
            crms,
            upsert: Box::new(upsert.clone()),
            sync: Box::new(sync.clone()),
            dlq: Box::new(dlq.clone()),
            settings: SyncSettings {
                page_size: 50,
                ..SyncSettings::default()
            },
        },
        sync,
        upsert,
        dlq,
    }
}

/// Delivers the sync queue to the handler, one SQS event per receive, until it is empty.
async fn drain(s: &Setup) -> usize {
    let mut invocations = 0;
    loop {
        let got = s.sync.receive(10, Duration::ZERO).await.unwrap();
        if got.is_empty() {
            return invocations;
        }
        let mut e = SqsEvent::default();
        for r in &got {
            let mut m = SqsMessage::default();
            m.message_id = Some(r.message_id.clone());
            m.body = Some(r.body.clone());
            e.records.push(m);
        }
        let resp = handle(&s.app, serde_json::to_value(&e).unwrap())
            .await
            .unwrap();
        assert_eq!(resp["batchItemFailures"], json!([]), "{resp}");
        for r in got {
            s.sync.delete(&r.receipt).await.unwrap();
        }
        invocations += 1;
    }
}

fn upserted(s: &Setup) -> Vec<(Entity, String)> {
    s.upsert
        .peek_all()
        .into_iter()
        .flat_map(|(body, _)| match message::decode(&body).unwrap().body {
            Message::Changes(b) => b
                .changes
                .into_iter()
                .map(|c| (c.entity, c.source_id))
                .collect(),
            _ => vec![],
        })
        .collect()
}

#[tokio::test]
async fn a_direct_start_walks_accounts_then_contacts_page_by_page() {
    let s = setup(120, 260);
    let out = handle(
        &s.app,
        json!({"source": "sf", "entities": ["contact", "account"]}),
    )
    .await
    .unwrap();
    assert!(out["job_id"].as_str().is_some_and(|j| !j.is_empty()));
    drain(&s).await;
    let all = upserted(&s);
    assert_eq!(all.len(), 380);
    // Every account is enqueued before any contact.
    let first_contact = all.iter().position(|(e, _)| *e == Entity::Contact).unwrap();
    assert!(
        all[..first_contact]
            .iter()
            .all(|(e, _)| *e == Entity::Account)
    );
    assert_eq!(first_contact, 120);
    let mut ids: Vec<_> = all.iter().map(|(_, id)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 380, "no record twice");
    assert!(s.dlq.is_empty());
}

#[tokio::test]
async fn the_http_trigger_and_bad_requests() {
    let s = setup(3, 0);
    let http = |body: &str| json!({"requestContext": {"http": {"method": "POST"}}, "body": body, "isBase64Encoded": false});
    let r = handle(&s.app, http(r#"{"source":"sf"}"#)).await.unwrap();
    assert_eq!(r["statusCode"], 202);
    assert!(
        serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap()["job_id"].is_string()
    );
    let r = handle(&s.app, http(r#"{"source":"nope"}"#)).await.unwrap();
    assert_eq!(r["statusCode"], 404);
    let r = handle(&s.app, http("not json")).await.unwrap();
    assert_eq!(r["statusCode"], 400);
    let r = handle(&s.app, http(r#"{"source":"sf","entities":["lead"]}"#))
        .await
        .unwrap();
    assert_eq!(r["statusCode"], 400);
    assert!(
        handle(&s.app, json!({"source": "sf", "surprise": 1}))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_poison_job_lands_in_the_dlq_with_its_reason() {
    let s = setup(1, 0);
    s.sync
        .send(vec![pipeline::OutMessage::new(
            r#"{"v":1,"correlation_id":"c","kind":"sync_page"}"#.into(),
        )])
        .await
        .unwrap();
    drain(&s).await;
    let dlq = s.dlq.peek_all();
    assert_eq!(dlq.len(), 1);
    assert!(dlq[0].1["crm_sync_error"].contains("does not match its kind"));
}

/// A page job failing retryably (here the upsert queue will not take its changes) comes back
/// until its last receive before SQS's redrive (MAX_RECEIVE_COUNT); that one is dead-lettered by
/// the function with the error, instead of being redriven by SQS without one. (Each refused
/// send waits the queue's 5 s for room first.)
#[tokio::test]
async fn a_page_failing_on_its_last_receive_is_dead_lettered_with_the_error() {
    let mut s = setup(3, 0);
    let full = MemoryQueueConfig {
        capacity: 0,
        ..MemoryQueueConfig::default()
    };
    s.app.upsert = Box::new(MemoryQueue::new("upsert", full, None));
    s.app.settings.max_receives = Some(3);
    handle(&s.app, json!({"source": "sf"})).await.unwrap();
    let got = s.sync.receive(10, Duration::ZERO).await.unwrap();
    let event = |receives: &str| {
        let mut m = SqsMessage::default();
        m.message_id = Some(got[0].message_id.clone());
        m.body = Some(got[0].body.clone());
        m.attributes
            .insert("ApproximateReceiveCount".into(), receives.into());
        let mut e = SqsEvent::default();
        e.records.push(m);
        serde_json::to_value(&e).unwrap()
    };
    let resp = handle(&s.app, event("2")).await.unwrap();
    assert_eq!(
        resp["batchItemFailures"][0]["itemIdentifier"],
        json!(got[0].message_id)
    );
    assert!(s.dlq.is_empty());

    let resp = handle(&s.app, event("3")).await.unwrap();
    assert_eq!(resp["batchItemFailures"], json!([]), "{resp}");
    let dead = s.dlq.peek_all();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, got[0].body);
    let reason = &dead[0].1[pipeline::queue::ERROR_ATTRIBUTE];
    assert!(
        reason.contains("upsert is full") && reason.ends_with("(still failing after 3 receives)"),
        "{reason}"
    );
}
