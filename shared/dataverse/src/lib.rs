//! Writing Dataverse. [`writer`] is the port the upsert step is written against: apply a list of
//! row operations and say, per operation, what happened or why not, classified so the caller
//! knows whether to retry, park or give up. [`memory`] is its in-memory adapter; [`client`] is
//! the Web API client, built from [`auth`] (Entra ID tokens), [`batch`] (`$batch` bodies),
//! [`classify`] (responses → outcomes) and [`limiter`] (adaptive concurrency). [`read`] pages
//! through a table; [`preflight`] probes an environment, [`provision`] creates crm-sync's
//! least-privilege role and alternate key in it.

pub mod auth;
pub mod batch;
pub mod classify;
pub mod client;
pub mod limiter;
pub mod memory;
pub mod preflight;
pub mod provision;
pub mod read;
pub mod secret;
pub mod writer;

pub use client::{WebApiClient, WebApiConfig, WriteMode};
pub use memory::MemoryDataverse;
pub use secret::Secret;
pub use writer::{Applied, DataverseWriter, FailureKind, WriteError};
