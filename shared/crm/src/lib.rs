//! Reading CRMs. [`reader`] is the port every step that reads a CRM is written against: list a
//! page from a cursor or checkpoint, fetch records by id. [`memory`] is its in-memory adapter for
//! tests and the local runner's examples; the HTTP clients for each CRM implement the same trait.

pub mod generic;
pub mod http;
pub mod hubspot;
pub mod memory;
pub mod pipedrive;
pub mod reader;
pub mod salesforce;
pub mod salesforce_connect;
pub mod servicenow;
pub mod zendesk;

pub use memory::MemoryCrm;
pub use reader::{Checkpoint, CrmError, CrmReader, Fetched, FieldCheck, Page, PageRequest};
