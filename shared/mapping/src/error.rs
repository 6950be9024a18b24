//! Errors of the mapping crate. Every error names the field, column or configuration key at
//! fault and never echoes a record's values (they are personal data, and errors end up in logs
//! and DLQ entries).

use thiserror::Error;

use crate::model::Entity;

/// A configuration or mapping-profile problem, found when the configuration is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("config `{key}`: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `sources[0].mapping.account.columns.name`.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Prefixes the key with its parent, so nested validation reports the full path.
    pub fn within(mut self, parent: &str) -> Self {
        self.key = if self.key.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.key)
        };
        self
    }
}

/// Why one record could not be mapped. Permanent: the same input always fails the same way.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MapError {
    #[error("{entity} record is not a JSON object")]
    NotAnObject { entity: Entity },
    #[error("{entity} record has no id at {paths}")]
    MissingId { entity: Entity, paths: String },
    #[error("{entity} {id}: id is not valid: {reason}")]
    InvalidId {
        entity: Entity,
        id: String,
        reason: String,
    },
    #[error("{entity} {id}: required column `{column}` has no value (mapped from {from})")]
    MissingRequired {
        entity: Entity,
        id: String,
        column: String,
        from: String,
    },
    #[error("{entity} {id}: column `{column}` (from {from}): {reason}")]
    InvalidValue {
        entity: Entity,
        id: String,
        column: String,
        from: String,
        reason: String,
    },
}

/// Why a payload (a page, a record or a notification body) could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PayloadError {
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("unrecognised {kind} payload: {reason}")]
    Unrecognised { kind: String, reason: String },
    #[error("{0}")]
    Entity(String),
    #[error("field `{field}`: {reason}")]
    Field { field: String, reason: String },
}

/// Why a Dataverse key or row could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("source id is empty")]
    Empty,
    #[error(
        "source id contains `{0}`, which Dataverse cannot take in an alternate key value; use the deterministic-id identity strategy for this source"
    )]
    ForbiddenChar(char),
    #[error("source id is {0} characters long; an alternate key value may be at most {1}")]
    TooLong(usize, usize),
}
