//! Lambda entry point: build the clients on the first invocation, then hand every SQS batch to
//! [`handle`].
//!
//! Environment: `CRM_SYNC_CONFIG` or `CRM_SYNC_CONFIG_FILE`; `DATAVERSE_URL`,
//! `DATAVERSE_TENANT`, `DATAVERSE_CLIENT_ID`, `DATAVERSE_CLIENT_SECRET` (the secret or an
//! `aws-secret:` reference), optionally `DATAVERSE_TOKEN_URL`; `RETRY_QUEUE_URL`, `DLQ_URL`,
//! optionally `SYNC_QUEUE_URL` (redelivered sync pages are re-read through it), `JOBS_TABLE` (the
//! run ledger, `DYNAMODB_ENDPOINT` to point it elsewhere),
//! `UPSERT_QUEUE_URL` (throttled messages come back after Dataverse's Retry-After),
//! `MAX_RECEIVE_COUNT` (the queues' maxReceiveCount: a change failing on its message's last
//! receive is dead-lettered with the reason) and `SQS_ENDPOINT`. Built during the first
//! invocation, not at init, because the secrets
//! extension answers only then; a failure there fails that invocation (its messages come back).

use aws_lambda_events::event::sqs::SqsEvent;
use dataverse::{Secret, WebApiClient, WebApiConfig};
use dataverse_upsert::{App, handle};
use lambda_common::{env, env_opt};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use pipeline::upsert::UpsertPolicy;
use sqs::SqsQueue;
use tokio::sync::OnceCell;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn build() -> anyhow::Result<App> {
    let config = lambda_common::config_from_env(None).await?;
    let sources = config.mappers().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut dv = WebApiConfig::for_org(
        &env("DATAVERSE_URL")?,
        &env("DATAVERSE_TENANT")?,
        &env("DATAVERSE_CLIENT_ID")?,
        Secret::new(lambda_common::secret_env("DATAVERSE_CLIENT_SECRET").await?),
    );
    if let Some(url) = env_opt("DATAVERSE_TOKEN_URL") {
        dv.token_url = url;
    }
    let sqs = SqsQueue::client(env_opt("SQS_ENDPOINT").as_deref()).await;
    Ok(App {
        sources,
        writer: Box::new(WebApiClient::new(dv)?),
        retry: Box::new(SqsQueue::new(sqs.clone(), env("RETRY_QUEUE_URL")?)),
        origins: [env_opt("UPSERT_QUEUE_URL"), Some(env("RETRY_QUEUE_URL")?)]
            .into_iter()
            .flatten()
            .map(|url| Box::new(SqsQueue::new(sqs.clone(), url)) as Box<dyn pipeline::Queue>)
            .collect(),
        refetch: env_opt("SYNC_QUEUE_URL")
            .map(|url| Box::new(SqsQueue::new(sqs.clone(), url)) as Box<dyn pipeline::Queue>),
        dlq: Box::new(SqsQueue::new(sqs, env("DLQ_URL")?)),
        policy: UpsertPolicy {
            max_receives: lambda_common::max_receives_env()?,
            ..UpsertPolicy::default()
        },
        metrics: Default::default(),
        ledger: ledger_dynamodb::DynamoLedger::from_env()
            .await
            .map(|l| Box::new(l) as Box<dyn pipeline::ledger::JobLedger>),
        versions: ledger_dynamodb::DynamoVersions::from_env()
            .await
            .map(|v| Box::new(v) as Box<dyn pipeline::versions::Versions>),
    })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_common::init_tracing();
    let app: OnceCell<App> = OnceCell::new();
    let app = &app;
    lambda_runtime::run(service_fn(move |e: LambdaEvent<SqsEvent>| async move {
        let app = app.get_or_try_init(build).await?;
        let deadline = e.context.deadline;
        Ok::<_, Error>(handle(app, e.payload, deadline).await)
    }))
    .await
}
