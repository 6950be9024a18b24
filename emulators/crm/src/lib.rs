//! CRM API emulators: HTTP servers that behave like the CRMs' documented APIs, with generated
//! data, so the CRM clients, the pipeline, the demo and benchmarks run without a real org.
//! [`salesforce`] is the first; [`servicenow`] and [`hubspot`] follow.

pub mod hubspot;
pub mod notify;
pub mod salesforce;
pub mod servicenow;

pub use hubspot::{HubSpotConfig, HubSpotEmulator};
pub use salesforce::{SalesforceConfig, SalesforceEmulator};
pub use servicenow::{ServiceNowConfig, ServiceNowEmulator};
