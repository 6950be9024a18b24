//! The newest version of each record that was written, so that a change which arrives after a
//! newer one is not written over it.
//!
//! Every CRM push channel is at-least-once and unordered: a webhook can be retried after the
//! next change to the same record was delivered, and an Apex job or outbound message can be
//! overtaken. FIFO groups keep a record's messages in the order they were *queued*, not the
//! order the CRM made the changes. So before a change that did not come from a sync page is
//! written, its source timestamp is recorded here as the record's newest version, and a change
//! older than the recorded one is superseded instead of written. A sync page's first delivery is
//! a snapshot whose window the catch-up pass closes; it is not checked (one conditional write
//! per record of an initial sync would cost more than it protects). A redelivered page is
//! checked: a webhook for one of its records may have been written between its deliveries, and
//! the page would write an older version over it.
//!
//! Equal timestamps are allowed: a redelivered message must still be written (its first attempt
//! may have failed after the version was recorded).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mapping::RecordKey;

#[async_trait]
pub trait Versions: Send + Sync {
    /// Records `modified_at` as `key`'s newest version unless a newer one is recorded; returns
    /// whether the change may be written (false: it is stale). An error is retryable.
    async fn advance(&self, key: &RecordKey, modified_at: DateTime<Utc>) -> Result<bool, String>;
}

/// The versions in this process's memory, bounded: for the demo, tests and `crm-sync serve`
/// with its state file (one process works the queues). Forgetting the oldest entries first
/// only forgets protection against very late duplicates.
pub struct MemoryVersions {
    capacity: usize,
    inner: Mutex<Seen>,
}

/// The newest version per record key, and the keys in the order they were first seen.
type Seen = (HashMap<String, DateTime<Utc>>, VecDeque<String>);

impl MemoryVersions {
    pub fn new(capacity: usize) -> Self {
        MemoryVersions {
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }
}

impl Default for MemoryVersions {
    fn default() -> Self {
        MemoryVersions::new(1_000_000)
    }
}

#[async_trait]
impl Versions for MemoryVersions {
    async fn advance(&self, key: &RecordKey, modified_at: DateTime<Utc>) -> Result<bool, String> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (seen, order) = &mut *g;
        let k = key.to_string();
        match seen.get_mut(&k) {
            Some(newest) if *newest > modified_at => return Ok(false),
            Some(newest) => *newest = modified_at,
            None => {
                seen.insert(k.clone(), modified_at);
                order.push_back(k);
                while order.len() > self.capacity {
                    if let Some(old) = order.pop_front() {
                        seen.remove(&old);
                    }
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapping::{Entity, SourceId};

    fn key(id: &str) -> RecordKey {
        RecordKey {
            source: SourceId::new("sf").unwrap(),
            entity: Entity::Contact,
            source_id: id.into(),
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[tokio::test]
    async fn older_versions_are_stale_equal_and_newer_are_not() {
        let v = MemoryVersions::new(2);
        assert!(v.advance(&key("a"), at(10)).await.unwrap());
        assert!(!v.advance(&key("a"), at(9)).await.unwrap(), "older");
        assert!(
            v.advance(&key("a"), at(10)).await.unwrap(),
            "the same again"
        );
        assert!(v.advance(&key("a"), at(11)).await.unwrap(), "newer");
        assert!(!v.advance(&key("a"), at(10)).await.unwrap());
        assert!(v.advance(&key("b"), at(1)).await.unwrap(), "another record");
        // Bounded: a third record forgets the oldest.
        assert!(v.advance(&key("c"), at(1)).await.unwrap());
        assert!(v.advance(&key("a"), at(1)).await.unwrap(), "forgotten");
    }
}
