//! The webhook step: turn one CRM notification request into queue messages.
//!
//! Changes that carry the record go to the upsert queue, one message per record grouped by that
//! record; id-only notifications become fetch jobs on the sync queue; records that cannot be
//! mapped are reported to the DLQ with the reason. The caller answers success only when this
//! returns `Ok`, i.e. after the queues accepted every message; on a queue error the CRM gets a
//! 503 and retries, and the duplicates that may cause are harmless downstream.

use mapping::payload::decode;
use mapping::{Notice, Outcome};
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;
use tracing::{info, warn};

use crate::message::{self, FetchJob, Message};
use crate::queue::{ERROR_ATTRIBUTE, OutMessage, Queue};
use crate::sources::Sources;
use crate::sync::{StepError, digest, send_changes};

pub struct WebhookPorts<'a> {
    pub sources: &'a Sources,
    pub upsert: &'a dyn Queue,
    pub sync: &'a dyn Queue,
    pub dlq: &'a dyn Queue,
}

/// What a request was turned into.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub correlation_id: String,
    pub changes: usize,
    pub fetches: usize,
    pub skipped: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WebhookError {
    #[error("no source named `{0}` is configured")]
    UnknownSource(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("queue unavailable, retry later: {0}")]
    Unavailable(String),
}

impl WebhookError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::UnknownSource(_) => 404,
            WebhookError::BadRequest(_) => 400,
            WebhookError::Unavailable(_) => 503,
        }
    }
}

impl From<StepError> for WebhookError {
    fn from(e: StepError) -> Self {
        WebhookError::Unavailable(e.to_string())
    }
}

/// Handles a verified notification body for `source`.
pub async fn handle_webhook(
    source: &str,
    body: &[u8],
    correlation_id: &str,
    ports: &WebhookPorts<'_>,
) -> Result<Accepted, WebhookError> {
    let mapper = ports
        .sources
        .by_name(source)
        .ok_or_else(|| WebhookError::UnknownSource(source.chars().take(64).collect()))?;
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| WebhookError::BadRequest(format!("body is not JSON: {e}")))?;
    let items =
        decode(mapper, &payload, None).map_err(|e| WebhookError::BadRequest(e.to_string()))?;

    let mut accepted = Accepted {
        correlation_id: correlation_id.to_string(),
        ..Accepted::default()
    };
    let mut changes = Vec::new();
    let mut fetches = Vec::new();
    let mut failures = Vec::new();
    for item in items {
        match item.outcome {
            Outcome::Notice {
                notice: Notice::Change(c),
                ..
            } => changes.push(c),
            Outcome::Notice {
                notice: Notice::Fetch(h),
                ..
            } => fetches.push(FetchJob {
                source: h.source,
                entity: h.entity,
                ids: h.ids,
                reason: h.reason,
            }),
            Outcome::Skipped(reason) => {
                accepted.skipped += 1;
                info!(correlation_id, at = %item.at, %reason, "notification item skipped");
            }
            Outcome::Failed(e) => {
                failures.push(serde_json::json!({"at": item.at, "error": e.to_string()}))
            }
        }
    }

    for c in &changes {
        send_changes(
            ports.upsert,
            correlation_id,
            std::slice::from_ref(c),
            &c.key().to_string(),
        )
        .await?;
    }
    if !fetches.is_empty() {
        let msgs = fetches
            .iter()
            .map(|f| {
                let body = message::encode(correlation_id, Message::Fetch(f.clone()));
                OutMessage {
                    dedup_id: Some(digest(&body)),
                    group_id: Some(digest(&format!("{}:{}", f.source, f.entity))),
                    body,
                    ..OutMessage::default()
                }
            })
            .collect();
        ports.sync.send(msgs).await.map_err(StepError::from)?;
    }
    if !failures.is_empty() {
        warn!(
            correlation_id,
            failed = failures.len(),
            "notification items could not be mapped"
        );
        let report = serde_json::json!({
            "source": source,
            "correlation_id": correlation_id,
            "failures": failures,
        });
        let mut m = OutMessage::new(report.to_string());
        m.attributes.insert(
            ERROR_ATTRIBUTE.into(),
            format!(
                "{} notification item(s) could not be mapped",
                failures.len()
            ),
        );
        ports.dlq.send(vec![m]).await.map_err(StepError::from)?;
    }
    accepted.changes = changes.len();
    accepted.fetches = fetches.len();
    accepted.failed = failures.len();
    info!(
        correlation_id,
        source,
        changes = accepted.changes,
        fetches = accepted.fetches,
        failed = accepted.failed,
        "webhook accepted"
    );
    Ok(accepted)
}
