//! The dataverse-upsert function's handler: an SQS batch in, `apply_changes` over the ports, the
//! failed message ids out. Kept in a library so tests drive it exactly as Lambda does.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use dataverse::DataverseWriter;
use pipeline::Queue;
use pipeline::sources::Sources;
use pipeline::upsert::{InMessage, UpsertPolicy, UpsertPorts, apply_changes};

/// Stop writing this long before the invocation's deadline, so the response (and the retry
/// queue and DLQ writes) always get out.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

pub struct App {
    pub sources: Sources,
    pub writer: Box<dyn DataverseWriter>,
    pub retry: Box<dyn Queue>,
    pub dlq: Box<dyn Queue>,
    /// The sync queue: a sync page's message that comes back after a failure is re-read from
    /// the CRM instead of written (see `UpsertPorts::refetch`).
    pub refetch: Option<Box<dyn Queue>>,
    pub policy: UpsertPolicy,
}

pub async fn handle(app: &App, event: SqsEvent, deadline_ms: u64) -> SqsBatchResponse {
    let mut failed = Vec::new();
    let mut msgs = Vec::with_capacity(event.records.len());
    for r in event.records {
        match (r.message_id, r.body) {
            (Some(id), Some(body)) => msgs.push(InMessage {
                id,
                body,
                receive_count: r
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
            }),
            // A record without a body cannot be applied; failing it lets SQS redrive it to the
            // DLQ after maxReceiveCount, where an operator sees it.
            (Some(id), None) => failed.push(id),
            (None, _) => tracing::warn!("SQS record without a message id ignored"),
        }
    }
    let ports = UpsertPorts {
        sources: &app.sources,
        writer: app.writer.as_ref(),
        retry: app.retry.as_ref(),
        dlq: app.dlq.as_ref(),
        refetch: app.refetch.as_deref(),
        deadline: lambda_common::stop_at(deadline_ms, DEADLINE_MARGIN),
    };
    let report = apply_changes(&msgs, &ports, &app.policy).await;
    failed.extend(report.failed);
    lambda_common::batch_response(failed)
}
