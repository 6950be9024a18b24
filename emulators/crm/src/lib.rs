//! CRM API emulators: HTTP servers that behave like the CRMs' documented APIs, with generated
//! data, so the CRM clients, the pipeline, the demo and benchmarks run without a real org:
//! Salesforce, ServiceNow, HubSpot, Zendesk and Pipedrive. `notify` posts the change
//! notifications our CRM-side scripts send.

pub mod hubspot;
pub mod notify;
pub mod pipedrive;
pub mod salesforce;
mod server;
pub mod servicenow;
pub mod zendesk;

pub use hubspot::{HubSpotConfig, HubSpotEmulator};
pub use pipedrive::{PipedriveConfig, PipedriveEmulator};
pub use salesforce::{QueryFaults, SalesforceConfig, SalesforceEmulator};
pub use servicenow::{ServiceNowConfig, ServiceNowEmulator};
pub use zendesk::{ZendeskConfig, ZendeskEmulator};
