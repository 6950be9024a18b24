//! `crm-sync dlq list|replay` (the command functions) against a stack's SQS DLQs (moto, the
//! queues as `template.yaml` declares them): a Dataverse outage longer than MaxReceiveCount
//! leaves every record's change in the FIFO upsert DLQ with the error of its last receive, and
//! one message a consumer never settled is redriven there by SQS without a reason. The listing
//! says which is which; after Dataverse is back, a replay sends them to the upsert queue (found
//! with ListDeadLetterSourceQueues) in their own FIFO groups, and Dataverse ends equal to the CRM.

#[path = "support/jobs_table.rs"]
mod jobs_table;
#[path = "support/stack.rs"]
#[allow(dead_code)] // the webhook front is for other tests
mod stack;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crm_sync::dlq::Selection;
use crm_sync::dlq_cmd::{self, Target};
use dataverse_emulator::Faults;
use pipeline::queue::{OutMessage, Queue};
use sqs::SqsQueue;
use stack::{Options, Stack};
use support::moto::Deployment;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_max_receive_count_is_listed_with_reasons_and_replayed_to_the_fifo_queue() {
    let stack = Stack::start(Options {
        accounts: 5,
        contacts_per_account: 2,
        orphan_contacts: 1,
        page_size: 50,
        deployment: Deployment {
            upsert_visibility: 1,
            max_receive_count: 2,
            ..Deployment::default()
        },
        dataverse_attempts: 1,
    })
    .await;
    stack.dv.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    });
    stack.start_sync().await;
    let m = stack.start_mappings();
    assert!(
        stack.wait_idle(&m, Duration::from_secs(90)).await,
        "the queues did not drain"
    );
    drop(m);

    let client = stack.moto.client();
    let upsert_dlq = SqsQueue::new(client.clone(), &stack.queues.upsert_dlq.url);
    let upsert = SqsQueue::new(client.clone(), &stack.queues.upsert.url);
    let target = Target::Sqs {
        client: client.clone(),
        dlq_url: stack.queues.upsert_dlq.url.clone(),
        target_url: None,
    };

    // A consumer that died with a message in hand, twice: SQS redrives it with no reason.
    let taken = upsert_dlq
        .receive_for_inspection(1, Duration::from_secs(30))
        .await
        .unwrap();
    let bare_body = taken[0].received.body.clone();
    upsert
        .send(vec![OutMessage {
            body: bare_body.clone(),
            group_id: Some("unsettled".into()),
            dedup_id: Some("unsettled-1".into()),
            ..OutMessage::default()
        }])
        .await
        .unwrap();
    upsert_dlq.delete(&taken[0].received.receipt).await.unwrap();
    for _ in 0..2 {
        let got = upsert.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 1);
        upsert
            .release(&got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    assert!(upsert.receive(10, Duration::ZERO).await.unwrap().is_empty());

    // The listing: every CRM record once, each with the last error but the redriven one.
    let rows = dlq_cmd::list(&target).await.unwrap();
    let crm: BTreeSet<String> = stack.expected().into_iter().map(|e| e.source_id).collect();
    let listed: Vec<String> = rows.iter().flat_map(|r| r.records.clone()).collect();
    assert_eq!(listed.len(), crm.len(), "{rows:#?}");
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), crm);
    let (bare, reasoned): (Vec<_>, Vec<_>) = rows
        .iter()
        .partition(|r| r.reason.starts_with("reason not recorded"));
    assert_eq!(bare.len(), 1, "{rows:#?}");
    assert_eq!(
        bare[0].reason,
        "reason not recorded (redriven after 2 receives)"
    );
    for r in &reasoned {
        assert!(
            r.reason.contains("Dataverse is unavailable")
                && r.reason.ends_with("(still failing after 2 receives)"),
            "{}",
            r.reason
        );
    }
    assert!(
        rows.iter()
            .all(|r| r.origin.as_deref() == Some(stack.queues.upsert.name.as_str()))
    );
    // Listing received them; they are all visible again at once.
    assert_eq!(
        stack.moto.depth(&stack.queues.upsert_dlq).await.visible as usize,
        rows.len()
    );

    // Each letter's FIFO group, to check the replay keeps them.
    let groups: BTreeMap<String, String> = dlq_cmd::letters(&target)
        .await
        .unwrap()
        .into_iter()
        .map(|l| {
            (
                dlq_record(&l.body),
                l.group_id.expect("a FIFO message has a group"),
            )
        })
        .collect();
    assert_eq!(groups.len(), crm.len());
    assert!(groups.values().all(|g| g != "default"), "{groups:?}");

    // Dataverse is back; replay everything to the upsert queue.
    stack.dv.set_faults(Faults::default());
    let all = Selection {
        all: true,
        ..Selection::default()
    };
    let done = dlq_cmd::replay(&target, &all, false).await.unwrap();
    assert!(done.failed.is_empty(), "{:?}", done.failed);
    assert_eq!(done.replayed.len(), rows.len());
    assert_eq!(stack.moto.depth(&stack.queues.upsert_dlq).await.total(), 0);

    // On the FIFO queue, each in its original group, without the error attribute (taken off
    // the queue to look at them, then put back as they were).
    let queued = stack
        .moto
        .take_all(&stack.queues.upsert, Duration::from_secs(2))
        .await;
    assert_eq!(queued.len(), rows.len());
    for q in &queued {
        let body = q.body().unwrap_or_default();
        let group = q
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId))
            .cloned();
        assert_eq!(group.as_ref(), Some(&groups[&dlq_record(body)]));
        assert!(
            q.message_attributes()
                .is_none_or(|a| !a.contains_key(pipeline::queue::ERROR_ATTRIBUTE))
        );
        upsert
            .send(vec![OutMessage {
                body: body.to_string(),
                group_id: group,
                dedup_id: Some(format!("again-{}", q.message_id().unwrap_or_default())),
                ..OutMessage::default()
            }])
            .await
            .unwrap();
    }

    let m = stack.start_mappings();
    assert!(
        stack.wait_idle(&m, Duration::from_secs(90)).await,
        "the queues did not drain"
    );
    let c = stack.compare();
    assert!(c.is_exact(), "{c}");
    assert_eq!(c.matched, crm.len());
    stack.assert_no_dead_letters().await;
}

/// The CRM id of the one record a dead letter's changes message is about.
fn dlq_record(body: &str) -> String {
    let env = pipeline::message::decode(body).expect("a changes message");
    let pipeline::message::Message::Changes(batch) = env.body else {
        panic!("not a changes message: {body}")
    };
    assert_eq!(batch.changes.len(), 1);
    batch.changes[0].source_id.clone()
}

/// Every other DLQ of the template: the standard retry DLQ (SQS redrove a parked contact's
/// message: replayed to the standard retry queue, no group), the FIFO sync DLQ (a fetch job the
/// function dead-lettered in SQS's `default` group: replayed to sync.fifo in its own group), and
/// the webhook DLQ (no queue redrives into it, and its reports are not work: nothing replays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_dlq_of_the_template_replays_to_its_own_queue_or_says_why_not() {
    let moto = support::moto::Moto::start().await;
    let queues = moto
        .deployment(&Deployment {
            max_receive_count: 2,
            ..Deployment::default()
        })
        .await;
    let client = moto.client();
    let q = |url: &str| SqsQueue::new(client.clone(), url);
    let at = |dlq: &support::moto::Queue, to: Option<&str>| Target::Sqs {
        client: client.clone(),
        dlq_url: dlq.url.clone(),
        target_url: to.map(str::to_string),
    };
    let all = Selection {
        all: true,
        ..Selection::default()
    };
    let change = mapping::Change {
        source: mapping::SourceId::new("sf").unwrap(),
        entity: mapping::Entity::Contact,
        source_id: "003000000000001AAA".into(),
        op: mapping::Operation::Delete,
        modified_at: None,
        parent: mapping::Parent::Unchanged,
        record_url: None,
    };
    let parked = pipeline::message::encode_changes("corr-r", 3, false, &[change], 200_000)
        .unwrap()
        .remove(0);

    // Retry queue (standard): received twice and never settled, then redriven by SQS.
    let retry = q(&queues.retry.url);
    retry
        .send(vec![OutMessage::new(parked.clone())])
        .await
        .unwrap();
    for _ in 0..2 {
        let got = retry.receive(10, Duration::ZERO).await.unwrap();
        retry
            .release(&got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    assert!(retry.receive(10, Duration::ZERO).await.unwrap().is_empty());
    let rows = dlq_cmd::list(&at(&queues.retry_dlq, None)).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].reason,
        "reason not recorded (redriven after 2 receives)"
    );
    assert_eq!(rows[0].origin.as_deref(), Some(queues.retry.name.as_str()));
    let done = dlq_cmd::replay(&at(&queues.retry_dlq, None), &all, false)
        .await
        .unwrap();
    assert_eq!((done.replayed.len(), done.failed.len()), (1, 0), "{done:?}");
    let back = moto.take_all(&queues.retry, Duration::from_secs(2)).await;
    assert_eq!(back.len(), 1);
    let env = pipeline::message::decode(back[0].body().unwrap()).unwrap();
    let pipeline::message::Message::Changes(batch) = env.body else {
        panic!("not changes")
    };
    assert_eq!(batch.attempt, 0, "a replay is a fresh attempt");
    assert_eq!(moto.depth(&queues.retry_dlq).await.total(), 0);

    // Sync DLQ (FIFO): a fetch job the function dead-lettered with its reason.
    let fetch = pipeline::message::encode(
        "corr-f",
        pipeline::message::Message::Fetch(pipeline::message::FetchJob {
            source: mapping::SourceId::new("sf").unwrap(),
            entity: mapping::Entity::Account,
            ids: vec!["001000000000001AAA".into()],
            reason: "webhook".into(),
        }),
    );
    let mut dead = OutMessage::new(fetch.clone());
    dead.attributes.insert(
        pipeline::queue::ERROR_ATTRIBUTE.into(),
        "Salesforce answered 401".into(),
    );
    q(&queues.sync_dlq.url).send(vec![dead]).await.unwrap();
    let rows = dlq_cmd::list(&at(&queues.sync_dlq, None)).await.unwrap();
    assert_eq!(
        (rows[0].kind.as_str(), rows[0].reason.as_str()),
        ("fetch", "Salesforce answered 401")
    );
    assert_eq!(rows[0].records, ["001000000000001AAA"]);
    // Not the right text: nothing is selected, nothing moves.
    let none = Selection {
        error_contains: Some("503".into()),
        ..Selection::default()
    };
    let done = dlq_cmd::replay(&at(&queues.sync_dlq, None), &none, false)
        .await
        .unwrap();
    assert!(done.replayed.is_empty() && done.failed.is_empty());
    assert_eq!(moto.depth(&queues.sync_dlq).await.visible, 1);
    let by_text = Selection {
        error_contains: Some("401".into()),
        ..Selection::default()
    };
    let done = dlq_cmd::replay(&at(&queues.sync_dlq, None), &by_text, false)
        .await
        .unwrap();
    assert_eq!(done.replayed.len(), 1, "{done:?}");
    let back = moto.take_all(&queues.sync, Duration::from_secs(2)).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body(), Some(fetch.as_str()));
    let group = back[0]
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId))
        .cloned();
    assert_eq!(group, Some(pipeline::sync::digest("sf:account")));

    // Webhook DLQ: nothing redrives into it, so no target without --target-queue-url; and
    // a webhook's report of unmappable items is not work for any queue: it stays.
    let report = serde_json::json!({"source": "sf", "correlation_id": "c-w", "failures": [{"error": "no Id"}]});
    let mut dead = OutMessage::new(report.to_string());
    dead.attributes.insert(
        pipeline::queue::ERROR_ATTRIBUTE.into(),
        "1 notification item(s) could not be mapped".into(),
    );
    q(&queues.webhook_dlq.url).send(vec![dead]).await.unwrap();
    let rows = dlq_cmd::list(&at(&queues.webhook_dlq, None)).await.unwrap();
    assert_eq!(
        (rows[0].kind.as_str(), rows[0].origin.as_deref()),
        ("webhook_items", None)
    );
    let err = dlq_cmd::replay(&at(&queues.webhook_dlq, None), &all, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--target-queue-url"), "{err}");
    let done = dlq_cmd::replay(
        &at(&queues.webhook_dlq, Some(&queues.upsert.url)),
        &all,
        false,
    )
    .await
    .unwrap();
    assert_eq!((done.replayed.len(), done.failed.len()), (0, 1));
    assert!(
        done.failed[0].1.contains("not a pipeline message"),
        "{done:?}"
    );
    assert_eq!(moto.depth(&queues.webhook_dlq).await.total(), 1);
    assert_eq!(moto.depth(&queues.upsert).await.total(), 0);
}
