//! The crm-sync configuration file (TOML): the Dataverse target and the sources. Loaded and
//! validated once; every error names the file and the key (and the line, for syntax errors).

use std::path::Path;

use mapping::{IdentityStrategy, SourceConfig};
use serde::Deserialize;
use thiserror::Error;

use crate::connection::ConnectionConfig;
use crate::sources::Sources;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub dataverse: DataverseConfig,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

/// A source's section parsed into its typed form, with an error naming `sources[i].<section>`.
fn section<T: serde::de::DeserializeOwned>(
    v: &Option<serde_json::Value>,
    i: usize,
    name: &str,
) -> Result<Option<T>, mapping::ConfigError> {
    v.as_ref()
        .map(|v| {
            serde_json::from_value(v.clone()).map_err(|e| {
                mapping::ConfigError::new(format!("sources[{i}].{name}"), e.to_string())
            })
        })
        .transpose()
}

/// `[sources.webhook]`: how requests from this CRM prove where they come from. Secrets are
/// references: `env:NAME` or `file:/path` (a literal is accepted for local trials only).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "auth", rename_all = "kebab-case", deny_unknown_fields)]
pub enum WebhookConfig {
    /// HubSpot app webhooks: v3 signatures (v1/v2 for older apps) with the app's client secret;
    /// `public_url` is the exact URL HubSpot calls (part of what it signs).
    Hubspot { secret: String, public_url: String },
    /// Our HMAC contract (Apex callouts, ServiceNow business rules, generic CRMs).
    Contract { secret: String },
    /// Zendesk webhooks' signing secret.
    Zendesk { secret: String },
    /// HTTP Basic (Pipedrive, Microsoft's any-CRM guide).
    Basic { user: String, password: String },
    /// Salesforce Outbound Messages (unsigned): the OrganizationId must match.
    SalesforceOutbound { organization_id: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataverseConfig {
    /// `deterministic-id` (default) or `alternate-key`.
    #[serde(default)]
    pub identity: IdentityStrategy,
}

#[derive(Debug, Error)]
pub enum ConfigLoadError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: {source}")]
    Invalid {
        path: String,
        source: mapping::ConfigError,
    },
}

impl Config {
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigLoadError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigLoadError::Syntax {
            path: path.to_string(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        cfg.validate().map_err(|source| ConfigLoadError::Invalid {
            path: path.to_string(),
            source,
        })?;
        Ok(cfg)
    }

    /// A configuration from an already parsed document (after secret references in it were
    /// replaced by their values), validated as [`Config::parse`] does.
    pub fn from_table(doc: toml::Table, path: &str) -> Result<Config, ConfigLoadError> {
        let cfg: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigLoadError::Syntax {
                path: path.to_string(),
                message: e.to_string().trim_end().replace('\n', "\n  "),
            })?;
        cfg.validate().map_err(|source| ConfigLoadError::Invalid {
            path: path.to_string(),
            source,
        })?;
        Ok(cfg)
    }

    /// Compiles every mapping and checks the shape of every `webhook` and `connection` section,
    /// without reading any secret: a function validates the whole file but reads only the
    /// secrets it uses.
    pub fn validate(&self) -> Result<(), mapping::ConfigError> {
        self.mappers()?;
        for (i, e) in self.sources.iter().enumerate() {
            section::<WebhookConfig>(&e.webhook, i, "webhook")?;
            section::<ConnectionConfig>(&e.connection, i, "connection")?;
        }
        Ok(())
    }

    /// The sources' mappings, without webhook verification: what the sync and upsert steps need.
    pub fn mappers(&self) -> Result<Sources, mapping::ConfigError> {
        Sources::new(&self.source_configs(), self.dataverse.identity)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigLoadError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigLoadError::Read {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        Config::parse(&text, &shown)
    }

    pub fn source_configs(&self) -> Vec<SourceConfig> {
        self.sources.clone()
    }

    /// A CRM reader for every source with a `[sources.connection]`, reading exactly the fields
    /// its mapping uses.
    pub fn crm_readers(
        &self,
        sources: &Sources,
    ) -> Result<crate::sync::Crms, mapping::ConfigError> {
        let mut crms = crate::sync::Crms::new();
        for (i, e) in self.sources.iter().enumerate() {
            let Some(conn) = section::<ConnectionConfig>(&e.connection, i, "connection")? else {
                continue;
            };
            let key = format!("sources[{i}].connection");
            let mapper = sources
                .get(&e.id)
                .ok_or_else(|| mapping::ConfigError::new(&key, "source did not compile"))?;
            let reader = conn.reader(e, mapper).map_err(|err| err.within(&key))?;
            crms.insert(e.id.clone(), reader);
        }
        Ok(crms)
    }

    /// The sources with their webhook verification (its secrets read): what the webhook step
    /// needs.
    pub fn sources(&self) -> Result<Sources, mapping::ConfigError> {
        let mut sources = self.mappers()?;
        for (i, e) in self.sources.iter().enumerate() {
            if let Some(w) = section::<WebhookConfig>(&e.webhook, i, "webhook")? {
                let auth = crate::webhook::WebhookAuth::resolve(&w)
                    .map_err(|e| e.within(&format!("sources[{i}].webhook")))?;
                sources.set_webhook(&e.id, auth);
            }
        }
        Ok(sources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_the_key_and_the_line() {
        let e = Config::parse("[dataverse]\nidentity = \"by-magic\"\n", "c.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("c.toml: "), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        let e = Config::parse(
            "[[sources]]\nid = \"sf\"\nkind = \"salesforce\"\nbase_url = \"https://a.example\"\n",
            "c.toml",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string().split(": ").nth(1),
            Some("config `sources[0].crm_choice`")
        );
        let e = Config::parse("[dataverse]\nidentiy = \"alternate-key\"\n", "c.toml").unwrap_err();
        assert!(e.to_string().contains("identiy"), "{e}");
        let ok = Config::parse(
            "[dataverse]\nidentity = \"alternate-key\"\n[[sources]]\nid = \"sn\"\nkind = \"servicenow\"\nbase_url = \"https://x.service-now.com\"\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(ok.dataverse.identity, IdentityStrategy::AlternateKey);
        // A typo at the source level is an error with its line; a bad webhook section names it.
        let e = Config::parse(
            "[[sources]]\nid = \"sn\"\nkind = \"servicenow\"\nbase_url = \"https://x.service-now.com\"\nphone_contry = \"1\"\n",
            "c.toml",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("phone_contry") && e.to_string().contains("line 5"),
            "{e}"
        );
        let e = Config::parse(
            "[[sources]]\nid = \"sn\"\nkind = \"servicenow\"\nbase_url = \"https://x.service-now.com\"\nwebhook = { auth = \"magic\" }\n",
            "c.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("sources[0].webhook"), "{e}");
    }
}
