//! The pipeline wired to the embedded emulators, as `crm-sync demo` and the end-to-end tests run
//! it: the production Dataverse Web API client pointed at a Dataverse emulator, and the three
//! steps over in-process queues.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dataverse::{Secret, WebApiClient, WebApiConfig, WriteMode};
use dataverse_emulator::Emulator;
use mapping::identity::record_guid;
use mapping::{Entity, Mapper};
use pipeline::MemoryQueueConfig;
use pipeline::runner::{LocalPipeline, LocalQueues};
use pipeline::sources::Sources;
use pipeline::sync::{Crms, SyncSettings};
use pipeline::upsert::UpsertPolicy;
use serde_json::{Map, Value};

/// The production client, pointed at the emulator with its default credentials.
pub fn dataverse_client(dv: &Emulator) -> WebApiClient {
    WebApiClient::new(WebApiConfig {
        api_url: dv.api_url(),
        token_url: dv.token_url(),
        client_id: "client-1".into(),
        client_secret: Secret::new("secret-1"),
        client_certificate: None,
        scope: format!("{}/.default", dv.base_url()),
        mode: WriteMode::Auto,
        max_concurrency: 16,
        request_timeout: Duration::from_secs(10),
        max_attempts: 5,
        max_throttle_wait: Duration::from_secs(30),
    })
    .expect("emulator URLs are valid")
}

/// The three steps over in-process queues, writing to `dv`.
pub fn local_pipeline(
    sources: Sources,
    crms: Crms,
    dv: &Emulator,
    page_size: u32,
) -> LocalPipeline {
    LocalPipeline {
        sources: Arc::new(sources),
        crms,
        writer: Arc::new(dataverse_client(dv)),
        queues: LocalQueues::new(MemoryQueueConfig::default()),
        settings: SyncSettings {
            page_size,
            ..SyncSettings::default()
        },
        policy: UpsertPolicy {
            parent_retries: 5,
            parent_delay: Duration::from_millis(50),
            max_receives: None,
            ..UpsertPolicy::default()
        },
        batch_size: 10,
        recent: Default::default(),
        metrics: Default::default(),
        versions: Default::default(),
    }
}

/// A record the CRM has, as Dataverse should end up holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub entity: Entity,
    pub source_id: String,
    /// A contact's account (its CRM id), if it has one.
    pub parent: Option<String>,
}

/// Every live record of a Salesforce emulator and, for contacts, its account: what Dataverse
/// should hold after a sync.
pub fn salesforce_expected(sf: &crm_emulator::SalesforceEmulator) -> Vec<Expected> {
    let mut out = Vec::new();
    for (object, entity) in [("Account", Entity::Account), ("Contact", Entity::Contact)] {
        for id in sf.ids(object) {
            let parent = match entity {
                Entity::Contact => sf.record(&id).and_then(|r| parent_id(r.get("AccountId"))),
                Entity::Account => None,
            };
            out.push(Expected {
                entity,
                source_id: id,
                parent,
            });
        }
    }
    out
}

/// A parent reference as the CRM emulators hold it: a non-empty id string.
pub fn parent_id(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// How Dataverse's rows compare with what the CRM holds, record for record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    pub matched: usize,
    /// CRM records with no row.
    pub missing: Vec<String>,
    /// Rows of this source with no CRM record (deleted in the CRM, still in Dataverse).
    pub extra: Vec<String>,
    /// Contacts whose row points at another account (or none) than the CRM says.
    pub wrong_parent: Vec<String>,
}

impl Comparison {
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.wrong_parent.is_empty()
    }
}

/// Counts, and the first few records of each kind of difference.
impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} matched", self.matched)?;
        for (what, list) in [
            ("missing", &self.missing),
            ("extra", &self.extra),
            ("under the wrong account", &self.wrong_parent),
        ] {
            if !list.is_empty() {
                let first: Vec<&str> = list.iter().take(3).map(String::as_str).collect();
                write!(f, ", {} {what} (e.g. {})", list.len(), first.join(", "))?;
            }
        }
        Ok(())
    }
}

/// Compares the emulator's `account` and `contact` rows with what `mapper`'s source holds
/// (`expected`): each row must be at the record's deterministic id, and each contact under its
/// account's row; rows of other sources are left out.
pub fn compare(expected: &[Expected], dv: &Emulator, mapper: &Mapper) -> Comparison {
    let (source, passthrough) = (&mapper.source, mapper.guid_passthrough);
    let mut out = Comparison::default();
    for entity in Entity::ALL {
        let (table, key) = match entity {
            Entity::Account => ("account", "accountid"),
            Entity::Contact => ("contact", "contactid"),
        };
        let mut rows: HashMap<String, Map<String, Value>> = dv
            .rows(table)
            .into_iter()
            .filter_map(|r| Some((r.get(key)?.as_str()?.to_string(), r)))
            .collect();
        for e in expected.iter().filter(|e| e.entity == entity) {
            let guid = record_guid(source, entity, &e.source_id, passthrough).to_string();
            let Some(row) = rows.remove(&guid) else {
                out.missing.push(format!("{entity} {}", e.source_id));
                continue;
            };
            if entity == Entity::Contact {
                let want = e
                    .parent
                    .as_ref()
                    .map(|p| record_guid(source, Entity::Account, p, passthrough).to_string());
                let got = row
                    .get("_parentcustomerid_value")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if want != got {
                    out.wrong_parent.push(format!("contact {}", e.source_id));
                    continue;
                }
            }
            out.matched += 1;
        }
        // Rows of another source (another msdyn_source_crm) are not this source's extras.
        let ours = |r: &Map<String, Value>| {
            r.get("msdyn_source_crm_id").is_some()
                && r.get("msdyn_source_crm").and_then(Value::as_i64)
                    == Some(i64::from(mapper.crm_choice))
        };
        out.extra.extend(rows.into_values().filter_map(|r| {
            ours(&r).then(|| {
                format!(
                    "{entity} {}",
                    r["msdyn_source_crm_id"].as_str().unwrap_or("?")
                )
            })
        }));
    }
    out
}
