//! Lambda entry point: build the queue clients on the first request, then serve every request
//! with [`handle`].
//!
//! Environment: `CRM_SYNC_CONFIG` or `CRM_SYNC_CONFIG_FILE` (sources with their
//! `[sources.webhook]` settings; secrets as `aws-secret:` references or `env:NAME`);
//! `UPSERT_QUEUE_URL`, `SYNC_QUEUE_URL`, `WEBHOOK_DLQ_URL`, optionally `SQS_ENDPOINT`. Built
//! during the first request, not at init, because the secrets extension answers only then; until
//! it succeeds, requests get a 503 so the CRM retries them.

use lambda_common::{env, env_opt};
use lambda_http::{Body, Error, Request, Response, service_fn};
use sqs::SqsQueue;
use tokio::sync::OnceCell;
use webhook_fn::{App, handle};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn build() -> anyhow::Result<App> {
    let config = lambda_common::config_from_env(Some("webhook")).await?;
    let sources = config.sources().map_err(|e| anyhow::anyhow!("{e}"))?;
    let sqs = SqsQueue::client(env_opt("SQS_ENDPOINT").as_deref()).await;
    Ok(App {
        sources,
        upsert: Box::new(SqsQueue::new(sqs.clone(), env("UPSERT_QUEUE_URL")?)),
        sync: Box::new(SqsQueue::new(sqs.clone(), env("SYNC_QUEUE_URL")?)),
        dlq: Box::new(SqsQueue::new(sqs, env("WEBHOOK_DLQ_URL")?)),
        recent: Default::default(),
        metrics: Default::default(),
    })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_common::init_tracing();
    let app: OnceCell<App> = OnceCell::new();
    let app = &app;
    lambda_http::run(service_fn(move |req: Request| async move {
        match app.get_or_try_init(build).await {
            Ok(app) => Ok::<_, Error>(handle(app, req).await),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the webhook function could not start");
                Ok(Response::builder()
                    .status(503)
                    .header("content-type", "application/json")
                    .body(Body::Text(
                        r#"{"error":"the webhook endpoint is not ready; retry later"}"#.into(),
                    ))
                    .unwrap_or_default())
            }
        }
    }))
    .await
}
