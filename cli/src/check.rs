//! `crm-sync check`: before the first sync, probe the configured Dataverse environment and CRMs
//! and say, one line per check, whether the deployment will work. This module only runs the
//! probes (`dataverse::preflight`, `CrmReader::check`, secret resolution); [`crate::preflight`]
//! judges what they found.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use dataverse::WebApiClient;
use dataverse::preflight::{self as probe, AttributeKind};
use mapping::columns::ColumnType;
use mapping::{Entity, IdentityStrategy, Mapper};
use pipeline::config::{Config, WebhookConfig};
use pipeline::connection::ConnectionConfig;
use pipeline::webhook::WebhookAuth;

use crate::preflight::{self as verdict, Line};

/// Runs every check of the configuration at `path`. An unreadable or invalid file is an error
/// (nothing can be checked); everything else is a line.
pub async fn run(path: &Path) -> anyhow::Result<Vec<Line>> {
    let cfg = Config::load(path)?;
    let sources = cfg.mappers()?;
    let mappers: Vec<&Mapper> = cfg
        .sources
        .iter()
        .filter_map(|s| sources.get(&s.id))
        .collect();
    let mut lines = dataverse_checks(&cfg, &mappers).await;
    let provisioned = crate::connect::load_state(path).unwrap_or_default();
    for (i, (source, mapper)) in cfg.sources.iter().zip(&mappers).enumerate() {
        let id = source.id.as_str();
        match &source.connection {
            None => lines.push(verdict::no_connection(id)),
            Some(v) => {
                let mut found = crm_checks(i, source, v, mapper).await;
                if source.kind == mapping::CrmKind::Salesforce {
                    // The connection `crm-sync connect` made: its permission set is what a
                    // reconnect brings up to the mappings.
                    let state = provisioned.salesforce.get(id);
                    for l in found
                        .iter_mut()
                        .filter(|l| l.status == verdict::Status::Fail)
                    {
                        if l.check.ends_with(" fields") && state.is_some() {
                            l.fix = Some(format!(
                                "crm-sync connect salesforce --reconnect --config {} (grants the fields the mappings read now)",
                                path.display()
                            ));
                        }
                    }
                    found.push(verdict::salesforce_connection(id, state, path));
                }
                lines.extend(found);
            }
        }
        let hook = source.webhook.as_ref().map(|v| webhook_secrets(i, v));
        lines.push(verdict::webhook(id, hook.as_ref()));
    }
    Ok(lines)
}

/// A Web API client for probing: the configured one, with fewer attempts (a person is waiting).
fn probe_client(cfg: &Config) -> Result<WebApiClient, String> {
    let mut web = cfg.dataverse.web_api_config().map_err(|e| e.to_string())?;
    web.max_attempts = 2;
    web.request_timeout = Duration::from_secs(30);
    web.max_throttle_wait = Duration::from_secs(30);
    WebApiClient::new(web).map_err(|e| e.to_string())
}

async fn dataverse_checks(cfg: &Config, mappers: &[&Mapper]) -> Vec<Line> {
    let client = match probe_client(cfg) {
        Ok(c) => c,
        Err(e) => {
            return vec![Line::fail(
                "dataverse connection",
                e,
                "set [dataverse] url, tenant, client_id and client_secret (a reference: env:NAME or file:/path)",
            )];
        }
    };
    let identity = probe::who_am_i(&client).await;
    let mut lines = vec![verdict::connection(&identity)];
    let Ok(identity) = identity else {
        return lines;
    };
    let wanted: Vec<(String, i32)> = mappers
        .iter()
        .map(|m| (m.source.to_string(), m.crm_choice))
        .collect();
    for entity in Entity::ALL {
        let table = entity.as_str();
        let required = verdict::required_columns(mappers, entity);
        let mut found = BTreeMap::new();
        for (name, ty) in &required {
            let kind = match ty {
                ColumnType::Text { .. } => AttributeKind::String,
                ColumnType::Memo { .. } => AttributeKind::Memo,
                _ => AttributeKind::Other,
            };
            found.insert(
                name.clone(),
                probe::attribute(&client, table, name, kind).await,
            );
        }
        lines.extend(verdict::columns_of(entity, &required, &found));
        let choices = probe::choice_values(&client, table, "msdyn_source_crm").await;
        lines.push(verdict::choices_of(entity, &wanted, &choices));
        if cfg.dataverse.identity == IdentityStrategy::AlternateKey {
            let keys = probe::keys(&client, table).await;
            lines.push(verdict::alternate_key(entity, &keys));
        }
    }
    let privileges = probe::user_privileges(&client, &identity.user_id).await;
    lines.push(verdict::privileges(
        &verdict::required_privileges(mappers),
        &privileges,
    ));
    lines
}

async fn crm_checks(
    i: usize,
    source: &mapping::SourceConfig,
    section: &serde_json::Value,
    mapper: &Mapper,
) -> Vec<Line> {
    let id = source.id.as_str();
    let check = format!("source {id}: CRM access");
    let key = format!("sources[{i}].connection");
    let reader = serde_json::from_value::<ConnectionConfig>(section.clone())
        .map_err(|e| mapping::ConfigError::new(&key, e.to_string()))
        .and_then(|c| c.reader(source, mapper).map_err(|e| e.within(&key)));
    let reader = match reader {
        Ok(r) => r,
        Err(e) => {
            return vec![Line::fail(
                &check,
                e.to_string(),
                "set the credentials the connection references (env:NAME in the environment, file:/path readable)",
            )];
        }
    };
    let mut found = Vec::new();
    for entity in Entity::ALL {
        match reader.check(entity, &mapper.source_fields(entity)).await {
            Ok(fc) => found.push((entity, fc)),
            Err(e) => return verdict::crm_access(id, &Err(e)),
        }
    }
    verdict::crm_access(id, &Ok(found))
}

/// The webhook section's secrets resolve (their values are dropped at once).
fn webhook_secrets(i: usize, section: &serde_json::Value) -> Result<(), String> {
    let key = format!("sources[{i}].webhook");
    let parsed: WebhookConfig = serde_json::from_value(section.clone())
        .map_err(|e| mapping::ConfigError::new(&key, e.to_string()).to_string())?;
    WebhookAuth::resolve(&parsed)
        .map(drop)
        .map_err(|e| e.within(&key).to_string())
}
