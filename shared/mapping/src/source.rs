//! A configured source: one CRM instance crm-sync reads from, and what mapping needs to know
//! about it. The `webhook` and `connection` sections belong to the crates that use them and are
//! carried here unread, so the whole `[[sources]]` table is parsed strictly in one pass (an
//! unknown key is an error with its line).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{CrmKind, DeletePolicy, SourceId};
use crate::profile::ProfileOverrides;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique id, e.g. `salesforce-prod`; part of every record's identity: never rename it.
    pub id: SourceId,
    pub kind: CrmKind,
    /// The integer written to `msdyn_source_crm`. Documented defaults exist for ServiceNow (2)
    /// and Zendesk (3); every other kind must set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_choice: Option<i32>,
    /// The instance's base URL, e.g. `https://acme.my.salesforce.com`.
    pub base_url: String,
    /// Extra values for record URL templates, e.g. HubSpot's `portal_id`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// Country calling code for phone numbers written without one, e.g. `"1"` or `"44"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_country: Option<String>,
    /// Use a source id that already is a GUID as the Dataverse primary key (default: true for
    /// ServiceNow, whose `sys_id` Microsoft's flows use that way; false elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid_passthrough: Option<bool>,
    #[serde(default)]
    pub delete_policy: DeletePolicy,
    /// Overrides of the kind's built-in mapping profile.
    #[serde(default)]
    pub mapping: ProfileOverrides,
    /// How the source's webhooks are verified (read by the pipeline; opaque here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<serde_json::Value>,
    /// How the CRM's API is read (read by the pipeline; opaque here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<serde_json::Value>,
}

impl SourceConfig {
    /// A minimal configuration of a kind, for previews and tests.
    pub fn new(id: SourceId, kind: CrmKind, base_url: impl Into<String>) -> Self {
        SourceConfig {
            id,
            kind,
            crm_choice: kind.documented_choice(),
            base_url: base_url.into(),
            vars: BTreeMap::new(),
            phone_country: None,
            guid_passthrough: None,
            delete_policy: DeletePolicy::default(),
            mapping: ProfileOverrides::default(),
            webhook: None,
            connection: None,
        }
    }
}
