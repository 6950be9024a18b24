//! The local runner behind the `crm-sync` command: the pipeline on one machine. `emulated` wires
//! it to the embedded emulators; `webhook_server` is the webhook endpoint; `demo` is the README's
//! main command; `progress` draws its progress bar; `dlq`
//! and `dlq_cmd` inspect and replay the dead-letter queues.

pub mod demo;
pub mod dlq;
pub mod dlq_cmd;
pub mod durable_queue;
pub mod emulated;
pub mod jobs;
pub mod progress;
pub mod serve;
pub mod sync_cmd;
pub mod webhook_server;
