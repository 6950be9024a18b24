//! The three steps of crm-sync as plain async functions over ports, and the queue messages that
//! chain them. No Lambda, no AWS SDK: the function binaries and the local runner adapt these.
//!
//! Reading order: [`message`] (what travels on the queues), [`queue`] (the queue port) and
//! [`memory_queue`] (its in-process adapter), [`sources`] (compiled configuration), then the
//! steps: [`webhook`], [`sync`], [`upsert`]; [`runner`] drives them in one process;
//! [`reconcile`] compares a CRM record with its Dataverse row.

pub mod config;
pub mod connection;
pub mod ledger;
pub mod memory_queue;
pub mod message;
pub mod metrics;
pub mod queue;
pub mod recent;
pub mod reconcile;
pub mod runner;
pub mod sources;
pub mod sync;
pub mod upsert;
pub mod versions;
pub mod webhook;

pub use memory_queue::{MemoryQueue, MemoryQueueConfig};
pub use metrics::{Dims, Metric, Metrics};
pub use queue::{OutMessage, Queue, QueueError, Received};
pub use sources::Sources;
