//! `crm-sync serve`: the real pipeline on one machine, without AWS. The webhook endpoint, the
//! sync worker (pages and fetch-by-id jobs, reading the CRMs' APIs) and the upsert workers
//! (writing Dataverse) run in one process over the durable queues of one SQLite state file, as
//! Lambda's event source mappings run the functions over SQS: receive a batch, handle it, delete
//! what succeeded, let the rest come back.
//!
//! Stopping (Ctrl-C, SIGTERM): the endpoint stops accepting requests and finishes those in
//! progress, the workers finish the batch in hand, and nothing that was received and not
//! finished is lost: it is still in the state file and the next start takes it up at once.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use dataverse::DataverseWriter;
use pipeline::config::Config;
use pipeline::message::{self, Message};
use pipeline::queue::{Queue, Received, last_receive, still_failing};
use pipeline::recent::RecentEvents;
use pipeline::runner::{backoff, dead_letter, upsert_received};
use pipeline::sources::Sources;
use pipeline::sync::{
    Crms, StepError, SyncPorts, SyncSettings, handle_sync_message, run_sync_page,
};
use pipeline::upsert::{UpsertPolicy, UpsertPorts};
use pipeline::webhook::WebhookPorts;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::durable_queue::DurableQueue;
use crate::jobs::{Ledger, LocalState};
use crate::webhook_server::{WebhookServer, WebhookTarget};

/// The sync worker pauses while the upsert queue holds more than this many messages, so a
/// large CRM is not read into the state file much faster than Dataverse takes it.
const MAX_BACKLOG: usize = 20_000;

/// How often serve logs its queues' depths.
const STATS_EVERY: Duration = Duration::from_secs(60);

/// How long an idle worker waits on an empty queue before looking again for a stop.
const POLL_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    pub listen: SocketAddr,
    pub state: PathBuf,
    /// Records per CRM page.
    pub page_size: u32,
    /// Upsert batches handled at once.
    pub upsert_workers: usize,
    /// Messages per upsert batch (Lambda's BatchSize).
    pub batch_size: usize,
    /// First delay before a contact whose account is not in Dataverse yet is tried again.
    pub parent_retry_delay: Duration,
    /// Receives before a work queue's message is dead-lettered (default: sync 5, upsert 10).
    pub max_receives: Option<u32>,
}

impl ServeOptions {
    pub fn new(config: PathBuf, state: PathBuf) -> ServeOptions {
        ServeOptions {
            config,
            listen: ([127, 0, 0, 1], 8080).into(),
            state,
            page_size: 500,
            upsert_workers: 4,
            batch_size: 10,
            parent_retry_delay: UpsertPolicy::default().parent_delay,
            max_receives: None,
        }
    }
}

/// Why serve could not start: the input is unusable (exit 2) in every case.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct StartError(pub anyhow::Error);

/// The three steps over queues given as ports: durable ones in the state file here, SQS in
/// the cloud.
pub struct Runner {
    pub sources: Arc<Sources>,
    pub crms: Crms,
    pub writer: Arc<dyn DataverseWriter>,
    pub sync: Arc<dyn Queue>,
    pub upsert: Arc<dyn Queue>,
    pub sync_dlq: Arc<dyn Queue>,
    pub upsert_dlq: Arc<dyn Queue>,
    pub settings: SyncSettings,
    pub policy: UpsertPolicy,
    pub batch_size: usize,
    pub recent: RecentEvents,
    /// Where page progress is recorded for `sync status`.
    pub ledger: Option<Ledger>,
    /// The upsert queue, to hold the sync worker back while it is long.
    pub backlog: Option<Arc<DurableQueue>>,
}

impl WebhookTarget for Runner {
    fn webhook_ports(&self) -> WebhookPorts<'_> {
        WebhookPorts {
            sources: &self.sources,
            upsert: self.upsert.as_ref(),
            sync: self.sync.as_ref(),
            dlq: self.upsert_dlq.as_ref(),
            recent: Some(&self.recent),
        }
    }
}

impl Runner {
    pub fn sync_ports(&self) -> SyncPorts<'_> {
        SyncPorts {
            sources: &self.sources,
            crms: &self.crms,
            upsert: self.upsert.as_ref(),
            sync: self.sync.as_ref(),
        }
    }

    /// Handles one sync-queue message, if one comes within `wait`; returns whether it did.
    pub async fn sync_step(&self, wait: Duration) -> bool {
        let batch = self.receive_sync(wait).await;
        for m in &batch {
            self.sync_message(m).await;
        }
        !batch.is_empty()
    }

    /// Receives one sync-queue message. Dropping the future while it waits loses nothing.
    async fn receive_sync(&self, wait: Duration) -> Vec<Received> {
        match self.sync.receive(1, wait).await {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "sync queue unavailable");
                tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                Vec::new()
            }
        }
    }

    async fn sync_message(&self, m: &Received) {
        let ports = self.sync_ports();
        // Page jobs are run here rather than through `handle_sync_message`, to record their
        // progress in the ledger.
        let (result, job) = match message::decode(&m.body) {
            Ok(env) => match env.body {
                Message::SyncPage(job) => {
                    let r = run_sync_page(job.clone(), &env.correlation_id, &ports, &self.settings)
                        .await;
                    if let (Ok(done), Some(ledger)) = (&r, &self.ledger)
                        && let Err(e) = ledger.page_done(&job, done)
                    {
                        warn!(error = %e, job_id = %job.job_id, "could not record the page in the ledger");
                    }
                    (r.map(|_| ()), Some(job.job_id))
                }
                _ => (
                    handle_sync_message(&m.body, &ports, &self.settings).await,
                    None,
                ),
            },
            Err(e) => (Err(StepError::Permanent(e.to_string())), None),
        };
        match result {
            Ok(()) => {
                let _ = self.sync.delete(&m.receipt).await;
            }
            Err(StepError::Retryable(reason))
                if last_receive(m.receive_count, self.settings.max_receives) =>
            {
                let reason = still_failing(&reason, m.receive_count);
                warn!(message_id = %m.message_id, %reason, "sync message dead-lettered on its last receive");
                if let (Some(ledger), Some(job)) = (&self.ledger, &job) {
                    let _ = ledger.failed(job, &reason);
                }
                dead_letter(self.sync.as_ref(), self.sync_dlq.as_ref(), m, reason).await;
            }
            Err(StepError::Retryable(reason)) => {
                warn!(message_id = %m.message_id, receives = m.receive_count, %reason, "sync message will be retried");
                if let (Some(ledger), Some(job)) = (&self.ledger, &job) {
                    let _ = ledger.page_retry(job, &reason);
                }
                let _ = self.sync.release(&m.receipt, backoff(m)).await;
            }
            Err(StepError::Permanent(reason)) => {
                warn!(message_id = %m.message_id, %reason, "sync message dead-lettered");
                if let (Some(ledger), Some(job)) = (&self.ledger, &job) {
                    let _ = ledger.failed(job, &reason);
                }
                dead_letter(self.sync.as_ref(), self.sync_dlq.as_ref(), m, reason).await;
            }
        }
    }

    /// Handles one upsert batch, if one comes within `wait`; returns how many messages it had.
    pub async fn upsert_step(&self, wait: Duration) -> usize {
        let batch = self.receive_upsert(wait).await;
        self.upsert_batch(&batch).await;
        batch.len()
    }

    /// Receives one upsert batch. Dropping the future while it waits loses nothing.
    async fn receive_upsert(&self, wait: Duration) -> Vec<Received> {
        match self.upsert.receive(self.batch_size, wait).await {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "upsert queue unavailable");
                tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                Vec::new()
            }
        }
    }

    /// Applies a batch, deletes what succeeded and releases the rest for a retry.
    async fn upsert_batch(&self, batch: &[Received]) {
        if batch.is_empty() {
            return;
        }
        let ports = UpsertPorts {
            sources: &self.sources,
            writer: self.writer.as_ref(),
            retry: self.upsert.as_ref(),
            dlq: self.upsert_dlq.as_ref(),
            refetch: Some(self.sync.as_ref()),
            deadline: None,
        };
        upsert_received(batch, &ports, &self.policy, self.upsert.as_ref()).await;
    }

    /// Whether the sync worker should wait for the upsert queue to shrink.
    fn backlogged(&self) -> bool {
        self.backlog.as_ref().is_some_and(|q| q.len() > MAX_BACKLOG)
    }
}

/// A running `crm-sync serve`.
pub struct Serve {
    runner: Arc<Runner>,
    state: Arc<LocalState>,
    server: WebhookServer,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    _lock: File,
}

/// Takes the state file's lock: one runner per state file, so what is in flight in the file
/// belongs to no one else when this one starts.
fn lock_state(state: &Path) -> anyhow::Result<File> {
    let path = PathBuf::from(format!("{}.lock", state.display()));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{} is in use by another `crm-sync serve` (lock {})",
            state.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

impl Serve {
    /// Loads the configuration, builds the clients, opens the state file and starts the endpoint
    /// and the workers. Every error is about unusable input (exit 2).
    pub async fn start(opts: &ServeOptions) -> Result<Serve, StartError> {
        Serve::start_inner(opts).await.map_err(StartError)
    }

    async fn start_inner(opts: &ServeOptions) -> anyhow::Result<Serve> {
        let config = Config::load(&opts.config)?;
        let shown = opts.config.display().to_string();
        let named = |e: mapping::ConfigError| anyhow::anyhow!("{shown}: {e}");
        let sources = config.sources().map_err(named)?;
        let crms = config.crm_readers(&sources).map_err(named)?;
        let writer = config.dataverse_writer().map_err(named)?;
        if opts.page_size == 0 || opts.batch_size == 0 || opts.upsert_workers == 0 {
            bail!("--page-size, --batch-size and --upsert-workers must be at least 1");
        }
        let lock = lock_state(&opts.state)?;
        let state = Arc::new(LocalState::with_max_receives(
            crate::durable_queue::Store::open(&opts.state)?,
            opts.max_receives,
        ));
        let reclaimed = state.store.reclaim_in_flight()?;
        if reclaimed > 0 {
            info!(
                reclaimed,
                "messages a previous run had in hand are queued again"
            );
        }
        let runner = Arc::new(Runner {
            sources: Arc::new(sources),
            crms,
            writer: Arc::new(writer),
            sync: state.sync.clone(),
            upsert: state.upsert.clone(),
            sync_dlq: state.sync_dlq.clone(),
            upsert_dlq: state.upsert_dlq.clone(),
            settings: SyncSettings {
                page_size: opts.page_size,
                max_receives: Some(state.sync.max_receives()),
                ..SyncSettings::default()
            },
            policy: UpsertPolicy {
                parent_delay: opts.parent_retry_delay,
                max_receives: Some(state.upsert.max_receives()),
                ..UpsertPolicy::default()
            },
            batch_size: opts.batch_size,
            recent: RecentEvents::default(),
            ledger: Some(state.ledger()),
            backlog: Some(state.upsert.clone()),
        });
        let server = WebhookServer::start(runner.clone(), opts.listen)
            .await
            .with_context(|| format!("listening on {}", opts.listen))?;
        let (stop, stopped) = watch::channel(false);
        let mut workers = Vec::new();
        {
            let runner = runner.clone();
            let mut stopped = stopped.clone();
            workers.push(tokio::spawn(async move {
                while !*stopped.borrow() {
                    if runner.backlogged() {
                        let _ = tokio::time::timeout(POLL_WAIT, stopped.changed()).await;
                        continue;
                    }
                    // Only the wait for a message is cut short by a stop, never its handling.
                    let batch = tokio::select! {
                        biased;
                        _ = stopped.changed() => break,
                        b = runner.receive_sync(POLL_WAIT) => b,
                    };
                    for m in &batch {
                        runner.sync_message(m).await;
                    }
                }
            }));
        }
        for _ in 0..opts.upsert_workers {
            let runner = runner.clone();
            let mut stopped = stopped.clone();
            workers.push(tokio::spawn(async move {
                while !*stopped.borrow() {
                    let batch = tokio::select! {
                        biased;
                        _ = stopped.changed() => break,
                        b = runner.receive_upsert(POLL_WAIT) => b,
                    };
                    runner.upsert_batch(&batch).await;
                }
            }));
        }
        {
            // A line a minute with the queues' depths, while anything is queued.
            let store = state.store.clone();
            let mut stopped = stopped.clone();
            workers.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(STATS_EVERY);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = stopped.changed() => break,
                        _ = tick.tick() => {}
                    }
                    if let Ok(depths) = store.depths()
                        && !depths.is_empty()
                    {
                        let queues: Vec<String> = depths
                            .iter()
                            .map(|(q, total, ready)| format!("{q}={total} ({ready} ready)"))
                            .collect();
                        info!(queues = %queues.join(" "), "queued");
                    }
                }
            }));
        }
        info!(
            listen = %server.addr(),
            state = %opts.state.display(),
            sources = ?runner.sources.ids().map(|s| s.to_string()).collect::<Vec<_>>(),
            "crm-sync serve started"
        );
        Ok(Serve {
            runner,
            state,
            server,
            stop,
            workers,
            _lock: lock,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://ADDR/webhooks/`: append a source id.
    pub fn webhook_base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn runner(&self) -> &Arc<Runner> {
        &self.runner
    }

    pub fn state(&self) -> &Arc<LocalState> {
        &self.state
    }

    /// Stops: no new requests, in-progress requests answered, the batches in hand finished.
    pub async fn shutdown(self) {
        info!("stopping: finishing the requests and batches in hand");
        self.server.shutdown().await;
        let _ = self.stop.send(true);
        for w in self.workers {
            let _ = w.await;
        }
        info!("stopped");
    }
}
