//! The canonical model every CRM is mapped into, and that every queue message carries.
//!
//! A [`Change`] is what one CRM notification or one listed record means for Dataverse, after
//! mapping: which record (source, entity, source id), what to do (upsert these column values, or
//! delete), how new it is, and its parent account. It is deliberately independent of how the
//! Dataverse row is keyed: the identity strategy is applied when the row is built ([`crate::row`]),
//! so a queue full of changes survives a change of strategy.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ConfigError;

/// Which CRM product a source is. It picks the built-in mapping profile, the record URL template
/// and the notification formats the source may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrmKind {
    Salesforce,
    Servicenow,
    Hubspot,
    Zendesk,
    Pipedrive,
    Generic,
}

impl CrmKind {
    pub const ALL: [CrmKind; 6] = [
        CrmKind::Salesforce,
        CrmKind::Servicenow,
        CrmKind::Hubspot,
        CrmKind::Zendesk,
        CrmKind::Pipedrive,
        CrmKind::Generic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CrmKind::Salesforce => "salesforce",
            CrmKind::Servicenow => "servicenow",
            CrmKind::Hubspot => "hubspot",
            CrmKind::Zendesk => "zendesk",
            CrmKind::Pipedrive => "pipedrive",
            CrmKind::Generic => "generic",
        }
    }

    /// The `msdyn_source_crm` value Microsoft's own connector flows write, where it is documented
    /// (ServiceNow = 2, Zendesk = 3). Every other kind must be configured: the option set is
    /// per environment and guessing would file records under the wrong CRM.
    pub fn documented_choice(self) -> Option<i32> {
        match self {
            CrmKind::Servicenow => Some(2),
            CrmKind::Zendesk => Some(3),
            _ => None,
        }
    }
}

impl fmt::Display for CrmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CrmKind {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CrmKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ConfigError::new("kind", format!("unknown CRM kind `{s}`; expected one of salesforce, servicenow, hubspot, zendesk, pipedrive, generic")))
    }
}

/// The two Dataverse tables crm-sync writes. `Account < Contact`, so sorting puts accounts first,
/// which is the order lookups need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Entity {
    Account,
    Contact,
}

impl Entity {
    pub const ALL: [Entity; 2] = [Entity::Account, Entity::Contact];

    /// Table logical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Account => "account",
            Entity::Contact => "contact",
        }
    }

    /// Web API entity set name.
    pub fn entity_set(self) -> &'static str {
        match self {
            Entity::Account => "accounts",
            Entity::Contact => "contacts",
        }
    }

    /// Primary key column.
    pub fn primary_key(self) -> &'static str {
        match self {
            Entity::Account => "accountid",
            Entity::Contact => "contactid",
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Entity {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "account" => Ok(Entity::Account),
            "contact" => Ok(Entity::Contact),
            other => Err(ConfigError::new(
                "entity",
                format!("unknown entity `{other}`; expected account or contact"),
            )),
        }
    }
}

/// A configured source's id, such as `salesforce-prod`. It is part of every record's identity and
/// of queue group ids, so it is restricted to characters that need no escaping anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceId(String);

impl SourceId {
    pub fn new(s: impl Into<String>) -> Result<Self, ConfigError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(SourceId(s))
        } else {
            Err(ConfigError::new(
                "sources.id",
                format!(
                    "`{s}` is not a valid source id: use 1 to 64 characters a-z, 0-9, '-' or '_', starting with a letter or digit"
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SourceId {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        SourceId::new(s)
    }
}

impl From<SourceId> for String {
    fn from(s: SourceId) -> String {
        s.0
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What to do in Dataverse when a record is deleted in the CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeletePolicy {
    /// Hard delete the row (the default; what Microsoft's flows do).
    #[default]
    Delete,
    /// Set `statecode` 1 (Inactive): keeps history attached to the customer.
    Deactivate,
    /// Leave Dataverse untouched.
    Ignore,
}

/// One record's identity across the whole pipeline: dedupe key and FIFO group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordKey {
    pub source: SourceId,
    pub entity: Entity,
    pub source_id: String,
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.source, self.entity, self.source_id)
    }
}

/// What a change does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Operation {
    /// Create or update with these Dataverse column values (already mapped, transformed and
    /// typed). A column that is absent is left untouched; a `null` clears it.
    Upsert {
        fields: Map<String, Value>,
    },
    Delete,
}

/// A contact's parent account, as the CRM record states it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parent {
    /// The record did not say (an account, or a partial record): leave the lookup alone.
    #[default]
    Unchanged,
    /// The record says it has no account: clear the lookup.
    None,
    /// The parent account's source id (same source).
    Account(String),
}

impl Parent {
    pub fn is_unchanged(&self) -> bool {
        matches!(self, Parent::Unchanged)
    }
}

/// One CRM record change, mapped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ChangeWire")]
pub struct Change {
    pub source: SourceId,
    pub entity: Entity,
    pub source_id: String,
    #[serde(flatten)]
    pub op: Operation,
    /// The CRM's last-modified time when known; newest wins when one record appears twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Parent::is_unchanged")]
    pub parent: Parent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_url: Option<String>,
}

/// [`Change`] as it is read: the same fields, with the operation's tag and fields side by side.
/// Deriving `Deserialize` through `#[serde(flatten)]` buffered every change (its whole field
/// map) and read it twice: a third of the upsert step's decoding time.
#[derive(Deserialize)]
struct ChangeWire {
    source: SourceId,
    entity: Entity,
    source_id: String,
    op: OperationKind,
    #[serde(default)]
    fields: Option<Map<String, Value>>,
    #[serde(default)]
    modified_at: Option<DateTime<Utc>>,
    #[serde(default)]
    parent: Parent,
    #[serde(default)]
    record_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum OperationKind {
    Upsert,
    Delete,
}

impl TryFrom<ChangeWire> for Change {
    type Error = &'static str;

    fn try_from(w: ChangeWire) -> Result<Self, Self::Error> {
        let op = match (w.op, w.fields) {
            (OperationKind::Upsert, Some(fields)) => Operation::Upsert { fields },
            (OperationKind::Upsert, None) => return Err("missing field `fields`"),
            (OperationKind::Delete, _) => Operation::Delete,
        };
        Ok(Change {
            source: w.source,
            entity: w.entity,
            source_id: w.source_id,
            op,
            modified_at: w.modified_at,
            parent: w.parent,
            record_url: w.record_url,
        })
    }
}

impl Change {
    pub fn key(&self) -> RecordKey {
        RecordKey {
            source: self.source.clone(),
            entity: self.entity,
            source_id: self.source_id.clone(),
        }
    }

    pub fn is_delete(&self) -> bool {
        matches!(self.op, Operation::Delete)
    }
}

/// A notification that names records without carrying their state (HubSpot events, Salesforce
/// gap events, partial updates): the records must be fetched from the CRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchHint {
    pub source: SourceId,
    pub entity: Entity,
    pub ids: Vec<String>,
    /// Why a fetch is needed, e.g. `hubspot contact.propertyChange`.
    pub reason: String,
}

/// What a CRM payload means: either changes to apply or records to fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Notice {
    Change(Change),
    Fetch(FetchHint),
}
