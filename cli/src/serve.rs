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
use pipeline::Metrics;
use pipeline::config::Config;
use pipeline::ledger::{JobLedger, handle_sync_message_recorded, record_writes};
use pipeline::queue::{Queue, Received};
use pipeline::recent::RecentEvents;
use pipeline::runner::{backoff, dead_letter, upsert_received};
use pipeline::sources::Sources;
use pipeline::sync::{Crms, StepError, SyncPorts, SyncSettings};
use pipeline::upsert::{UpsertPolicy, UpsertPorts};
use pipeline::versions::{MemoryVersions, Versions};
use pipeline::webhook::WebhookPorts;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::durable_queue::DurableQueue;
use crate::jobs::LocalState;
use crate::stack::StackOutputs;
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
    /// Work a deployed stack's SQS queues (and record in its run ledger) instead of the state
    /// file's, as its Lambda functions would.
    pub stack: Option<StackTarget>,
    /// Receives before a work queue's message is dead-lettered (default: sync 5, upsert 10 in
    /// the state file; a stack's MaxReceiveCount, 10 unless given).
    pub max_receives: Option<u32>,
}

/// A deployed stack to serve: its outputs, and another endpoint for SQS and DynamoDB (a local
/// emulation) if not AWS's.
#[derive(Debug, Clone)]
pub struct StackTarget {
    pub outputs: StackOutputs,
    pub endpoint: Option<String>,
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
            stack: None,
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
    /// Where parked contacts wait: the upsert queue itself locally; the stack's standard retry
    /// queue over SQS (a FIFO queue takes no per-message delay), which is then worked too.
    pub retry: Arc<dyn Queue>,
    /// Where notification items that cannot be mapped go.
    pub webhook_dlq: Arc<dyn Queue>,
    pub settings: SyncSettings,
    pub policy: UpsertPolicy,
    pub batch_size: usize,
    pub recent: RecentEvents,
    /// What the workers did, answered on `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// Where page progress is recorded for `sync status`.
    pub ledger: Option<Arc<dyn JobLedger>>,
    /// The upsert queue, to hold the sync worker back while it is long.
    pub backlog: Option<Arc<DurableQueue>>,
    /// The newest version written per record (in memory with a state file; the stack's table
    /// in stack mode, shared with its functions).
    pub versions: Arc<dyn Versions>,
}

impl WebhookTarget for Runner {
    fn webhook_ports(&self) -> WebhookPorts<'_> {
        WebhookPorts {
            sources: &self.sources,
            upsert: self.upsert.as_ref(),
            sync: self.sync.as_ref(),
            dlq: self.webhook_dlq.as_ref(),
            recent: Some(&self.recent),
            metrics: &self.metrics,
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
            metrics: &self.metrics,
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
        let ledger = self.ledger.as_deref();
        // On its last receive a retryable failure comes back permanent: the DLQ keeps why.
        let handled =
            handle_sync_message_recorded(&m.body, m.receive_count, &ports, &self.settings, ledger)
                .await;
        match handled {
            Ok(()) => {
                let _ = self.sync.delete(&m.receipt).await;
            }
            Err(StepError::Retryable(reason)) => {
                warn!(message_id = %m.message_id, receives = m.receive_count, %reason, "sync message will be retried");
                let _ = self.sync.release(&m.receipt, backoff(m)).await;
            }
            Err(StepError::Permanent(reason)) => {
                warn!(message_id = %m.message_id, %reason, "sync message dead-lettered");
                dead_letter(self.sync.as_ref(), self.sync_dlq.as_ref(), m, reason).await;
            }
        }
    }

    /// Handles one upsert batch, if one comes within `wait`; returns how many messages it had.
    pub async fn upsert_step(&self, wait: Duration) -> usize {
        let batch = self.receive_upsert(self.upsert.as_ref(), wait).await;
        self.upsert_batch(self.upsert.as_ref(), &batch).await;
        batch.len()
    }

    /// Receives one batch of `queue` (upsert or retry). Dropping the future while it waits
    /// loses nothing.
    async fn receive_upsert(&self, queue: &dyn Queue, wait: Duration) -> Vec<Received> {
        match queue.receive(self.batch_size, wait).await {
            Ok(b) => b,
            Err(e) => {
                warn!(queue = queue.name(), error = %e, "queue unavailable");
                tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                Vec::new()
            }
        }
    }

    /// Applies a batch received from `queue`, deletes what succeeded and releases the rest for
    /// a retry.
    async fn upsert_batch(&self, queue: &dyn Queue, batch: &[Received]) {
        if batch.is_empty() {
            return;
        }
        let ports = UpsertPorts {
            sources: &self.sources,
            writer: self.writer.as_ref(),
            retry: self.retry.as_ref(),
            dlq: self.upsert_dlq.as_ref(),
            refetch: Some(self.sync.as_ref()),
            deadline: None,
            metrics: &self.metrics,
            versions: Some(self.versions.as_ref()),
        };
        let report = upsert_received(batch, &ports, &self.policy, queue).await;
        record_writes(self.ledger.as_deref(), &report.by_job).await;
    }

    /// Whether the sync worker should wait for the upsert queue to shrink.
    fn backlogged(&self) -> bool {
        self.backlog.as_ref().is_some_and(|q| q.len() > MAX_BACKLOG)
    }
}

/// A running `crm-sync serve`.
pub struct Serve {
    runner: Arc<Runner>,
    /// The state file, when serve works its own queues rather than a stack's.
    state: Option<Arc<LocalState>>,
    server: WebhookServer,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    _lock: Option<File>,
}

/// The queues and ledger serve works: the state file's, or a deployed stack's.
struct Wiring {
    state: Option<Arc<LocalState>>,
    lock: Option<File>,
    sync: Arc<dyn Queue>,
    upsert: Arc<dyn Queue>,
    retry: Arc<dyn Queue>,
    sync_dlq: Arc<dyn Queue>,
    upsert_dlq: Arc<dyn Queue>,
    webhook_dlq: Arc<dyn Queue>,
    ledger: Option<Arc<dyn JobLedger>>,
    backlog: Option<Arc<DurableQueue>>,
    versions: Arc<dyn Versions>,
    /// Receives of a sync and of an upsert message before its queue redrives it.
    sync_max_receives: u32,
    upsert_max_receives: u32,
}

/// The template's MaxReceiveCount default: what a stack redrives after unless told otherwise.
const STACK_MAX_RECEIVES: u32 = 10;

impl Wiring {
    fn local(opts: &ServeOptions) -> anyhow::Result<Wiring> {
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
        Ok(Wiring {
            sync: state.sync.clone(),
            upsert: state.upsert.clone(),
            // The durable queue takes per-message delays: parked contacts wait on it.
            retry: state.upsert.clone(),
            sync_dlq: state.sync_dlq.clone(),
            upsert_dlq: state.upsert_dlq.clone(),
            webhook_dlq: state.upsert_dlq.clone(),
            ledger: Some(Arc::new(state.ledger())),
            backlog: Some(state.upsert.clone()),
            // One runner per state file: this process sees every write.
            versions: Arc::new(MemoryVersions::default()),
            sync_max_receives: state.sync.max_receives(),
            upsert_max_receives: state.upsert.max_receives(),
            state: Some(state),
            lock: Some(lock),
        })
    }

    /// A stack's queues, worked as its event source mappings would: received, deleted when
    /// handled, released for a retry, dead-lettered with the reason. SQS keeps what is in
    /// flight: a crash here loses nothing (it comes back after the visibility timeout).
    async fn stack(target: &StackTarget, max_receives: Option<u32>) -> Wiring {
        let max_receives = max_receives.unwrap_or(STACK_MAX_RECEIVES);
        let o = &target.outputs;
        let client = sqs::SqsQueue::client(target.endpoint.as_deref()).await;
        let queue =
            |url: &str| -> Arc<dyn Queue> { Arc::new(sqs::SqsQueue::new(client.clone(), url)) };
        let (ledger, versions) = match &o.jobs_table {
            Some(table) => {
                let dynamodb =
                    ledger_dynamodb::DynamoLedger::client(target.endpoint.as_deref()).await;
                (
                    Some(Arc::new(ledger_dynamodb::DynamoLedger::new(
                        dynamodb.clone(),
                        table.clone(),
                    )) as Arc<dyn JobLedger>),
                    Arc::new(ledger_dynamodb::DynamoVersions::new(
                        dynamodb,
                        table.clone(),
                    )) as Arc<dyn Versions>,
                )
            }
            None => (
                None,
                Arc::new(MemoryVersions::default()) as Arc<dyn Versions>,
            ),
        };
        Wiring {
            state: None,
            lock: None,
            sync: queue(&o.sync),
            upsert: queue(&o.upsert),
            retry: queue(&o.retry),
            sync_dlq: queue(&o.sync_dlq),
            upsert_dlq: queue(&o.upsert_dlq),
            webhook_dlq: queue(&o.webhook_dlq),
            ledger,
            backlog: None,
            versions,
            sync_max_receives: max_receives,
            upsert_max_receives: max_receives,
        }
    }
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
        let w = match &opts.stack {
            Some(target) => Wiring::stack(target, opts.max_receives).await,
            None => Wiring::local(opts)?,
        };
        let runner = Arc::new(Runner {
            sources: Arc::new(sources),
            crms,
            writer: Arc::new(writer),
            sync: w.sync,
            upsert: w.upsert.clone(),
            sync_dlq: w.sync_dlq,
            upsert_dlq: w.upsert_dlq,
            retry: w.retry.clone(),
            webhook_dlq: w.webhook_dlq,
            settings: SyncSettings {
                page_size: opts.page_size,
                max_receives: Some(w.sync_max_receives),
                ..SyncSettings::default()
            },
            policy: UpsertPolicy {
                parent_delay: opts.parent_retry_delay,
                max_receives: Some(w.upsert_max_receives),
                ..UpsertPolicy::default()
            },
            batch_size: opts.batch_size,
            recent: RecentEvents::default(),
            metrics: Arc::default(),
            ledger: w.ledger,
            backlog: w.backlog,
            versions: w.versions,
        });
        let state = w.state;
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
        // The upsert queue's workers, and over SQS the retry queue's too (the durable queue
        // is its own retry queue).
        let mut consumed = vec![w.upsert.clone()];
        if opts.stack.is_some() {
            consumed.push(w.retry.clone());
        }
        for queue in consumed {
            for _ in 0..opts.upsert_workers {
                let runner = runner.clone();
                let queue = queue.clone();
                let mut stopped = stopped.clone();
                workers.push(tokio::spawn(async move {
                    while !*stopped.borrow() {
                        let batch = tokio::select! {
                            biased;
                            _ = stopped.changed() => break,
                            b = runner.receive_upsert(queue.as_ref(), POLL_WAIT) => b,
                        };
                        runner.upsert_batch(queue.as_ref(), &batch).await;
                    }
                }));
            }
        }
        if let Some(state) = &state {
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
            queues = %match &opts.stack {
                Some(t) => format!("stack (sync {})", t.outputs.sync),
                None => format!("state file {}", opts.state.display()),
            },
            sources = ?runner.sources.ids().map(|s| s.to_string()).collect::<Vec<_>>(),
            "crm-sync serve started"
        );
        Ok(Serve {
            runner,
            state,
            server,
            stop,
            workers,
            _lock: w.lock,
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

    /// The state file, unless serve works a stack's queues.
    pub fn state(&self) -> Option<&Arc<LocalState>> {
        self.state.as_ref()
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
