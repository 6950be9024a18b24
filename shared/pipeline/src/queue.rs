//! The queue port: what the steps need from SQS, and nothing more. Implemented by SQS itself
//! (aws-sdk-sqs) in the cloud and by [`crate::memory_queue::MemoryQueue`] in one process; both
//! are at-least-once: a message that is received and not deleted comes back.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

/// A message to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutMessage {
    pub body: String,
    /// FIFO message group: one group's messages are delivered in order, one batch at a time.
    pub group_id: Option<String>,
    /// FIFO deduplication id: a second send with the same id within five minutes is dropped.
    pub dedup_id: Option<String>,
    /// Delivery delay (SQS allows up to 15 minutes).
    pub delay: Duration,
    /// Message attributes, e.g. the reason a message was sent to a DLQ.
    pub attributes: BTreeMap<String, String>,
}

impl OutMessage {
    pub fn new(body: String) -> Self {
        OutMessage {
            body,
            ..OutMessage::default()
        }
    }
}

/// A received message, invisible to other consumers until deleted, released or timed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
    pub attributes: BTreeMap<String, String>,
    /// When the message was first sent (SQS `SentTimestamp`), in ms since the epoch; `None`
    /// when the queue does not say.
    pub sent_at_ms: Option<i64>,
}

/// The attribute that carries why a message is in a DLQ.
pub const ERROR_ATTRIBUTE: &str = "crm_sync_error";

/// Whether a message received `receive_count` times is on its last receive before its queue
/// redrives it (SQS moves it on the receive after the `max_receives`th). A step that fails such a
/// message retryably dead-letters it itself, so the DLQ keeps the reason.
pub fn last_receive(receive_count: u32, max_receives: Option<u32>) -> bool {
    max_receives.is_some_and(|max| receive_count >= max)
}

/// The DLQ reason of a message that failed retryably on its last receive.
pub fn still_failing(error: &str, receive_count: u32) -> String {
    format!("{error} (still failing after {receive_count} receives)")
}

/// Longest delay SQS accepts on a message.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueueError {
    /// The queue cannot take more now; try again later.
    #[error("queue {0} is full")]
    Full(String),
    /// Network or service trouble; try again later.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The request itself is wrong (too large, bad attributes); retrying will not help.
    #[error("queue refused the message: {0}")]
    Rejected(String),
}

impl QueueError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, QueueError::Rejected(_))
    }
}

#[async_trait]
pub trait Queue: Send + Sync {
    fn name(&self) -> &str;

    /// Sends messages; `Ok` means every one was accepted. On error some may have been accepted:
    /// senders resend, and consumers are idempotent.
    async fn send(&self, messages: Vec<OutMessage>) -> Result<(), QueueError>;

    /// Receives up to `max` messages, waiting up to `wait` for the first.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError>;

    /// Deletes a received message: it has been handled.
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;

    /// Makes a received message visible again after `delay` (a retry).
    async fn release(&self, receipt: &str, delay: Duration) -> Result<(), QueueError>;
}

/// A shared queue is a queue: the same instance can be a step's port and a test's probe.
#[async_trait]
impl<Q: Queue + ?Sized> Queue for std::sync::Arc<Q> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn send(&self, messages: Vec<OutMessage>) -> Result<(), QueueError> {
        (**self).send(messages).await
    }
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        (**self).receive(max, wait).await
    }
    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        (**self).delete(receipt).await
    }
    async fn release(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        (**self).release(receipt, delay).await
    }
}
