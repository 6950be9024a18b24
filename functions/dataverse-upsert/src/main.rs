//! Lambda entry point: build the clients once, then hand every SQS batch to [`handle`].
//!
//! Environment: `CRM_SYNC_CONFIG` or `CRM_SYNC_CONFIG_FILE`; `DATAVERSE_URL`,
//! `DATAVERSE_TENANT`, `DATAVERSE_CLIENT_ID`, `DATAVERSE_CLIENT_SECRET`, optionally
//! `DATAVERSE_TOKEN_URL`; `RETRY_QUEUE_URL`, `DLQ_URL`, optionally `SQS_ENDPOINT`.

use aws_lambda_events::event::sqs::SqsEvent;
use dataverse::{Secret, WebApiClient, WebApiConfig};
use dataverse_upsert::{App, handle};
use lambda_common::{env, env_opt};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use pipeline::upsert::UpsertPolicy;
use sqs::SqsQueue;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_common::init_tracing();
    let config = lambda_common::config_from_env()?;
    let sources = config.sources().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut dv = WebApiConfig::for_org(
        &env("DATAVERSE_URL")?,
        &env("DATAVERSE_TENANT")?,
        &env("DATAVERSE_CLIENT_ID")?,
        Secret::new(env("DATAVERSE_CLIENT_SECRET")?),
    );
    if let Some(url) = env_opt("DATAVERSE_TOKEN_URL") {
        dv.token_url = url;
    }
    let sqs = SqsQueue::client(env_opt("SQS_ENDPOINT").as_deref()).await;
    let app = App {
        sources,
        writer: Box::new(WebApiClient::new(dv)?),
        retry: Box::new(SqsQueue::new(sqs.clone(), env("RETRY_QUEUE_URL")?)),
        dlq: Box::new(SqsQueue::new(sqs, env("DLQ_URL")?)),
        policy: UpsertPolicy::default(),
    };
    let app = &app;
    lambda_runtime::run(service_fn(move |e: LambdaEvent<SqsEvent>| async move {
        let deadline = e.context.deadline;
        Ok::<_, Error>(handle(app, e.payload, deadline).await)
    }))
    .await
}
