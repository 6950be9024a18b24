//! Lambda entry point: build the queue clients once, then serve every request with [`handle`].
//!
//! Environment: `CRM_SYNC_CONFIG` or `CRM_SYNC_CONFIG_FILE` (sources with their
//! `[sources.webhook]` settings; secrets as `env:NAME`); `UPSERT_QUEUE_URL`, `SYNC_QUEUE_URL`,
//! `WEBHOOK_DLQ_URL`, optionally `SQS_ENDPOINT`.

use lambda_common::{env, env_opt};
use lambda_http::{Error, Request, service_fn};
use sqs::SqsQueue;
use webhook_fn::{App, handle};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_common::init_tracing();
    let config = lambda_common::config_from_env()?;
    let sources = config.sources().map_err(|e| anyhow::anyhow!("{e}"))?;
    let sqs = SqsQueue::client(env_opt("SQS_ENDPOINT").as_deref()).await;
    let app = App {
        sources,
        upsert: Box::new(SqsQueue::new(sqs.clone(), env("UPSERT_QUEUE_URL")?)),
        sync: Box::new(SqsQueue::new(sqs.clone(), env("SYNC_QUEUE_URL")?)),
        dlq: Box::new(SqsQueue::new(sqs, env("WEBHOOK_DLQ_URL")?)),
        recent: Default::default(),
    };
    let app = &app;
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(handle(app, req).await)
    }))
    .await
}
