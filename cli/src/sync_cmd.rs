//! `crm-sync sync start` and `crm-sync sync status`: start an initial sync on the local runner's
//! state file (the running `crm-sync serve` picks it up) or on a deployed stack's sync queue (the
//! initial-sync function picks it up), and show how far a local job is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use mapping::{Entity, SourceId};
use pipeline::Metrics;
use pipeline::config::Config;
use pipeline::ledger::JobLedger;
use pipeline::sync::{Crms, SyncPorts, job_entities, start_sync};

use ledger_dynamodb::DynamoLedger;
use pipeline::ledger::JobRecord;

use crate::jobs::{JobStatus, LocalState};
use crate::progress::Progress;

#[derive(Debug, Clone)]
pub struct StartArgs {
    pub config: PathBuf,
    pub source: String,
    /// Empty: every entity (accounts before contacts).
    pub entities: Vec<Entity>,
    pub state: PathBuf,
    /// A deployed stack's sync queue (the `SyncQueueUrl` output) instead of the state file,
    /// with an optional SQS endpoint (another region's, or a local SQS).
    pub sqs: Option<SqsTarget>,
}

#[derive(Debug, Clone)]
pub struct SqsTarget {
    pub queue_url: String,
    pub endpoint: Option<String>,
    /// The stack's run ledger, to record the job in (as the function's own start does).
    pub jobs: Option<JobsTable>,
}

/// Enqueues the first page job of an initial sync of `source`; returns the job id.
pub async fn start(args: &StartArgs) -> anyhow::Result<String> {
    let config = Config::load(&args.config)?;
    let shown = args.config.display().to_string();
    let sources = config
        .mappers()
        .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let Some((i, entry)) = config
        .sources
        .iter()
        .enumerate()
        .find(|(_, s)| s.id.as_str() == args.source)
    else {
        let known: Vec<&str> = config.sources.iter().map(|s| s.id.as_str()).collect();
        bail!(
            "{shown}: no source `{}` is configured (sources: {})",
            args.source,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    if entry.connection.is_none() {
        bail!(
            "{shown}: config `sources[{i}].connection`: is required to sync source `{}`: how crm-sync reads the CRM's API",
            args.source
        );
    }
    let source = SourceId::new(&args.source)?;
    if let Some(target) = &args.sqs {
        // What the initial-sync function does on a direct invoke: the first page job, on the
        // stack's sync queue, with the AWS credentials of the environment.
        let client = sqs::SqsQueue::client(target.endpoint.as_deref()).await;
        let queue = sqs::SqsQueue::new(client, target.queue_url.clone());
        let crms = Crms::new();
        let ports = SyncPorts {
            sources: &sources,
            crms: &crms,
            upsert: &queue,
            sync: &queue,
            metrics: &Metrics::new(),
        };
        let job_id = start_sync(&source, &args.entities, &ports)
            .await
            .map_err(|e| anyhow::anyhow!("starting the sync on {}: {e}", target.queue_url))?;
        if let Some(jobs) = &target.jobs {
            jobs.ledger()
                .await
                .started(&job_id, &source, &job_entities(&args.entities))
                .await
                .with_context(|| format!("the job {job_id} runs, but recording it failed"))?;
        }
        return Ok(job_id);
    }
    let state = LocalState::open(&args.state)?;
    let crms = Crms::new();
    let ports = SyncPorts {
        sources: &sources,
        crms: &crms,
        upsert: state.upsert.as_ref(),
        sync: state.sync.as_ref(),
        metrics: &Metrics::new(),
    };
    let job_id = start_sync(&source, &args.entities, &ports)
        .await
        .map_err(|e| anyhow::anyhow!("starting the sync: {e}"))?;
    let mut entities: Vec<Entity> = if args.entities.is_empty() {
        Entity::ALL.to_vec()
    } else {
        args.entities.clone()
    };
    entities.sort();
    entities.dedup();
    let names: Vec<String> = entities.iter().map(|e| e.to_string()).collect();
    state
        .ledger()
        .started(&job_id, &args.source, &names)
        .context("recording the job")?;
    Ok(job_id)
}

/// Opens an existing state file (never creates one: a wrong path is an error).
pub fn open_existing(path: &Path) -> anyhow::Result<LocalState> {
    if !path.exists() {
        bail!(
            "no state file at {} (`crm-sync serve --state` and `sync start --state` create it)",
            path.display()
        );
    }
    LocalState::open(path)
}

/// The status of `job` (or of every job, newest first).
pub fn status(state: &LocalState, job: Option<&str>) -> anyhow::Result<Vec<JobStatus>> {
    let ledger = state.ledger();
    match job {
        Some(id) => match ledger.status(id)? {
            Some(s) => Ok(vec![s]),
            None => bail!("no job {id} in {}", state.store.path().display()),
        },
        None => ledger.all(),
    }
}

/// What `status --wait` needs of a job, local or in the cloud.
pub trait Tracked {
    fn state(&self) -> &'static str;
    fn progress(&self) -> Option<(&'static str, u64, u64)>;
}

impl Tracked for JobStatus {
    fn state(&self) -> &'static str {
        JobStatus::state(self)
    }
    fn progress(&self) -> Option<(&'static str, u64, u64)> {
        self.record.progress()
    }
}

impl Tracked for JobRecord {
    fn state(&self) -> &'static str {
        JobRecord::state(self)
    }
    fn progress(&self) -> Option<(&'static str, u64, u64)> {
        JobRecord::progress(self)
    }
}

/// Polls `fetch` until every job is finished or failed, or `limit` passes. With `bar`, the
/// progress of a single job is drawn on stderr (a terminal only) with its rate and time left.
pub async fn wait_with<J: Tracked, F, Fut>(
    mut fetch: F,
    limit: Duration,
    bar: bool,
) -> anyhow::Result<Vec<J>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<J>>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut progress = Progress::new("", 1, bar);
    loop {
        let jobs = fetch().await?;
        if let [job] = jobs.as_slice()
            && let Some((label, done, total)) = job.progress()
        {
            progress.set_total(label, total);
            progress.set(done);
        }
        let settled = jobs
            .iter()
            .all(|j| matches!(j.state(), "finished" | "failed"));
        if settled || tokio::time::Instant::now() >= deadline {
            progress.finish();
            return Ok(jobs);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Polls until every job shown is finished or failed, or `limit` passes.
pub async fn wait(
    state: &LocalState,
    job: Option<&str>,
    limit: Duration,
) -> anyhow::Result<Vec<JobStatus>> {
    wait_with(|| async { status(state, job) }, limit, false).await
}

/// A deployed stack's run ledger: its DynamoDB table (the `JobsTableName` output).
#[derive(Debug, Clone)]
pub struct JobsTable {
    pub table: String,
    pub endpoint: Option<String>,
}

impl JobsTable {
    pub async fn ledger(&self) -> DynamoLedger {
        DynamoLedger::new(
            DynamoLedger::client(self.endpoint.as_deref()).await,
            self.table.clone(),
        )
    }
}

/// The status of `job` (or of every job, newest first) in a deployed stack's ledger.
pub async fn cloud_status(
    ledger: &DynamoLedger,
    job: Option<&str>,
) -> anyhow::Result<Vec<JobRecord>> {
    match job {
        Some(id) => match ledger.get(id).await? {
            Some(r) => Ok(vec![r]),
            None => bail!("no job {id} in table {}", ledger.table()),
        },
        None => Ok(ledger.list().await?),
    }
}
