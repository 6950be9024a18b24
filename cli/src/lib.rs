//! The local runner behind the `crm-sync` command: the pipeline on one machine. `emulated` wires
//! it to the embedded emulators; `webhook_server` is the webhook endpoint; `demo` is the README's
//! main command; `progress` draws its progress bar.

pub mod demo;
pub mod emulated;
pub mod progress;
pub mod webhook_server;
