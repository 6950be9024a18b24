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

#[derive(Clone)]
struct Job {
    id: String,
    operation: String,
    body: String,
}

#[derive(Default)]
struct State {
    pending: AtomicUsize,
    deliveries: std::sync::Mutex<Vec<Delivery>>,
    disorder: std::sync::Mutex<DisorderStats>,
}

struct Sender {
    http: reqwest::Client,
    target_url: String,
    secret: String,
    state: Arc<State>,
}

impl Sender {
    /// Posts one notification, signed afresh each try, retried as the Apex job retries.
    async fn deliver(&self, job: Job) {
        let mut status = None;
        let mut tries = 0;
        while tries < TRIES {
            tries += 1;
            let ts = Utc::now().timestamp().to_string();
            let sig = webhook::verify::contract_signature(&self.secret, &ts, job.body.as_bytes());
            let sent = self
                .http
                .post(&self.target_url)
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
        lock(&self.state.deliveries).push(Delivery {
            id: job.id,
            operation: job.operation,
            status,
            tries,
        });
        self.state.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Posts contract notifications to one endpoint from a background task.
pub struct ContractNotifier {
    tx: mpsc::UnboundedSender<Job>,
    state: Arc<State>,
}

/// How far delivery departs from "one POST per change, in order": Apex Queueable jobs and
/// outbound messages run asynchronously and are retried, so a receiver sees repeats and changes
/// out of order. Probabilities per notification, drawn from a seeded generator (replayable).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Disorder {
    /// Share of notifications delivered a second time, up to `max_delay` later.
    pub repeat_rate: f64,
    /// Share of notifications held back for up to `max_delay`, so later changes overtake them.
    pub delay_rate: f64,
    pub max_delay: Duration,
    pub seed: u64,
}

/// What disorder did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DisorderStats {
    pub repeated: usize,
    pub delayed: usize,
}

impl ContractNotifier {
    /// Starts the sender; it runs until the notifier is dropped.
    pub fn start(target_url: String, secret: String) -> ContractNotifier {
        Self::start_disordered(target_url, secret, Disorder::default())
    }

    /// Starts a sender that repeats and reorders notifications as `disorder` says.
    pub fn start_disordered(
        target_url: String,
        secret: String,
        disorder: Disorder,
    ) -> ContractNotifier {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let state = Arc::new(State::default());
        let st = state.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default();
            let sender = Arc::new(Sender {
                http,
                target_url,
                secret,
                state: st.clone(),
            });
            let mut rng = disorder.seed.max(1);
            let mut draw = move || {
                rng ^= rng >> 12;
                rng ^= rng << 25;
                rng ^= rng >> 27;
                (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
            };
            while let Some(job) = rx.recv().await {
                let later = disorder.max_delay.mul_f64(draw());
                if draw() < disorder.repeat_rate {
                    st.pending.fetch_add(1, Ordering::SeqCst);
                    lock(&st.disorder).repeated += 1;
                    let (s, again) = (sender.clone(), job.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(later).await;
                        s.deliver(again).await;
                    });
                }
                if draw() < disorder.delay_rate {
                    lock(&st.disorder).delayed += 1;
                    let s = sender.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(later).await;
                        s.deliver(job).await;
                    });
                    continue;
                }
                sender.deliver(job).await;
            }
        });
        ContractNotifier { tx, state }
    }

    /// How many notifications were repeated and held back.
    pub fn disorder(&self) -> DisorderStats {
        *lock(&self.state.disorder)
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
