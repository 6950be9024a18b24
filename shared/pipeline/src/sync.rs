//! The initial-sync step: start a job, run one page of it, and run fetch-by-id jobs.
//!
//! One page is one unit of work: fetch it, map it, enqueue the mapped changes to the upsert
//! queue, then enqueue the next page job. Changes are sent before the next job, so a crash in
//! between re-runs the page (idempotent) and never skips it. The walk goes accounts first, then
//! contacts, then a catch-up pass over records modified since the job started, so that the
//! snapshot and webhooks that arrived during it converge.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use crm::{CrmError, CrmReader, PageRequest};
use mapping::payload::map_records;
use mapping::{Change, Entity, Notice, Operation, Outcome, Parent, SourceId};
use thiserror::Error;
use tracing::{info, warn};

use crate::message::{self, FetchJob, MAX_BODY_BYTES, Message, Phase, SyncCounts, SyncPageJob};
use crate::metrics::{Dims, Metric, Metrics};
use crate::queue::{OutMessage, Queue, QueueError};
use crate::sources::Sources;

/// The CRM reader of each source.
pub type Crms = HashMap<SourceId, Arc<dyn CrmReader>>;

pub struct SyncPorts<'a> {
    pub sources: &'a Sources,
    pub crms: &'a Crms,
    pub upsert: &'a dyn Queue,
    pub sync: &'a dyn Queue,
    pub metrics: &'a Metrics,
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub page_size: u32,
    /// The catch-up pass starts this long before the job did, to cover clock skew and records
    /// committed while the first page was read.
    pub catch_up_overlap: Duration,
    /// The sync queue's redrive threshold (SQS maxReceiveCount): a message failing retryably on
    /// its last receive is dead-lettered with the error by its consumer (see
    /// [`crate::queue::last_receive`]). `None`: left for the queue to redrive.
    pub max_receives: Option<u32>,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            page_size: 500,
            catch_up_overlap: Duration::from_secs(300),
            max_receives: None,
        }
    }
}

/// Why a step did not complete. Retryable errors leave the message for redelivery; permanent
/// ones send it to the DLQ with this text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StepError {
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Permanent(String),
}

impl From<QueueError> for StepError {
    fn from(e: QueueError) -> Self {
        if e.is_retryable() {
            StepError::Retryable(e.to_string())
        } else {
            StepError::Permanent(e.to_string())
        }
    }
}

impl From<CrmError> for StepError {
    fn from(e: CrmError) -> Self {
        if e.is_retryable() {
            StepError::Retryable(e.to_string())
        } else {
            StepError::Permanent(e.to_string())
        }
    }
}

/// The outcome of one page.
#[derive(Debug, Clone, PartialEq)]
pub struct PageDone {
    pub counts: SyncCounts,
    pub total: Option<u64>,
    /// The job that was enqueued next, if the walk goes on.
    pub next: Option<SyncPageJob>,
}

/// Starts an initial sync of `entities` (accounts are always walked before contacts): enqueues
/// its first page job and returns the job id.
pub async fn start_sync(
    source: &SourceId,
    entities: &[Entity],
    ports: &SyncPorts<'_>,
) -> Result<String, StepError> {
    if ports.sources.get(source).is_none() {
        return Err(StepError::Permanent(format!("unknown source `{source}`")));
    }
    let order = job_entities(entities);
    let job_id = uuid::Uuid::new_v4().to_string();
    let job = SyncPageJob {
        job_id: job_id.clone(),
        source: source.clone(),
        entity: order[0],
        entities: order,
        phase: Phase::Snapshot,
        started_at: Utc::now(),
        cursor: None,
        checkpoint: None,
        counts: SyncCounts::default(),
        total: None,
    };
    ports.sync.send(vec![job_message(&job_id, &job)]).await?;
    info!(job_id, %source, entities = ?job.entities, "initial sync started");
    Ok(job_id)
}

/// The entities a job walks, in walking order (accounts before contacts); none named: all.
pub fn job_entities(entities: &[Entity]) -> Vec<Entity> {
    let mut order: Vec<Entity> = if entities.is_empty() {
        Entity::ALL.to_vec()
    } else {
        entities.to_vec()
    };
    order.sort();
    order.dedup();
    order
}

fn job_message(correlation_id: &str, job: &SyncPageJob) -> OutMessage {
    let body = message::encode(correlation_id, Message::SyncPage(job.clone()));
    let phase = match job.phase {
        Phase::Snapshot => "s",
        Phase::CatchUp { .. } => "c",
    };
    OutMessage {
        body,
        group_id: Some(digest(&job.job_id)),
        // One job message per (job, phase, entity, page): a resend after a crash is dropped.
        dedup_id: Some(digest(&format!(
            "{}:{phase}:{}:{}",
            job.job_id, job.entity, job.counts.pages
        ))),
        ..OutMessage::default()
    }
}

/// Runs one page of a sync job.
pub async fn run_sync_page(
    job: SyncPageJob,
    correlation_id: &str,
    ports: &SyncPorts<'_>,
    settings: &SyncSettings,
) -> Result<PageDone, StepError> {
    let mapper = ports
        .sources
        .get(&job.source)
        .ok_or_else(|| StepError::Permanent(format!("unknown source `{}`", job.source)))?;
    let mut req = PageRequest {
        cursor: job.cursor.clone(),
        checkpoint: job.checkpoint.clone(),
        modified_since: match job.phase {
            Phase::Snapshot => None,
            Phase::CatchUp { since } => Some(since),
        },
        page_size: settings.page_size,
    };
    let crm = reader(ports, &job.source)?;
    let page = match crm.list_page(job.entity, &req).await {
        Err(CrmError::CursorExpired) if req.cursor.is_some() => {
            warn!(job_id = %job.job_id, entity = %job.entity, "cursor expired; resuming from the checkpoint");
            req.cursor = None;
            crm.list_page(job.entity, &req).await?
        }
        r => r?,
    };

    let mut counts = job.counts;
    counts.pages += 1;
    counts.read += page.records.len() as u64;
    let mut changes = Vec::with_capacity(page.records.len());
    for item in map_records(mapper, job.entity, &page.records) {
        match item.outcome {
            Outcome::Notice {
                notice: Notice::Change(c),
                ..
            } => changes.push(c),
            Outcome::Notice {
                notice: Notice::Fetch(_),
                ..
            } => {}
            Outcome::Skipped(reason) => {
                counts.skipped += 1;
                warn!(job_id = %job.job_id, at = %item.at, %reason, "record skipped");
            }
            Outcome::Failed(e) => {
                counts.skipped += 1;
                warn!(job_id = %job.job_id, error = %e, "record could not be mapped; skipped");
            }
        }
    }
    let group = format!("{}:{}:{}", job.job_id, job.entity, counts.pages);
    send_changes(ports.upsert, correlation_id, &changes, &group, true).await?;
    counts.enqueued += changes.len() as u64;
    let dims = Dims::new(job.source.as_str(), job.entity);
    ports.metrics.add(&dims, Metric::SyncPages, 1);
    ports
        .metrics
        .add(&dims, Metric::RecordsRead, page.records.len() as u64);
    ports
        .metrics
        .add(&dims, Metric::ChangesEnqueued, changes.len() as u64);

    if !page.more
        && let Phase::CatchUp { since } = job.phase
    {
        counts.deleted += enqueue_deletions(&job, since, correlation_id, ports).await?;
    }

    let later = job
        .entities
        .iter()
        .copied()
        .skip_while(|e| *e != job.entity)
        .nth(1);
    let next = if page.more {
        Some(SyncPageJob {
            cursor: page.cursor.clone(),
            checkpoint: page.checkpoint.clone(),
            counts,
            total: page.total.or(job.total),
            ..job.clone()
        })
    } else if let Some(entity) = later {
        Some(SyncPageJob {
            entity,
            cursor: None,
            checkpoint: None,
            counts,
            total: None,
            ..job.clone()
        })
    } else if job.phase == Phase::Snapshot {
        // Walk every entity again, but only what changed since the job started.
        let since = job.started_at
            - chrono::Duration::from_std(settings.catch_up_overlap).unwrap_or_default();
        Some(SyncPageJob {
            entity: job.entities[0],
            phase: Phase::CatchUp { since },
            cursor: None,
            checkpoint: None,
            counts,
            total: None,
            ..job.clone()
        })
    } else {
        None
    };
    if let Some(n) = &next {
        ports
            .sync
            .send(vec![job_message(correlation_id, n)])
            .await?;
    }
    info!(
        job_id = %job.job_id,
        source = %job.source,
        entity = %job.entity,
        page = counts.pages,
        read = counts.read,
        enqueued = counts.enqueued,
        skipped = counts.skipped,
        deleted = counts.deleted,
        total = ?page.total,
        finished = next.is_none(),
        "sync page done"
    );
    Ok(PageDone {
        counts,
        total: page.total,
        next,
    })
}

/// Asks the CRM what was deleted since the catch-up pass began and enqueues those deletions.
/// Each id is fetched first: a record that came back (Salesforce undelete, HubSpot restore) is
/// written as it is now instead of deleted. Returns how many deletions were enqueued.
async fn enqueue_deletions(
    job: &SyncPageJob,
    since: chrono::DateTime<Utc>,
    correlation_id: &str,
    ports: &SyncPorts<'_>,
) -> Result<u64, StepError> {
    let Some(ids) = reader(ports, &job.source)?
        .list_deleted(job.entity, since)
        .await?
    else {
        return Ok(0);
    };
    let mut deleted = 0;
    // Fetch by ids is bounded per request by every CRM; 100 fits all of them.
    for chunk in ids.chunks(100) {
        let changes = fetch_changes(&job.source, job.entity, chunk, correlation_id, ports).await?;
        deleted += changes.iter().filter(|c| c.op == Operation::Delete).count() as u64;
        send_per_record(ports.upsert, correlation_id, &changes).await?;
        ports.metrics.add(
            &Dims::new(job.source.as_str(), job.entity),
            Metric::ChangesEnqueued,
            changes.len() as u64,
        );
    }
    info!(job_id = %job.job_id, entity = %job.entity, listed = ids.len(), deleted, "catch-up deletions enqueued");
    Ok(deleted)
}

/// Fetches the records a notification named and enqueues their current state; a record the CRM
/// no longer returns is deleted.
pub async fn run_fetch(
    job: FetchJob,
    correlation_id: &str,
    ports: &SyncPorts<'_>,
) -> Result<usize, StepError> {
    let changes = fetch_changes(&job.source, job.entity, &job.ids, correlation_id, ports).await?;
    send_per_record(ports.upsert, correlation_id, &changes).await?;
    ports.metrics.add(
        &Dims::new(job.source.as_str(), job.entity),
        Metric::ChangesEnqueued,
        changes.len() as u64,
    );
    info!(correlation_id, entity = %job.entity, ids = job.ids.len(), enqueued = changes.len(), reason = %job.reason, "fetch done");
    Ok(changes.len())
}

/// The current state of `ids` as changes: what the CRM returns is written, what it does not is
/// deleted.
async fn fetch_changes(
    source: &SourceId,
    entity: Entity,
    ids: &[String],
    correlation_id: &str,
    ports: &SyncPorts<'_>,
) -> Result<Vec<Change>, StepError> {
    let mapper = ports
        .sources
        .get(source)
        .ok_or_else(|| StepError::Permanent(format!("unknown source `{source}`")))?;
    let fetched = reader(ports, source)?.fetch_by_ids(entity, ids).await?;
    ports.metrics.add(
        &Dims::new(source.as_str(), entity),
        Metric::RecordsRead,
        fetched.records.len() as u64,
    );
    let mut changes: Vec<Change> = Vec::new();
    for item in map_records(mapper, entity, &fetched.records) {
        match item.outcome {
            Outcome::Notice {
                notice: Notice::Change(c),
                ..
            } => changes.push(c),
            Outcome::Failed(e) => {
                warn!(correlation_id, error = %e, "fetched record could not be mapped; skipped")
            }
            _ => {}
        }
    }
    let now = Utc::now();
    for raw in fetched.missing {
        let source_id = match mapper.normalise_id(&raw) {
            Ok(id) => id,
            Err(e) => {
                warn!(correlation_id, error = %e, "a deleted record's id is not valid; skipped");
                continue;
            }
        };
        changes.push(Change {
            source: source.clone(),
            entity,
            source_id,
            op: Operation::Delete,
            modified_at: Some(now),
            parent: Parent::Unchanged,
            record_url: None,
        });
    }
    Ok(changes)
}

fn reader<'a>(ports: &'a SyncPorts<'_>, source: &SourceId) -> Result<&'a dyn CrmReader, StepError> {
    ports
        .crms
        .get(source)
        .map(|c| c.as_ref())
        .ok_or_else(|| StepError::Permanent(format!("no CRM client for source `{source}`")))
}

/// Handles one sync-queue message: a page job or a fetch job. This is the whole per-message
/// work of the initial-sync function.
pub async fn handle_sync_message(
    body: &str,
    ports: &SyncPorts<'_>,
    settings: &SyncSettings,
) -> Result<(), StepError> {
    let env = message::decode(body).map_err(|e| StepError::Permanent(e.to_string()))?;
    handle_sync_envelope(env, ports, settings).await
}

/// [`handle_sync_message`] of a message already decoded.
pub async fn handle_sync_envelope(
    env: message::Envelope,
    ports: &SyncPorts<'_>,
    settings: &SyncSettings,
) -> Result<(), StepError> {
    match env.body {
        Message::SyncPage(job) => run_sync_page(job, &env.correlation_id, ports, settings)
            .await
            .map(|_| ()),
        Message::Fetch(job) => run_fetch(job, &env.correlation_id, ports).await.map(|_| ()),
        Message::Changes(_) => Err(StepError::Permanent(
            "a changes message belongs on the upsert queue, not the sync queue".into(),
        )),
    }
}

/// Sends changes to the upsert queue in messages under the size limit. Messages about one record
/// are grouped by that record (FIFO order per record); a page's messages by `group`.
pub async fn send_changes(
    queue: &dyn Queue,
    correlation_id: &str,
    changes: &[Change],
    group: &str,
    from_page: bool,
) -> Result<(), StepError> {
    if changes.is_empty() {
        return Ok(());
    }
    queue
        .send(change_messages(correlation_id, changes, group, from_page)?)
        .await?;
    Ok(())
}

/// One message per record, grouped by the record (its changes stay in order), sent together.
pub async fn send_per_record(
    queue: &dyn Queue,
    correlation_id: &str,
    changes: &[Change],
) -> Result<(), StepError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut msgs = Vec::with_capacity(changes.len());
    for c in changes {
        msgs.extend(change_messages(
            correlation_id,
            std::slice::from_ref(c),
            &c.key().to_string(),
            false,
        )?);
    }
    queue.send(msgs).await?;
    Ok(())
}

/// `changes` as upsert-queue messages under the size limit, in `group`.
fn change_messages(
    correlation_id: &str,
    changes: &[Change],
    group: &str,
    from_page: bool,
) -> Result<Vec<OutMessage>, StepError> {
    let bodies = message::encode_changes(correlation_id, 0, from_page, changes, MAX_BODY_BYTES)
        .map_err(|e| StepError::Permanent(e.to_string()))?;
    let group_id = digest(group);
    Ok(bodies
        .into_iter()
        .map(|body| OutMessage {
            dedup_id: Some(digest(&body)),
            group_id: Some(group_id.clone()),
            body,
            ..OutMessage::default()
        })
        .collect())
}

/// A fetch job as a sync-queue message: grouped per (source, entity), deduplicated by content.
pub fn fetch_message(correlation_id: &str, job: FetchJob) -> OutMessage {
    let group = format!("{}:{}", job.source, job.entity);
    let body = message::encode(correlation_id, Message::Fetch(job));
    OutMessage {
        dedup_id: Some(digest(&body)),
        group_id: Some(digest(&group)),
        body,
        ..OutMessage::default()
    }
}

/// SHA-256 in hex: a group or deduplication id of SQS's allowed characters and length, whatever
/// the input.
pub fn digest(s: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
