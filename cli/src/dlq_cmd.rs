//! `crm-sync dlq list|show|replay`: the dead-letter queues of the local runner's state file or of
//! a deployed stack (SQS), read and replayed. What a letter says and what a replay sends is
//! `dlq`'s; this module only reads and writes the queues.
//!
//! A replay sends each selected letter to the queue it came from and deletes it from the DLQ
//! only once the send succeeded: a letter whose send fails stays where it was, and is reported.
//!
//! SQS has no way to look at a message without receiving it: listing receives the DLQ's
//! messages with a short visibility timeout and makes each visible again at once
//! (ChangeMessageVisibility 0). Each inspection counts as a receive.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use pipeline::queue::Queue;
use sqs::SqsQueue;

use crate::dlq::{self, Letter, Role, Row, Selection};
use crate::jobs::{LocalState, SYNC, SYNC_DLQ, UPSERT, UPSERT_DLQ};
use crate::sync_cmd::open_existing;

/// How long an SQS listing keeps the messages it looked at invisible, at most (each is made
/// visible again as soon as the listing is complete).
const LIST_VISIBILITY: Duration = Duration::from_secs(30);

/// How long a replay keeps the messages it holds invisible, at most: time for every send.
const REPLAY_VISIBILITY: Duration = Duration::from_secs(300);

/// Which DLQs.
#[derive(Debug, Clone)]
pub enum Target {
    /// The state file's DLQs (`sync-dlq`, `upsert-dlq`), or only the one named.
    Local {
        state: PathBuf,
        queue: Option<String>,
    },
    /// One SQS DLQ; replays go to `target_url`, or else to the queue whose redrive policy names
    /// this DLQ (ListDeadLetterSourceQueues).
    Sqs {
        client: sqs::Client,
        dlq_url: String,
        target_url: Option<String>,
    },
}

/// What a replay did, letter by letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// (letter id, queue it was sent to).
    pub replayed: Vec<(String, String)>,
    /// (letter id, why it stays in the DLQ).
    pub failed: Vec<(String, String)>,
    /// Selected letters a dry run would send: (letter id, queue).
    pub would_replay: Vec<(String, String)>,
}

/// Now, in unix milliseconds (a letter's age).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The local DLQs and the queue each is the DLQ of.
const LOCAL: [(&str, &str); 2] = [(SYNC_DLQ, SYNC), (UPSERT_DLQ, UPSERT)];

fn local_dlqs(queue: Option<&str>) -> anyhow::Result<Vec<(&'static str, &'static str)>> {
    match queue {
        None => Ok(LOCAL.to_vec()),
        Some(q) => match LOCAL.iter().find(|(d, _)| *d == q) {
            Some(p) => Ok(vec![*p]),
            None => bail!("--queue {q}: the state file's DLQs are {SYNC_DLQ} and {UPSERT_DLQ}"),
        },
    }
}

fn local_letters(state: &LocalState, queue: Option<&str>) -> anyhow::Result<Vec<Letter>> {
    let mut out = Vec::new();
    for (dlq, origin) in local_dlqs(queue)? {
        let q = match dlq {
            SYNC_DLQ => &state.sync_dlq,
            _ => &state.upsert_dlq,
        };
        out.extend(q.stored()?.into_iter().map(|m| Letter {
            id: m.id,
            dlq: dlq.to_string(),
            origin: Some(origin.to_string()),
            body: m.body,
            attributes: m.attributes,
            group_id: m.group_id,
            receive_count: m.receive_count,
            sent_at_ms: Some(m.sent_at_ms),
        }));
    }
    Ok(out)
}

/// An SQS DLQ, and the queue its letters go back to (if it can be told).
async fn sqs_queues(
    client: &sqs::Client,
    dlq_url: &str,
    target_url: Option<&str>,
) -> anyhow::Result<(SqsQueue, Option<SqsQueue>)> {
    let dlq = SqsQueue::new(client.clone(), dlq_url);
    let target = match target_url {
        Some(url) => Some(url.to_string()),
        None => {
            let sources = dlq
                .dead_letter_sources()
                .await
                .with_context(|| format!("asking SQS which queues redrive to {dlq_url}"))?;
            match sources.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            }
        }
    };
    Ok((dlq, target.map(|url| SqsQueue::new(client.clone(), url))))
}

/// Receives every message of an SQS DLQ it can (each held invisible for `visibility`).
/// On a FIFO queue SQS hands out a group's later messages only once its earlier ones are
/// deleted, so at most 10 of each group are seen here.
async fn receive_all(dlq: &SqsQueue, visibility: Duration) -> anyhow::Result<Vec<sqs::Inspected>> {
    let mut out: Vec<sqs::Inspected> = Vec::new();
    loop {
        let batch = dlq
            .receive_for_inspection(10, visibility)
            .await
            .with_context(|| format!("receiving from {}", dlq.url()))?;
        let fresh: Vec<sqs::Inspected> = batch
            .into_iter()
            .filter(|m| {
                !out.iter()
                    .any(|o| o.received.message_id == m.received.message_id)
            })
            .collect();
        if fresh.is_empty() {
            return Ok(out);
        }
        out.extend(fresh);
    }
}

fn sqs_letter(dlq: &SqsQueue, target: Option<&SqsQueue>, m: &sqs::Inspected) -> Letter {
    Letter {
        id: m.received.message_id.clone(),
        dlq: dlq.name().to_string(),
        origin: target.map(|t| t.name().to_string()),
        body: m.received.body.clone(),
        attributes: m.received.attributes.clone(),
        group_id: m.group_id.clone(),
        // This inspection's own receive is not one the pipeline failed.
        receive_count: m.received.receive_count.saturating_sub(1),
        sent_at_ms: m.sent_at_ms,
    }
}

/// Makes held messages visible again at once; one that cannot be is visible again anyway when
/// its visibility timeout ends.
async fn release_all(dlq: &SqsQueue, held: &[sqs::Inspected]) {
    for m in held {
        if let Err(e) = dlq.release(&m.received.receipt, Duration::ZERO).await {
            tracing::warn!(message_id = %m.received.message_id, error = %e, "could not make a DLQ message visible again; it will be after its visibility timeout");
        }
    }
}

/// Every letter of the target's DLQs, oldest first per DLQ.
pub async fn letters(target: &Target) -> anyhow::Result<Vec<Letter>> {
    match target {
        Target::Local { state, queue } => {
            let state = open_existing(state)?;
            local_letters(&state, queue.as_deref())
        }
        Target::Sqs {
            client,
            dlq_url,
            target_url,
        } => {
            let (dlq, to) = sqs_queues(client, dlq_url, target_url.as_deref()).await?;
            let held = receive_all(&dlq, LIST_VISIBILITY).await?;
            let out = held
                .iter()
                .map(|m| sqs_letter(&dlq, to.as_ref(), m))
                .collect();
            release_all(&dlq, &held).await;
            Ok(out)
        }
    }
}

/// The listing rows of the target's DLQs.
pub async fn list(target: &Target) -> anyhow::Result<Vec<Row>> {
    let now = now_ms();
    Ok(letters(target)
        .await?
        .iter()
        .map(|l| dlq::row(l, now))
        .collect())
}

/// One letter, by id.
pub async fn show(target: &Target, id: &str) -> anyhow::Result<Letter> {
    letters(target)
        .await?
        .into_iter()
        .find(|l| l.id == id)
        .with_context(|| format!("no message {id} in the dead-letter queue"))
}

/// Sends the selected letters back to the queues they came from; each is deleted from its DLQ
/// only after its send succeeded.
pub async fn replay(
    target: &Target,
    selection: &Selection,
    dry_run: bool,
) -> anyhow::Result<ReplayReport> {
    if selection.is_empty() {
        bail!("say which messages to replay: --all, --id, --error-contains or --source");
    }
    let now = now_ms();
    let mut report = ReplayReport::default();
    match target {
        Target::Local { state, queue } => {
            let state = open_existing(state)?;
            for l in local_letters(&state, queue.as_deref())? {
                if !selection.matches(&dlq::row(&l, now)) {
                    continue;
                }
                let (origin, dlq_queue) = match l.dlq.as_str() {
                    SYNC_DLQ => (&state.sync, &state.sync_dlq),
                    _ => (&state.upsert, &state.upsert_dlq),
                };
                let role = Role::of_queue(origin.name());
                let out = match dlq::replay_message(&l, role) {
                    Ok(m) => m,
                    Err(why) => {
                        report.failed.push((l.id, why));
                        continue;
                    }
                };
                if dry_run {
                    report.would_replay.push((l.id, origin.name().to_string()));
                    continue;
                }
                match origin.send(vec![out]).await {
                    Ok(()) => {
                        dlq_queue.remove(&l.id)?;
                        if let Ok(env) = pipeline::message::decode(&l.body)
                            && let pipeline::message::Message::SyncPage(job) = env.body
                        {
                            state.ledger().resumed(&job.job_id)?;
                        }
                        report.replayed.push((l.id, origin.name().to_string()));
                    }
                    Err(e) => report.failed.push((l.id, format!("send failed: {e}"))),
                }
            }
        }
        Target::Sqs {
            client,
            dlq_url,
            target_url,
        } => {
            let (dlq, to) = sqs_queues(client, dlq_url, target_url.as_deref()).await?;
            let Some(to) = to else {
                bail!(
                    "{} is not the dead-letter queue of exactly one queue (ListDeadLetterSourceQueues): say where its messages go with --target-queue-url",
                    dlq.name()
                );
            };
            let role = Role::of_queue(to.name());
            let mut held: Vec<sqs::Inspected> = Vec::new();
            // Batch by batch: on a FIFO DLQ a group's next messages come only after its earlier
            // ones are deleted, so replaying them is what lets the rest be received.
            loop {
                let batch = dlq
                    .receive_for_inspection(10, REPLAY_VISIBILITY)
                    .await
                    .with_context(|| format!("receiving from {}", dlq.url()))?;
                let fresh: Vec<sqs::Inspected> = batch
                    .into_iter()
                    .filter(|m| {
                        !held
                            .iter()
                            .any(|h| h.received.message_id == m.received.message_id)
                            && !report
                                .replayed
                                .iter()
                                .any(|(id, _)| *id == m.received.message_id)
                    })
                    .collect();
                if fresh.is_empty() {
                    break;
                }
                for m in fresh {
                    let l = sqs_letter(&dlq, Some(&to), &m);
                    if !selection.matches(&dlq::row(&l, now)) {
                        held.push(m);
                        continue;
                    }
                    let out = match dlq::replay_message(&l, role) {
                        Ok(out) => out,
                        Err(why) => {
                            report.failed.push((l.id, why));
                            held.push(m);
                            continue;
                        }
                    };
                    if dry_run {
                        report.would_replay.push((l.id, to.name().to_string()));
                        held.push(m);
                        continue;
                    }
                    match to.send(vec![out]).await {
                        Ok(()) => match dlq.delete(&m.received.receipt).await {
                            Ok(()) => report.replayed.push((l.id, to.name().to_string())),
                            Err(e) => {
                                // Sent but still in the DLQ: a second replay would send it
                                // twice, which the steps take (idempotent), never lose.
                                report.failed.push((
                                    l.id,
                                    format!("sent, but not deleted from the DLQ: {e}"),
                                ));
                                held.push(m);
                            }
                        },
                        Err(e) => {
                            report.failed.push((l.id, format!("send failed: {e}")));
                            held.push(m);
                        }
                    }
                }
            }
            release_all(&dlq, &held).await;
        }
    }
    Ok(report)
}
