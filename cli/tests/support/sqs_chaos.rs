//! An SQS endpoint that misbehaves within SQS's contract: a proxy in front of moto that makes
//! messages come back once more (a share of them, up to every one) and shuffles what standard
//! queues return.
//!
//! SQS promises at-least-once delivery ("Amazon SQS at-least-once delivery": a copy of a message
//! can be delivered again, and "the consumer must be idempotent"), and a standard queue promises
//! no order ("best-effort ordering"). A FIFO queue keeps order within a message group, so its
//! receives are passed through in order. The faults:
//! - **delivered twice**: the first `DeleteMessage` / `DeleteMessageBatch` entry for each message
//!   is answered as a success but not forwarded, so the message becomes visible again after its
//!   visibility timeout and is delivered a second time, exactly as when SQS loses a delete or
//!   redelivers on its own;
//! - **reordered**: each `ReceiveMessage` answer of a standard queue is shuffled.
//!
//! Everything else (DynamoDB for the run ledger included) is forwarded untouched. The SDK speaks
//! the AWS JSON 1.0 protocol (`X-Amz-Target: AmazonSQS.<Action>`), which moto serves.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What the proxy did.
#[derive(Debug, Default)]
pub struct ChaosStats {
    pub received: AtomicU64,
    /// Deletes answered as done but not forwarded: each such message is delivered again.
    pub redelivered: AtomicU64,
    /// Receive answers of a standard queue whose order was changed.
    pub reordered: AtomicU64,
}

struct Proxy {
    upstream: String,
    http: reqwest::Client,
    /// Share of messages whose first delete is dropped (1.0: every message twice).
    redeliver_rate: f64,
    /// Receipt handle → message id, from receive answers.
    receipts: Mutex<HashMap<String, String>>,
    /// Messages whose first delete was dropped already, or that were spared.
    decided: Mutex<HashSet<String>>,
    rng: Mutex<u64>,
    stats: Arc<ChaosStats>,
}

pub struct SqsChaos {
    pub addr: SocketAddr,
    pub stats: Arc<ChaosStats>,
    task: tokio::task::JoinHandle<()>,
}

impl SqsChaos {
    /// Starts the proxy in front of `upstream` (moto's endpoint).
    pub async fn start(upstream: &str, redeliver_rate: f64, seed: u64) -> SqsChaos {
        let stats = Arc::new(ChaosStats::default());
        let proxy = Arc::new(Proxy {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            redeliver_rate,
            receipts: Mutex::default(),
            decided: Mutex::default(),
            rng: Mutex::new(seed.max(1)),
            stats: stats.clone(),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding the SQS proxy");
        let addr = listener.local_addr().expect("its address");
        let app = Router::new().fallback(forward).with_state(proxy);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SqsChaos { addr, stats, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn redelivered(&self) -> u64 {
        self.stats.redelivered.load(Ordering::SeqCst)
    }

    pub fn reordered(&self) -> u64 {
        self.stats.reordered.load(Ordering::SeqCst)
    }
}

impl Drop for SqsChaos {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Proxy {
    fn draw(&self) -> f64 {
        let mut x = lock(&self.rng);
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether this delete is the one to drop: the first for its message, when drawn.
    fn drop_delete(&self, receipt: &str) -> bool {
        let Some(id) = lock(&self.receipts).get(receipt).cloned() else {
            return false;
        };
        if !lock(&self.decided).insert(id) {
            return false;
        }
        let dropped = self.draw() < self.redeliver_rate;
        if dropped {
            self.stats.redelivered.fetch_add(1, Ordering::SeqCst);
        }
        dropped
    }

    async fn upstream(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Vec<u8>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.upstream))
            .body(body);
        for (k, v) in headers {
            if k != "host" && k != "content-length" {
                req = req.header(k, v);
            }
        }
        let res = req.send().await.map_err(|e| e.to_string())?;
        let status = res.status();
        let mut out = HeaderMap::new();
        for (k, v) in res.headers() {
            if k != "content-length" && k != "transfer-encoding" {
                out.insert(k, v.clone());
            }
        }
        let bytes = res.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, out, bytes))
    }
}

fn json_response(status: StatusCode, headers: HeaderMap, v: &Value) -> Response {
    (status, headers, v.to_string()).into_response()
}

async fn forward(
    State(p): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let action = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix("AmazonSQS."))
        .unwrap_or("")
        .to_string();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut body = body.to_vec();
    // Batch entries whose delete is dropped: answered as successful without reaching SQS.
    let mut spared_ids: Vec<Value> = Vec::new();
    match action.as_str() {
        "DeleteMessage" => {
            let receipt = request["ReceiptHandle"].as_str().unwrap_or("");
            if p.drop_delete(receipt) {
                let mut h = HeaderMap::new();
                h.insert(
                    "content-type",
                    "application/x-amz-json-1.0".parse().unwrap(),
                );
                return json_response(StatusCode::OK, h, &json!({}));
            }
        }
        "DeleteMessageBatch" => {
            let entries = request["Entries"].as_array().cloned().unwrap_or_default();
            let (dropped, kept): (Vec<Value>, Vec<Value>) = entries
                .into_iter()
                .partition(|e| p.drop_delete(e["ReceiptHandle"].as_str().unwrap_or("")));
            if !dropped.is_empty() {
                spared_ids = dropped.iter().map(|e| json!({"Id": e["Id"]})).collect();
                if kept.is_empty() {
                    let mut h = HeaderMap::new();
                    h.insert(
                        "content-type",
                        "application/x-amz-json-1.0".parse().unwrap(),
                    );
                    return json_response(
                        StatusCode::OK,
                        h,
                        &json!({"Successful": spared_ids, "Failed": []}),
                    );
                }
                let mut req = request.clone();
                req["Entries"] = Value::Array(kept);
                body = req.to_string().into_bytes();
            }
        }
        _ => {}
    }
    let (status, headers, bytes) = match p.upstream(&method, &uri, &headers, body).await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e).into_response(),
    };
    if !status.is_success() {
        return (status, headers, bytes).into_response();
    }
    match action.as_str() {
        "ReceiveMessage" => {
            let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes) else {
                return (status, headers, bytes).into_response();
            };
            let fifo = request["QueueUrl"]
                .as_str()
                .is_some_and(|u| u.ends_with(".fifo"));
            if let Some(messages) = answer["Messages"].as_array_mut() {
                p.stats
                    .received
                    .fetch_add(messages.len() as u64, Ordering::SeqCst);
                {
                    let mut receipts = lock(&p.receipts);
                    for m in messages.iter() {
                        if let (Some(r), Some(id)) =
                            (m["ReceiptHandle"].as_str(), m["MessageId"].as_str())
                        {
                            receipts.insert(r.to_string(), id.to_string());
                        }
                    }
                }
                if !fifo && messages.len() > 1 {
                    // Fisher-Yates with the proxy's generator.
                    for i in (1..messages.len()).rev() {
                        let j = (p.draw() * (i + 1) as f64) as usize;
                        messages.swap(i, j.min(i));
                    }
                    p.stats.reordered.fetch_add(1, Ordering::SeqCst);
                }
            }
            json_response(status, headers, &answer)
        }
        "DeleteMessageBatch" if !spared_ids.is_empty() => {
            let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes) else {
                return (status, headers, bytes).into_response();
            };
            if let Some(ok) = answer["Successful"].as_array_mut() {
                ok.extend(spared_ids);
            } else {
                answer["Successful"] = Value::Array(spared_ids);
            }
            json_response(status, headers, &answer)
        }
        _ => (status, headers, bytes).into_response(),
    }
}
