//! Runs the steps in one process over in-process queues, as Lambda's event source mappings
//! would over SQS: receive a batch, handle it, delete what succeeded, let the rest come back.
//! The local runner (`crm-sync demo`, `serve`) and the end-to-end tests drive it.

use std::sync::Arc;
use std::time::Duration;

use dataverse::DataverseWriter;

use crate::memory_queue::{MemoryQueue, MemoryQueueConfig};
use crate::metrics::Metrics;
use crate::queue::{ERROR_ATTRIBUTE, OutMessage, Queue, Received, last_receive, still_failing};
use crate::recent::RecentEvents;
use crate::sources::Sources;
use crate::sync::{Crms, StepError, SyncPorts, SyncSettings, handle_sync_message};
use crate::upsert::{InMessage, UpsertPolicy, UpsertPorts, UpsertReport, apply_changes};
use crate::webhook::WebhookPorts;

/// The queues of one deployment: sync and upsert, each with its DLQ.
pub struct LocalQueues {
    pub sync: Arc<MemoryQueue>,
    pub upsert: Arc<MemoryQueue>,
    pub sync_dlq: Arc<MemoryQueue>,
    pub upsert_dlq: Arc<MemoryQueue>,
}

impl LocalQueues {
    pub fn new(cfg: MemoryQueueConfig) -> Self {
        let dlq_cfg = MemoryQueueConfig {
            max_receives: u32::MAX,
            ..cfg.clone()
        };
        let sync_dlq = Arc::new(MemoryQueue::new("sync-dlq", dlq_cfg.clone(), None));
        let upsert_dlq = Arc::new(MemoryQueue::new("upsert-dlq", dlq_cfg, None));
        LocalQueues {
            sync: Arc::new(MemoryQueue::new(
                "sync",
                cfg.clone(),
                Some(sync_dlq.clone()),
            )),
            upsert: Arc::new(MemoryQueue::new("upsert", cfg, Some(upsert_dlq.clone()))),
            sync_dlq,
            upsert_dlq,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.sync.is_empty() && self.upsert.is_empty()
    }
}

/// Totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub sync_messages: u64,
    pub sync_retries: u64,
    pub upsert_batches: u64,
    pub upsert: UpsertReport,
}

pub struct LocalPipeline {
    pub sources: Arc<Sources>,
    pub crms: Crms,
    pub writer: Arc<dyn DataverseWriter>,
    pub queues: LocalQueues,
    pub settings: SyncSettings,
    pub policy: UpsertPolicy,
    /// Messages per upsert batch (Lambda's BatchSize).
    pub batch_size: usize,
    /// Webhook events queued lately.
    pub recent: RecentEvents,
    /// What the steps did, for `GET /metrics` and the demo's summary.
    pub metrics: Metrics,
    /// The newest version written per record (one process works these queues).
    pub versions: crate::versions::MemoryVersions,
}

impl LocalPipeline {
    pub fn sync_ports(&self) -> SyncPorts<'_> {
        SyncPorts {
            sources: &self.sources,
            crms: &self.crms,
            upsert: self.queues.upsert.as_ref(),
            sync: self.queues.sync.as_ref(),
            metrics: &self.metrics,
        }
    }

    pub fn webhook_ports(&self) -> WebhookPorts<'_> {
        WebhookPorts {
            sources: &self.sources,
            upsert: self.queues.upsert.as_ref(),
            sync: self.queues.sync.as_ref(),
            dlq: self.queues.upsert_dlq.as_ref(),
            recent: Some(&self.recent),
            metrics: &self.metrics,
        }
    }

    /// Handles one batch from the sync queue; returns how many messages it received.
    pub async fn sync_batch(&self, wait: Duration, totals: &mut RunTotals) -> usize {
        let Ok(batch) = self.queues.sync.receive(10, wait).await else {
            return 0;
        };
        let ports = self.sync_ports();
        for m in &batch {
            totals.sync_messages += 1;
            match handle_sync_message(&m.body, &ports, &self.settings).await {
                Ok(()) => {
                    let _ = self.queues.sync.delete(&m.receipt).await;
                }
                Err(StepError::Retryable(reason))
                    if last_receive(
                        m.receive_count,
                        self.settings
                            .max_receives
                            .or(self.queues.sync.max_receives()),
                    ) =>
                {
                    let reason = still_failing(&reason, m.receive_count);
                    let (sync, dlq) = (self.queues.sync.as_ref(), self.queues.sync_dlq.as_ref());
                    dead_letter(sync, dlq, m, reason).await;
                }
                Err(StepError::Retryable(_)) => {
                    totals.sync_retries += 1;
                    let _ = self.queues.sync.release(&m.receipt, backoff(m)).await;
                }
                Err(StepError::Permanent(reason)) => {
                    dead_letter(
                        self.queues.sync.as_ref(),
                        self.queues.sync_dlq.as_ref(),
                        m,
                        reason,
                    )
                    .await;
                }
            }
        }
        batch.len()
    }

    /// Handles one batch from the upsert queue; returns how many messages it received.
    pub async fn upsert_batch(&self, wait: Duration, totals: &mut RunTotals) -> usize {
        let Ok(batch) = self.queues.upsert.receive(self.batch_size, wait).await else {
            return 0;
        };
        if batch.is_empty() {
            return 0;
        }
        let ports = UpsertPorts {
            sources: &self.sources,
            writer: self.writer.as_ref(),
            retry: self.queues.upsert.as_ref(),
            dlq: self.queues.upsert_dlq.as_ref(),
            refetch: Some(self.queues.sync.as_ref()),
            deadline: None,
            metrics: &self.metrics,
            versions: Some(&self.versions),
        };
        // The last receive before the queue's redrive keeps its reason (see `last_receive`).
        let policy = UpsertPolicy {
            max_receives: self
                .policy
                .max_receives
                .or(self.queues.upsert.max_receives()),
            ..self.policy.clone()
        };
        let report = upsert_received(&batch, &ports, &policy, self.queues.upsert.as_ref()).await;
        totals.upsert_batches += 1;
        add(&mut totals.upsert, &report);
        batch.len()
    }

    /// Works both queues until they are empty or `limit` has passed; returns the totals and
    /// whether the queues drained.
    pub async fn run_until_idle(&self, limit: Duration) -> (RunTotals, bool) {
        self.run_until_idle_with(limit, |_| {}).await
    }

    /// [`LocalPipeline::run_until_idle`], calling `progress` with the running totals after every
    /// batch.
    pub async fn run_until_idle_with(
        &self,
        limit: Duration,
        mut progress: impl FnMut(&RunTotals),
    ) -> (RunTotals, bool) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut totals = RunTotals::default();
        while tokio::time::Instant::now() < deadline {
            let s = self.sync_batch(Duration::ZERO, &mut totals).await;
            let u = self.upsert_batch(Duration::ZERO, &mut totals).await;
            progress(&totals);
            if s + u == 0 {
                if self.queues.is_idle() {
                    return (totals, true);
                }
                // Only delayed or in-flight messages are left: wait for one.
                let _ = self
                    .upsert_batch(Duration::from_millis(20), &mut totals)
                    .await;
            }
        }
        (totals, self.queues.is_idle())
    }
}

/// Applies a batch received from `queue`, as Lambda's event source mapping settles it: what
/// succeeded is deleted, what failed comes back after Dataverse's Retry-After or a backoff.
/// Shared by this runner and `crm-sync serve`.
pub async fn upsert_received(
    batch: &[Received],
    ports: &UpsertPorts<'_>,
    policy: &UpsertPolicy,
    queue: &dyn Queue,
) -> UpsertReport {
    let msgs: Vec<InMessage> = batch
        .iter()
        .map(|m| InMessage {
            id: m.message_id.clone(),
            body: m.body.clone(),
            receive_count: m.receive_count,
            sent_at_ms: m.sent_at_ms,
        })
        .collect();
    let report = apply_changes(&msgs, ports, policy).await;
    for m in batch {
        if report.failed.contains(&m.message_id) {
            let delay = report.throttled_for.unwrap_or_else(|| backoff(m));
            let _ = queue.release(&m.receipt, delay).await;
        } else {
            let _ = queue.delete(&m.receipt).await;
        }
    }
    report
}

/// Exponential backoff by receive count: 1 s, 2 s, 4 s ... capped at 5 minutes.
pub fn backoff(m: &Received) -> Duration {
    Duration::from_secs(1 << m.receive_count.saturating_sub(1).min(8)).min(Duration::from_secs(300))
}

/// Moves a message that can never succeed to the DLQ with the reason as an attribute; it stays
/// on its queue if the DLQ refuses it.
pub async fn dead_letter(queue: &dyn Queue, dlq: &dyn Queue, m: &Received, reason: String) {
    let mut out = OutMessage::new(m.body.clone());
    out.attributes = m.attributes.clone();
    out.attributes.insert(ERROR_ATTRIBUTE.into(), reason);
    if dlq.send(vec![out]).await.is_ok() {
        let _ = queue.delete(&m.receipt).await;
    }
}

fn add(total: &mut UpsertReport, r: &UpsertReport) {
    total.created += r.created;
    total.updated += r.updated;
    total.upserted += r.upserted;
    total.deleted += r.deleted;
    total.absent += r.absent;
    total.superseded += r.superseded;
    total.ignored += r.ignored;
    total.parked += r.parked;
    total.refetched += r.refetched;
    total.dead_lettered += r.dead_lettered;
    total.retrying += r.retrying;
    total.throttled_for = total.throttled_for.max(r.throttled_for);
    for (job, w) in &r.by_job {
        let t = total.by_job.entry(job.clone()).or_default();
        t.written += w.written;
        t.failed += w.failed;
    }
}
