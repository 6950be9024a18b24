//! An in-memory CRM: records kept in (last modified, id) order, paged by keyset. It stands in for
//! a CRM in pipeline tests; `expire_cursors` makes every continuation token die, as Salesforce's
//! query locators do after a session refresh.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mapping::Entity;
use serde_json::Value;

use crate::reader::{Checkpoint, CrmError, CrmReader, Fetched, Page, PageRequest};

/// When a record was deleted, and its id.
type Deletion = (DateTime<Utc>, String);

#[derive(Default)]
pub struct MemoryCrm {
    // Per entity: (modified, id) → record; the key order is the walk order.
    records: Mutex<BTreeMap<Entity, BTreeMap<Checkpoint, Value>>>,
    // Per entity: (deleted at, id), as a CRM's recycle bin or delete audit keeps them.
    deleted: Mutex<BTreeMap<Entity, Vec<Deletion>>>,
    expire_cursors: AtomicBool,
    /// Requests served, for tests that count round trips.
    pub requests: AtomicU64,
}

impl MemoryCrm {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces a record.
    pub fn put(&self, entity: Entity, id: &str, modified_at: DateTime<Utc>, record: Value) {
        let mut all = self.records.lock().expect("lock");
        let table = all.entry(entity).or_default();
        table.retain(|k, _| k.id != id);
        table.insert(
            Checkpoint {
                modified_at,
                id: id.to_string(),
            },
            record,
        );
    }

    /// Deletes a record; [`CrmReader::list_deleted`] reports it from now on.
    pub fn remove(&self, entity: Entity, id: &str) {
        if let Some(t) = self.records.lock().expect("lock").get_mut(&entity) {
            let before = t.len();
            t.retain(|k, _| k.id != id);
            if t.len() < before {
                self.deleted
                    .lock()
                    .expect("lock")
                    .entry(entity)
                    .or_default()
                    .push((Utc::now(), id.to_string()));
            }
        }
    }

    pub fn len(&self, entity: Entity) -> usize {
        self.records
            .lock()
            .expect("lock")
            .get(&entity)
            .map_or(0, BTreeMap::len)
    }

    pub fn is_empty(&self) -> bool {
        Entity::ALL.iter().all(|e| self.len(*e) == 0)
    }

    /// From now on every cursor is refused with [`CrmError::CursorExpired`].
    pub fn expire_cursors(&self, on: bool) {
        self.expire_cursors.store(on, Ordering::SeqCst);
    }
}

fn encode_cursor(c: &Checkpoint) -> String {
    format!("{}|{}", c.modified_at.timestamp_micros(), c.id)
}

fn decode_cursor(s: &str) -> Option<Checkpoint> {
    let (t, id) = s.split_once('|')?;
    Some(Checkpoint {
        modified_at: DateTime::from_timestamp_micros(t.parse().ok()?)?,
        id: id.to_string(),
    })
}

#[async_trait]
impl CrmReader for MemoryCrm {
    async fn list_page(&self, entity: Entity, req: &PageRequest) -> Result<Page, CrmError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let after = match &req.cursor {
            Some(_) if self.expire_cursors.load(Ordering::SeqCst) => {
                return Err(CrmError::CursorExpired);
            }
            Some(c) => Some(
                decode_cursor(c).ok_or_else(|| CrmError::Permanent("malformed cursor".into()))?,
            ),
            None => req.checkpoint.clone(),
        };
        let all = self.records.lock().expect("lock");
        let empty = BTreeMap::new();
        let table = all.get(&entity).unwrap_or(&empty);
        let size = req.page_size.max(1) as usize;
        let eligible = |k: &&Checkpoint| req.modified_since.is_none_or(|s| k.modified_at >= s);
        let mut iter: Box<dyn Iterator<Item = (&Checkpoint, &Value)>> = match &after {
            Some(a) => Box::new(table.range(a.clone()..).filter(move |(k, _)| *k != a)),
            None => Box::new(table.iter()),
        };
        let mut records = Vec::with_capacity(size);
        let mut last = None;
        for (k, v) in iter.by_ref().filter(|(k, _)| eligible(k)) {
            records.push(v.clone());
            last = Some(k.clone());
            if records.len() == size {
                break;
            }
        }
        let more = iter.any(|(k, _)| eligible(&k));
        Ok(Page {
            records,
            cursor: if more {
                last.as_ref().map(encode_cursor)
            } else {
                None
            },
            checkpoint: last.or_else(|| after.clone()),
            more,
            total: Some(table.keys().filter(|k| eligible(k)).count() as u64),
        })
    }

    async fn fetch_by_ids(&self, entity: Entity, ids: &[String]) -> Result<Fetched, CrmError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let all = self.records.lock().expect("lock");
        let mut out = Fetched::default();
        for id in ids {
            match all
                .get(&entity)
                .and_then(|t| t.iter().find(|(k, _)| &k.id == id))
            {
                Some((_, v)) => out.records.push(v.clone()),
                None => out.missing.push(id.clone()),
            }
        }
        Ok(out)
    }

    async fn list_deleted(
        &self,
        entity: Entity,
        since: DateTime<Utc>,
    ) -> Result<Option<Vec<String>>, CrmError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let deleted = self.deleted.lock().expect("lock");
        Ok(Some(
            deleted
                .get(&entity)
                .into_iter()
                .flatten()
                .filter(|(at, _)| *at >= since)
                .map(|(_, id)| id.clone())
                .collect(),
        ))
    }
}
