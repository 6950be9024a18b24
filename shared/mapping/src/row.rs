//! Dataverse row building: from a [`Change`] to the Web API request that applies it.
//!
//! The result is plain data (method, path, headers, body), so the Dataverse client can send it as
//! a single request, a `$batch` part or a bulk-message target, and `crm-sync map` can print it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::columns::{self, dataverse_len};
use crate::error::KeyError;
use crate::identity::{IdentityStrategy, entity_path};
use crate::model::{Change, DeletePolicy, Entity, Operation, Parent, SourceId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Patch,
    Delete,
}

/// One Web API request, relative to `.../api/data/v9.2/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataverseOp {
    pub method: Method,
    /// Entity set and key, e.g. `accounts(0f8f...)`, percent-encoded.
    pub path: String,
    /// `If-Match: *` makes a PATCH update-only (used to deactivate: a missing row stays missing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub if_match_any: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Map<String, Value>>,
}

/// What row building needs to know about the source and the target environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowContext {
    pub source: SourceId,
    pub crm_choice: i32,
    pub guid_passthrough: bool,
    pub delete_policy: DeletePolicy,
    pub identity: IdentityStrategy,
}

impl RowContext {
    /// The key path of any record of this source.
    pub fn path(&self, entity: Entity, source_id: &str) -> Result<String, KeyError> {
        entity_path(
            self.identity,
            &self.source,
            self.crm_choice,
            self.guid_passthrough,
            entity,
            source_id,
        )
    }
}

/// Builds the request for a change; `None` when the source's delete policy is `ignore`.
pub fn build(change: &Change, ctx: &RowContext) -> Result<Option<DataverseOp>, KeyError> {
    build_owned(change.clone(), ctx)
}

/// [`build`], consuming the change so its column values move into the body uncopied.
pub fn build_owned(change: Change, ctx: &RowContext) -> Result<Option<DataverseOp>, KeyError> {
    let path = ctx.path(change.entity, &change.source_id)?;
    let mut body = match change.op {
        Operation::Delete => {
            return Ok(match ctx.delete_policy {
                DeletePolicy::Ignore => None,
                DeletePolicy::Delete => Some(DataverseOp {
                    method: Method::Delete,
                    path,
                    if_match_any: false,
                    body: None,
                }),
                // statecode 1 = Inactive, statuscode 2 = Inactive (account and contact).
                DeletePolicy::Deactivate => Some(DataverseOp {
                    method: Method::Patch,
                    path,
                    if_match_any: true,
                    body: Some(
                        json!({"statecode": 1, "statuscode": 2})
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                    ),
                }),
            });
        }
        Operation::Upsert { fields } => fields,
    };
    if ctx.identity == IdentityStrategy::DeterministicId {
        // Under alternate-key the key columns are in the URL and must stay out of the body:
        // UpsertMultiple rejects them there on create (0x80040216).
        body.insert("msdyn_source_crm".into(), json!(ctx.crm_choice));
        body.insert("msdyn_source_crm_id".into(), json!(change.source_id));
    }
    if let Some(url) = &change.record_url {
        let max = columns::column(change.entity, "msdyn_source_crm_url")
            .and_then(|c| c.ty.max_length())
            .unwrap_or(500) as usize;
        if dataverse_len(url) <= max {
            body.insert("msdyn_source_crm_url".into(), json!(url));
        }
    }
    if change.entity == Entity::Contact {
        match &change.parent {
            Parent::Unchanged => {}
            Parent::None => {
                body.insert("parentcustomerid_account@odata.bind".into(), Value::Null);
            }
            Parent::Account(id) => {
                let target = ctx.path(Entity::Account, id)?;
                body.insert(
                    "parentcustomerid_account@odata.bind".into(),
                    json!(format!("/{target}")),
                );
            }
        }
    }
    Ok(Some(DataverseOp {
        method: Method::Patch,
        path,
        if_match_any: false,
        body: Some(body),
    }))
}
