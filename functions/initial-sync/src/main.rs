//! Lambda entry point: build the clients on the first invocation, then hand every invocation to
//! [`handle`].
//!
//! Environment: `CRM_SYNC_CONFIG` or `CRM_SYNC_CONFIG_FILE` (CRM credentials in each source's
//! `[sources.connection]`, secrets as `aws-secret:` references); `SYNC_QUEUE_URL`,
//! `UPSERT_QUEUE_URL`, `SYNC_DLQ_URL`, optionally `SQS_ENDPOINT`, `PAGE_SIZE`, `JOBS_TABLE`
//! (the run ledger; `DYNAMODB_ENDPOINT` to point it elsewhere) and `MAX_RECEIVE_COUNT` (the sync
//! queue's maxReceiveCount: a page failing on its last receive is dead-lettered with the reason).
//! Built during the first invocation, not at init, because the secrets extension answers only
//! then.

use initial_sync::{App, handle};
use lambda_common::{env, env_opt};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use pipeline::sync::SyncSettings;
use serde_json::Value;
use sqs::SqsQueue;
use tokio::sync::OnceCell;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn build() -> anyhow::Result<App> {
    let config = lambda_common::config_from_env(Some("connection")).await?;
    let sources = config.mappers().map_err(|e| anyhow::anyhow!("{e}"))?;
    let crms = config
        .crm_readers(&sources)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sqs = SqsQueue::client(env_opt("SQS_ENDPOINT").as_deref()).await;
    let mut settings = SyncSettings::default();
    if let Some(n) = env_opt("PAGE_SIZE") {
        settings.page_size = n
            .parse()
            .map_err(|_| anyhow::anyhow!("PAGE_SIZE must be a number"))?;
    }
    settings.max_receives = lambda_common::max_receives_env()?;
    Ok(App {
        sources,
        crms,
        upsert: Box::new(SqsQueue::new(sqs.clone(), env("UPSERT_QUEUE_URL")?)),
        sync: Box::new(SqsQueue::new(sqs.clone(), env("SYNC_QUEUE_URL")?)),
        dlq: Box::new(SqsQueue::new(sqs, env("SYNC_DLQ_URL")?)),
        settings,
        metrics: Default::default(),
        ledger: ledger_dynamodb::DynamoLedger::from_env()
            .await
            .map(|l| Box::new(l) as Box<dyn pipeline::ledger::JobLedger>),
    })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_common::init_tracing();
    let app: OnceCell<App> = OnceCell::new();
    let app = &app;
    lambda_runtime::run(service_fn(move |e: LambdaEvent<Value>| async move {
        let app = app.get_or_try_init(build).await?;
        handle(app, e.payload).await.map_err(Error::from)
    }))
    .await
}
