//! The local runner's state file: its four durable queues and the sync-job ledger.
//!
//! The ledger is one row per initial-sync job: written by `crm-sync sync start` (phase
//! `queued`) and by the serve worker after every page (the running counts the page jobs carry),
//! so `crm-sync sync status` can say how far a job is. Whether its writes are done is read from
//! the queues themselves: every message of a job carries the job id as its correlation id.
//!
//! ```sql
//! jobs(job_id TEXT PRIMARY KEY, source TEXT, entities TEXT, created_at INTEGER,
//!      updated_at INTEGER, phase TEXT, entity TEXT, pages INTEGER, read INTEGER,
//!      enqueued INTEGER, skipped INTEGER, deleted INTEGER, total INTEGER,
//!      totals TEXT /* JSON: entity -> count the CRM reported in the snapshot pass */,
//!      pages_done INTEGER, retries INTEGER, last_error TEXT, failed TEXT,
//!      written INTEGER, write_failed INTEGER /* final outcomes of the job's changes */)
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mapping::{Entity, SourceId};
use pipeline::ledger::{JobLedger, JobRecord, JobWrites, LedgerError, PageUpdate};
use pipeline::message::{SyncCounts, SyncPageJob};
use pipeline::sync::PageDone;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::durable_queue::{DurableQueue, DurableQueueConfig, Store};

pub const SYNC: &str = "sync";
pub const UPSERT: &str = "upsert";
pub const SYNC_DLQ: &str = "sync-dlq";
pub const UPSERT_DLQ: &str = "upsert-dlq";

pub(crate) fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS jobs (
            job_id TEXT PRIMARY KEY,
            source TEXT NOT NULL,
            entities TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            phase TEXT NOT NULL,
            entity TEXT,
            pages INTEGER NOT NULL DEFAULT 0,
            read INTEGER NOT NULL DEFAULT 0,
            enqueued INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            deleted INTEGER NOT NULL DEFAULT 0,
            total INTEGER,
            totals TEXT NOT NULL DEFAULT '{}',
            pages_done INTEGER NOT NULL DEFAULT 0,
            retries INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            failed TEXT,
            written INTEGER NOT NULL DEFAULT 0,
            write_failed INTEGER NOT NULL DEFAULT 0
        );",
    )?;
    // State files written before the write counts existed get them.
    for column in ["written", "write_failed"] {
        let has: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = ?1")?
            .exists([column])?;
        if !has {
            conn.execute_batch(&format!(
                "ALTER TABLE jobs ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
            ))?;
        }
    }
    Ok(())
}

/// The state file with its queues: sync and upsert, each with its DLQ.
pub struct LocalState {
    pub store: Arc<Store>,
    pub sync: Arc<DurableQueue>,
    pub upsert: Arc<DurableQueue>,
    pub sync_dlq: Arc<DurableQueue>,
    pub upsert_dlq: Arc<DurableQueue>,
}

impl LocalState {
    pub fn open(path: &Path) -> anyhow::Result<LocalState> {
        Ok(LocalState::with_store(Store::open(path)?))
    }

    pub fn with_store(store: Arc<Store>) -> LocalState {
        LocalState::with_max_receives(store, None)
    }

    /// The state file's queues, redriving to their DLQs after `max_receives` receives instead
    /// of the defaults (sync 5, upsert 10). Only the consumer (`serve`) needs it.
    pub fn with_max_receives(store: Arc<Store>, max_receives: Option<u32>) -> LocalState {
        let dlq = DurableQueueConfig {
            max_receives: u32::MAX,
            ..DurableQueueConfig::default()
        };
        let sync_dlq = Arc::new(store.queue(SYNC_DLQ, dlq.clone(), None));
        let upsert_dlq = Arc::new(store.queue(UPSERT_DLQ, dlq, None));
        // A page can take a while (a slow CRM, retries inside the client): the sync queue's
        // messages stay invisible longer than a write batch's.
        let sync = Arc::new(store.queue(
            SYNC,
            DurableQueueConfig {
                visibility_timeout: Duration::from_secs(600),
                max_receives: max_receives.unwrap_or(5),
                capacity: None,
            },
            Some(sync_dlq.clone()),
        ));
        let upsert = Arc::new(store.queue(
            UPSERT,
            DurableQueueConfig {
                visibility_timeout: Duration::from_secs(300),
                max_receives: max_receives.unwrap_or(10),
                capacity: None,
            },
            Some(upsert_dlq.clone()),
        ));
        LocalState {
            store,
            sync,
            upsert,
            sync_dlq,
            upsert_dlq,
        }
    }

    pub fn ledger(&self) -> Ledger {
        Ledger {
            store: self.store.clone(),
        }
    }
}

/// The sync-job ledger in the state file.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<Store>,
}

impl Ledger {
    pub fn new(store: Arc<Store>) -> Ledger {
        Ledger { store }
    }

    /// Records a job `sync start` queued.
    pub fn started(&self, job_id: &str, source: &str, entities: &[String]) -> anyhow::Result<()> {
        let now = self.store.now_ms();
        self.store.conn().execute(
            "INSERT OR IGNORE INTO jobs (job_id, source, entities, created_at, updated_at, phase)
             VALUES (?1, ?2, ?3, ?4, ?4, 'queued')",
            params![job_id, source, entities.join(","), now],
        )?;
        Ok(())
    }

    /// Records a page that ran: the job's running counts after it, and whether it was the last.
    /// Idempotent: a page run again after a crash writes the same counts.
    pub fn page_done(&self, job: &SyncPageJob, done: &PageDone) -> anyhow::Result<()> {
        let now = self.store.now_ms();
        let u = PageUpdate::of(job, done);
        let c = &u.counts;
        let entities: Vec<String> = job.entities.iter().map(|e| e.to_string()).collect();
        // A page older than what is recorded (redelivered late) does not move the job back.
        self.store.conn().execute(
            "INSERT INTO jobs (job_id, source, entities, created_at, updated_at, phase, entity,
                               pages, read, enqueued, skipped, deleted, total, pages_done)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (job_id) DO UPDATE SET updated_at = ?4, phase = ?5, entity = ?6,
                 pages = ?7, read = ?8, enqueued = ?9, skipped = ?10, deleted = ?11,
                 total = ?12, pages_done = ?13, last_error = NULL
             WHERE pages <= ?7",
            params![
                job.job_id,
                job.source.to_string(),
                entities.join(","),
                now,
                u.phase,
                u.entity,
                c.pages as i64,
                c.read as i64,
                c.enqueued as i64,
                c.skipped as i64,
                c.deleted as i64,
                u.total.map(|t| t as i64),
                u.pages_done as i64,
            ],
        )?;
        if let Some((entity, t)) = u.snapshot_total {
            self.store.conn().execute(
                "UPDATE jobs SET totals = json_set(totals, '$.' || ?2, ?3) WHERE job_id = ?1",
                params![job.job_id, entity, t as i64],
            )?;
        }
        Ok(())
    }

    /// Adds what an upsert batch finally did with a job's changes.
    pub fn add_writes(&self, job_id: &str, w: &JobWrites) -> anyhow::Result<()> {
        self.store.conn().execute(
            "UPDATE jobs SET written = written + ?2, write_failed = write_failed + ?3 WHERE job_id = ?1",
            params![job_id, w.written as i64, w.failed as i64],
        )?;
        Ok(())
    }

    /// Records a page that will be retried, and why.
    pub fn page_retry(&self, job_id: &str, reason: &str) -> anyhow::Result<()> {
        let now = self.store.now_ms();
        self.store.conn().execute(
            "UPDATE jobs SET retries = retries + 1, last_error = ?2, updated_at = ?3 WHERE job_id = ?1",
            params![job_id, reason, now],
        )?;
        Ok(())
    }

    /// Records a job that cannot go on (its page job was dead-lettered).
    pub fn failed(&self, job_id: &str, reason: &str) -> anyhow::Result<()> {
        let now = self.store.now_ms();
        self.store.conn().execute(
            "UPDATE jobs SET failed = ?2, updated_at = ?3 WHERE job_id = ?1",
            params![job_id, reason, now],
        )?;
        Ok(())
    }

    /// Records a failed job's page job sent again (`crm-sync dlq replay`): it goes on.
    pub fn resumed(&self, job_id: &str) -> anyhow::Result<()> {
        let now = self.store.now_ms();
        self.store.conn().execute(
            "UPDATE jobs SET failed = NULL, updated_at = ?2 WHERE job_id = ?1",
            params![job_id, now],
        )?;
        Ok(())
    }

    /// One job's status; `None` if the state file has never seen it.
    pub fn status(&self, job_id: &str) -> anyhow::Result<Option<JobStatus>> {
        let conn = self.store.conn();
        let row = conn
            .query_row(
                &format!("{SELECT_JOB} WHERE job_id = ?1"),
                [job_id],
                row_to_status,
            )
            .optional()?;
        let Some(mut s) = row else { return Ok(None) };
        fill_queues(&conn, &mut s)?;
        Ok(Some(s))
    }

    /// Every job, newest first.
    pub fn all(&self) -> anyhow::Result<Vec<JobStatus>> {
        let conn = self.store.conn();
        let mut st = conn.prepare(&format!("{SELECT_JOB} ORDER BY created_at DESC, job_id"))?;
        let mut jobs: Vec<JobStatus> =
            st.query_map([], row_to_status)?.collect::<Result<_, _>>()?;
        drop(st);
        for s in &mut jobs {
            fill_queues(&conn, s)?;
        }
        Ok(jobs)
    }
}

/// The state file as the steps' ledger port (`crm-sync serve` records through it).
#[async_trait]
impl JobLedger for Ledger {
    async fn started(
        &self,
        job_id: &str,
        source: &SourceId,
        entities: &[Entity],
    ) -> Result<(), LedgerError> {
        let entities: Vec<String> = entities.iter().map(|e| e.to_string()).collect();
        Ledger::started(self, job_id, source.as_str(), &entities).map_err(ledger_error)
    }
    async fn page_done(&self, job: &SyncPageJob, done: &PageDone) -> Result<(), LedgerError> {
        Ledger::page_done(self, job, done).map_err(ledger_error)
    }
    async fn page_retry(&self, job_id: &str, reason: &str) -> Result<(), LedgerError> {
        Ledger::page_retry(self, job_id, reason).map_err(ledger_error)
    }
    async fn failed(&self, job_id: &str, reason: &str) -> Result<(), LedgerError> {
        Ledger::failed(self, job_id, reason).map_err(ledger_error)
    }
    async fn writes(&self, job_id: &str, w: &JobWrites) -> Result<(), LedgerError> {
        self.add_writes(job_id, w).map_err(ledger_error)
    }
}

fn ledger_error(e: anyhow::Error) -> LedgerError {
    LedgerError(format!("{e:#}"))
}

const SELECT_JOB: &str = "SELECT job_id, source, entities, created_at, updated_at, phase, entity,
    pages, read, enqueued, skipped, deleted, total, pages_done, retries, last_error, failed,
    totals, written, write_failed FROM jobs";

fn row_to_status(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobStatus> {
    let entities: String = r.get(2)?;
    let record = JobRecord {
        job_id: r.get(0)?,
        source: r.get(1)?,
        entities: entities
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        created_at: ms_to_time(r.get(3)?),
        updated_at: ms_to_time(r.get(4)?),
        phase: r.get(5)?,
        entity: r.get(6)?,
        counts: SyncCounts {
            pages: r.get::<_, i64>(7)? as u64,
            read: r.get::<_, i64>(8)? as u64,
            enqueued: r.get::<_, i64>(9)? as u64,
            skipped: r.get::<_, i64>(10)? as u64,
            deleted: r.get::<_, i64>(11)? as u64,
        },
        total: r.get::<_, Option<i64>>(12)?.map(|t| t as u64),
        pages_done: r.get::<_, i64>(13)? != 0,
        retries: r.get::<_, i64>(14)? as u64,
        last_error: r.get(15)?,
        failed: r.get(16)?,
        snapshot_totals: serde_json::from_str(&r.get::<_, String>(17)?).unwrap_or_default(),
        written: r.get::<_, i64>(18)? as u64,
        write_failed: r.get::<_, i64>(19)? as u64,
    };
    Ok(JobStatus {
        record,
        pending_pages: 0,
        pending_writes: 0,
        dead_lettered: 0,
    })
}

fn fill_queues(conn: &Connection, s: &mut JobStatus) -> rusqlite::Result<()> {
    let mut st = conn.prepare_cached(
        "SELECT queue, COUNT(*) FROM messages WHERE correlation_id = ?1 GROUP BY queue",
    )?;
    let rows = st.query_map([&s.job_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    for row in rows {
        let (queue, n) = row?;
        match queue.as_str() {
            SYNC => s.pending_pages += n,
            UPSERT => s.pending_writes += n,
            SYNC_DLQ | UPSERT_DLQ => s.dead_lettered += n,
            _ => {}
        }
    }
    Ok(())
}

fn ms_to_time(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// What `crm-sync sync status` shows about a job: its ledger record, and what of it waits in
/// the state file's queues.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    #[serde(flatten)]
    pub record: JobRecord,
    /// Page jobs of this job waiting in the sync queue.
    pub pending_pages: u64,
    /// Messages of changes from this job waiting in the upsert queue.
    pub pending_writes: u64,
    /// Messages of this job in a dead-letter queue.
    pub dead_lettered: u64,
}

impl std::ops::Deref for JobStatus {
    type Target = JobRecord;
    fn deref(&self) -> &JobRecord {
        &self.record
    }
}

impl JobStatus {
    /// `queued`, `reading`, `writing`, `finished` or `failed`.
    pub fn state(&self) -> &'static str {
        if self.failed.is_some()
            || (!self.pages_done && self.pending_pages == 0 && self.dead_lettered > 0)
        {
            "failed"
        } else if self.pages_done && self.pending_writes == 0 && self.pending_pages == 0 {
            "finished"
        } else if self.pages_done {
            "writing"
        } else if self.phase == "queued" {
            "queued"
        } else {
            "reading"
        }
    }

    pub fn is_finished(&self) -> bool {
        self.state() == "finished"
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queues = format!(
            "{} page jobs and {} write messages pending, {} dead-lettered",
            self.pending_pages, self.pending_writes, self.dead_lettered
        );
        pipeline::ledger::write_report(f, &self.record, self.state(), Some(&queues))
    }
}
