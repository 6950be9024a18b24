//! The dataverse-upsert function's handler: an SQS batch in, `apply_changes` over the ports, the
//! failed message ids out. Kept in a library so tests drive it exactly as Lambda does.

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use dataverse::DataverseWriter;
use pipeline::ledger::{JobLedger, record_writes};
use pipeline::sources::Sources;
use pipeline::upsert::{InMessage, UpsertPolicy, UpsertPorts, apply_changes};
use pipeline::{Metrics, Queue};

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
    /// The queues this function consumes (upsert, retry), by name: a message that failed
    /// because Dataverse throttled comes back after its Retry-After instead of after the queue's
    /// whole visibility timeout (six times the function's).
    pub origins: Vec<Box<dyn Queue>>,
    pub policy: UpsertPolicy,
    /// What this invocation did; written out as EMF when it ends.
    pub metrics: Metrics,
    /// Where sync jobs' write counts are added (`JOBS_TABLE`), for `sync status`.
    pub ledger: Option<Box<dyn JobLedger>>,
    /// The newest version written per record (`JOBS_TABLE` too), shared by every concurrent
    /// invocation; `None`: no check.
    pub versions: Option<Box<dyn pipeline::versions::Versions>>,
}

pub async fn handle(app: &App, event: SqsEvent, deadline_ms: u64) -> SqsBatchResponse {
    let mut failed = Vec::new();
    let mut msgs = Vec::with_capacity(event.records.len());
    let receipts = receipts(&event);
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
                sent_at_ms: r
                    .attributes
                    .get("SentTimestamp")
                    .and_then(|n| n.parse().ok()),
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
        metrics: &app.metrics,
        versions: app.versions.as_deref(),
    };
    let report = apply_changes(&msgs, &ports, &app.policy).await;
    record_writes(app.ledger.as_deref(), &report.by_job).await;
    if let Some(wait) = report.throttled_for {
        for (queue, receipt) in report.failed.iter().filter_map(|id| receipts.get(id)) {
            let Some(q) = app.origins.iter().find(|q| q.name() == queue) else {
                continue;
            };
            if let Err(e) = q.release(receipt, wait).await {
                // The message still comes back, after the queue's visibility timeout.
                tracing::warn!(queue = %queue, error = %e, "could not shorten a throttled message's wait");
            }
        }
    }
    failed.extend(report.failed);
    lambda_common::flush_metrics(&app.metrics);
    lambda_common::batch_response(failed)
}

/// Per message id: the name of the queue it came from (the last part of its ARN) and its
/// receipt handle.
pub fn receipts(event: &SqsEvent) -> HashMap<String, (String, String)> {
    event
        .records
        .iter()
        .filter_map(|r| {
            let queue = r
                .event_source_arn
                .as_deref()?
                .rsplit(':')
                .next()?
                .to_string();
            Some((r.message_id.clone()?, (queue, r.receipt_handle.clone()?)))
        })
        .collect()
}
