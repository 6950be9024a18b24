//! The queue port over Amazon SQS. Standard and FIFO queues: on a FIFO queue messages carry
//! their group and deduplication ids (and per-message delays, which FIFO queues do not accept,
//! are refused); on a standard queue those ids are dropped and delays are sent as DelaySeconds.
//!
//! Limits from the SQS API reference: at most 10 entries per SendMessageBatch, 262,144 bytes per
//! message, DelaySeconds 0..=900, ChangeMessageVisibility up to 12 hours. A batch's total payload
//! (the sum of its messages' sizes) has the same cap as one message ("SendMessageBatch": "the
//! maximum total payload size ... is 256 KiB"; queues created since 2025 accept 1 MiB, older
//! settings and other regions' queues may not), so batches are cut by size as well as by count.

use std::time::Duration;

use async_trait::async_trait;
pub use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use pipeline::queue::{OutMessage, Queue, QueueError, Received};

pub struct SqsQueue {
    client: Client,
    url: String,
    name: String,
    fifo: bool,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        let url = url.into();
        let name = url.rsplit('/').next().unwrap_or_default().to_string();
        SqsQueue {
            fifo: name.ends_with(".fifo"),
            client,
            url,
            name,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client from the environment (Lambda's role, or AWS_* variables), optionally pointed at
    /// another endpoint (moto in tests).
    pub async fn client(endpoint: Option<&str>) -> Client {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(e) = endpoint {
            loader = loader.endpoint_url(e);
        }
        Client::new(&loader.load().await)
    }
}

/// A message received for inspection (`crm-sync dlq`), with the system attributes a listing
/// shows and a replay keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub received: Received,
    /// A FIFO message's group (the `MessageGroupId` system attribute).
    pub group_id: Option<String>,
    /// When the message was sent (`SentTimestamp`, unix ms).
    pub sent_at_ms: Option<i64>,
}

impl SqsQueue {
    pub fn is_fifo(&self) -> bool {
        self.fifo
    }

    /// Receives up to `max` messages (at most 10), keeping them invisible for `visibility`
    /// only, with their group ids and sent timestamps. No wait: an empty answer means nothing
    /// more is visible now.
    pub async fn receive_for_inspection(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Inspected>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(0)
            .visibility_timeout(visibility.as_secs().min(43_200) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out
            .messages()
            .iter()
            .map(|m| {
                let system = |name: MessageSystemAttributeName| {
                    m.attributes().and_then(|a| a.get(&name)).cloned()
                };
                Inspected {
                    received: received(m),
                    group_id: system(MessageSystemAttributeName::MessageGroupId),
                    sent_at_ms: system(MessageSystemAttributeName::SentTimestamp)
                        .and_then(|v| v.parse().ok()),
                }
            })
            .collect())
    }

    /// The URLs of the queues whose redrive policy names this queue as their dead-letter queue
    /// (ListDeadLetterSourceQueues).
    pub async fn dead_letter_sources(&self) -> Result<Vec<String>, QueueError> {
        let out = self
            .client
            .list_dead_letter_source_queues()
            .queue_url(&self.url)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.queue_urls().to_vec())
    }
}

fn received(m: &Message) -> Received {
    Received {
        message_id: m.message_id().unwrap_or_default().to_string(),
        receipt: m.receipt_handle().unwrap_or_default().to_string(),
        body: m.body().unwrap_or_default().to_string(),
        receive_count: m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        sent_at_ms: m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
            .and_then(|v| v.parse().ok()),
        attributes: m
            .message_attributes()
            .map(|a| {
                a.iter()
                    .filter_map(|(k, v)| v.string_value().map(|s| (k.clone(), s.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn unavailable<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    e: SdkError<E, R>,
) -> QueueError {
    match &e {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("unknown").to_string();
            let msg = s.err().message().unwrap_or_default().to_string();
            // Client-side errors (bad size, bad parameter) fail the same way again.
            if code.contains("TooLong")
                || code.contains("InvalidParameter")
                || code.contains("InvalidMessageContents")
                || code.contains("NonExistentQueue")
                || code.contains("QueueDoesNotExist")
            {
                QueueError::Rejected(format!("{code}: {msg}"))
            } else {
                QueueError::Unavailable(format!("{code}: {msg}"))
            }
        }
        other => QueueError::Unavailable(format!("{other:?}").chars().take(300).collect()),
    }
}

/// What SQS counts of a message against the size limits: its body, and each attribute's name,
/// data type and value.
fn payload_size(m: &OutMessage) -> usize {
    m.body.len()
        + m.attributes
            .iter()
            .map(|(k, v)| k.len() + "String".len() + v.len())
            .sum::<usize>()
}

/// Consecutive runs of at most 10 messages whose payloads together stay within one message's
/// limit (a message alone is always its own batch; its size was checked when it was encoded).
fn batches(messages: &[OutMessage]) -> Vec<&[OutMessage]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, m) in messages.iter().enumerate() {
        let size = payload_size(m);
        if i > start && (i - start == 10 || bytes + size > pipeline::message::SQS_MAX_MESSAGE_BYTES)
        {
            out.push(&messages[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < messages.len() {
        out.push(&messages[start..]);
    }
    out
}

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, messages: Vec<OutMessage>) -> Result<(), QueueError> {
        for chunk in batches(&messages) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, m) in chunk.iter().enumerate() {
                let mut e = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body);
                if self.fifo {
                    if !m.delay.is_zero() {
                        return Err(QueueError::Rejected(format!(
                            "{} is a FIFO queue: it takes no per-message delay",
                            self.name
                        )));
                    }
                    e = e
                        .message_group_id(m.group_id.clone().unwrap_or_else(|| "default".into()))
                        .set_message_deduplication_id(m.dedup_id.clone());
                } else if !m.delay.is_zero() {
                    e = e.delay_seconds(m.delay.as_secs().min(900) as i32);
                }
                for (k, v) in &m.attributes {
                    e = e.message_attributes(
                        k,
                        MessageAttributeValue::builder()
                            .data_type("String")
                            .string_value(v)
                            .build()
                            .map_err(|e| QueueError::Rejected(e.to_string()))?,
                    );
                }
                entries.push(e.build().map_err(|e| QueueError::Rejected(e.to_string()))?);
            }
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(unavailable)?;
            if let Some(f) = out.failed().first() {
                let msg = format!("{}: {}", f.code(), f.message().unwrap_or_default());
                return Err(if f.sender_fault() {
                    QueueError::Rejected(msg)
                } else {
                    QueueError::Unavailable(msg)
                });
            }
        }
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.messages().iter().map(received).collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn release(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(delay.as_secs().min(43_200) as i32)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(n: usize) -> OutMessage {
        OutMessage::new("x".repeat(n))
    }

    fn shape(messages: &[OutMessage]) -> Vec<usize> {
        batches(messages).iter().map(|b| b.len()).collect()
    }

    #[test]
    fn batches_hold_ten_messages_and_one_message_size_at_most() {
        assert!(batches(&[]).is_empty());
        assert_eq!(shape(&vec![sized(10); 25]), [10, 10, 5]);
        // 100 KB each: two fit in 256 KiB, a third does not.
        assert_eq!(shape(&vec![sized(100_000); 5]), [2, 2, 1]);
        // A message at the limit travels alone, and the small ones around it are not held back.
        let limit = pipeline::message::SQS_MAX_MESSAGE_BYTES;
        assert_eq!(shape(&[sized(10), sized(limit), sized(10)]), [1, 1, 1]);
        // Every message is sent exactly once, in order.
        let ms: Vec<OutMessage> = (0..37).map(|i| sized(i * 9_000)).collect();
        let flat: Vec<&str> = batches(&ms)
            .iter()
            .flat_map(|b| b.iter().map(|m| m.body.as_str()))
            .collect();
        assert_eq!(flat, ms.iter().map(|m| m.body.as_str()).collect::<Vec<_>>());
        for b in batches(&ms) {
            assert!(b.len() <= 10);
            let total: usize = b.iter().map(payload_size).sum();
            assert!(b.len() == 1 || total <= limit, "{total}");
        }
    }
}
