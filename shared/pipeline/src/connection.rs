//! `[sources.connection]`: how the sync step reads a CRM's API, one variant per CRM and auth
//! flow, turned into the CRM client. Secrets are references (`env:NAME`, `file:/path`; in Lambda
//! `aws-secret:...`, read beforehand); the error for a bad one names its key.

use std::collections::HashMap;
use std::sync::Arc;

use crm::CrmReader;
use mapping::{ConfigError, CrmKind, Entity, Mapper, SourceConfig};
use serde::Deserialize;

use crate::webhook::resolve_secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "auth", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ConnectionConfig {
    /// Salesforce OAuth 2.0 client credentials against the org's My Domain token URL.
    SalesforceClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: String,
    },
    /// Salesforce OAuth 2.0 JWT bearer: `private_key` is a reference to the PEM key whose
    /// certificate is uploaded to the connected app.
    SalesforceJwtBearer {
        token_url: String,
        client_id: String,
        username: String,
        private_key: String,
        #[serde(default = "default_salesforce_audience")]
        audience: String,
    },
    /// ServiceNow Table API with Basic auth on the source's `base_url`; the tables are the
    /// mapping's object names (customer_account, customer_contact by default). The catch-up pass
    /// reads deletions from `sys_audit_delete` unless `read_deletion_audit = false` (for an
    /// integration user without read access to it: deletions then come from the delete rule).
    ServicenowBasic {
        user: String,
        password: String,
        #[serde(default = "yes")]
        read_deletion_audit: bool,
    },
    /// ServiceNow OAuth 2.0: the client credentials grant (`user`/`password` absent; the
    /// instance must enable it) or the password grant (`user`/`password` given).
    ServicenowOauth {
        client_id: String,
        client_secret: String,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        password: Option<String>,
        #[serde(default = "yes")]
        read_deletion_audit: bool,
    },
    /// HubSpot private app access token; `api_url` only for tests and proxies.
    HubspotPrivateApp {
        token: String,
        #[serde(default = "default_hubspot_api")]
        api_url: String,
    },
    /// Zendesk Support API token (`{email}/token`) on the source's `base_url`.
    ZendeskApiToken { email: String, token: String },
    /// Zendesk Support OAuth access token.
    ZendeskOauth { token: String },
    /// Pipedrive company API token (sent in `x-api-token`) on the source's `base_url`.
    PipedriveApiToken { token: String },
    /// Pipedrive OAuth access token.
    PipedriveOauth { token: String },
    /// Any other CRM's REST API, described entirely in the configuration.
    GenericRest(Box<crm::generic::GenericConfig>),
}

fn yes() -> bool {
    true
}

fn default_salesforce_audience() -> String {
    "https://login.salesforce.com".into()
}

fn default_hubspot_api() -> String {
    crm::hubspot::DEFAULT_BASE_URL.into()
}

impl ConnectionConfig {
    /// The CRM kind this connection reads, if it is for one kind only.
    fn kind(&self) -> Option<CrmKind> {
        use ConnectionConfig as C;
        match self {
            C::SalesforceClientCredentials { .. } | C::SalesforceJwtBearer { .. } => {
                Some(CrmKind::Salesforce)
            }
            C::ServicenowBasic { .. } | C::ServicenowOauth { .. } => Some(CrmKind::Servicenow),
            C::HubspotPrivateApp { .. } => Some(CrmKind::Hubspot),
            C::ZendeskApiToken { .. } | C::ZendeskOauth { .. } => Some(CrmKind::Zendesk),
            C::PipedriveApiToken { .. } | C::PipedriveOauth { .. } => Some(CrmKind::Pipedrive),
            C::GenericRest(_) => None,
        }
    }

    /// Builds the client, reading exactly the fields `mapper` uses. Errors name the key under
    /// `[sources.connection]`.
    pub fn reader(
        &self,
        source: &SourceConfig,
        mapper: &Mapper,
    ) -> Result<Arc<dyn CrmReader>, ConfigError> {
        use ConnectionConfig as C;
        if let Some(kind) = self.kind()
            && kind != source.kind
        {
            return Err(ConfigError::new(
                "auth",
                format!(
                    "this connection is for {} sources, not {}",
                    kind.as_str(),
                    source.kind.as_str()
                ),
            ));
        }
        let fields: HashMap<Entity, Vec<String>> = Entity::ALL
            .iter()
            .map(|e| (*e, mapper.source_fields(*e)))
            .collect();
        let secret = |r: &str, key: &str| resolve_secret(r, key).map(|s| s.expose().to_string());
        let built: Result<Arc<dyn CrmReader>, crm::CrmError> = match self {
            C::SalesforceClientCredentials {
                token_url,
                client_id,
                client_secret,
            } => {
                let settings = crm::salesforce::SalesforceSettings::new(
                    token_url,
                    client_id,
                    &secret(client_secret, "client_secret")?,
                );
                crm::salesforce::SalesforceClient::new(settings, fields)
                    .map(|c| Arc::new(c) as Arc<dyn CrmReader>)
            }
            C::SalesforceJwtBearer {
                token_url,
                client_id,
                username,
                private_key,
                audience,
            } => {
                let settings = crm::salesforce::SalesforceSettings::with_auth(
                    token_url,
                    client_id,
                    crm::salesforce::SalesforceAuth::JwtBearer {
                        username: username.clone(),
                        private_key_pem: secret(private_key, "private_key")?,
                        audience: audience.clone(),
                    },
                );
                crm::salesforce::SalesforceClient::new(settings, fields)
                    .map(|c| Arc::new(c) as Arc<dyn CrmReader>)
            }
            C::ServicenowBasic {
                user,
                password,
                read_deletion_audit,
            } => {
                let settings = crm::servicenow::ServiceNowSettings::new(
                    &source.base_url,
                    user,
                    &secret(password, "password")?,
                );
                servicenow(settings, mapper, *read_deletion_audit, fields)
            }
            C::ServicenowOauth {
                client_id,
                client_secret,
                user,
                password,
                read_deletion_audit,
            } => {
                use crm::servicenow::ServiceNowOAuth;
                let client_secret = secret(client_secret, "client_secret")?;
                let grant = match (user, password) {
                    (None, None) => ServiceNowOAuth::ClientCredentials {
                        client_id: client_id.clone(),
                        client_secret,
                    },
                    (Some(user), Some(password)) => ServiceNowOAuth::Password {
                        client_id: client_id.clone(),
                        client_secret,
                        user: user.clone(),
                        password: secret(password, "password")?,
                    },
                    _ => {
                        return Err(ConfigError::new(
                            "user",
                            "give both user and password (password grant) or neither (client credentials)",
                        ));
                    }
                };
                let settings =
                    crm::servicenow::ServiceNowSettings::with_oauth(&source.base_url, grant);
                servicenow(settings, mapper, *read_deletion_audit, fields)
            }
            C::HubspotPrivateApp { token, api_url } => {
                // HubSpot nests every field under `properties`: the client needs the paths.
                let paths = Entity::ALL
                    .iter()
                    .map(|e| (*e, mapper.source_paths(*e)))
                    .collect();
                let settings =
                    crm::hubspot::HubSpotSettings::new(api_url, &secret(token, "token")?);
                crm::hubspot::HubSpotClient::new(settings, paths)
                    .map(|c| Arc::new(c) as Arc<dyn CrmReader>)
            }
            C::ZendeskApiToken { email, token } => zendesk(
                source,
                crm::zendesk::ZendeskAuth::api_token(email, &secret(token, "token")?),
                fields,
            ),
            C::ZendeskOauth { token } => zendesk(
                source,
                crm::zendesk::ZendeskAuth::bearer(&secret(token, "token")?),
                fields,
            ),
            C::PipedriveApiToken { token } => pipedrive(
                source,
                crm::pipedrive::PipedriveAuth::api_token(&secret(token, "token")?),
                fields,
            ),
            C::PipedriveOauth { token } => pipedrive(
                source,
                crm::pipedrive::PipedriveAuth::bearer(&secret(token, "token")?),
                fields,
            ),
            C::GenericRest(cfg) => {
                cfg.validate()?;
                let mut cfg = (**cfg).clone();
                for (key, value) in cfg.secrets_mut() {
                    *value = secret(value, key)?;
                }
                crm::generic::GenericClient::new(cfg, fields)
                    .map(|c| Arc::new(c) as Arc<dyn CrmReader>)
            }
        };
        built.map_err(|e| ConfigError::new("", e.to_string()))
    }
}

fn servicenow(
    mut settings: crm::servicenow::ServiceNowSettings,
    mapper: &Mapper,
    read_deletion_audit: bool,
    fields: HashMap<Entity, Vec<String>>,
) -> Result<Arc<dyn CrmReader>, crm::CrmError> {
    settings.account_table = mapper.object_name(Entity::Account).to_string();
    settings.contact_table = mapper.object_name(Entity::Contact).to_string();
    settings.read_deletion_audit = read_deletion_audit;
    crm::servicenow::ServiceNowClient::new(settings, fields)
        .map(|c| Arc::new(c) as Arc<dyn CrmReader>)
}

fn zendesk(
    source: &SourceConfig,
    auth: crm::zendesk::ZendeskAuth,
    fields: HashMap<Entity, Vec<String>>,
) -> Result<Arc<dyn CrmReader>, crm::CrmError> {
    let settings = crm::zendesk::ZendeskSettings::new(&source.base_url, auth);
    crm::zendesk::ZendeskClient::new(settings, fields).map(|c| Arc::new(c) as Arc<dyn CrmReader>)
}

fn pipedrive(
    source: &SourceConfig,
    auth: crm::pipedrive::PipedriveAuth,
    fields: HashMap<Entity, Vec<String>>,
) -> Result<Arc<dyn CrmReader>, crm::CrmError> {
    let settings = crm::pipedrive::PipedriveSettings::new(&source.base_url, auth);
    crm::pipedrive::PipedriveClient::new(settings, fields)
        .map(|c| Arc::new(c) as Arc<dyn CrmReader>)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn source(kind: &str, base: &str, connection: &str) -> String {
        format!(
            "[[sources]]\nid = \"s\"\nkind = \"{kind}\"\ncrm_choice = 7\nbase_url = \"{base}\"\n[sources.connection]\n{connection}\n"
        )
    }

    fn readers(text: &str) -> Result<usize, String> {
        let cfg = Config::parse(text, "c.toml").map_err(|e| e.to_string())?;
        let sources = cfg.mappers().map_err(|e| e.to_string())?;
        cfg.crm_readers(&sources)
            .map(|r| r.len())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_crm_connection_builds_its_client() {
        for (kind, base, conn) in [
            (
                "salesforce",
                "https://acme.my.salesforce.com",
                "auth = \"salesforce-client-credentials\"\ntoken_url = \"https://acme.my.salesforce.com/services/oauth2/token\"\nclient_id = \"k\"\nclient_secret = \"s\"",
            ),
            (
                "servicenow",
                "https://acme.service-now.com",
                "auth = \"servicenow-basic\"\nuser = \"u\"\npassword = \"p\"",
            ),
            (
                "servicenow",
                "https://acme.service-now.com",
                "auth = \"servicenow-oauth\"\nclient_id = \"c\"\nclient_secret = \"s\"\nread_deletion_audit = false",
            ),
            (
                "servicenow",
                "https://acme.service-now.com",
                "auth = \"servicenow-oauth\"\nclient_id = \"c\"\nclient_secret = \"s\"\nuser = \"u\"\npassword = \"p\"",
            ),
            (
                "hubspot",
                "https://app.hubspot.com",
                "auth = \"hubspot-private-app\"\ntoken = \"pat-na1-x\"\n[sources.vars]\nportal_id = \"62515\"",
            ),
            (
                "zendesk",
                "https://acme.zendesk.com",
                "auth = \"zendesk-api-token\"\nemail = \"a@acme.com\"\ntoken = \"t\"",
            ),
            (
                "zendesk",
                "https://acme.zendesk.com",
                "auth = \"zendesk-oauth\"\ntoken = \"t\"",
            ),
            (
                "pipedrive",
                "https://acme.pipedrive.com",
                "auth = \"pipedrive-api-token\"\ntoken = \"t\"",
            ),
            (
                "pipedrive",
                "https://acme.pipedrive.com",
                "auth = \"pipedrive-oauth\"\ntoken = \"t\"",
            ),
        ] {
            assert_eq!(readers(&source(kind, base, conn)), Ok(1), "{kind}: {conn}");
        }
    }

    #[test]
    fn a_generic_rest_connection_is_read_from_its_own_keys() {
        let conn = r#"auth = "generic-rest"
base_url = "https://crm.example.com"
[sources.connection.credentials]
type = "bearer"
token = "t"
[sources.connection.paging]
style = "cursor"
next = "/next"
[sources.connection.account]
list_url = "/accounts?limit={page_size}&after={cursor}"
records = "/data"
id = "/id"
modified = "/updated"
[sources.connection.contact]
list_url = "/people?limit={page_size}&after={cursor}"
records = "/data"
id = "/id"
modified = "/updated""#;
        let mapping = r#"
[sources.mapping.account]
id = "/id"
record_url = "{base_url}/accounts/{id}"
[sources.mapping.account.columns]
name = "/name"
[sources.mapping.contact]
id = "/id"
parent = "/account_id"
record_url = "{base_url}/people/{id}"
[sources.mapping.contact.columns]
lastname = "/last"
"#;
        let text = source("generic", "https://crm.example.com", conn) + mapping;
        assert_eq!(readers(&text), Ok(1));
        let bad = source(
            "generic",
            "https://crm.example.com",
            &conn.replace("style = \"cursor\"", "style = \"pages\""),
        ) + mapping;
        let e = readers(&bad).unwrap_err();
        assert!(e.contains("sources[0].connection"), "{e}");
    }

    #[test]
    fn errors_name_the_key_and_never_the_secret() {
        let e = readers(&source(
            "servicenow",
            "https://acme.service-now.com",
            "auth = \"hubspot-private-app\"\ntoken = \"pat-secret-1\"",
        ))
        .unwrap_err();
        assert!(
            e.contains("sources[0].connection.auth") && e.contains("hubspot sources"),
            "{e}"
        );
        assert!(!e.contains("pat-secret-1"), "{e}");
        let e = readers(&source(
            "zendesk",
            "https://acme.zendesk.com",
            "auth = \"zendesk-oauth\"\ntoken = \"env:CRM_SYNC_TEST_SURELY_UNSET\"",
        ))
        .unwrap_err();
        assert!(
            e.contains("sources[0].connection.token") && e.contains("CRM_SYNC_TEST_SURELY_UNSET"),
            "{e}"
        );
        let e = readers(&source(
            "pipedrive",
            "https://acme.pipedrive.com",
            "auth = \"pipedrive-api-token\"\ntoken = \"t\"\nextra = 1",
        ))
        .unwrap_err();
        assert!(e.contains("extra"), "{e}");
    }
}
