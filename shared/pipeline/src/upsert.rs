//! The upsert step: apply a batch of queue messages of mapped changes to Dataverse.
//!
//! Per batch: decode every message, dedupe by record (newest source timestamp wins; on a tie the
//! later message), write accounts before contacts, and decide per message:
//! - everything applied (or superseded by a newer change in the batch): done;
//! - a contact whose parent account does not exist yet: re-sent to the retry queue with a delay
//!   and a count, then to the DLQ with the reason once the budget is spent;
//! - a permanent refusal (validation, privileges, a malformed message): to the DLQ with the
//!   reason, and the message is done (retrying cannot help);
//! - anything retryable (throttling, 5xx, a queue that would not take the re-sent work): the
//!   message fails and comes back; rewriting what did apply is harmless, upserts are idempotent.
//!   On the message's last receive before its queue would redrive it (`max_receives`), a change
//!   whose write still fails goes to the DLQ with that error instead, so the DLQ says why.
//!
//! Except for a sync page's message: it is not ordered with the webhook changes of its records
//! (those are grouped per record), so by the time it comes back newer changes may have been
//! applied, and rewriting its snapshot would undo them. A page message delivered a second time
//! is therefore turned into fetch jobs for its records (current state from the CRM) instead.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dataverse::{Applied, DataverseWriter, FailureKind};
use mapping::{Change, Entity, RecordKey, row};
use tracing::{info, warn};

use crate::ledger::JobWrites;
use crate::message::{self, ChangeBatch, FetchJob, MAX_BODY_BYTES, Message};
use crate::metrics::{Dims, Metric, Metrics};
use crate::queue::{ERROR_ATTRIBUTE, MAX_DELAY, OutMessage, Queue, last_receive, still_failing};
use crate::sources::Sources;

/// One received message of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InMessage {
    pub id: String,
    pub body: String,
    /// How many times the queue has delivered this message, this time included.
    pub receive_count: u32,
    /// When it was first sent, in ms since the epoch (SQS `SentTimestamp`), if known.
    pub sent_at_ms: Option<i64>,
}

pub struct UpsertPorts<'a> {
    pub sources: &'a Sources,
    pub writer: &'a dyn DataverseWriter,
    /// Where parked changes wait (a queue that supports per-message delays).
    pub retry: &'a dyn Queue,
    pub dlq: &'a dyn Queue,
    /// Where a sync page's message that comes back after a failure is turned into fetch jobs
    /// (the sync queue), so its records are re-read instead of written from a snapshot that
    /// newer webhook changes may have overtaken. `None`: such pages are written as they are.
    pub refetch: Option<&'a dyn Queue>,
    /// Stop writing at this instant (the Lambda deadline, less a margin): what is unfinished
    /// is retried from the queue instead of being cut off mid-request.
    pub deadline: Option<tokio::time::Instant>,
    pub metrics: &'a Metrics,
    /// The newest version written per record: a change that is not from a sync page and is
    /// older than it is superseded, not written (see [`crate::versions`]). `None`: no check.
    pub versions: Option<&'a dyn crate::versions::Versions>,
}

#[derive(Debug, Clone)]
pub struct UpsertPolicy {
    /// How many times a contact is parked waiting for its parent account before it is given up.
    pub parent_retries: u32,
    /// First parking delay; doubled each time, capped at SQS's 15 minutes.
    pub parent_delay: Duration,
    /// The queue's redrive threshold (SQS maxReceiveCount). A change that fails retryably on a
    /// message's last receive is dead-lettered here with the error, rather than left for the
    /// queue to redrive without one. `None`: always left for the queue.
    pub max_receives: Option<u32>,
    /// A page's message that comes back after a failure is re-read from the CRM (its records
    /// re-fetched by id, one message per record) only when it was sent longer ago than this;
    /// a younger one is applied as it is, like a first delivery. Its records are then no staler
    /// than the snapshot window the job's catch-up pass closes, and a kill or a throttled batch
    /// does not turn every page in hand into one message per record.
    pub refetch_after: Duration,
}

impl Default for UpsertPolicy {
    fn default() -> Self {
        UpsertPolicy {
            parent_retries: 8,
            parent_delay: Duration::from_secs(30),
            max_receives: None,
            refetch_after: REFETCH_AFTER,
        }
    }
}

/// [`UpsertPolicy::refetch_after`]'s default.
pub const REFETCH_AFTER: Duration = Duration::from_secs(5 * 60);

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether a redelivered page message is old enough to be re-read rather than applied: sent
/// more than `after` ago, or of unknown age.
fn stale_page(m: &InMessage, after: Duration) -> bool {
    m.receive_count > 1
        && m.sent_at_ms
            .is_none_or(|t| now_ms().saturating_sub(t) >= after.as_millis() as i64)
}

/// Version checks in flight at once: each is a round trip to the store (a DynamoDB conditional
/// write on AWS), and a redelivered sync page has one per record.
const VERSION_CHECKS_AT_ONCE: usize = 32;

/// Checks the changes that must be checked against the newest version written (see
/// [`crate::versions`]): whether each may be written, by index into `pending`. A first delivery
/// of a sync page is not checked; a redelivered one is, since a webhook for one of its records
/// may have been written since.
async fn check_versions(
    versions: Option<&dyn crate::versions::Versions>,
    winners: &[usize],
    pending: &[Pending],
    messages: &[InMessage],
) -> HashMap<usize, Result<bool, String>> {
    use futures::StreamExt;
    let Some(versions) = versions else {
        return HashMap::new();
    };
    let mut checked: Vec<(usize, RecordKey, DateTime<Utc>)> = Vec::new();
    for &i in winners {
        let p = &pending[i];
        let check = !p.from_page || messages[p.msg].receive_count > 1;
        if let (true, Some(at)) = (check, p.change.modified_at) {
            checked.push((i, p.change.key(), at));
        }
    }
    futures::stream::iter(checked)
        .map(|(i, key, at)| async move { (i, versions.advance(&key, at).await) })
        .buffer_unordered(VERSION_CHECKS_AT_ONCE)
        .collect()
        .await
}

/// What happened to a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpsertReport {
    /// Ids of the messages that must be retried (not deleted from the queue).
    pub failed: Vec<String>,
    pub created: u64,
    pub updated: u64,
    /// Upserts Dataverse applied without saying whether they created or updated.
    pub upserted: u64,
    pub deleted: u64,
    /// Deletes (or deactivations) of rows that were already gone.
    pub absent: u64,
    /// Changes skipped because a newer change to the same record was in the batch.
    pub superseded: u64,
    /// Changes with nothing to write (a delete under the `ignore` policy).
    pub ignored: u64,
    pub parked: u64,
    /// Changes of redelivered sync pages, sent to be re-read instead of written.
    pub refetched: u64,
    pub dead_lettered: u64,
    /// Changes left for a retry of their message.
    pub retrying: u64,
    /// Longest Retry-After Dataverse asked for, if it throttled.
    pub throttled_for: Option<Duration>,
    /// Final outcomes per correlation id (a sync job's id, for its ledger).
    pub by_job: BTreeMap<String, JobWrites>,
}

/// A letter for the DLQ: the message it came from, and what it is counted under once sent.
struct Dead {
    letter: OutMessage,
    owner: usize,
    dims: Dims,
    /// The unit of work its changes belong to, if known.
    job: Option<String>,
    changes: u64,
}

struct Pending {
    msg: usize,
    correlation_id: String,
    attempt: u32,
    from_page: bool,
    change: Change,
}

pub async fn apply_changes(
    messages: &[InMessage],
    ports: &UpsertPorts<'_>,
    policy: &UpsertPolicy,
) -> UpsertReport {
    let mut report = UpsertReport::default();
    let mut failed = vec![false; messages.len()];
    let mut dead: Vec<Dead> = Vec::new();

    // Decode; a message that cannot be read goes to the DLQ as it is.
    let mut pending: Vec<Pending> = Vec::new();
    let mut refetch: Vec<(usize, String, Vec<Change>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match message::decode(&m.body) {
            Ok(env) => match env.body {
                Message::Changes(ChangeBatch {
                    from_page: true,
                    changes,
                    ..
                }) if stale_page(m, policy.refetch_after)
                    && ports.refetch.is_some()
                    && changes.iter().all(|c| can_refetch(ports.sources, c)) =>
                {
                    refetch.push((i, env.correlation_id, changes));
                }
                Message::Changes(ChangeBatch {
                    attempt,
                    from_page,
                    changes,
                }) => pending.extend(changes.into_iter().map(|change| Pending {
                    msg: i,
                    correlation_id: env.correlation_id.clone(),
                    attempt,
                    from_page,
                    change,
                })),
                other => {
                    warn!(message_id = %m.id, correlation_id = %env.correlation_id, kind = kind_of(&other), "message of another step dead-lettered");
                    dead.push(Dead {
                        letter: dead_letter(
                            m.body.clone(),
                            format!("not a changes message: {}", kind_of(&other)),
                        ),
                        owner: i,
                        dims: Dims::new("-", "-"),
                        job: None,
                        changes: 1,
                    });
                }
            },
            Err(e) => {
                warn!(message_id = %m.id, error = %e, "unreadable message dead-lettered");
                dead.push(Dead {
                    letter: dead_letter(m.body.clone(), e.to_string()),
                    owner: i,
                    dims: Dims::new("-", "-"),
                    job: None,
                    changes: 1,
                });
            }
        }
    }

    // Dedupe: the newest change of each record wins.
    let mut winner: HashMap<RecordKey, usize> = HashMap::new();
    for (i, p) in pending.iter().enumerate() {
        let key = p.change.key();
        match winner.get(&key) {
            Some(&w) if pending[w].change.modified_at > p.change.modified_at => {}
            _ => {
                winner.insert(key, i);
            }
        }
    }
    let winning: std::collections::HashSet<usize> = winner.values().copied().collect();
    for (i, p) in pending.iter().enumerate() {
        if !winning.contains(&i) {
            superseded(&mut report, ports.metrics, p);
        }
    }

    // Build requests, accounts first.
    let mut by_entity: BTreeMap<Entity, Vec<(usize, mapping::DataverseOp)>> = BTreeMap::new();
    let mut winners: Vec<usize> = winner.into_values().collect();
    winners.sort_unstable();
    let verdicts = check_versions(ports.versions, &winners, &pending, messages).await;
    for i in winners {
        let p = &pending[i];
        if let Some(verdict) = verdicts.get(&i) {
            match verdict {
                Ok(true) => {}
                Ok(false) => {
                    // A newer version of this record was written already.
                    superseded(&mut report, ports.metrics, p);
                    continue;
                }
                Err(e) => {
                    warn!(key = %p.change.key(), error = %e, "could not check the record's newest version; the change will be retried");
                    failed[p.msg] = true;
                    continue;
                }
            }
        }
        let Some(ctx) = ports.sources.row_context(&p.change.source) else {
            dead.push(Dead {
                letter: change_letter(p, format!("unknown source `{}`", p.change.source)),
                owner: p.msg,
                dims: dims_of(&p.change),
                job: Some(p.correlation_id.clone()),
                changes: 1,
            });
            continue;
        };
        match row::build(&p.change, &ctx) {
            Ok(Some(op)) => by_entity.entry(p.change.entity).or_default().push((i, op)),
            Ok(None) => {
                report.ignored += 1;
                report
                    .by_job
                    .entry(p.correlation_id.clone())
                    .or_default()
                    .written += 1;
            }
            Err(e) => {
                dead.push(Dead {
                    letter: change_letter(p, e.to_string()),
                    owner: p.msg,
                    dims: dims_of(&p.change),
                    job: Some(p.correlation_id.clone()),
                    changes: 1,
                });
            }
        }
    }

    let mut parked: BTreeMap<(u32, String, bool), Vec<Change>> = BTreeMap::new();
    let mut parked_owner: BTreeMap<(u32, String, bool), Vec<usize>> = BTreeMap::new();
    for (_, ops) in by_entity {
        let (owners, reqs): (Vec<usize>, Vec<mapping::DataverseOp>) = ops.into_iter().unzip();
        let results = ports.writer.apply(&reqs, ports.deadline).await;
        drop(reqs);
        for d in ports.writer.drain_latencies() {
            ports.metrics.observe_latency(d);
        }
        for (i, result) in owners.iter().zip(results) {
            let p = &pending[*i];
            let dims = dims_of(&p.change);
            let counted = match &result {
                Ok(Applied::Created) => Some((&mut report.created, Metric::Created)),
                Ok(Applied::Updated) => Some((&mut report.updated, Metric::Updated)),
                Ok(Applied::Upserted) => Some((&mut report.upserted, Metric::Upserted)),
                Ok(Applied::Deleted) => Some((&mut report.deleted, Metric::Deleted)),
                Ok(Applied::AlreadyAbsent) => Some((&mut report.absent, Metric::AlreadyAbsent)),
                Err(_) => None,
            };
            if let Some((n, metric)) = counted {
                *n += 1;
                ports.metrics.add(&dims, metric, 1);
                report
                    .by_job
                    .entry(p.correlation_id.clone())
                    .or_default()
                    .written += 1;
            }
            if let Err(e) = result {
                match e.kind() {
                    FailureKind::Retryable
                        if last_receive(messages[p.msg].receive_count, policy.max_receives) =>
                    {
                        let reason = still_failing(&e.to_string(), messages[p.msg].receive_count);
                        warn!(key = %p.change.key(), correlation_id = %p.correlation_id, %reason, "change dead-lettered on its last receive");
                        dead.push(Dead {
                            letter: change_letter(p, reason),
                            owner: p.msg,
                            dims: dims.clone(),
                            job: Some(p.correlation_id.clone()),
                            changes: 1,
                        });
                    }
                    FailureKind::Retryable => {
                        if let Some(wait) = e.retry_after() {
                            report.throttled_for = report.throttled_for.max(Some(wait));
                            ports.metrics.add(&dims, Metric::Throttled, 1);
                            ports.metrics.add(
                                &dims,
                                Metric::ThrottleRetryAfter,
                                wait.as_secs_f64().ceil() as u64,
                            );
                        }
                        ports.metrics.add(&dims, Metric::Retried, 1);
                        report.retrying += 1;
                        failed[p.msg] = true;
                    }
                    FailureKind::MissingParent if p.attempt < policy.parent_retries => {
                        let key = (p.attempt + 1, p.correlation_id.clone(), p.from_page);
                        parked
                            .entry(key.clone())
                            .or_default()
                            .push(p.change.clone());
                        parked_owner.entry(key).or_default().push(p.msg);
                    }
                    FailureKind::MissingParent | FailureKind::Permanent => {
                        let reason = if e.kind() == FailureKind::MissingParent {
                            format!("{e} (gave up after {} attempts)", p.attempt + 1)
                        } else {
                            e.to_string()
                        };
                        warn!(key = %p.change.key(), correlation_id = %p.correlation_id, %reason, "change dead-lettered");
                        dead.push(Dead {
                            letter: change_letter(p, reason),
                            owner: p.msg,
                            dims,
                            job: Some(p.correlation_id.clone()),
                            changes: 1,
                        });
                    }
                }
            }
        }
    }

    // Park contacts whose parent is missing.
    for ((attempt, corr, from_page), changes) in parked {
        let delay = policy
            .parent_delay
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(MAX_DELAY);
        let owners = &parked_owner[&(attempt, corr.clone(), from_page)];
        let sent =
            match message::encode_changes(&corr, attempt, from_page, &changes, MAX_BODY_BYTES) {
                Ok(bodies) => {
                    let msgs = bodies
                        .into_iter()
                        .map(|body| OutMessage {
                            body,
                            delay,
                            ..OutMessage::default()
                        })
                        .collect();
                    ports.retry.send(msgs).await.map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
        match sent {
            Ok(()) => {
                report.parked += changes.len() as u64;
                for c in &changes {
                    ports.metrics.add(&dims_of(c), Metric::Parked, 1);
                }
            }
            Err(reason) => {
                warn!(correlation_id = %corr, %reason, "could not park changes; their messages will be retried");
                for (change, o) in changes.iter().zip(owners) {
                    let receives = messages[*o].receive_count;
                    if last_receive(receives, policy.max_receives) {
                        let why = format!("could not park the change: {reason}");
                        let letter = (corr.as_str(), attempt - 1, from_page);
                        dead.push(Dead {
                            letter: letter_of(letter, change, still_failing(&why, receives)),
                            owner: *o,
                            dims: dims_of(change),
                            job: Some(corr.clone()),
                            changes: 1,
                        });
                    } else {
                        report.retrying += 1;
                        failed[*o] = true;
                    }
                }
            }
        }
    }

    // Redelivered pages: their records are re-read from the CRM.
    if let Some(sync) = ports.refetch {
        for (i, corr, changes) in refetch {
            match send_refetch(sync, &corr, &changes).await {
                Ok(()) => {
                    report.refetched += changes.len() as u64;
                    for c in &changes {
                        ports.metrics.add(&dims_of(c), Metric::Refetched, 1);
                    }
                }
                Err(reason) => {
                    warn!(correlation_id = %corr, %reason, "could not queue the re-read of a redelivered page; it will be retried");
                    let receives = messages[i].receive_count;
                    if last_receive(receives, policy.max_receives) {
                        let why = format!("could not queue the re-read of the page: {reason}");
                        let body = messages[i].body.clone();
                        dead.push(Dead {
                            letter: dead_letter(body, still_failing(&why, receives)),
                            owner: i,
                            dims: changes.first().map(dims_of).unwrap_or(Dims::new("-", "-")),
                            job: Some(corr.clone()),
                            changes: changes.len() as u64,
                        });
                    } else {
                        failed[i] = true;
                    }
                }
            }
        }
    }

    if !dead.is_empty() {
        let n = dead.len() as u64;
        let letters = dead.iter().map(|d| d.letter.clone()).collect();
        match ports.dlq.send(letters).await {
            Ok(()) => {
                report.dead_lettered += n;
                for d in dead {
                    ports
                        .metrics
                        .add(&d.dims, Metric::FailedPermanently, d.changes);
                    if let Some(j) = d.job {
                        report.by_job.entry(j).or_default().failed += d.changes;
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "could not write to the DLQ; the messages will be retried");
                for d in dead {
                    failed[d.owner] = true;
                }
            }
        }
    }

    report.failed = messages
        .iter()
        .zip(&failed)
        .filter(|(_, f)| **f)
        .map(|(m, _)| m.id.clone())
        .collect();
    // The units of work this batch advanced (webhook requests, sync jobs), for following one
    // change from its webhook or page to here.
    let mut correlation_ids: Vec<&str> =
        pending.iter().map(|p| p.correlation_id.as_str()).collect();
    correlation_ids.sort_unstable();
    correlation_ids.dedup();
    info!(
        correlation_ids = %correlation_ids.join(","),
        messages = messages.len(),
        created = report.created,
        updated = report.updated,
        deleted = report.deleted,
        parked = report.parked,
        retrying = report.retrying,
        dead_lettered = report.dead_lettered,
        failed = report.failed.len(),
        "upsert batch done"
    );
    report
}

/// A change not written because a newer one of its record was (in this batch or before): done,
/// as far as its message and its job are concerned.
fn superseded(report: &mut UpsertReport, metrics: &Metrics, p: &Pending) {
    report.superseded += 1;
    metrics.add(&dims_of(&p.change), Metric::Superseded, 1);
    report
        .by_job
        .entry(p.correlation_id.clone())
        .or_default()
        .written += 1;
}

/// Whether the CRM of a change's source can be asked for a record by id. A generic REST source
/// may have no `fetch_url`: its redelivered pages are written as they are (the catch-up pass and
/// webhooks still converge), rather than turned into fetch jobs that would fail.
fn can_refetch(sources: &Sources, c: &Change) -> bool {
    sources
        .get(&c.source)
        .is_some_and(|m| m.kind != mapping::CrmKind::Generic)
}

/// One fetch job per (source, entity) for the records of a redelivered page, on the sync queue.
async fn send_refetch(sync: &dyn Queue, corr: &str, changes: &[Change]) -> Result<(), String> {
    let mut jobs: BTreeMap<(String, Entity), FetchJob> = BTreeMap::new();
    for c in changes {
        jobs.entry((c.source.to_string(), c.entity))
            .or_insert_with(|| FetchJob {
                source: c.source.clone(),
                entity: c.entity,
                ids: Vec::new(),
                reason: "a sync page came back after a failure; its records are re-read".into(),
            })
            .ids
            .push(c.source_id.clone());
    }
    let msgs = jobs
        .into_values()
        .map(|job| crate::sync::fetch_message(corr, job))
        .collect();
    sync.send(msgs).await.map_err(|e| e.to_string())
}

fn dims_of(c: &Change) -> Dims {
    Dims::new(c.source.as_str(), c.entity)
}

fn kind_of(m: &Message) -> &'static str {
    match m {
        Message::Changes(_) => "changes",
        Message::SyncPage(_) => "sync_page",
        Message::Fetch(_) => "fetch",
    }
}

fn dead_letter(body: String, reason: String) -> OutMessage {
    let mut m = OutMessage::new(body);
    m.attributes.insert(ERROR_ATTRIBUTE.into(), reason);
    m
}

/// One change's dead letter, in its record's FIFO group (as `send_per_record` groups it): on a
/// FIFO DLQ, SQS hands out a group's later messages only after its earlier ones are deleted, so
/// one group for every dead letter would let `crm-sync dlq` see only ten at a time.
fn change_letter(p: &Pending, reason: String) -> OutMessage {
    letter_of(
        (&p.correlation_id, p.attempt, p.from_page),
        &p.change,
        reason,
    )
}

/// [`change_letter`] of a change with its message's (correlation id, attempt, from_page).
fn letter_of(
    (correlation_id, attempt, from_page): (&str, u32, bool),
    change: &Change,
    reason: String,
) -> OutMessage {
    let mut m = dead_letter(
        message::encode(
            correlation_id,
            Message::Changes(ChangeBatch {
                attempt,
                from_page,
                changes: vec![change.clone()],
            }),
        ),
        reason,
    );
    m.group_id = Some(crate::sync::digest(&change.key().to_string()));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_redelivered_pages_are_re_read() {
        let m = |receive_count, sent_at_ms| InMessage {
            id: "m".into(),
            body: String::new(),
            receive_count,
            sent_at_ms,
        };
        let five_min = Duration::from_secs(300);
        let now = now_ms();
        assert!(
            !stale_page(&m(1, Some(now - 3_600_000)), five_min),
            "first delivery"
        );
        assert!(
            !stale_page(&m(2, Some(now - 10_000)), five_min),
            "young redelivery"
        );
        assert!(
            stale_page(&m(2, Some(now - 301_000)), five_min),
            "old redelivery"
        );
        assert!(stale_page(&m(2, None), five_min), "unknown age");
        assert!(stale_page(&m(2, Some(now)), Duration::ZERO));
    }
}
