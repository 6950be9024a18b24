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

/// `[dataverse]`: the identity strategy and, for the local runner (`crm-sync serve`), how to
/// reach the environment. The Lambda upsert function reads its connection from its environment
/// (`DATAVERSE_URL`, ...) instead; the connection keys are optional here and, when `url` is set,
/// checked together on load. Secrets are references (`env:NAME`, `file:/path`), read only by
/// [`Config::dataverse_writer`]; the Debug form never shows a literal secret.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataverseConfig {
    /// `deterministic-id` (default) or `alternate-key`.
    #[serde(default)]
    pub identity: IdentityStrategy,
    /// The organisation URL, `https://org.crm.dynamics.com` (`http://` only for a local
    /// emulator on 127.0.0.1 or localhost).
    #[serde(default)]
    pub url: Option<String>,
    /// The Microsoft Entra tenant (id or domain) of the application user.
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// A reference to the client secret; or `certificate`, not both.
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub certificate: Option<DataverseCertificate>,
    /// The token endpoint, instead of Entra ID's for `tenant` (an emulator, a sovereign cloud).
    #[serde(default)]
    pub token_url: Option<String>,
    /// How writes are sent: `auto` (bulk where the table supports it, else `$batch`),
    /// `single`, `batch` or `bulk`.
    #[serde(default)]
    pub write_mode: DataverseWriteMode,
    /// Operations per `$batch` or bulk request (1 to 1,000; default 100).
    #[serde(default)]
    pub write_batch_size: Option<usize>,
    /// Requests in flight at most (1 to 52, the service's per-user limit; default 52). The
    /// client adapts below it to `x-ms-dop-hint` and throttling.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Seconds before a request without an answer is abandoned and retried (1 to 300; default
    /// 30). A write may have taken effect when its answer comes too late; the retry is an
    /// idempotent upsert or delete, so it is safe.
    #[serde(default)]
    pub request_timeout_secs: Option<u64>,
}

/// `[dataverse] certificate = { private_key = "file:...", thumbprint = "..." }`: certificate
/// credentials of the app registration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataverseCertificate {
    /// A reference to the RSA private key (PEM) of the certificate uploaded to the app.
    pub private_key: String,
    /// The certificate's SHA-1 thumbprint as the Azure portal shows it (40 hex digits).
    pub thumbprint: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataverseWriteMode {
    #[default]
    Auto,
    Single,
    Batch,
    Bulk,
}

/// A secret reference as it may be shown: references are, literals are not.
fn shown_secret(r: &Option<String>) -> Option<&str> {
    r.as_deref().map(|r| {
        if r.starts_with("env:") || r.starts_with("file:") || r.starts_with("aws-secret:") {
            r
        } else {
            "[literal, redacted]"
        }
    })
}

impl std::fmt::Debug for DataverseCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataverseCertificate")
            .field(
                "private_key",
                &shown_secret(&Some(self.private_key.clone())),
            )
            .field("thumbprint", &self.thumbprint)
            .finish()
    }
}

impl std::fmt::Debug for DataverseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataverseConfig")
            .field("identity", &self.identity)
            .field("url", &self.url)
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("client_secret", &shown_secret(&self.client_secret))
            .field("certificate", &self.certificate)
            .field("token_url", &self.token_url)
            .field("write_mode", &self.write_mode)
            .field("write_batch_size", &self.write_batch_size)
            .field("max_concurrency", &self.max_concurrency)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .finish()
    }
}

/// Checks an absolute URL: `https://host[:port][/path]`, or `http://` to a loopback host.
fn check_url(key: &str, url: &str) -> Result<(), mapping::ConfigError> {
    let bad = |m: &str| Err(mapping::ConfigError::new(key, m.to_string()));
    let (scheme, rest) = match url.split_once("://") {
        Some(p) => p,
        None => return bad("must be an absolute https:// URL"),
    };
    let host_port = rest.split('/').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    if host.is_empty() || url.contains(['?', '#', ' ']) {
        return bad("must be an absolute https:// URL with a host and no query");
    }
    match scheme {
        "https" => Ok(()),
        "http" if matches!(host, "127.0.0.1" | "localhost" | "::1") => Ok(()),
        "http" => bad("must use https:// (plain http is accepted only for a local emulator)"),
        _ => bad("must be an https:// URL"),
    }
}

impl DataverseConfig {
    /// Whether the file says how to reach Dataverse (the local runner needs it).
    pub fn is_connected(&self) -> bool {
        self.url.is_some()
    }

    /// Checks the connection keys' shape without reading any secret. Nothing is required unless
    /// `url` is set; connection keys without `url` are an error (they would be ignored).
    pub fn validate(&self) -> Result<(), mapping::ConfigError> {
        use mapping::ConfigError as E;
        let Some(url) = &self.url else {
            for (key, set) in [
                ("tenant", self.tenant.is_some()),
                ("client_id", self.client_id.is_some()),
                ("client_secret", self.client_secret.is_some()),
                ("certificate", self.certificate.is_some()),
                ("token_url", self.token_url.is_some()),
            ] {
                if set {
                    return Err(E::new(
                        format!("dataverse.{key}"),
                        "is set but `dataverse.url` is not: set the organisation URL too",
                    ));
                }
            }
            return Ok(());
        };
        check_url("dataverse.url", url)?;
        if let Some(t) = &self.token_url {
            check_url("dataverse.token_url", t)?;
        }
        match &self.tenant {
            None if self.token_url.is_none() => {
                return Err(E::new(
                    "dataverse.tenant",
                    "is required: the Microsoft Entra tenant id or domain (or set token_url)",
                ));
            }
            Some(t) if t.trim().is_empty() || t.contains(['/', '?', '#', ' ']) => {
                return Err(E::new(
                    "dataverse.tenant",
                    "must be a tenant id (GUID) or domain such as contoso.onmicrosoft.com",
                ));
            }
            _ => {}
        }
        match &self.client_id {
            None => {
                return Err(E::new(
                    "dataverse.client_id",
                    "is required: the application (client) id of the app registration",
                ));
            }
            Some(c) if c.trim().is_empty() => {
                return Err(E::new("dataverse.client_id", "is empty"));
            }
            _ => {}
        }
        match (&self.client_secret, &self.certificate) {
            (None, None) => {
                return Err(E::new(
                    "dataverse.client_secret",
                    "is required (or `certificate = { private_key, thumbprint }`)",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(E::new(
                    "dataverse.certificate",
                    "set either client_secret or certificate, not both",
                ));
            }
            (Some(s), None) if s.is_empty() => {
                return Err(E::new("dataverse.client_secret", "is empty"));
            }
            (None, Some(c)) => {
                let hex = c.thumbprint.chars().filter(|c| *c != ':' && *c != ' ');
                if hex.clone().count() != 40 || !hex.clone().all(|c| c.is_ascii_hexdigit()) {
                    return Err(E::new(
                        "dataverse.certificate.thumbprint",
                        "must be the certificate's SHA-1 thumbprint: 40 hex digits",
                    ));
                }
                if c.private_key.is_empty() {
                    return Err(E::new("dataverse.certificate.private_key", "is empty"));
                }
            }
            _ => {}
        }
        if let Some(n) = self.write_batch_size
            && !(1..=1000).contains(&n)
        {
            return Err(E::new(
                "dataverse.write_batch_size",
                "must be between 1 and 1000 (Dataverse's limit per $batch or bulk request)",
            ));
        }
        if let Some(n) = self.max_concurrency
            && !(1..=52).contains(&n)
        {
            return Err(E::new(
                "dataverse.max_concurrency",
                "must be between 1 and 52 (Dataverse's concurrent-request limit per user)",
            ));
        }
        if let Some(n) = self.request_timeout_secs
            && !(1..=300).contains(&n)
        {
            return Err(E::new(
                "dataverse.request_timeout_secs",
                "must be between 1 and 300 seconds",
            ));
        }
        Ok(())
    }

    /// The Web API client settings, with the secrets read. Errors name the key.
    pub fn web_api_config(&self) -> Result<dataverse::WebApiConfig, mapping::ConfigError> {
        use crate::webhook::resolve_secret;
        self.validate()?;
        let (Some(url), Some(client_id)) = (&self.url, &self.client_id) else {
            return Err(mapping::ConfigError::new(
                "dataverse.url",
                "is required to write to Dataverse: the organisation URL, https://org.crm.dynamics.com",
            ));
        };
        let secret = match &self.client_secret {
            Some(r) => resolve_secret(r, "dataverse.client_secret")?,
            None => dataverse::Secret::new(""),
        };
        let mut cfg = dataverse::WebApiConfig::for_org(
            url,
            self.tenant.as_deref().unwrap_or("organizations"),
            client_id,
            secret,
        );
        if let Some(c) = &self.certificate {
            let key = resolve_secret(&c.private_key, "dataverse.certificate.private_key")?;
            dataverse::auth::Credential::certificate(&key, &c.thumbprint)
                .map_err(|e| mapping::ConfigError::new("dataverse.certificate.private_key", e))?;
            cfg.client_certificate = Some((key, c.thumbprint.clone()));
        }
        if let Some(t) = &self.token_url {
            cfg.token_url = t.clone();
        }
        let size = self.write_batch_size.unwrap_or(100);
        cfg.mode = match self.write_mode {
            DataverseWriteMode::Auto => dataverse::WriteMode::Auto,
            DataverseWriteMode::Single => dataverse::WriteMode::Single,
            DataverseWriteMode::Batch => dataverse::WriteMode::Batch { size },
            DataverseWriteMode::Bulk => dataverse::WriteMode::Bulk { size },
        };
        if let Some(n) = self.max_concurrency {
            cfg.max_concurrency = n;
        }
        if let Some(n) = self.request_timeout_secs {
            cfg.request_timeout = std::time::Duration::from_secs(n);
        }
        Ok(cfg)
    }
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
        self.dataverse.validate()?;
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

    /// The production Dataverse client from `[dataverse]` (its secrets read): what the local
    /// runner writes with. Errors name the key; `dataverse.url` is required here.
    pub fn dataverse_writer(&self) -> Result<dataverse::WebApiClient, mapping::ConfigError> {
        let cfg = self.dataverse.web_api_config()?;
        dataverse::WebApiClient::new(cfg)
            .map_err(|e| mapping::ConfigError::new("dataverse", e.to_string()))
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

    fn dv(section: &str) -> Result<Config, String> {
        Config::parse(&format!("[dataverse]\n{section}"), "c.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn dataverse_connection_settings_are_checked_on_load_and_name_the_key() {
        let ok = "url = \"https://contoso.crm.dynamics.com\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"app\"\nclient_secret = \"env:DV_SECRET\"\n";
        let cfg = dv(ok).unwrap();
        assert!(cfg.dataverse.is_connected());
        // The URL, the tenant, the client id and a credential are required together.
        for (drop, key) in [
            ("tenant", "dataverse.tenant"),
            ("client_id", "dataverse.client_id"),
            ("client_secret", "dataverse.client_secret"),
        ] {
            let text: String = ok
                .lines()
                .filter(|l| !l.starts_with(drop))
                .map(|l| format!("{l}\n"))
                .collect();
            let e = dv(&text).unwrap_err();
            assert!(e.contains(&format!("`{key}`")), "{e}");
        }
        let e = dv("tenant = \"t\"\n").unwrap_err();
        assert!(
            e.contains("`dataverse.tenant`") && e.contains("dataverse.url"),
            "{e}"
        );
        let e = dv(&ok.replace("https://contoso", "http://contoso")).unwrap_err();
        assert!(e.contains("`dataverse.url`"), "{e}");
        let e = dv(&format!("{ok}max_concurrency = 100\n")).unwrap_err();
        assert!(e.contains("`dataverse.max_concurrency`"), "{e}");
        let e = dv(&format!("{ok}request_timeout_secs = 0\n")).unwrap_err();
        assert!(e.contains("`dataverse.request_timeout_secs`"), "{e}");
        let e = dv(&format!("{ok}write_mode = \"fast\"\n")).unwrap_err();
        assert!(e.contains("write_mode"), "{e}");
        let e = dv(&format!("{ok}write_batch_size = 5000\n")).unwrap_err();
        assert!(e.contains("`dataverse.write_batch_size`"), "{e}");
        let cert = ok.replace(
            "client_secret = \"env:DV_SECRET\"",
            "certificate = { private_key = \"file:/nonexistent/dv.pem\", thumbprint = \"12\" }",
        );
        let e = dv(&cert).unwrap_err();
        assert!(e.contains("`dataverse.certificate.thumbprint`"), "{e}");
        let both = format!(
            "{ok}certificate = {{ private_key = \"file:k.pem\", thumbprint = \"{}\" }}\n",
            "ab".repeat(20)
        );
        assert!(dv(&both).unwrap_err().contains("`dataverse.certificate`"));
        // The emulator: plain http on loopback, its own token URL, no tenant.
        let emu = "url = \"http://127.0.0.1:8081\"\ntoken_url = \"http://127.0.0.1:8081/t/oauth2/v2.0/token\"\nclient_id = \"c\"\nclient_secret = \"s3cr3t-literal\"\nwrite_mode = \"batch\"\nwrite_batch_size = 50\nmax_concurrency = 8\nrequest_timeout_secs = 4\n";
        let cfg = dv(emu).unwrap();
        let web = cfg.dataverse.web_api_config().unwrap();
        assert_eq!(web.api_url, "http://127.0.0.1:8081/api/data/v9.2/");
        assert_eq!(web.token_url, "http://127.0.0.1:8081/t/oauth2/v2.0/token");
        assert_eq!(web.scope, "http://127.0.0.1:8081/.default");
        assert_eq!(web.mode, dataverse::WriteMode::Batch { size: 50 });
        assert_eq!(web.max_concurrency, 8);
        assert_eq!(web.request_timeout, std::time::Duration::from_secs(4));
        // A literal secret is never shown.
        assert!(!format!("{:?}", cfg.dataverse).contains("s3cr3t-literal"));
        assert!(cfg.dataverse_writer().is_ok());
    }

    #[test]
    fn dataverse_secrets_are_read_only_when_the_client_is_built() {
        let cfg = dv("url = \"https://contoso.crm.dynamics.com\"\ntenant = \"t\"\nclient_id = \"app\"\nclient_secret = \"env:CRM_SYNC_TEST_SURELY_UNSET_DV\"\n")
            .unwrap();
        let e = cfg.dataverse_writer().err().unwrap().to_string();
        assert!(
            e.contains("dataverse.client_secret") && e.contains("CRM_SYNC_TEST_SURELY_UNSET_DV"),
            "{e}"
        );
        let web = Config::default().dataverse.web_api_config().unwrap_err();
        assert_eq!(web.key, "dataverse.url");
    }
}
