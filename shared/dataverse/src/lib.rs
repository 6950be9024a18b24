//! Writing Dataverse. [`writer`] is the port the upsert step is written against: apply a list of
//! row operations and say, per operation, what happened or why not, classified so the caller
//! knows whether to retry, park or give up. [`memory`] is its in-memory adapter; the Web API
//! client implements the same trait.

pub mod memory;
pub mod writer;

pub use memory::MemoryDataverse;
pub use writer::{Applied, DataverseWriter, FailureKind, WriteError};
