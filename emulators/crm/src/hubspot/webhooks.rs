//! Webhook delivery, as the Webhooks API documents it for CRM object subscriptions:
//! - the body is a JSON array (a batch) of events with `eventId, subscriptionId, portalId,
//!   appId, occurredAt` (epoch ms), `subscriptionType`, `attemptNumber` (0-based), `objectId`,
//!   `changeSource`, `changeFlag`, `propertyName`/`propertyValue` for property changes and
//!   `primaryObjectId`/`mergedObjectIds`/`newObjectId` for merges
//!   (https://developers.hubspot.com/docs/api/webhooks, the fixture
//!   `hubspot-webhook-v1.body.json`, https://developers.hubspot.com/changelog/new-subscription-types-for-webhooks);
//!   batches here hold at most 100 events;
//! - signatures ("Validating requests from HubSpot",
//!   https://developers.hubspot.com/docs/api/webhooks/validating-requests): CRM object events
//!   carry `X-HubSpot-Signature-Version: v1` and `X-HubSpot-Signature` = hex SHA-256 of client
//!   secret + body, and for backward compatibility alongside the newer
//!   `X-HubSpot-Signature-v3` = base64 HMAC-SHA256(client secret, method + URI + body +
//!   timestamp) with `X-HubSpot-Request-Timestamp` in epoch ms
//!   (https://developers.hubspot.com/changelog/introducing-version-3-of-webhook-signatures).
//!   The URI signed is the target URL with HubSpot's listed percent-encodings decoded, the form
//!   the v3 guide tells receivers to rebuild;
//! - retries (https://developers.hubspot.com/docs/methods/webhooks/webhooks-overview, quoted in
//!   https://integrate.hubspot.com/t/what-does-will-retry-mean-when/3953): on connection
//!   failure, timeout, or any status other than 2xx and 400/401/403/404/405; a 429 is retried
//!   honouring `Retry-After` (HubSpot's answer in
//!   https://community.hubspot.com/t5/APIs-Integrations/Webhooks-response/td-p/277558).
//!   HubSpot retries up to 10 times over minutes; the count and delays here come from the
//!   config so tests stay fast. Each attempt re-signs with a fresh timestamp and carries the
//!   attempt's `attemptNumber`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::config::HubSpotConfig;
use super::store::{Change, Event};

/// Events per POST.
const BATCH: usize = 100;
/// Statuses HubSpot does not retry.
const FINAL: [u16; 5] = [400, 401, 403, 404, 405];
/// Longest `Retry-After` honoured (HubSpot documents none; keeps tests bounded).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// One POST of a batch, as the emulator saw it go out.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    /// 0 for the first try of a batch, then 1, 2, ... (the events' `attemptNumber`).
    pub attempt: u32,
    /// The target's answer; `None` when there was none (refused, timed out).
    pub status: Option<u16>,
    /// Events in the batch.
    pub events: usize,
    /// The exact body sent.
    pub body: String,
    /// Why there was no status.
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
struct Subscription {
    target: String,
    secret: String,
}

pub struct Hooks {
    sub: Mutex<Option<Subscription>>,
    pending: Mutex<Vec<Value>>,
    deliveries: Mutex<Vec<WebhookDelivery>>,
    pub notify: Notify,
    /// Held while a batch is being delivered, so a flush waits for batches in flight.
    sending: tokio::sync::Mutex<()>,
    event_id: AtomicU64,
    http: reqwest::Client,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `X-HubSpot-Signature` (v1): hex SHA-256 of client secret + body.
pub fn sign_v1(secret: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(secret.as_bytes());
    h.update(body);
    hex(&h.finalize())
}

/// `X-HubSpot-Signature-v3`: base64 HMAC-SHA256(secret, method + uri + body + timestamp).
pub fn sign_v3(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    // HMAC accepts keys of any length; the error case cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

/// The percent-encodings the v3 guide lists as decoded before signing.
pub fn decode_uri(uri: &str) -> String {
    const TABLE: [(&str, &str); 12] = [
        ("%3A", ":"),
        ("%2F", "/"),
        ("%3F", "?"),
        ("%40", "@"),
        ("%21", "!"),
        ("%24", "$"),
        ("%27", "'"),
        ("%28", "("),
        ("%29", ")"),
        ("%2A", "*"),
        ("%2C", ","),
        ("%3B", ";"),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let cand = rest.get(i..i + 3).unwrap_or("");
        match TABLE.iter().find(|(e, _)| e.eq_ignore_ascii_case(cand)) {
            Some((_, d)) => {
                out.push_str(d);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Stable subscription ids per subscription type (HubSpot assigns one per subscription).
fn subscription_id(sub_type: &str) -> u64 {
    sub_type
        .bytes()
        .fold(1000u64, |a, b| (a * 31 + u64::from(b)) % 1_000_000)
}

impl Hooks {
    pub fn new(cfg: &HubSpotConfig) -> Hooks {
        let http = reqwest::Client::builder()
            .timeout(cfg.webhook_timeout)
            .build()
            .unwrap_or_default();
        Hooks {
            sub: Mutex::new(None),
            pending: Mutex::new(Vec::new()),
            deliveries: Mutex::new(Vec::new()),
            notify: Notify::new(),
            sending: tokio::sync::Mutex::new(()),
            event_id: AtomicU64::new(100 + cfg.seed % 1_000_000),
            http,
        }
    }

    pub fn subscribe(&self, target: &str, secret: &str) {
        *lock(&self.sub) = Some(Subscription {
            target: target.to_string(),
            secret: secret.to_string(),
        });
    }

    pub fn unsubscribe(&self) {
        *lock(&self.sub) = None;
        lock(&self.pending).clear();
    }

    pub fn deliveries(&self) -> Vec<WebhookDelivery> {
        lock(&self.deliveries).clone()
    }

    /// Queues the events of a mutation (nothing when no one is subscribed) and wakes the
    /// sender.
    pub fn queue(&self, cfg: &HubSpotConfig, events: Vec<Event>) {
        if lock(&self.sub).is_none() || events.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let (action, flag) = match &e.change {
                Change::Creation => ("creation", Some("NEW")),
                Change::Property { .. } => ("propertyChange", None),
                Change::Deletion => ("deletion", Some("DELETED")),
                Change::Merge { .. } => ("merge", Some("MERGED")),
            };
            let sub_type = format!("{}.{action}", e.object.singular());
            let mut v = json!({
                "eventId": self.event_id.fetch_add(1, Ordering::Relaxed),
                "subscriptionId": subscription_id(&sub_type),
                "portalId": cfg.portal_id,
                "appId": cfg.app_id,
                "occurredAt": e.at.timestamp_millis(),
                "subscriptionType": sub_type,
                "attemptNumber": 0,
                "objectId": e.object_id,
                "changeSource": "CRM",
            });
            if let Some(f) = flag {
                v["changeFlag"] = json!(f);
            }
            match &e.change {
                Change::Property { name, value } => {
                    v["propertyName"] = json!(name);
                    v["propertyValue"] = json!(value);
                }
                Change::Merge { primary, merged } => {
                    v["primaryObjectId"] = json!(primary);
                    v["mergedObjectIds"] = json!(merged);
                    v["newObjectId"] = json!(primary);
                    v["numberOfPropertiesMoved"] = json!(0);
                }
                _ => {}
            }
            out.push(v);
        }
        lock(&self.pending).extend(out);
        self.notify.notify_one();
    }

    /// Sends everything pending, batch by batch, each with its retries; returns when the queue
    /// is empty and no batch is in flight.
    pub async fn deliver_pending(&self, cfg: &HubSpotConfig) {
        let _sending = self.sending.lock().await;
        loop {
            let batch: Vec<Value> = {
                let mut p = lock(&self.pending);
                let n = p.len().min(BATCH);
                p.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            let Some(sub) = lock(&self.sub).clone() else {
                return;
            };
            self.send(cfg, &sub, batch).await;
        }
    }

    async fn send(&self, cfg: &HubSpotConfig, sub: &Subscription, mut batch: Vec<Value>) {
        let uri = decode_uri(&sub.target);
        for attempt in 0..=cfg.webhook_retries {
            for e in &mut batch {
                e["attemptNumber"] = json!(attempt);
            }
            let body = serde_json::to_string(&batch).unwrap_or_default();
            let ts = chrono::Utc::now().timestamp_millis().to_string();
            let v1 = sign_v1(&sub.secret, body.as_bytes());
            let v3 = sign_v3(&sub.secret, "POST", &uri, body.as_bytes(), &ts);
            let res = self
                .http
                .post(&sub.target)
                .header("Content-Type", "application/json")
                .header("X-HubSpot-Signature", v1)
                .header("X-HubSpot-Signature-Version", "v1")
                .header("X-HubSpot-Signature-v3", v3)
                .header("X-HubSpot-Request-Timestamp", &ts)
                .body(body.clone())
                .send()
                .await;
            let backoff = cfg.webhook_retry_delay * 2u32.saturating_pow(attempt);
            let mut record = WebhookDelivery {
                attempt,
                status: None,
                events: batch.len(),
                body,
                error: None,
            };
            let wait = match res {
                Ok(r) => {
                    let status = r.status().as_u16();
                    record.status = Some(status);
                    lock(&self.deliveries).push(record);
                    if r.status().is_success() || FINAL.contains(&status) {
                        return;
                    }
                    if status == 429 {
                        r.headers()
                            .get("Retry-After")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map_or(backoff, |s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
                    } else {
                        backoff
                    }
                }
                Err(e) => {
                    record.error = Some(e.without_url().to_string());
                    lock(&self.deliveries).push(record);
                    backoff
                }
            };
            if attempt < cfg.webhook_retries {
                tokio::time::sleep(wait).await;
            }
        }
        tracing::warn!(
            events = batch.len(),
            "hubspot emulator: webhook batch dropped after retries"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HubSpot's documented vectors (fixtures/hubspot-webhook-signature-vectors.json).
    #[test]
    fn signs_like_hubspot() {
        let secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
        let body = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
        assert_eq!(
            sign_v1(secret, body.as_bytes()),
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
        );
        assert_eq!(
            sign_v3(
                secret,
                "POST",
                "https://www.example.com/webhook_uri",
                b"{'example_field':'example_value'}",
                "15000000"
            ),
            "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="
        );
        assert_eq!(decode_uri("http://x/a%3Ab%20c"), "http://x/a:b%20c");
    }
}
