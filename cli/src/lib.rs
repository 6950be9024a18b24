//! The local runner behind the `crm-sync` command: the pipeline on one machine. `emulated` wires
//! it to the embedded emulators; `webhook_server` is the webhook endpoint; `demo` is the README's
//! main command; `progress` draws its progress bar; `serve` runs the steps over the state file's
//! queues (`durable_queue`, `jobs`) or a deployed stack's (`stack`); `check` proves a deployment
//! will work (verdicts in `preflight`); `connect` provisions a source's least-privilege
//! connection; `reconcile` compares a CRM with Dataverse and queues the
//! fixes; `dlq` and `dlq_cmd` inspect and replay the dead-letter queues.

pub mod check;
pub mod connect;
pub mod demo;
pub mod dlq;
pub mod dlq_cmd;
pub mod durable_queue;
pub mod emulated;
pub mod jobs;
pub mod preflight;
pub mod progress;
pub mod reconcile;
pub mod serve;
pub mod stack;
pub mod sync_cmd;
pub mod webhook_server;
