//! CRM API emulators: HTTP servers that behave like the CRMs' documented APIs, with generated
//! data, so the CRM clients, the pipeline, the demo and benchmarks run without a real org.
//! [`salesforce`] is the first.

pub mod pipedrive;
pub mod salesforce;
pub mod servicenow;
pub mod zendesk;

pub use pipedrive::{PipedriveConfig, PipedriveEmulator};
pub use salesforce::{SalesforceConfig, SalesforceEmulator};
pub use servicenow::{ServiceNowConfig, ServiceNowEmulator};
pub use zendesk::{ZendeskConfig, ZendeskEmulator};
