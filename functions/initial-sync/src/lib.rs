//! The initial-sync function's handler. One function, three kinds of invocation:
//! - an SQS event from the sync queue: each message is one page job or fetch job;
//! - a direct `aws lambda invoke` with `{"source": "...", "entities": ["account", "contact"]}`;
//! - the HTTP trigger (`POST /sync`, IAM-authorised, API Gateway payload 2.0) with that body.
//!
//! Starting a sync only enqueues its first page job and answers with the job id.

use aws_lambda_events::event::sqs::SqsEvent;
use base64::Engine;
use mapping::{Entity, SourceId};
use pipeline::Metrics;
use pipeline::ledger::{JobLedger, handle_sync_message_recorded};
use pipeline::queue::{ERROR_ATTRIBUTE, OutMessage, Queue};
use pipeline::sources::Sources;
use pipeline::sync::{Crms, StepError, SyncPorts, SyncSettings, job_entities, start_sync};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub struct App {
    pub sources: Sources,
    pub crms: Crms,
    pub upsert: Box<dyn Queue>,
    pub sync: Box<dyn Queue>,
    pub dlq: Box<dyn Queue>,
    pub settings: SyncSettings,
    /// What this invocation did; written out as EMF when it ends.
    pub metrics: Metrics,
    /// Where each job's start and pages are recorded (`JOBS_TABLE`), for `sync status`.
    pub ledger: Option<Box<dyn JobLedger>>,
}

impl App {
    fn ports(&self) -> SyncPorts<'_> {
        SyncPorts {
            sources: &self.sources,
            crms: &self.crms,
            upsert: self.upsert.as_ref(),
            sync: self.sync.as_ref(),
            metrics: &self.metrics,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    pub source: String,
    #[serde(default)]
    pub entities: Vec<Entity>,
}

#[derive(Debug, Serialize)]
pub struct Started {
    pub job_id: String,
    pub source: String,
}

/// Why a start request was refused, with the HTTP status it maps to.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

/// Handles any invocation; the result is what Lambda returns.
pub async fn handle(app: &App, payload: Value) -> Result<Value, String> {
    if payload.get("Records").is_some() {
        let event: SqsEvent =
            serde_json::from_value(payload).map_err(|e| format!("not an SQS event: {e}"))?;
        let r = handle_sqs(app, event).await;
        lambda_common::flush_metrics(&app.metrics);
        return serde_json::to_value(r).map_err(|e| e.to_string());
    }
    if payload.get("requestContext").is_some() {
        return Ok(handle_http(app, &payload).await);
    }
    let req: StartRequest = serde_json::from_value(payload)
        .map_err(|e| format!("expected {{\"source\": ..., \"entities\": [...]}}: {e}"))?;
    start(app, req)
        .await
        .map(|s| json!(s))
        .map_err(|r| r.message)
}

/// Runs sync-queue messages. A permanent failure goes to the DLQ with its reason (the message
/// carries its checkpoint, so the job can be resumed from there); a retryable one comes back.
pub async fn handle_sqs(
    app: &App,
    event: SqsEvent,
) -> aws_lambda_events::event::sqs::SqsBatchResponse {
    let ports = app.ports();
    lambda_common::for_each_message(event, |body, receives| {
        let ports = &ports;
        async move {
            // On the last receive a retryable failure comes back permanent: the DLQ keeps why.
            let reason = match handle_sync_message_recorded(
                &body,
                receives,
                ports,
                &app.settings,
                app.ledger.as_deref(),
            )
            .await
            {
                Ok(()) => return Ok(()),
                Err(StepError::Retryable(e)) => return Err(e),
                Err(StepError::Permanent(reason)) => reason,
            };
            tracing::warn!(%reason, "sync job dead-lettered");
            let mut m = OutMessage::new(body);
            m.attributes.insert(ERROR_ATTRIBUTE.into(), reason);
            app.dlq.send(vec![m]).await.map_err(|e| e.to_string())
        }
    })
    .await
}

pub async fn start(app: &App, req: StartRequest) -> Result<Started, Refused> {
    let source = SourceId::new(req.source.clone())
        .ok()
        .filter(|s| app.sources.get(s).is_some())
        .ok_or_else(|| Refused {
            status: 404,
            message: format!(
                "no source named `{}` is configured",
                req.source.chars().take(64).collect::<String>()
            ),
        })?;
    let job_id = start_sync(&source, &req.entities, &app.ports())
        .await
        .map_err(|e| match e {
            StepError::Retryable(m) => Refused {
                status: 503,
                message: m,
            },
            StepError::Permanent(m) => Refused {
                status: 400,
                message: m,
            },
        })?;
    if let Some(ledger) = &app.ledger
        && let Err(e) = ledger
            .started(&job_id, &source, &job_entities(&req.entities))
            .await
    {
        // The job runs regardless; only its status will be missing.
        tracing::warn!(job_id, error = %e, "could not record the job in the ledger");
    }
    Ok(Started {
        job_id,
        source: source.to_string(),
    })
}

/// API Gateway HTTP API (payload format 2.0) in, its response shape out.
async fn handle_http(app: &App, event: &Value) -> Value {
    let respond = |status: u16, body: Value| {
        json!({
            "statusCode": status,
            "headers": {"content-type": "application/json"},
            "body": body.to_string(),
        })
    };
    let raw = event.get("body").and_then(Value::as_str).unwrap_or("");
    let body = if event.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        match base64::engine::general_purpose::STANDARD.decode(raw) {
            Ok(b) => b,
            Err(_) => return respond(400, json!({"error": "body is not valid base64"})),
        }
    } else {
        raw.as_bytes().to_vec()
    };
    let req: StartRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return respond(
                400,
                json!({"error": format!("expected {{\"source\": ..., \"entities\": [...]}}: {e}")}),
            );
        }
    };
    match start(app, req).await {
        Ok(s) => respond(202, json!(s)),
        Err(r) => respond(r.status, json!({"error": r.message})),
    }
}
