//! The local runner behind the `crm-sync` command: the pipeline on one machine. `emulated` wires
//! it to the embedded emulators; `webhook_server` is the webhook endpoint; `demo` is the README's
//! main command; `reconcile` compares a CRM with Dataverse and queues the fixes; `progress` draws its progress bar.

pub mod demo;
pub mod durable_queue;
pub mod emulated;
pub mod jobs;
pub mod progress;
pub mod reconcile;
pub mod serve;
pub mod sync_cmd;
pub mod webhook_server;
