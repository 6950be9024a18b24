//! The CRM reader port.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mapping::Entity;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// A restartable position in a walk ordered by (last modified, id): the last record already
/// read. Unlike a CRM's cursor (Salesforce `nextRecordsUrl`, HubSpot `after`), it never expires,
/// so a walk whose cursor died resumes here instead of from zero.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Checkpoint {
    pub modified_at: DateTime<Utc>,
    pub id: String,
}

/// Where the next page starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageRequest {
    /// The CRM's own continuation token from the previous page, if any.
    pub cursor: Option<String>,
    /// Used when there is no cursor, or the cursor is dead.
    pub checkpoint: Option<Checkpoint>,
    /// Only records modified at or after this time (the catch-up pass).
    pub modified_since: Option<DateTime<Utc>>,
    pub page_size: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Raw CRM records, in the CRM's own JSON shape (mapping reads them).
    pub records: Vec<Value>,
    /// The CRM's continuation token; `None` with `more == false` ends the walk.
    pub cursor: Option<String>,
    /// The position after this page's last record.
    pub checkpoint: Option<Checkpoint>,
    /// Whether more records follow. A short or empty page with a cursor is not the end.
    pub more: bool,
    /// Total records in the walk, when the CRM says (progress only).
    pub total: Option<u64>,
}

/// Records fetched by id. Ids the CRM does not return are `missing`: deleted, or never existed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fetched {
    pub records: Vec<Value>,
    pub missing: Vec<String>,
}

impl Fetched {
    /// What the CRM returned, in the order the ids were asked for; an id it did not return is
    /// missing.
    pub fn in_order(ids: &[String], found: &std::collections::HashMap<String, Value>) -> Fetched {
        let mut out = Fetched::default();
        for id in ids {
            match found.get(id.as_str()) {
                Some(r) => out.records.push(r.clone()),
                None => out.missing.push(id.clone()),
            }
        }
        out
    }
}

/// What a preflight probe found out about the fields a mapping reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldCheck {
    /// Fields the CRM does not show this user: not defined, or hidden from it.
    pub unreadable: Vec<String>,
    /// Whether the CRM's own description of the object says so (a field list); otherwise the
    /// verdict comes from a sample record, which may omit an empty field or be absent.
    pub authoritative: bool,
    /// A sample record was found (only meaningful when not authoritative).
    pub sampled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CrmError {
    /// Rate limited: wait, then retry.
    #[error("rate limited by the CRM; retry after {0:?}")]
    RateLimited(Duration),
    /// The continuation token is no longer valid; restart from the checkpoint.
    #[error("the CRM's cursor expired")]
    CursorExpired,
    /// Network or server trouble: retry.
    #[error("CRM unavailable: {0}")]
    Unavailable(String),
    /// Credentials or permissions: retrying will not help until someone fixes them.
    #[error("CRM refused access: {0}")]
    Access(String),
    /// Anything else that will fail the same way again.
    #[error("CRM request failed: {0}")]
    Permanent(String),
}

impl CrmError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CrmError::RateLimited(_) | CrmError::Unavailable(_) | CrmError::CursorExpired
        )
    }
}

/// A CRM we can read.
#[async_trait]
pub trait CrmReader: Send + Sync {
    /// One page of an entity, in (last modified, id) order.
    async fn list_page(&self, entity: Entity, req: &PageRequest) -> Result<Page, CrmError>;

    /// The current state of records by id.
    async fn fetch_by_ids(&self, entity: Entity, ids: &[String]) -> Result<Fetched, CrmError>;

    /// Ids of records deleted at or after `since`, for the catch-up pass: a record read by the
    /// snapshot and deleted before the walk ended would otherwise stay in Dataverse until a
    /// webhook says so. `None`: this CRM offers no such list (webhooks carry deletions alone).
    /// The CRM's retention bounds what it can answer (Salesforce keeps deletions 15 days,
    /// `getDeleted` says so with `INVALID_REPLICATION_DATE`); an answer it cannot give is an
    /// error, never a silently short list.
    async fn list_deleted(
        &self,
        _entity: Entity,
        _since: DateTime<Utc>,
    ) -> Result<Option<Vec<String>>, CrmError> {
        Ok(None)
    }

    /// Preflight: the CRM is reachable with these credentials, and which of `fields` (the
    /// mapping's fields of `entity`) this user cannot read. The default reads one record and
    /// looks for the fields in it, which CRMs describing their objects do better.
    async fn check(&self, entity: Entity, fields: &[String]) -> Result<FieldCheck, CrmError> {
        sample_check(self, entity, fields).await
    }
}

/// Reads one record of `entity` and reports which of `fields` it lacks (not authoritative: a
/// CRM may leave an empty field out).
pub async fn sample_check<R: CrmReader + ?Sized>(
    reader: &R,
    entity: Entity,
    fields: &[String],
) -> Result<FieldCheck, CrmError> {
    let page = reader
        .list_page(
            entity,
            &PageRequest {
                page_size: 1,
                ..PageRequest::default()
            },
        )
        .await?;
    let Some(Value::Object(sample)) = page.records.first() else {
        return Ok(FieldCheck::default());
    };
    Ok(FieldCheck {
        unreadable: fields
            .iter()
            .filter(|f| !sample.contains_key(f.as_str()))
            .cloned()
            .collect(),
        authoritative: false,
        sampled: true,
    })
}
