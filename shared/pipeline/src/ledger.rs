//! The run ledger: what an initial sync has done so far, so `crm-sync sync status JOB` can say
//! how far it is and when it finished. The sync step records each page (the running counts the
//! page jobs carry, so recording a page twice is harmless), the upsert step records how many of
//! a job's changes were written or given up. Implemented by the local state file
//! (`crm-sync serve`) and by a DynamoDB table in the cloud (crate `ledger-dynamodb`).
//!
//! Write counts are added per upsert batch. A batch whose invocation dies after writing
//! Dataverse but before answering SQS is applied again (idempotent upserts) and counted again:
//! `written` is at-least-once, so a job is finished when every enqueued change is accounted for,
//! never before.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mapping::{Entity, SourceId};
use serde::Serialize;
use thiserror::Error;

use crate::message::{self, Message, Phase, SyncCounts, SyncPageJob};
use crate::queue::{last_receive, still_failing};
use crate::sync::{
    PageDone, StepError, SyncPorts, SyncSettings, handle_sync_envelope, run_sync_page,
};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("job ledger: {0}")]
pub struct LedgerError(pub String);

/// What the upsert step did with one job's changes in one batch: final outcomes only (a parked
/// or retried change is counted when it is finally written or given up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JobWrites {
    /// Written, deleted, already gone, superseded by a newer change, or nothing to do.
    pub written: u64,
    /// Sent to the DLQ.
    pub failed: u64,
}

#[async_trait]
pub trait JobLedger: Send + Sync {
    async fn started(
        &self,
        job_id: &str,
        source: &SourceId,
        entities: &[Entity],
    ) -> Result<(), LedgerError>;
    /// A page ran: `job` is the page job that ran, `done` what it did.
    async fn page_done(&self, job: &SyncPageJob, done: &PageDone) -> Result<(), LedgerError>;
    /// A page failed and will be retried.
    async fn page_retry(&self, job_id: &str, reason: &str) -> Result<(), LedgerError>;
    /// A page failed for good: the job stops here (its page job is in the DLQ).
    async fn failed(&self, job_id: &str, reason: &str) -> Result<(), LedgerError>;
    /// Adds what a batch did for a job. Correlation ids that are not jobs (webhook requests)
    /// are passed too; a ledger ignores ids it has not seen start.
    async fn writes(&self, job_id: &str, w: &JobWrites) -> Result<(), LedgerError>;
}

/// Where the pass of the next page stands, as the ledger names it.
pub fn phase_name(p: &Phase) -> &'static str {
    match p {
        Phase::Snapshot => "snapshot",
        Phase::CatchUp { .. } => "catch-up",
    }
}

/// [`crate::sync::handle_sync_message`] for a message received `receives` times, recording page jobs in
/// `ledger`: the page's counts when it ran, a retry or the job's failure when it did not. On
/// the last receive before the queue's redrive (`settings.max_receives`) a retryable failure
/// becomes permanent, so the caller dead-letters the message with its reason. A ledger that
/// cannot be written is logged, never a reason to redo the page.
pub async fn handle_sync_message_recorded(
    body: &str,
    receives: u32,
    ports: &SyncPorts<'_>,
    settings: &SyncSettings,
    ledger: Option<&dyn JobLedger>,
) -> Result<(), StepError> {
    let env = message::decode(body).map_err(|e| StepError::Permanent(e.to_string()))?;
    let (Some(ledger), Message::SyncPage(job)) = (ledger, &env.body) else {
        let r = handle_sync_envelope(env, ports, settings).await;
        return give_up(r, receives, settings.max_receives);
    };
    let job = job.clone();
    let job_id = job.job_id.clone();
    let r = run_sync_page(job.clone(), &env.correlation_id, ports, settings).await;
    let r = give_up(r, receives, settings.max_receives);
    let recorded = match &r {
        Ok(done) => ledger.page_done(&job, done).await,
        Err(StepError::Retryable(reason)) => ledger.page_retry(&job_id, reason).await,
        Err(StepError::Permanent(reason)) => ledger.failed(&job_id, reason).await,
    };
    if let Err(e) = recorded {
        tracing::warn!(job_id, error = %e, "could not record the page in the job ledger");
    }
    r.map(|_| ())
}

/// A retryable failure on the last receive before the queue's redrive becomes permanent.
fn give_up<T>(r: Result<T, StepError>, receives: u32, max: Option<u32>) -> Result<T, StepError> {
    match r {
        Err(StepError::Retryable(e)) if last_receive(receives, max) => {
            Err(StepError::Permanent(still_failing(&e, receives)))
        }
        r => r,
    }
}

/// Adds each job's writes of a batch to the ledger; failures are logged (the counts are a
/// report, the writes themselves are done).
pub async fn record_writes(ledger: Option<&dyn JobLedger>, by_job: &BTreeMap<String, JobWrites>) {
    let Some(ledger) = ledger else { return };
    for (job_id, w) in by_job {
        if let Err(e) = ledger.writes(job_id, w).await {
            tracing::warn!(job_id, error = %e, "could not record writes in the job ledger");
        }
    }
}

/// One job as a ledger holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub job_id: String,
    pub source: String,
    pub entities: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `queued`, `snapshot` or `catch-up` (the pass of the next page), or `done`.
    pub phase: String,
    pub entity: Option<String>,
    #[serde(flatten)]
    pub counts: SyncCounts,
    /// The CRM's count of the entity being read, where it says.
    pub total: Option<u64>,
    /// Per entity, what the CRM said it held during the snapshot pass.
    pub snapshot_totals: BTreeMap<String, u64>,
    pub pages_done: bool,
    pub retries: u64,
    pub last_error: Option<String>,
    pub failed: Option<String>,
    pub written: u64,
    pub write_failed: u64,
}

impl JobRecord {
    /// Changes the job sent to be written: the pages' and the catch-up pass's deletions.
    pub fn to_write(&self) -> u64 {
        self.counts.enqueued + self.counts.deleted
    }

    /// `queued`, `reading`, `writing`, `finished` or `failed`.
    pub fn state(&self) -> &'static str {
        if self.failed.is_some() {
            "failed"
        } else if self.pages_done && self.written + self.write_failed >= self.to_write() {
            "finished"
        } else if self.pages_done {
            "writing"
        } else if self.phase == "queued" {
            "queued"
        } else {
            "reading"
        }
    }

    /// See [`progress`].
    pub fn progress(&self) -> Option<(&'static str, u64, u64)> {
        progress(
            self.pages_done,
            &self.phase,
            self.counts.read,
            &self.snapshot_totals,
            self.written + self.write_failed,
            self.to_write(),
        )
    }
}

/// Work done and work known, for a progress bar: records read of what the CRM said it holds
/// while the snapshot pass reads (only when the CRM gives totals), changes accounted for of
/// those enqueued once every page is read.
pub fn progress(
    pages_done: bool,
    phase: &str,
    read: u64,
    snapshot_totals: &BTreeMap<String, u64>,
    accounted: u64,
    to_write: u64,
) -> Option<(&'static str, u64, u64)> {
    if pages_done {
        return Some(("writing", accounted.min(to_write), to_write));
    }
    let total: u64 = snapshot_totals.values().sum();
    (total > 0 && phase == "snapshot").then_some(("reading", read.min(total), total))
}

impl std::fmt::Display for JobRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_report(f, self, self.state(), None)
    }
}

/// The text `sync status` prints about a job in `state`, with a line about its queues where the
/// ledger knows them (the state file's).
pub fn write_report(
    f: &mut std::fmt::Formatter<'_>,
    r: &JobRecord,
    state: &str,
    queues: Option<&str>,
) -> std::fmt::Result {
    let c = &r.counts;
    writeln!(f, "job {}  {}", r.job_id, state)?;
    writeln!(f, "  source       {} ({})", r.source, r.entities.join(", "))?;
    let at = match (&r.entity, r.phase.as_str()) {
        (_, "queued") => "waiting for the first page to be read".to_string(),
        (_, "done") => "every page read".to_string(),
        (Some(e), phase) => format!("{phase} pass, {e}"),
        (None, phase) => phase.to_string(),
    };
    writeln!(f, "  phase        {at}")?;
    let totals: Vec<String> = r
        .snapshot_totals
        .iter()
        .map(|(e, n)| format!("{n} {e}s"))
        .collect();
    let totals = if totals.is_empty() {
        String::new()
    } else {
        format!(" (the CRM reported {})", totals.join(", "))
    };
    writeln!(
        f,
        "  pages        {} read, {} records{totals}",
        c.pages, c.read
    )?;
    writeln!(
        f,
        "  records      {} enqueued for Dataverse, {} skipped (unmappable), {} deletions found",
        c.enqueued, c.skipped, c.deleted
    )?;
    writeln!(
        f,
        "  written      {} of {} applied, {} failed (in the DLQ)",
        r.written,
        r.to_write(),
        r.write_failed
    )?;
    if let Some(q) = queues {
        writeln!(f, "  queues       {q}")?;
    }
    if r.retries > 0 || r.last_error.is_some() {
        writeln!(
            f,
            "  retries      {}{}",
            r.retries,
            r.last_error
                .as_ref()
                .map(|e| format!(" (last: {e})"))
                .unwrap_or_default()
        )?;
    }
    if let Some(reason) = &r.failed {
        writeln!(f, "  failed       {reason}")?;
    }
    writeln!(
        f,
        "  started      {}, updated {}",
        r.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        r.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// The ledger fields a page sets, shared by every adapter so they record the same thing.
#[derive(Debug, Clone, PartialEq)]
pub struct PageUpdate {
    /// `snapshot`/`catch-up` for the next page's pass, `done` after the last page.
    pub phase: &'static str,
    pub entity: String,
    pub counts: SyncCounts,
    pub total: Option<u64>,
    /// `(entity, total)` when the snapshot pass learnt what the CRM holds.
    pub snapshot_total: Option<(String, u64)>,
    pub pages_done: bool,
}

impl PageUpdate {
    pub fn of(job: &SyncPageJob, done: &PageDone) -> Self {
        let (phase, entity) = match &done.next {
            Some(n) => (phase_name(&n.phase), n.entity.to_string()),
            None => ("done", job.entity.to_string()),
        };
        PageUpdate {
            phase,
            entity,
            counts: done.counts,
            total: done.total.or(job.total),
            snapshot_total: match (job.phase, done.total) {
                (Phase::Snapshot, Some(t)) => Some((job.entity.to_string(), t)),
                _ => None,
            },
            pages_done: done.next.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> JobRecord {
        JobRecord {
            job_id: "j".into(),
            source: "sf".into(),
            entities: vec!["account".into(), "contact".into()],
            created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            updated_at: DateTime::from_timestamp(1_700_000_060, 0).unwrap(),
            phase: "snapshot".into(),
            entity: Some("account".into()),
            counts: SyncCounts {
                pages: 2,
                read: 400,
                enqueued: 398,
                skipped: 2,
                deleted: 0,
            },
            total: Some(1000),
            snapshot_totals: BTreeMap::from([("account".into(), 1000)]),
            pages_done: false,
            retries: 0,
            last_error: None,
            failed: None,
            written: 100,
            write_failed: 0,
        }
    }

    #[test]
    fn a_job_is_finished_only_when_every_change_is_accounted_for() {
        let mut r = record();
        assert_eq!(r.state(), "reading");
        assert_eq!(r.progress(), Some(("reading", 400, 1000)));
        r.pages_done = true;
        r.phase = "done".into();
        r.counts.deleted = 2;
        assert_eq!(r.state(), "writing");
        assert_eq!(r.progress(), Some(("writing", 100, 400)));
        r.written = 399;
        r.write_failed = 1;
        assert_eq!(r.state(), "finished");
        r.failed = Some("x".into());
        assert_eq!(r.state(), "failed");
    }

    #[test]
    fn without_totals_there_is_no_reading_progress() {
        let mut r = record();
        r.snapshot_totals.clear();
        assert_eq!(r.progress(), None);
        let text = r.to_string();
        assert!(text.contains("100 of 398 applied"), "{text}");
    }
}
