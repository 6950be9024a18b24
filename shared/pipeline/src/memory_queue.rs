//! An in-process queue with SQS's delivery semantics, for the local runner and tests: bounded,
//! at-least-once (a received message that is not deleted becomes visible again after the
//! visibility timeout), per-message delays, FIFO groups and deduplication ids, and redrive to a
//! dead-letter queue after `max_receives`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::queue::{OutMessage, Queue, QueueError, Received};

/// How long a FIFO deduplication id is remembered, as in SQS.
const DEDUP_WINDOW: Duration = Duration::from_secs(300);

/// How long a send waits for room in a full queue before giving up with [`QueueError::Full`].
const SEND_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct MemoryQueueConfig {
    pub capacity: usize,
    pub visibility_timeout: Duration,
    /// Move a message to the DLQ when it would be received more than this many times.
    pub max_receives: u32,
}

impl Default for MemoryQueueConfig {
    fn default() -> Self {
        MemoryQueueConfig {
            capacity: 100_000,
            visibility_timeout: Duration::from_secs(30),
            max_receives: 5,
        }
    }
}

struct Entry {
    body: String,
    group: Option<String>,
    attributes: BTreeMap<String, String>,
    receive_count: u32,
    visible_at: Instant,
    receipt: Option<String>,
    sent_at_ms: i64,
}

#[derive(Default)]
struct State {
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
    receipts: HashMap<String, u64>,
    dedup: HashMap<String, Instant>,
}

pub struct MemoryQueue {
    name: String,
    cfg: MemoryQueueConfig,
    dlq: Option<Arc<MemoryQueue>>,
    state: Mutex<State>,
    changed: Notify,
}

impl MemoryQueue {
    pub fn new(
        name: impl Into<String>,
        cfg: MemoryQueueConfig,
        dlq: Option<Arc<MemoryQueue>>,
    ) -> Self {
        MemoryQueue {
            name: name.into(),
            cfg,
            dlq,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    /// Receives after which the queue redrives a message to its DLQ, if it has one.
    pub fn max_receives(&self) -> Option<u32> {
        self.dlq.as_ref().map(|_| self.cfg.max_receives)
    }

    /// Messages in the queue, visible or not.
    pub fn len(&self) -> usize {
        self.state.lock().expect("lock").entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages received and neither deleted nor timed out yet.
    pub fn in_flight(&self) -> usize {
        let now = Instant::now();
        self.state
            .lock()
            .expect("lock")
            .entries
            .values()
            .filter(|e| e.receipt.is_some() && e.visible_at > now)
            .count()
    }

    /// Bodies and attributes of every message, without receiving them (for DLQ inspection).
    pub fn peek_all(&self) -> Vec<(String, BTreeMap<String, String>)> {
        self.state
            .lock()
            .expect("lock")
            .entries
            .values()
            .map(|e| (e.body.clone(), e.attributes.clone()))
            .collect()
    }

    /// Takes receivable messages; `None` when there are none and the caller should wait until
    /// the returned instant (if any).
    fn take(&self, max: usize) -> (Vec<Received>, Vec<OutMessage>, Option<Instant>) {
        let now = Instant::now();
        let mut st = self.state.lock().expect("lock");
        let mut out = Vec::new();
        let mut to_dlq = Vec::new();
        let mut blocked: HashSet<String> = HashSet::new();
        let mut next_wake: Option<Instant> = None;
        let mut dead = Vec::new();
        let st = &mut *st;
        for (id, e) in st.entries.iter_mut() {
            if out.len() == max {
                break;
            }
            if let Some(g) = &e.group
                && blocked.contains(g)
            {
                continue;
            }
            if e.visible_at > now {
                next_wake = Some(next_wake.map_or(e.visible_at, |w| w.min(e.visible_at)));
                if let Some(g) = &e.group {
                    // A FIFO group waits behind its in-flight or delayed head.
                    blocked.insert(g.clone());
                }
                continue;
            }
            if e.receive_count >= self.cfg.max_receives && self.dlq.is_some() {
                dead.push(*id);
                continue;
            }
            if let Some(old) = e.receipt.take() {
                st.receipts.remove(&old);
            }
            e.receive_count += 1;
            e.visible_at = now + self.cfg.visibility_timeout;
            let receipt = format!("{}-{}-{}", self.name, id, e.receive_count);
            e.receipt = Some(receipt.clone());
            st.receipts.insert(receipt.clone(), *id);
            out.push(Received {
                message_id: format!("{}-{id}", self.name),
                receipt,
                body: e.body.clone(),
                receive_count: e.receive_count,
                attributes: e.attributes.clone(),
                sent_at_ms: Some(e.sent_at_ms),
            });
        }
        for id in dead {
            if let Some(e) = st.entries.remove(&id) {
                if let Some(r) = e.receipt {
                    st.receipts.remove(&r);
                }
                to_dlq.push(OutMessage {
                    body: e.body,
                    group_id: e.group,
                    attributes: e.attributes,
                    ..OutMessage::default()
                });
            }
        }
        (out, to_dlq, next_wake)
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, messages: Vec<OutMessage>) -> Result<(), QueueError> {
        let deadline = Instant::now() + SEND_WAIT;
        let mut pending = messages.into_iter().peekable();
        loop {
            {
                let now = Instant::now();
                let mut st = self.state.lock().expect("lock");
                st.dedup.retain(|_, t| *t > now);
                while st.entries.len() < self.cfg.capacity {
                    let Some(m) = pending.next() else { break };
                    if let Some(d) = &m.dedup_id {
                        if st.dedup.contains_key(d) {
                            continue;
                        }
                        st.dedup.insert(d.clone(), now + DEDUP_WINDOW);
                    }
                    let id = st.next_id;
                    st.next_id += 1;
                    st.entries.insert(
                        id,
                        Entry {
                            body: m.body,
                            group: m.group_id,
                            attributes: m.attributes,
                            receive_count: 0,
                            visible_at: now + m.delay,
                            receipt: None,
                            sent_at_ms: crate::upsert::now_ms(),
                        },
                    );
                }
            }
            self.changed.notify_waiters();
            if pending.peek().is_none() {
                break;
            }
            // Full: wait for a delete to make room. Register before re-checking, so a delete in
            // between is not missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.len() < self.cfg.capacity {
                continue;
            }
            if Instant::now() >= deadline {
                return Err(QueueError::Full(self.name.clone()));
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            let (got, to_dlq, next_wake) = self.take(max.max(1));
            if !to_dlq.is_empty()
                && let Some(dlq) = &self.dlq
            {
                dlq.send(to_dlq).await?;
                self.changed.notify_waiters();
            }
            if !got.is_empty() || Instant::now() >= deadline {
                return Ok(got);
            }
            let wake = next_wake.map_or(deadline, |w| w.min(deadline));
            let _ = tokio::time::timeout_at(wake, notified).await;
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let mut st = self.state.lock().expect("lock");
        // A stale receipt (the message timed out and was received again) deletes nothing, so a
        // slow consumer cannot delete work another consumer is doing.
        if let Some(id) = st.receipts.remove(receipt) {
            st.entries.remove(&id);
        }
        drop(st);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn release(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        let mut st = self.state.lock().expect("lock");
        if let Some(id) = st.receipts.get(receipt).copied()
            && let Some(e) = st.entries.get_mut(&id)
        {
            e.visible_at = Instant::now() + delay;
        }
        drop(st);
        self.changed.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(max_receives: u32, dlq: Option<Arc<MemoryQueue>>) -> MemoryQueue {
        MemoryQueue::new(
            "q",
            MemoryQueueConfig {
                capacity: 3,
                visibility_timeout: Duration::from_secs(30),
                max_receives,
            },
            dlq,
        )
    }

    fn msg(body: &str) -> OutMessage {
        OutMessage::new(body.into())
    }

    #[tokio::test(start_paused = true)]
    async fn unacknowledged_messages_come_back_and_then_go_to_the_dlq() {
        let dlq = Arc::new(q(100, None));
        let q = q(2, Some(dlq.clone()));
        q.send(vec![msg("a")]).await.unwrap();
        let r1 = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!((r1.len(), r1[0].receive_count), (1, 1));
        assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty());
        // Not deleted: visible again after the visibility timeout.
        let r2 = q.receive(10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(r2[0].receive_count, 2);
        // The stale receipt deletes nothing.
        q.delete(&r1[0].receipt).await.unwrap();
        assert_eq!(q.len(), 1);
        // Received twice already: the third attempt moves it to the DLQ.
        assert!(
            q.receive(10, Duration::from_secs(31))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!((q.len(), dlq.len()), (0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn delete_release_and_delay() {
        let q = q(5, None);
        let mut delayed = msg("later");
        delayed.delay = Duration::from_secs(10);
        q.send(vec![msg("now"), delayed]).await.unwrap();
        let r = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(
            r.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["now"]
        );
        q.release(&r[0].receipt, Duration::ZERO).await.unwrap();
        let r = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(r[0].body, "now");
        q.delete(&r[0].receipt).await.unwrap();
        let r = q.receive(10, Duration::from_secs(20)).await.unwrap();
        assert_eq!(r[0].body, "later");
    }

    #[tokio::test(start_paused = true)]
    async fn fifo_groups_and_deduplication() {
        let q = q(5, None);
        let g = |b: &str, grp: &str, d: &str| OutMessage {
            body: b.into(),
            group_id: Some(grp.into()),
            dedup_id: Some(d.into()),
            ..OutMessage::default()
        };
        q.send(vec![
            g("a1", "a", "1"),
            g("a1 again", "a", "1"),
            g("b1", "b", "2"),
        ])
        .await
        .unwrap();
        assert_eq!(q.len(), 2);
        q.send(vec![g("a2", "a", "3")]).await.unwrap();
        let first = q.receive(1, Duration::ZERO).await.unwrap();
        assert_eq!(first[0].body, "a1");
        // Group a is blocked behind a1 in flight; b is not.
        let next = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(
            next.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["b1"]
        );
        q.delete(&first[0].receipt).await.unwrap();
        let next = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(next[0].body, "a2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_after_waiting() {
        let q = q(5, None);
        q.send(vec![msg("1"), msg("2"), msg("3")]).await.unwrap();
        assert_eq!(
            q.send(vec![msg("4")]).await,
            Err(QueueError::Full("q".into()))
        );
        assert_eq!(q.len(), 3);
    }
}
