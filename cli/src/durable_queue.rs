//! A durable queue with SQS's delivery semantics, in one SQLite file (WAL mode): what
//! `crm-sync serve` runs its queues on, so that work acknowledged to a CRM or left half done
//! survives a crash or a restart.
//!
//! Semantics, as [`pipeline::MemoryQueue`] and SQS: at-least-once (a received message that is
//! not deleted becomes visible again after the visibility timeout, and its receipt then goes
//! stale), per-message delays, receive counts, redrive to a dead-letter queue after
//! `max_receives` (the move is one transaction), FIFO message groups (a group waits behind its
//! in-flight or delayed head), deduplication ids remembered for five minutes, and an optional
//! capacity. All queues of a runner share one [`Store`] (one file, one connection); other
//! processes (`crm-sync sync start`) may write to the same file at the same time.
//!
//! Schema (version 1):
//!
//! ```sql
//! messages(id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT, body TEXT, group_id TEXT,
//!          attributes TEXT /* JSON object */, correlation_id TEXT /* from the envelope */,
//!          receive_count INTEGER, visible_at INTEGER /* unix ms */, receipt TEXT,
//!          leased INTEGER /* 1 while received and not released */, sent_at INTEGER)
//! dedup(queue TEXT, dedup_id TEXT, expires_at INTEGER, PRIMARY KEY (queue, dedup_id))
//! meta(key TEXT PRIMARY KEY, value TEXT)
//! ```
//!
//! Durability: a send commits with `synchronous = FULL` (an acknowledged message survives a
//! power cut); receives, deletes and releases commit with `NORMAL` (they survive a process crash;
//! after a power cut one may be undone, which only means a message is delivered again).
//!
//! Group commit: every change to the queues (a send, a receive, a delete, a release) is queued
//! for one writer, which applies the changes waiting while its last commit was on disk in the
//! next transaction (each in its own savepoint, so one that fails fails alone) and answers each
//! only once that transaction is committed. A commit costs a flush of the disk; one per send
//! capped the webhook endpoint at the disk's flush rate (about 1,900 requests/s here), and a
//! tokio worker waiting for the file's lock behind a flush stopped serving requests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use async_trait::async_trait;
use pipeline::queue::{OutMessage, Queue, QueueError, Received};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a FIFO deduplication id is remembered, as in SQS.
const DEDUP_WINDOW_MS: i64 = 300_000;

/// How long a send waits for room in a full queue before giving up with [`QueueError::Full`].
const SEND_WAIT: Duration = Duration::from_secs(5);

/// How often a waiting receive looks at the file again: other processes' sends do not wake it.
const POLL: Duration = Duration::from_millis(200);

const SCHEMA_VERSION: i64 = 1;

/// The oldest receivable messages: visible, and not behind an invisible (in-flight or delayed)
/// earlier message of their FIFO group. Walks the queue in id order (no sort), so a receive
/// costs about the same however long the queue is.
const RECEIVABLE: &str = "SELECT m.id, m.body, m.attributes, m.receive_count, m.sent_at
    FROM messages m INDEXED BY messages_in_order
    WHERE m.queue = ?1 AND m.visible_at <= ?2
      AND (m.group_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM messages p
          WHERE p.queue = ?1 AND p.group_id = m.group_id AND p.id < m.id AND p.visible_at > ?2))
    ORDER BY m.id LIMIT ?3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    group_id TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    correlation_id TEXT,
    receive_count INTEGER NOT NULL DEFAULT 0,
    visible_at INTEGER NOT NULL,
    receipt TEXT,
    leased INTEGER NOT NULL DEFAULT 0,
    sent_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, visible_at);
CREATE INDEX IF NOT EXISTS messages_in_order ON messages (queue, id);
CREATE INDEX IF NOT EXISTS messages_by_group ON messages (queue, group_id, id);
CREATE INDEX IF NOT EXISTS messages_by_receipt ON messages (receipt);
CREATE INDEX IF NOT EXISTS messages_by_correlation ON messages (correlation_id);
CREATE TABLE IF NOT EXISTS dedup (
    queue TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (queue, dedup_id)
);
CREATE INDEX IF NOT EXISTS dedup_by_expiry ON dedup (expires_at);
";

/// Where time comes from. Visibility deadlines are stored as wall-clock milliseconds so they
/// mean the same after a restart.
#[derive(Clone, Debug)]
pub enum Clock {
    System,
    /// Wall-clock time at creation plus tokio's elapsed time: follows `tokio::time::pause` and
    /// `advance`, for tests.
    Tokio {
        anchor_ms: i64,
        start: Instant,
    },
}

impl Clock {
    pub fn tokio() -> Clock {
        Clock::Tokio {
            anchor_ms: system_ms(),
            start: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => system_ms(),
            Clock::Tokio { anchor_ms, start } => anchor_ms + start.elapsed().as_millis() as i64,
        }
    }
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The state file: every queue's messages (and the sync-job ledger, see `crate::jobs`).
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    clock: Clock,
    /// Wakes receivers waiting in this process when something changed.
    changed: Notify,
    /// Sends waiting for the next group commit.
    commits: Mutex<Commits>,
}

/// Changes not yet committed, and whether a writer is committing them.
#[derive(Default)]
struct Commits {
    pending: Vec<Change>,
    writing: bool,
}

/// What answers a change's caller once its transaction has ended: given the commit's error, if
/// any.
type Answer = Box<dyn FnOnce(Option<String>) + Send>;

/// One change waiting for the writer, applied inside the group's transaction.
struct Change {
    /// Must survive a power cut once answered (a send): the group commits with
    /// `synchronous = FULL`.
    durable: bool,
    apply: Apply,
}

/// Applies a change to the file (inside a savepoint) at a time in unix ms.
type Apply = Box<dyn FnOnce(&Connection, i64) -> Applied + Send>;

/// A change applied: whether it succeeded (else its savepoint is rolled back), whether it should
/// wake waiters, and how to answer its caller.
struct Applied {
    ok: bool,
    wakes: bool,
    answer: Answer,
}

impl Store {
    pub fn open(path: &Path) -> anyhow::Result<Arc<Store>> {
        Store::open_with_clock(path, Clock::System)
    }

    pub fn open_with_clock(path: &Path, clock: Clock) -> anyhow::Result<Arc<Store>> {
        let conn = Connection::open(path)
            .with_context(|| format!("opening the state file {}", path.display()))?;
        let setup = || -> rusqlite::Result<Option<i64>> {
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.execute_batch(SCHEMA)?;
            crate::jobs::create_schema(&conn)?;
            conn.query_row(
                "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
        };
        let version = setup().with_context(|| {
            format!(
                "{} is not a crm-sync state file (or cannot be written)",
                path.display()
            )
        })?;
        match version {
            None => {
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(v) if v > SCHEMA_VERSION => bail!(
                "{} was written by a newer crm-sync (state schema {v}; this one reads {SCHEMA_VERSION})",
                path.display()
            ),
            Some(_) => {}
        }
        // Checkpoints (copying the WAL into the file) run on their own connection and thread:
        // done by the writer, one every 1,000 pages stalled every change queued behind it.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let store = Arc::new(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            clock,
            changed: Notify::new(),
            commits: Mutex::default(),
        });
        let checkpoints = Connection::open(path)
            .with_context(|| format!("opening the state file {}", path.display()))?;
        checkpoints.busy_timeout(Duration::from_secs(10))?;
        let weak = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("state-checkpoint".into())
            .spawn(move || checkpoint_while_open(checkpoints, weak))
            .context("starting the state file's checkpoint thread")?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `f` to the file in the writer's next group transaction; answers once that
    /// transaction is committed. `f` also says whether it made something receivable or made room
    /// (waiting receivers and senders are woken): waking on every change would wake a waiting
    /// receive with its own empty receive, in a loop.
    async fn write<R, F>(self: &Arc<Self>, durable: bool, f: F) -> Result<R, QueueError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection, i64) -> rusqlite::Result<(R, bool)> + Send + 'static,
    {
        let (done, answer) = tokio::sync::oneshot::channel::<Result<R, String>>();
        let apply = Box::new(move |conn: &Connection, now: i64| -> Applied {
            match f(conn, now) {
                Ok((r, wakes)) => Applied {
                    ok: true,
                    wakes,
                    answer: Box::new(move |failed: Option<String>| {
                        let _ = done.send(failed.map_or(Ok(r), Err));
                    }),
                },
                Err(e) => {
                    let e = e.to_string();
                    Applied {
                        ok: false,
                        wakes: false,
                        answer: Box::new(move |_| drop(done.send(Err(e)))),
                    }
                }
            }
        });
        let start_writer = {
            let mut c = self.commits.lock().unwrap_or_else(|e| e.into_inner());
            c.pending.push(Change { durable, apply });
            !std::mem::replace(&mut c.writing, true)
        };
        if start_writer {
            let store = self.clone();
            // Blocking: a commit waits for the disk. (A running blocking task also keeps a
            // paused tokio clock from jumping ahead in tests.)
            tokio::task::spawn_blocking(move || store.write_pending());
        }
        match answer.await {
            Ok(r) => r.map_err(|e| QueueError::Unavailable(format!("state file: {e}"))),
            Err(_) => Err(QueueError::Unavailable(
                "state file: the writer stopped".into(),
            )),
        }
    }

    /// Commits groups of waiting changes until none is left.
    fn write_pending(&self) {
        /// Lets the next change start a writer even if this one panicked.
        struct Writing<'a>(&'a Mutex<Commits>);
        impl Drop for Writing<'_> {
            fn drop(&mut self) {
                let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
                c.writing = false;
            }
        }
        let _writing = Writing(&self.commits);
        loop {
            let group = {
                let mut c = self.commits.lock().unwrap_or_else(|e| e.into_inner());
                if c.pending.is_empty() {
                    c.writing = false;
                    return;
                }
                std::mem::take(&mut c.pending)
            };
            if self.commit_group(group) {
                self.changed.notify_waiters();
            }
        }
    }

    /// One transaction for a group of changes, each in its own savepoint; then the answers.
    /// Returns whether waiters should look again.
    fn commit_group(&self, group: Vec<Change>) -> bool {
        let now = self.now_ms();
        let durable = group.iter().any(|c| c.durable);
        let mut answers = Vec::with_capacity(group.len());
        let mut wakes = false;
        let mut conn = self.conn();
        let committed = (|| {
            if durable {
                conn.pragma_update(None, "synchronous", "FULL")?;
            }
            let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM dedup WHERE expires_at <= ?1", [now])?;
            let mut group = group.into_iter();
            for change in group.by_ref() {
                // On an error here the change (and those after it) is dropped unanswered.
                let sp = tx.savepoint()?;
                let applied = (change.apply)(&sp, now);
                answers.push(applied.answer);
                if applied.ok {
                    sp.commit()?;
                    wakes |= applied.wakes;
                }
                // Else dropping the savepoint rolls back this change alone.
            }
            tx.commit()
        })();
        if durable {
            let _ = conn.pragma_update(None, "synchronous", "NORMAL");
        }
        drop(conn);
        // Changes never applied (the transaction failed first) drop their answers, and their
        // callers hear that the writer stopped; they retry as on any unavailable queue.
        let failed = committed.err().map(|e| e.to_string());
        let wakes = wakes && failed.is_none();
        for answer in answers {
            answer(failed.clone());
        }
        wakes
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The connection, for the ledger and inspection. Held briefly: every queue shares it.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A queue named `name` in this file, redriving to `dlq` (a queue of the same store).
    pub fn queue(
        self: &Arc<Self>,
        name: &str,
        cfg: DurableQueueConfig,
        dlq: Option<Arc<DurableQueue>>,
    ) -> DurableQueue {
        if let Some(d) = &dlq {
            assert!(
                Arc::ptr_eq(&d.store, self),
                "a DLQ must live in the same state file"
            );
        }
        DurableQueue {
            name: name.to_string(),
            cfg,
            dlq: dlq.map(|d| d.name.clone()),
            store: self.clone(),
        }
    }

    /// Makes every message that was received and neither deleted nor released visible now: its
    /// consumer was a previous process that is gone. Call only while holding the runner's lock
    /// (no other consumer can be working). Returns how many came back.
    pub fn reclaim_in_flight(&self) -> anyhow::Result<usize> {
        let now = self.now_ms();
        let n = self.conn().execute(
            "UPDATE messages SET visible_at = ?1, leased = 0 WHERE leased = 1 AND visible_at > ?1",
            [now],
        )?;
        self.changed.notify_waiters();
        Ok(n)
    }

    /// Messages of each queue: (queue, total, visible now).
    pub fn depths(&self) -> anyhow::Result<Vec<(String, u64, u64)>> {
        let now = self.now_ms();
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT queue, COUNT(*), SUM(visible_at <= ?1) FROM messages GROUP BY queue ORDER BY queue",
        )?;
        let rows = st
            .query_map([now], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// How often the WAL is copied into the state file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Checkpoints the WAL (PASSIVE: never waits for the writer) until the store is dropped. A
/// checkpoint that fails is retried on the next tick; the WAL only grows meanwhile.
fn checkpoint_while_open(conn: Connection, store: std::sync::Weak<Store>) {
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        if store.strong_count() == 0 {
            return;
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "state file checkpoint failed; retrying");
        }
    }
}

#[derive(Debug, Clone)]
pub struct DurableQueueConfig {
    /// At most this many messages (None: as many as the disk holds).
    pub capacity: Option<usize>,
    pub visibility_timeout: Duration,
    /// Move a message to the DLQ when it would be received more than this many times.
    pub max_receives: u32,
}

impl Default for DurableQueueConfig {
    fn default() -> Self {
        DurableQueueConfig {
            capacity: None,
            visibility_timeout: Duration::from_secs(30),
            max_receives: 5,
        }
    }
}

pub struct DurableQueue {
    name: String,
    cfg: DurableQueueConfig,
    dlq: Option<String>,
    store: Arc<Store>,
}

/// A message as the state file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// `QUEUE-N`, as a receive names it.
    pub id: String,
    pub body: String,
    pub group_id: Option<String>,
    pub attributes: BTreeMap<String, String>,
    /// Receives so far; a message redriven to a DLQ keeps its count.
    pub receive_count: u32,
    /// When it was first sent (unix ms); a redriven message keeps it, as on a standard queue.
    pub sent_at_ms: i64,
}

/// The envelope's correlation id, to find a job's messages (`crm-sync sync status`).
fn correlation_of(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        correlation_id: Option<String>,
    }
    serde_json::from_str::<Head>(body)
        .ok()
        .and_then(|h| h.correlation_id)
}

/// Inserts what fits of `pending` into `queue` (of `capacity`) in the caller's transaction;
/// returns how many were consumed (a duplicate within the deduplication window is consumed
/// without being stored).
fn insert_into(
    conn: &Connection,
    queue: &str,
    capacity: Option<usize>,
    pending: &[(OutMessage, Option<String>)],
    now: i64,
) -> rusqlite::Result<usize> {
    let mut room = match capacity {
        Some(cap) => cap.saturating_sub(conn.query_row(
            "SELECT COUNT(*) FROM messages WHERE queue = ?1",
            [queue],
            |r| r.get::<_, i64>(0),
        )? as usize),
        None => usize::MAX,
    };
    let mut consumed = 0;
    for (m, correlation_id) in pending {
        if let Some(d) = &m.dedup_id {
            let seen = conn
                .prepare_cached("SELECT 1 FROM dedup WHERE queue = ?1 AND dedup_id = ?2")?
                .query_row(params![queue, d], |_| Ok(()))
                .optional()?
                .is_some();
            if seen {
                consumed += 1;
                continue;
            }
        }
        if room == 0 {
            break;
        }
        if let Some(d) = &m.dedup_id {
            conn.execute(
                "INSERT INTO dedup (queue, dedup_id, expires_at) VALUES (?1, ?2, ?3)",
                params![queue, d, now + DEDUP_WINDOW_MS],
            )?;
        }
        let attributes = serde_json::to_string(&m.attributes).expect("string maps serialise");
        conn.prepare_cached(
            "INSERT INTO messages (queue, body, group_id, attributes, correlation_id, visible_at, sent_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            queue,
            m.body,
            m.group_id,
            attributes,
            correlation_id,
            now + m.delay.as_millis() as i64,
            now
        ])?;
        room -= 1;
        consumed += 1;
    }
    Ok(consumed)
}

impl DurableQueue {
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Receives after which a message is moved to the DLQ.
    pub fn max_receives(&self) -> u32 {
        self.cfg.max_receives
    }

    /// Messages in the queue, visible or not.
    pub fn len(&self) -> usize {
        self.store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM messages WHERE queue = ?1",
                [&self.name],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages received and neither deleted, released nor timed out yet.
    pub fn in_flight(&self) -> usize {
        let now = self.store.now_ms();
        self.store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM messages WHERE queue = ?1 AND leased = 1 AND visible_at > ?2",
                params![self.name, now],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0) as usize
    }

    /// Bodies and attributes of every message, oldest first, without receiving them (for DLQ
    /// inspection).
    pub fn peek_all(&self) -> Vec<(String, BTreeMap<String, String>)> {
        let conn = self.store.conn();
        let Ok(mut st) =
            conn.prepare("SELECT body, attributes FROM messages WHERE queue = ?1 ORDER BY id")
        else {
            return Vec::new();
        };
        st.query_map([&self.name], |r| {
            let attrs: String = r.get(1)?;
            Ok((r.get(0)?, serde_json::from_str(&attrs).unwrap_or_default()))
        })
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
    }

    /// Every message as stored, oldest first, without receiving it (`crm-sync dlq`).
    pub fn stored(&self) -> anyhow::Result<Vec<StoredMessage>> {
        let conn = self.store.conn();
        let mut st = conn.prepare(
            "SELECT id, body, group_id, attributes, receive_count, sent_at
             FROM messages WHERE queue = ?1 ORDER BY id",
        )?;
        let rows = st
            .query_map([&self.name], |r| {
                let attrs: String = r.get(3)?;
                Ok(StoredMessage {
                    id: format!("{}-{}", self.name, r.get::<_, i64>(0)?),
                    body: r.get(1)?,
                    group_id: r.get(2)?,
                    attributes: serde_json::from_str(&attrs).unwrap_or_default(),
                    receive_count: r.get(4)?,
                    sent_at_ms: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Deletes a stored message by its id (as [`DurableQueue::stored`] gives it) without
    /// receiving it; returns whether it was there.
    pub fn remove(&self, id: &str) -> anyhow::Result<bool> {
        let Some(n) = id
            .strip_prefix(&self.name)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            return Ok(false);
        };
        let removed = self.store.conn().execute(
            "DELETE FROM messages WHERE id = ?1 AND queue = ?2",
            params![n, self.name],
        )?;
        self.store.changed.notify_waiters();
        Ok(removed > 0)
    }

    /// Takes receivable messages (moving those past `max_receives` to the DLQ); when there are
    /// none, also returns when the next one becomes visible.
    /// Runs in the writer's transaction.
    fn take(
        conn: &Connection,
        (queue, dlq, cfg): (&str, Option<&str>, &DurableQueueConfig),
        max: usize,
        now: i64,
    ) -> rusqlite::Result<(Vec<Received>, Option<i64>)> {
        let tx = conn;
        let mut out = Vec::new();
        loop {
            let candidates: Vec<(i64, String, String, u32, i64)> = {
                let mut st = tx.prepare_cached(RECEIVABLE)?;
                st.query_map(params![queue, now, (max - out.len()) as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<Result<_, _>>()?
            };
            if candidates.is_empty() {
                break;
            }
            let mut redriven = false;
            for (id, body, attributes, count, sent_at) in candidates {
                if let Some(dlq) = &dlq
                    && count >= cfg.max_receives
                {
                    tx.execute(
                        "UPDATE messages SET queue = ?2, visible_at = ?3,
                             receipt = NULL, leased = 0 WHERE id = ?1",
                        params![id, dlq, now],
                    )?;
                    tracing::warn!(queue = %queue, message_id = id, receives = count, "message moved to the dead-letter queue");
                    redriven = true;
                    continue;
                }
                let receipt = format!("{queue}-{id}-{}", uuid::Uuid::new_v4().simple());
                tx.execute(
                    "UPDATE messages SET receive_count = receive_count + 1, visible_at = ?2,
                         receipt = ?3, leased = 1 WHERE id = ?1",
                    params![id, now + cfg.visibility_timeout.as_millis() as i64, receipt],
                )?;
                out.push(Received {
                    message_id: format!("{queue}-{id}"),
                    receipt,
                    body,
                    receive_count: count + 1,
                    attributes: serde_json::from_str(&attributes).unwrap_or_default(),
                    sent_at_ms: Some(sent_at),
                });
            }
            if out.len() >= max || !redriven {
                break;
            }
        }
        let next_wake = if out.is_empty() {
            tx.query_row(
                "SELECT MIN(visible_at) FROM messages WHERE queue = ?1 AND visible_at > ?2",
                params![queue, now],
                |r| r.get::<_, Option<i64>>(0),
            )?
        } else {
            None
        };
        Ok((out, next_wake))
    }
}

#[async_trait]
impl Queue for DurableQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, messages: Vec<OutMessage>) -> Result<(), QueueError> {
        let deadline = Instant::now() + SEND_WAIT;
        // The correlation id is read here, not by the writer every send waits for.
        let mut pending: Vec<(OutMessage, Option<String>)> = messages
            .into_iter()
            .map(|m| {
                let correlation_id = correlation_of(&m.body);
                (m, correlation_id)
            })
            .collect();
        loop {
            let notified = self.store.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (queue, capacity) = (self.name.clone(), self.cfg.capacity);
            let (consumed, mut back) = self
                .store
                .write(true, move |conn, now| {
                    insert_into(conn, &queue, capacity, &pending, now)
                        .map(|n| ((n, pending), n > 0))
                })
                .await?;
            back.drain(..consumed);
            pending = back;
            if pending.is_empty() {
                return Ok(());
            }
            // Full: wait for a delete to make room (or poll, for other processes).
            if Instant::now() >= deadline {
                return Err(QueueError::Full(self.name.clone()));
            }
            let _ = tokio::time::timeout_at(deadline.min(Instant::now() + POLL), notified).await;
        }
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.store.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (queue, dlq, cfg) = (self.name.clone(), self.dlq.clone(), self.cfg.clone());
            let (got, next_wake) = self
                .store
                .write(false, move |conn, now| {
                    // Taking makes nothing receivable (a redriven message's DLQ is polled).
                    Self::take(conn, (&queue, dlq.as_deref(), &cfg), max.max(1), now)
                        .map(|t| (t, false))
                })
                .await?;
            let now = Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let mut wake = deadline.min(now + POLL);
            if let Some(at) = next_wake {
                let ms = (at - self.store.now_ms()).max(0) as u64;
                wake = wake.min(now + Duration::from_millis(ms));
            }
            let _ = tokio::time::timeout_at(wake, notified).await;
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        // A stale receipt (the message timed out and was received again) deletes nothing, so a
        // slow consumer cannot delete work another consumer is doing.
        let (receipt, queue) = (receipt.to_string(), self.name.clone());
        self.store
            .write(false, move |conn, _| {
                conn.prepare_cached("DELETE FROM messages WHERE receipt = ?1 AND queue = ?2")?
                    .execute(params![receipt, queue])
                    .map(|n| ((), n > 0))
            })
            .await?;
        Ok(())
    }

    async fn release(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        let (receipt, queue) = (receipt.to_string(), self.name.clone());
        let delay = delay.as_millis() as i64;
        self.store
            .write(false, move |conn, now| {
                conn.prepare_cached(
                    "UPDATE messages SET visible_at = ?1, leased = 0 WHERE receipt = ?2 AND queue = ?3",
                )?
                .execute(params![now + delay, receipt, queue])
                .map(|n| ((), n > 0))
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "crm-sync-queue-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn store() -> Arc<Store> {
        Store::open_with_clock(&temp_file("q.sqlite"), Clock::tokio()).unwrap()
    }

    /// Removes a test's file and its WAL companions.
    fn remove(s: &Store) {
        if let Some(dir) = s.path().parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    fn cfg(max_receives: u32) -> DurableQueueConfig {
        DurableQueueConfig {
            capacity: Some(3),
            visibility_timeout: Duration::from_secs(30),
            max_receives,
        }
    }

    fn msg(body: &str) -> OutMessage {
        OutMessage::new(body.into())
    }

    #[tokio::test(start_paused = true)]
    async fn unacknowledged_messages_come_back_and_then_go_to_the_dlq() {
        let s = store();
        let dlq = Arc::new(s.queue("dlq", cfg(100), None));
        let q = s.queue("q", cfg(2), Some(dlq.clone()));
        let mut m = msg("a");
        m.attributes.insert("why".into(), "kept".into());
        q.send(vec![m]).await.unwrap();
        let r1 = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!((r1.len(), r1[0].receive_count), (1, 1));
        assert_eq!(r1[0].attributes["why"], "kept");
        assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(q.in_flight(), 1);
        // Not deleted: visible again after the visibility timeout.
        let r2 = q.receive(10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(r2[0].receive_count, 2);
        assert_eq!(r2[0].message_id, r1[0].message_id);
        // The stale receipt deletes nothing.
        q.delete(&r1[0].receipt).await.unwrap();
        assert_eq!(q.len(), 1);
        // Received twice already: the third attempt moves it to the DLQ, attributes and all.
        assert!(
            q.receive(10, Duration::from_secs(31))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!((q.len(), dlq.len()), (0, 1));
        // It keeps its receive count, as SQS's redrive does, so `crm-sync dlq` can say how many
        // receives it failed.
        let stored = dlq.stored().unwrap();
        assert_eq!((stored[0].body.as_str(), stored[0].receive_count), ("a", 2));
        let dead = dlq.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!((dead[0].body.as_str(), dead[0].receive_count), ("a", 3));
        assert_eq!(dead[0].attributes["why"], "kept");
        // Removed by its id, without a receipt; a second time finds nothing.
        assert!(dlq.remove(&stored[0].id).unwrap());
        assert!(!dlq.remove(&stored[0].id).unwrap());
        assert!(dlq.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn delete_release_and_delay() {
        let s = store();
        let q = s.queue("q", cfg(5), None);
        let mut delayed = msg("later");
        delayed.delay = Duration::from_secs(10);
        q.send(vec![msg("now"), delayed]).await.unwrap();
        let r = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(
            r.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["now"]
        );
        q.release(&r[0].receipt, Duration::ZERO).await.unwrap();
        let r = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(r[0].body, "now");
        q.delete(&r[0].receipt).await.unwrap();
        let started = Instant::now();
        let r = q.receive(10, Duration::from_secs(20)).await.unwrap();
        assert_eq!(r[0].body, "later");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(9) && waited <= Duration::from_secs(11),
            "{waited:?}"
        );
        // A release with a delay hides it that long; its receipt still deletes it.
        q.release(&r[0].receipt, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty());
        q.delete(&r[0].receipt).await.unwrap();
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn fifo_groups_and_deduplication() {
        let s = store();
        let q = s.queue("q", cfg(5), None);
        let g = |b: &str, grp: &str, d: &str| OutMessage {
            body: b.into(),
            group_id: Some(grp.into()),
            dedup_id: Some(d.into()),
            ..OutMessage::default()
        };
        q.send(vec![
            g("a1", "a", "1"),
            g("a1 again", "a", "1"),
            g("b1", "b", "2"),
        ])
        .await
        .unwrap();
        assert_eq!(q.len(), 2);
        q.send(vec![g("a2", "a", "3")]).await.unwrap();
        let first = q.receive(1, Duration::ZERO).await.unwrap();
        assert_eq!(first[0].body, "a1");
        // Group a is blocked behind a1 in flight; b is not.
        let next = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(
            next.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["b1"]
        );
        q.delete(&first[0].receipt).await.unwrap();
        let next = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(next[0].body, "a2");
        // The same dedup id in another queue is another message; in this one, after the
        // window, it is accepted again.
        let other = s.queue("other", cfg(5), None);
        other.send(vec![g("x", "a", "1")]).await.unwrap();
        assert_eq!(other.len(), 1);
        q.delete(&next[0].receipt).await.unwrap();
        tokio::time::advance(Duration::from_secs(301)).await;
        q.send(vec![g("a1 later", "a", "1")]).await.unwrap();
        assert_eq!(q.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_after_waiting() {
        let s = store();
        let q = s.queue("q", cfg(5), None);
        q.send(vec![msg("1"), msg("2"), msg("3")]).await.unwrap();
        assert_eq!(
            q.send(vec![msg("4")]).await,
            Err(QueueError::Full("q".into()))
        );
        assert_eq!(q.len(), 3);
    }

    /// Sends that arrive while a commit is on disk share the next one; each is answered, none is
    /// lost or stored twice, and a full queue refuses its own send alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sends_share_commits_and_each_is_answered() {
        let s = Store::open(&temp_file("group.sqlite")).unwrap();
        let q = Arc::new(s.queue("q", DurableQueueConfig::default(), None));
        let small = Arc::new(s.queue("small", cfg(5), None));
        small
            .send(vec![msg("a"), msg("b"), msg("c")])
            .await
            .unwrap();
        let mut sends = Vec::new();
        for i in 0..300 {
            let q = q.clone();
            sends.push(tokio::spawn(async move {
                q.send(vec![msg(&format!("{i}-x")), msg(&format!("{i}-y"))])
                    .await
            }));
        }
        let refused = {
            let small = small.clone();
            tokio::spawn(async move { small.send(vec![msg("d")]).await })
        };
        for s in sends {
            s.await.unwrap().unwrap();
        }
        assert_eq!(
            refused.await.unwrap(),
            Err(QueueError::Full("small".into()))
        );
        let mut bodies: Vec<String> = q.peek_all().into_iter().map(|(b, _)| b).collect();
        assert_eq!(bodies.len(), 600);
        bodies.sort();
        bodies.dedup();
        assert_eq!(bodies.len(), 600);
        assert_eq!(small.len(), 3);
        remove(&s);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_receive_wakes_on_a_send() {
        let s = store();
        let q = Arc::new(s.queue("q", cfg(5), None));
        let rx = {
            let q = q.clone();
            tokio::spawn(async move { q.receive(10, Duration::from_secs(20)).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        q.send(vec![msg("hello")]).await.unwrap();
        let got = rx.await.unwrap().unwrap();
        assert_eq!(got[0].body, "hello");
    }

    /// A message received and not deleted when the process dies is delivered again after the
    /// file is reopened: after its visibility timeout, or at once when the new runner reclaims
    /// what the dead one held.
    #[tokio::test(start_paused = true)]
    async fn a_message_in_flight_at_a_crash_is_delivered_again_after_reopening() {
        let path = temp_file("crash.sqlite");
        let qcfg = DurableQueueConfig::default();
        {
            let s = Store::open_with_clock(&path, Clock::tokio()).unwrap();
            let mode: String = s
                .conn()
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            let q = s.queue("q", qcfg.clone(), None);
            q.send(vec![msg("work"), msg("other")]).await.unwrap();
            let got = q.receive(1, Duration::ZERO).await.unwrap();
            assert_eq!(got[0].body, "work");
            // The process "crashes": dropped with neither delete nor release.
        }
        {
            let s = Store::open_with_clock(&path, Clock::tokio()).unwrap();
            let q = s.queue("q", qcfg.clone(), None);
            assert_eq!(q.len(), 2);
            let got = q.receive(10, Duration::ZERO).await.unwrap();
            assert_eq!(
                got.len(),
                1,
                "the in-flight one waits for its visibility timeout"
            );
            q.delete(&got[0].receipt).await.unwrap();
            let got = q.receive(10, Duration::from_secs(31)).await.unwrap();
            assert_eq!((got[0].body.as_str(), got[0].receive_count), ("work", 2));
            // Crash again while it is in flight; this time the runner reclaims it on start.
        }
        let s = Store::open_with_clock(&path, Clock::tokio()).unwrap();
        assert_eq!(s.reclaim_in_flight().unwrap(), 1);
        let q = s.queue("q", qcfg, None);
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!((got[0].body.as_str(), got[0].receive_count), ("work", 3));
        q.delete(&got[0].receipt).await.unwrap();
        assert!(q.is_empty());
        remove(&s);
    }

    #[tokio::test(start_paused = true)]
    async fn reclaim_leaves_released_and_delayed_messages_alone() {
        let s = store();
        let q = s.queue("q", DurableQueueConfig::default(), None);
        let mut later = msg("delayed");
        later.delay = Duration::from_secs(60);
        q.send(vec![msg("retry"), later]).await.unwrap();
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        q.release(&got[0].receipt, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(s.reclaim_in_flight().unwrap(), 0);
        assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_big_queue_receives_quickly() {
        let s = Store::open(&temp_file("big.sqlite")).unwrap();
        let q = s.queue("q", DurableQueueConfig::default(), None);
        let body = "x".repeat(200);
        for chunk in 0..20 {
            let msgs = (0..1000)
                .map(|i| OutMessage {
                    body: body.clone(),
                    group_id: Some(format!("g{}", (chunk * 1000 + i) % 3000)),
                    ..OutMessage::default()
                })
                .collect();
            q.send(msgs).await.unwrap();
        }
        let started = std::time::Instant::now();
        let mut n = 0;
        while n < 2000 {
            let got = q.receive(10, Duration::ZERO).await.unwrap();
            for m in &got {
                q.delete(&m.receipt).await.unwrap();
            }
            n += got.len();
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "2000 of 20000 took {took:?}"
        );
        assert_eq!(q.len(), 18_000);
        // In queue order through the index: no sort of the whole queue per receive.
        let conn = s.conn();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {RECEIVABLE}"))
            .unwrap()
            .query_map(params!["q", 0i64, 10i64], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter().any(|p| p.contains("messages_in_order"))
                && !plan.iter().any(|p| p.contains("TEMP B-TREE")),
            "{plan:?}"
        );
        drop(conn);
        remove(&s);
    }
}
