//! The three functions chained through real SQS (moto), driven as Lambda's SQS event source
//! mappings drive them, between the Salesforce and Dataverse emulators: the initial sync, webhooks
//! arriving while it runs, poison messages, a Dataverse outage that heals, and failures that
//! outlast maxReceiveCount. Each ends with Dataverse compared with the CRM record for record.

#[path = "support/jobs_table.rs"]
mod jobs_table;
#[path = "support/stack.rs"]
mod stack;
mod support;

use std::time::Duration;

use crm_emulator::SalesforceEmulator;
use dataverse_emulator::Faults;
use pipeline::message::{Message, decode};
use pipeline::queue::ERROR_ATTRIBUTE;
use serde_json::{Map, Value, json};
use stack::{Options, SOURCE, Stack, WEBHOOK_SECRET};
use support::lambda::wait_for;
use support::moto::Deployment;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn crm_records(stack: &Stack) -> usize {
    stack.sf.count("Account") + stack.sf.count("Contact")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_through_sqs_matches_the_crm_record_for_record() {
    let stack = Stack::start(Options::default()).await;
    // `aws lambda invoke` with {"source", "entities"}: the first page job goes to sync.fifo.
    let started = stack.start_sync().await;
    assert_eq!(started["source"], SOURCE, "{started}");
    assert!(started["job_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(stack.moto.depth(&stack.queues.sync).await.visible, 1);

    let m = stack.start_mappings();
    assert!(
        stack.wait_idle(&m, Duration::from_secs(60)).await,
        "the queues did not drain"
    );
    let c = stack.compare();
    assert!(c.is_exact(), "{c}");
    assert_eq!(c.matched, crm_records(&stack));
    stack.assert_no_dead_letters().await;
    // Every page job and every upsert batch succeeded the first time.
    for (name, s) in [("sync", &m.sync.stats), ("upsert", &m.upsert.stats)] {
        assert_eq!(s.get(|s| &s.item_failures), 0, "{name}: {s:?}");
        assert_eq!(s.get(|s| &s.batch_failures), 0, "{name}: {s:?}");
        assert_eq!(s.get(|s| &s.max_receive_count), 1, "{name}: {s:?}");
    }
    // 250 accounts and 504 contacts in pages of 200 (2 + 3), then the catch-up pass (1 + 1).
    assert!(
        m.sync.stats.get(|s| &s.invocations) >= 7,
        "{:?}",
        m.sync.stats
    );

    // The run ledger the functions kept in DynamoDB, as `crm-sync sync status --jobs-table`
    // reads it: finished, every record read, every change accounted for.
    let job = started["job_id"].as_str().unwrap();
    let jobs = crm_sync::sync_cmd::cloud_status(&stack.ledger(), Some(job))
        .await
        .unwrap();
    let r = &jobs[0];
    assert_eq!(r.state(), "finished", "{r}");
    assert_eq!(r.source, SOURCE);
    assert_eq!(r.entities, ["account", "contact"]);
    assert!(r.counts.read >= crm_records(&stack) as u64, "{r}");
    assert_eq!(r.counts.enqueued + r.counts.skipped, r.counts.read, "{r}");
    assert_eq!(r.written, r.to_write(), "{r}");
    assert_eq!(r.write_failed, 0, "{r}");
    assert_eq!(
        r.snapshot_totals.values().sum::<u64>(),
        crm_records(&stack) as u64,
        "{r}"
    );
    assert_eq!(r.progress(), Some(("writing", r.written, r.written)));
    // Webhook correlation ids are not jobs: nothing else was recorded.
    let all = stack.ledger().list().await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
}

/// Changes in the CRM while its snapshot is being read: creates (accounts with contacts, and a
/// contact without account), updates, contacts moved to another account, deletes. Returns how
/// many notifications they make.
fn burst(sf: &SalesforceEmulator) -> usize {
    let accounts = sf.ids("Account");
    let contacts = sf.ids("Contact");
    let mut n = 0;
    for i in 0..3 {
        let acc = sf
            .put_account(obj(json!({"Name": format!("Webhook Account {i}")})))
            .expect("account created");
        n += 1;
        for j in 0..2 {
            sf.put_contact(obj(json!({"LastName": format!("Hook-{i}-{j}"),
                "Email": format!("hook{i}.{j}@example.com"), "AccountId": acc})))
                .expect("contact created");
            n += 1;
        }
    }
    sf.put_contact(obj(json!({"LastName": "Nobody's"})))
        .expect("contact created");
    n += 1;
    for id in contacts.iter().step_by(9).take(10) {
        sf.update(id, obj(json!({"Email": format!("moved.{id}@example.org")})))
            .expect("contact updated");
        n += 1;
    }
    for (k, id) in contacts.iter().skip(4).step_by(13).take(4).enumerate() {
        let to = &accounts[(k * 7 + 3) % accounts.len()];
        sf.update(id, obj(json!({"AccountId": to})))
            .expect("contact moved");
        n += 1;
    }
    for id in accounts.iter().step_by(11).take(3) {
        sf.update(id, obj(json!({"Phone": "+1 650 555 0199"})))
            .expect("account updated");
        n += 1;
    }
    for id in contacts.iter().skip(2).step_by(17).take(6) {
        assert!(sf.delete(id), "contact {id} deleted");
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_during_the_sync_end_exact() {
    // 300 accounts and 604 contacts: 6 snapshot pages of 200.
    let stack = Stack::start(Options {
        accounts: 300,
        ..Options::default()
    })
    .await;
    let front = stack.webhook_front().await;
    let notifier = stack.sf.notify_to(&front.url(), WEBHOOK_SECRET);
    stack.start_sync().await;
    let m = stack.start_mappings();

    // Two pages in, the CRM changes; its notifier posts signed webhooks to the webhook function.
    assert!(
        wait_for(Duration::from_secs(30), || m.sync.stats.get(|s| &s.deleted)
            >= 2)
        .await,
        "the sync did not get going: {:?}",
        m.sync.stats
    );
    let notifications = burst(&stack.sf);
    let pages_at_burst = m.sync.stats.get(|s| &s.deleted);
    assert!(
        notifier.idle(Duration::from_secs(60)).await,
        "webhooks undelivered"
    );
    let deliveries = notifier.deliveries();
    assert_eq!(deliveries.len(), notifications);
    let refused: Vec<_> = deliveries
        .iter()
        .filter(|d| d.status != Some(202))
        .collect();
    assert!(refused.is_empty(), "not accepted: {refused:?}");

    assert!(
        stack.wait_idle(&m, Duration::from_secs(90)).await,
        "the queues did not drain"
    );
    // The snapshot was still being read when the changes were made.
    let pages = m.sync.stats.get(|s| &s.deleted);
    assert!(
        pages > pages_at_burst,
        "{pages} pages, {pages_at_burst} before the burst"
    );
    let c = stack.compare();
    assert!(c.is_exact(), "{c}");
    assert_eq!(c.matched, crm_records(&stack));
    stack.assert_no_dead_letters().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_reach_the_dlq_with_their_reason_and_nothing_else_is_lost() {
    let stack = Stack::start(Options::default()).await;
    stack.start_sync().await;
    // What a broken producer (or a newer build) could put on the upsert queue.
    let poison = [
        (r#"{"v":1,"kind":"changes","correlation_id":"#, "not JSON"),
        (
            r#"{"v":2,"kind":"changes","correlation_id":"from-the-future","attempt":0,"changes":[]}"#,
            "version 2 is not supported",
        ),
        (r#"{"kind":"changes","changes":[]}"#, "no envelope version"),
        (
            r#"{"v":1,"kind":"fetch","correlation_id":"c","source":"salesforce","entity":"account","ids":["001"],"reason":"r"}"#,
            "not a changes message",
        ),
    ];
    for (i, (body, _)) in poison.iter().enumerate() {
        let id = format!("poison-{i}");
        stack
            .moto
            .send(&stack.queues.upsert, body, Some(&id), Some(&id))
            .await;
    }
    let m = stack.start_mappings();
    assert!(
        stack.wait_idle(&m, Duration::from_secs(60)).await,
        "the queues did not drain"
    );
    let c = stack.compare();
    assert!(c.is_exact(), "{c}");

    let dead = stack
        .moto
        .take_all(&stack.queues.upsert_dlq, Duration::from_secs(5))
        .await;
    assert_eq!(dead.len(), poison.len(), "{dead:?}");
    for (body, reason) in poison {
        let m = dead
            .iter()
            .find(|m| m.body() == Some(body))
            .unwrap_or_else(|| panic!("{body} is not in the DLQ"));
        let why = m
            .message_attributes()
            .and_then(|a| a.get(ERROR_ATTRIBUTE))
            .and_then(|v| v.string_value())
            .unwrap_or_default();
        assert!(why.contains(reason), "{body}: reason `{why}`");
    }
    // Dead-lettered by the function on their first delivery, not retried into the DLQ.
    assert_eq!(m.upsert.stats.get(|s| &s.item_failures), 0);
    assert_eq!(m.upsert.stats.get(|s| &s.max_receive_count), 1);
    for q in [
        &stack.queues.retry_dlq,
        &stack.queues.sync_dlq,
        &stack.queues.webhook_dlq,
    ] {
        assert_eq!(stack.moto.depth(q).await.total(), 0, "{}", q.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_before_their_accounts_wait_on_the_retry_queue_then_land() {
    let stack = Stack::start(Options {
        accounts: 30,
        ..Options::default()
    })
    .await;
    let m = stack.start_mappings();
    // Contacts first: Dataverse refuses those whose account is missing, and the upsert function
    // parks them on the retry queue (a standard queue, with DelaySeconds).
    let contacts_only = (stack.sync_fn())(json!({"source": SOURCE, "entities": ["contact"]}))
        .await
        .expect("a contacts-only sync starts");
    assert!(contacts_only["job_id"].is_string());
    assert!(
        wait_for(Duration::from_secs(30), || m
            .retry
            .stats
            .get(|s| &s.messages)
            >= 1)
        .await,
        "nothing was parked: {:?}",
        m.upsert.stats
    );
    assert!(stack.dv.rows("account").is_empty());
    // Then the accounts only: the parked contacts land from the retry queue, nowhere else.
    (stack.sync_fn())(json!({"source": SOURCE, "entities": ["account"]}))
        .await
        .expect("an accounts-only sync starts");
    assert!(
        stack.wait_idle(&m, Duration::from_secs(60)).await,
        "the queues did not drain"
    );
    let c = stack.compare();
    assert!(c.is_exact(), "{c}");
    assert_eq!(c.matched, crm_records(&stack));
    stack.assert_no_dead_letters().await;
    assert!(
        m.retry.stats.get(|s| &s.deleted) >= 1,
        "{:?}",
        m.retry.stats
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataverse_outage_heals_and_every_change_lands_without_dead_letters() {
    let stack = Stack::start(Options {
        accounts: 24,
        contacts_per_account: 2,
        orphan_contacts: 2,
        page_size: 200,
        deployment: Deployment {
            upsert_visibility: 1,
            ..Deployment::default()
        },
        dataverse_attempts: 2,
    })
    .await;
    // Every Dataverse API request answers 500 or 503 until further notice.
    stack.dv.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    });
    stack.start_sync().await;
    let m = stack.start_mappings();
    // The outage lasts until failed batches have come back after the visibility timeout.
    assert!(
        wait_for(Duration::from_secs(60), || {
            m.upsert.stats.get(|s| &s.item_failures) >= 4
                && m.upsert.stats.get(|s| &s.max_receive_count) >= 2
        })
        .await,
        "no redelivery during the outage: {:?}",
        m.upsert.stats
    );
    assert!(stack.dv.rows("account").is_empty() && stack.dv.rows("contact").is_empty());
    stack.dv.set_faults(Faults::default());

    assert!(
        stack.wait_idle(&m, Duration::from_secs(90)).await,
        "the queues did not drain"
    );
    let c = stack.compare();
    assert!(c.is_exact(), "{c}");
    assert_eq!(c.matched, crm_records(&stack));
    stack.assert_no_dead_letters().await;
    let errors: u64 = [500, 503]
        .iter()
        .filter_map(|s| stack.dv.stats().by_status.get(s).copied())
        .sum();
    assert!(errors > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_past_max_receive_count_reach_the_dlq_with_the_last_error() {
    let stack = Stack::start(Options {
        accounts: 6,
        contacts_per_account: 1,
        orphan_contacts: 0,
        page_size: 50,
        deployment: Deployment {
            upsert_visibility: 1,
            max_receive_count: 2,
            ..Deployment::default()
        },
        dataverse_attempts: 1,
    })
    .await;
    // Dataverse never comes back.
    stack.dv.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    });
    stack.start_sync().await;
    let m = stack.start_mappings();
    // A page's message fails once, comes back and is re-read from the CRM (fetch jobs); the
    // re-read records' messages fail twice each, and on the second (the last before SQS would
    // redrive them) the function dead-letters their changes itself, with the error.
    assert!(
        stack.wait_idle(&m, Duration::from_secs(60)).await,
        "the queues did not drain"
    );
    let dead = stack
        .moto
        .take_all(&stack.queues.upsert_dlq, Duration::from_secs(5))
        .await;
    assert!(!dead.is_empty());
    let mut changes = 0;
    for d in &dead {
        let env = decode(d.body().unwrap_or_default()).expect("the message as it was sent");
        let Message::Changes(batch) = env.body else {
            panic!("not a changes message: {:?}", d.body())
        };
        changes += batch.changes.len();
        assert!(
            !batch.from_page,
            "a redelivered page is re-read, not dead-lettered"
        );
        let reason = d
            .message_attributes()
            .and_then(|a| a.get(ERROR_ATTRIBUTE))
            .and_then(|v| v.string_value())
            .unwrap_or_default();
        assert!(
            reason.contains("Dataverse is unavailable")
                && reason.ends_with("(still failing after 2 receives)"),
            "{reason:?}"
        );
    }
    assert_eq!(changes, crm_records(&stack));
    let s = &m.upsert.stats;
    assert_eq!(s.get(|s| &s.max_receive_count), 2, "{s:?}");
    assert!(stack.dv.rows("account").is_empty());
}

/// A snapshot page whose upsert message fails (Dataverse down) comes back after its visibility
/// timeout, after the job's catch-up pass has run and after newer webhook changes to its records
/// were applied: rewriting the page must not undo them. Newest-wins only holds within a batch,
/// so the upsert step re-reads a redelivered page's records from the CRM (fetch jobs on the sync
/// queue) instead of writing its snapshot: without that, the deleted contact would be re-created
/// and the updated one would revert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_page_retried_after_newer_webhook_changes_does_not_undo_them() {
    let stack = Stack::start(Options {
        accounts: 20,
        contacts_per_account: 2,
        orphan_contacts: 2,
        deployment: Deployment {
            upsert_visibility: 6,
            ..Deployment::default()
        },
        dataverse_attempts: 1,
        ..Options::default()
    })
    .await;
    let front = stack.webhook_front().await;
    let notifier = stack.sf.notify_to(&front.url(), WEBHOOK_SECRET);
    stack.dv.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    });
    stack.start_sync().await;
    let m = stack.start_mappings();
    // The whole job, snapshot and catch-up, is read while Dataverse is down: the two pages'
    // messages (accounts, contacts) fail and wait out their visibility timeout.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sync = stack.moto.depth(&stack.queues.sync).await.total();
        let upsert = stack.moto.depth(&stack.queues.upsert).await;
        if sync == 0
            && m.sync.in_flight() == 0
            && m.upsert.in_flight() == 0
            && upsert.visible == 0
            && upsert.in_flight == 2
            && m.upsert.stats.get(|s| &s.item_failures) >= 2
        {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{:?}", m.upsert.stats);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Dataverse is back; the CRM deletes a contact and changes a contact without account, and
    // its webhooks are applied while the pages are still waiting.
    stack.dv.set_faults(Faults::default());
    let contacts = stack.sf.ids("Contact");
    let with_account = contacts
        .iter()
        .find(|id| {
            stack
                .sf
                .record(id)
                .is_some_and(|r| r["AccountId"].is_string())
        })
        .unwrap()
        .clone();
    let orphan = contacts
        .iter()
        .find(|id| {
            stack
                .sf
                .record(id)
                .is_some_and(|r| r["AccountId"].is_null())
        })
        .unwrap()
        .clone();
    assert!(stack.sf.delete(&with_account));
    stack
        .sf
        .update(&orphan, obj(json!({"Email": "new.address@example.org"})))
        .unwrap();
    assert!(notifier.idle(Duration::from_secs(10)).await);
    let email_of = |id: &str| {
        stack
            .dv
            .rows("contact")
            .into_iter()
            .find(|r| r["msdyn_source_crm_id"] == id)
            .and_then(|r| r.get("emailaddress1").cloned())
    };
    assert!(
        wait_for(Duration::from_secs(5), || email_of(&orphan)
            == Some(json!("new.address@example.org")))
        .await
    );

    assert!(
        stack.wait_idle(&m, Duration::from_secs(60)).await,
        "the queues did not drain"
    );
    let c = stack.compare();
    let email = email_of(&orphan);
    assert!(
        c.is_exact() && email == Some(json!("new.address@example.org")),
        "{c}; {orphan}'s email in Dataverse: {email:?}"
    );
}
