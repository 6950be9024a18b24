//! The Dataverse writer port.

use std::time::Duration;

use async_trait::async_trait;
use mapping::DataverseOp;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    Created,
    Updated,
    /// An upsert Dataverse answered with 204: created or updated, it does not say which.
    Upserted,
    Deleted,
    /// A delete or deactivation of a row that does not exist: already the desired state.
    AlreadyAbsent,
}

/// Why an operation did not apply. Dataverse's error code and message are kept verbatim for the
/// DLQ; they name columns, never values.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WriteError {
    /// 429 from service protection limits.
    #[error("throttled by Dataverse; retry after {retry_after_ms} ms")]
    Throttled { retry_after_ms: u64 },
    /// 5xx, timeouts, dropped connections, deadlocks: the same request may succeed later.
    #[error("Dataverse is unavailable ({code}): {message}")]
    Retryable { code: String, message: String },
    /// The contact's parent account does not exist yet (404 0x80060891 / 0x80040217).
    #[error("parent account does not exist yet ({code}): {message}")]
    MissingParent { code: String, message: String },
    /// Validation (400), privileges (403) and the like: fails again until someone fixes it.
    #[error("Dataverse refused the write (HTTP {status}, {code}): {message}")]
    Permanent {
        status: u16,
        code: String,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Retryable,
    MissingParent,
    Permanent,
}

impl WriteError {
    pub fn kind(&self) -> FailureKind {
        match self {
            WriteError::Throttled { .. } | WriteError::Retryable { .. } => FailureKind::Retryable,
            WriteError::MissingParent { .. } => FailureKind::MissingParent,
            WriteError::Permanent { .. } => FailureKind::Permanent,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            WriteError::Throttled { retry_after_ms } => {
                Some(Duration::from_millis(*retry_after_ms))
            }
            _ => None,
        }
    }
}

/// Something that applies row operations to Dataverse.
#[async_trait]
pub trait DataverseWriter: Send + Sync {
    /// Applies `ops` and returns one result per operation, in the same order. Operations on
    /// different records may run concurrently; callers never pass two for the same record.
    /// Nothing new is started after `deadline`: unfinished operations come back retryable.
    async fn apply(
        &self,
        ops: &[DataverseOp],
        deadline: Option<tokio::time::Instant>,
    ) -> Vec<Result<Applied, WriteError>>;

    /// How long each HTTP request took since the last call, for the latency metric. Writers
    /// that make no requests have none.
    fn drain_latencies(&self) -> Vec<std::time::Duration> {
        Vec::new()
    }
}
