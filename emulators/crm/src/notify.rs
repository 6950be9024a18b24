//! Outgoing change notifications: what a CRM's automation posts to crm-sync's webhook endpoint.
//! The Salesforce and ServiceNow emulators send our signed contract body the way the scripts in
//! `integrations/` do (the Apex Queueable `CrmSyncNotifier` and the ServiceNow business rules):
//! one POST per record, after the change, in order, signed with `X-CrmSync-Signature` =
//! `v1=` + hex HMAC-SHA256(secret, timestamp + "." + body) and `X-CrmSync-Timestamp` in epoch
//! seconds, retried on anything but a 2xx (the Apex job re-queues itself up to five tries).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Tries per notification, as the Apex notifier makes.
const TRIES: u32 = 5;

/// The outcome of one notification: the last status received (none if it never connected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub operation: String,
    pub status: Option<u16>,
    pub tries: u32,
}

struct Job {
    id: String,
    operation: String,
    body: String,
}

#[derive(Default)]
struct State {
    pending: AtomicUsize,
    deliveries: std::sync::Mutex<Vec<Delivery>>,
}

/// Posts contract notifications to one endpoint from a background task.
pub struct ContractNotifier {
    tx: mpsc::UnboundedSender<Job>,
    state: Arc<State>,
}

impl ContractNotifier {
    /// Starts the sender; it runs until the notifier is dropped.
    pub fn start(target_url: String, secret: String) -> ContractNotifier {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let state = Arc::new(State::default());
        let st = state.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default();
            while let Some(job) = rx.recv().await {
                let mut status = None;
                let mut tries = 0;
                while tries < TRIES {
                    tries += 1;
                    let ts = Utc::now().timestamp().to_string();
                    let sig =
                        webhook::verify::contract_signature(&secret, &ts, job.body.as_bytes());
                    let sent = http
                        .post(&target_url)
                        .header("content-type", "application/json")
                        .header("x-crmsync-timestamp", &ts)
                        .header("x-crmsync-signature", sig)
                        .body(job.body.clone())
                        .send()
                        .await;
                    status = sent.ok().map(|r| r.status().as_u16());
                    if status.is_some_and(|s| (200..300).contains(&s)) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50 << tries.min(5))).await;
                }
                lock(&st.deliveries).push(Delivery {
                    id: job.id,
                    operation: job.operation,
                    status,
                    tries,
                });
                st.pending.fetch_sub(1, Ordering::SeqCst);
            }
        });
        ContractNotifier { tx, state }
    }

    /// Queues one notification. `record` is the record as the CRM serialises it (`None` for a
    /// delete).
    pub fn send(
        &self,
        entity: &str,
        operation: &str,
        id: &str,
        modified_at: DateTime<Utc>,
        record: Option<Value>,
    ) {
        let body = json!({
            "entity": entity,
            "operation": operation,
            "id": id,
            "modified_at": modified_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "record": record,
        })
        .to_string();
        self.state.pending.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            id: id.to_string(),
            operation: operation.to_string(),
            body,
        };
        if self.tx.send(job).is_err() {
            self.state.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits until every queued notification has been delivered or given up; false on timeout.
    pub async fn idle(&self, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        while self.state.pending.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Every finished notification, in delivery order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.state.deliveries).clone()
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
