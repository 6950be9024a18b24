//! What Lambda does around the functions, for tests over real SQS:
//! - an SQS event source mapping: receive a batch (with its system attributes and message
//!   attributes), hand it to the function as the `SqsEvent` JSON Lambda sends, delete the
//!   messages the response does not list in `batchItemFailures`, and leave the rest to come back
//!   after the queue's visibility timeout (and to reach the DLQ through the queue's redrive
//!   policy once they have been received maxReceiveCount times);
//! - the API Gateway HTTP API (payload format 2.0) event a webhook request becomes.
//!
//! Partial batch responses as documented in "Handling errors for an SQS event source in
//! Lambda" (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html): an
//! empty or missing `batchItemFailures` is a success; an `itemIdentifier` that is null, empty or
//! not a message of the batch fails the whole batch, as does a function error.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use serde_json::{Value, json};

use super::moto::{Moto, Queue, REGION};

/// A function invocation: the event JSON in, the function's result JSON (or its error) out.
pub type Invoke =
    Arc<dyn Fn(Value) -> Pin<Box<dyn Future<Output = Result<Value, String>> + Send>> + Send + Sync>;

pub fn invoker<F, Fut>(f: F) -> Invoke
where
    F: Fn(Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, String>> + Send + 'static,
{
    Arc::new(move |v| Box::pin(f(v)))
}

/// Milliseconds since the epoch, as `Lambda-Runtime-Deadline-Ms` counts them.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn base64_data(bytes: &[u8]) -> Base64Data {
    // The type is non-exhaustive: built empty, then filled.
    let mut d = Base64Data::default();
    d.extend_from_slice(bytes);
    d
}

/// The `SqsEvent` Lambda builds from received messages.
pub fn sqs_event(messages: &[Message], queue: &Queue) -> SqsEvent {
    let mut event = SqsEvent::default();
    for m in messages {
        let mut r = SqsMessage::default();
        r.message_id = m.message_id().map(str::to_string);
        r.receipt_handle = m.receipt_handle().map(str::to_string);
        r.body = m.body().map(str::to_string);
        r.md5_of_body = m.md5_of_body().map(str::to_string);
        r.md5_of_message_attributes = m.md5_of_message_attributes().map(str::to_string);
        r.attributes = m
            .attributes()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        r.message_attributes = m
            .message_attributes()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| {
                        let mut attr = SqsMessageAttribute::default();
                        attr.string_value = v.string_value().map(str::to_string);
                        attr.binary_value = v.binary_value().map(|b| base64_data(b.as_ref()));
                        attr.string_list_values = v.string_list_values().to_vec();
                        attr.binary_list_values = v
                            .binary_list_values()
                            .iter()
                            .map(|b| base64_data(b.as_ref()))
                            .collect();
                        attr.data_type = Some(v.data_type().to_string());
                        (k.clone(), attr)
                    })
                    .collect()
            })
            .unwrap_or_default();
        r.event_source = Some("aws:sqs".into());
        r.event_source_arn = Some(queue.arn.clone());
        r.aws_region = Some(REGION.into());
        event.records.push(r);
    }
    event
}

/// Which messages of a batch failed, from the function's result: `Err` means the whole batch.
pub fn failed_items(
    batch: &[String],
    result: &Result<Value, String>,
) -> Result<Vec<String>, String> {
    let v = result
        .as_ref()
        .map_err(|e| format!("function error: {e}"))?;
    let failures = match v.get("batchItemFailures") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(format!("batchItemFailures is not a list: {other}")),
    };
    let ids: HashSet<&str> = batch.iter().map(String::as_str).collect();
    let mut failed = Vec::new();
    for f in failures {
        match f.get("itemIdentifier").and_then(Value::as_str) {
            Some(id) if ids.contains(id) => failed.push(id.to_string()),
            other => {
                return Err(format!(
                    "invalid itemIdentifier {other:?}: whole batch fails"
                ));
            }
        }
    }
    Ok(failed)
}

/// Counters of one event source mapping.
#[derive(Debug, Default)]
pub struct MappingStats {
    pub invocations: AtomicU64,
    pub messages: AtomicU64,
    /// Messages listed in `batchItemFailures`.
    pub item_failures: AtomicU64,
    /// Invocations that failed as a whole (function error or invalid response).
    pub batch_failures: AtomicU64,
    pub deleted: AtomicU64,
    /// Highest ApproximateReceiveCount seen on a delivered message.
    pub max_receive_count: AtomicU64,
    /// Batches received and not yet settled (deleted or left to come back).
    pub in_flight: AtomicI64,
}

impl MappingStats {
    pub fn get(&self, f: impl Fn(&MappingStats) -> &AtomicU64) -> u64 {
        f(self).load(Ordering::SeqCst)
    }
}

/// What one poll did.
#[derive(Debug, Clone)]
pub struct Polled {
    pub event: SqsEvent,
    pub result: Result<Value, String>,
    pub deleted: Vec<String>,
    /// Left in the queue: they come back after the visibility timeout.
    pub kept: Vec<String>,
}

/// One poll of an event source mapping: receive up to `batch_size` messages (waiting up to
/// `wait` for the first), invoke, settle. `None` when nothing was received.
pub async fn poll_once(
    client: &Client,
    queue: &Queue,
    batch_size: i32,
    wait: Duration,
    invoke: &Invoke,
    stats: &MappingStats,
) -> Option<Polled> {
    let messages = receive(client, queue, batch_size, wait).await;
    if messages.is_empty() {
        return None;
    }
    stats.in_flight.fetch_add(1, Ordering::SeqCst);
    let polled = settle(client, queue, messages, invoke, stats).await;
    stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    Some(polled)
}

/// A batch as the event source mapping receives it: with every system attribute (the receive
/// count, the FIFO group ...) and every message attribute.
async fn receive(client: &Client, queue: &Queue, batch_size: i32, wait: Duration) -> Vec<Message> {
    let out = client
        .receive_message()
        .queue_url(&queue.url)
        .max_number_of_messages(batch_size)
        .wait_time_seconds(wait.as_secs() as i32)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await;
    match out {
        Ok(o) => o.messages().to_vec(),
        Err(e) => {
            // Lambda's poller keeps polling through SQS errors.
            eprintln!("{}: receive failed: {e:?}", queue.name);
            tokio::time::sleep(Duration::from_millis(200)).await;
            Vec::new()
        }
    }
}

async fn settle(
    client: &Client,
    queue: &Queue,
    messages: Vec<Message>,
    invoke: &Invoke,
    stats: &MappingStats,
) -> Polled {
    let event = sqs_event(&messages, queue);
    stats.invocations.fetch_add(1, Ordering::SeqCst);
    stats
        .messages
        .fetch_add(messages.len() as u64, Ordering::SeqCst);
    for r in &event.records {
        let n = r
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        stats.max_receive_count.fetch_max(n, Ordering::SeqCst);
    }
    let ids: Vec<String> = messages
        .iter()
        .map(|m| m.message_id().unwrap_or_default().to_string())
        .collect();
    let payload = serde_json::to_value(&event).expect("an SqsEvent serialises");
    let result = invoke(payload).await;
    let failed: HashSet<String> = match failed_items(&ids, &result) {
        Ok(f) => {
            stats
                .item_failures
                .fetch_add(f.len() as u64, Ordering::SeqCst);
            f.into_iter().collect()
        }
        Err(_) => {
            stats.batch_failures.fetch_add(1, Ordering::SeqCst);
            ids.iter().cloned().collect()
        }
    };
    let receipts: HashMap<&str, &str> = messages
        .iter()
        .filter_map(|m| Some((m.message_id()?, m.receipt_handle()?)))
        .collect();
    let (kept, done): (Vec<String>, Vec<String>) =
        ids.into_iter().partition(|id| failed.contains(id));
    for chunk in done.chunks(10) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipts[id.as_str()])
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        match client
            .delete_message_batch()
            .queue_url(&queue.url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                let n = chunk.len() - out.failed().len();
                stats.deleted.fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(e) => eprintln!("{}: delete failed: {e:?}", queue.name),
        }
    }
    Polled {
        event,
        result,
        deleted: done,
        kept,
    }
}

/// An event source mapping polling one queue with `concurrency` pollers until dropped.
pub struct EventSourceMapping {
    pub stats: Arc<MappingStats>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EventSourceMapping {
    pub fn start(
        client: Client,
        queue: &Queue,
        batch_size: i32,
        concurrency: usize,
        invoke: Invoke,
    ) -> EventSourceMapping {
        let stats = Arc::new(MappingStats::default());
        // moto's ReceiveMessage is not atomic: two long polls on one queue woken together can
        // both take the same message (seen here: a FIFO message delivered twice within its
        // visibility timeout), which SQS never does. So the pollers of a mapping receive one at
        // a time, with short polls (a long poll holding the turn would also keep the others
        // waiting while moto skips a FIFO group that was in flight when the poll began); their
        // invocations still run concurrently.
        let receiving = Arc::new(tokio::sync::Mutex::new(()));
        let tasks = (0..concurrency)
            .map(|_| {
                let (client, queue, invoke, stats, receiving) = (
                    client.clone(),
                    queue.clone(),
                    invoke.clone(),
                    stats.clone(),
                    receiving.clone(),
                );
                tokio::spawn(async move {
                    loop {
                        let messages = {
                            let _one_at_a_time = receiving.lock().await;
                            let m = receive(&client, &queue, batch_size, Duration::ZERO).await;
                            if !m.is_empty() {
                                stats.in_flight.fetch_add(1, Ordering::SeqCst);
                            }
                            m
                        };
                        if messages.is_empty() {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                        settle(&client, &queue, messages, &invoke, &stats).await;
                        stats.in_flight.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        EventSourceMapping { stats, tasks }
    }

    pub fn in_flight(&self) -> i64 {
        self.stats.in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for EventSourceMapping {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Waits until no mapping has a batch in hand and the queues hold nothing (visible, in flight
/// or delayed), seen twice in a row; false if that does not happen within `limit`.
pub async fn wait_idle(
    moto: &Moto,
    queues: &[&Queue],
    mappings: &[&EventSourceMapping],
    limit: Duration,
) -> bool {
    let until = tokio::time::Instant::now() + limit;
    let mut quiet = 0;
    while tokio::time::Instant::now() < until {
        let mut idle = mappings.iter().all(|m| m.in_flight() == 0);
        for q in queues {
            idle &= moto.depth(q).await.total() == 0;
        }
        idle &= mappings.iter().all(|m| m.in_flight() == 0);
        quiet = if idle { quiet + 1 } else { 0 };
        if quiet >= 2 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    false
}

/// Polls `cond` every 50 ms until it holds; false after `limit`.
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + limit;
    while !cond() {
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// The event API Gateway sends for an HTTP API route with payload format 2.0
/// (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html):
/// header names lower-cased, duplicates joined with commas, the body as text.
pub fn apigw_v2_event(
    method: &str,
    route: &str,
    raw_path: &str,
    raw_query: &str,
    path_parameters: &[(&str, &str)],
    headers: &[(String, String)],
    body: &[u8],
) -> Value {
    let mut h: serde_json::Map<String, Value> = serde_json::Map::new();
    for (k, v) in headers {
        let k = k.to_ascii_lowercase();
        let joined = match h.get(&k).and_then(Value::as_str) {
            Some(prev) => format!("{prev},{v}"),
            None => v.clone(),
        };
        h.insert(k, Value::String(joined));
    }
    let params: serde_json::Map<String, Value> = path_parameters
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let ms = now_ms();
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {route}"),
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": h,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "crmsync01",
            "domainName": "crmsync01.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "crmsync01",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.10",
                "userAgent": h.get("user-agent").and_then(Value::as_str).unwrap_or(""),
            },
            "requestId": format!("req-{ms}"),
            "routeKey": format!("{method} {route}"),
            "stage": "$default",
            "time": "28/Nov/2026:12:00:00 +0000",
            "timeEpoch": ms,
        },
        "pathParameters": params,
        "body": String::from_utf8(body.to_vec()).expect("test request bodies are text"),
        "isBase64Encoded": false,
    })
}
