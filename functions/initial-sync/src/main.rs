//! Lambda entry point: build the clients once, then hand every invocation to [`handle`].
//!
//! Environment: `CRM_SYNC_CONFIG` or `CRM_SYNC_CONFIG_FILE`; `SYNC_QUEUE_URL`,
//! `UPSERT_QUEUE_URL`, `SYNC_DLQ_URL`, optionally `SQS_ENDPOINT` and `PAGE_SIZE`. CRM clients
//! are built from each source's `[sources.connection]` (Salesforce so far).

use initial_sync::{App, handle};
use lambda_common::{env, env_opt};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use pipeline::sync::SyncSettings;
use serde_json::Value;
use sqs::SqsQueue;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_common::init_tracing();
    let config = lambda_common::config_from_env()?;
    let sources = config.sources().map_err(|e| anyhow::anyhow!("{e}"))?;
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
    let app = App {
        sources,
        crms,
        upsert: Box::new(SqsQueue::new(sqs.clone(), env("UPSERT_QUEUE_URL")?)),
        sync: Box::new(SqsQueue::new(sqs.clone(), env("SYNC_QUEUE_URL")?)),
        dlq: Box::new(SqsQueue::new(sqs, env("SYNC_DLQ_URL")?)),
        settings,
    };
    let app = &app;
    lambda_runtime::run(service_fn(move |e: LambdaEvent<Value>| async move {
        handle(app, e.payload).await.map_err(Error::from)
    }))
    .await
}
