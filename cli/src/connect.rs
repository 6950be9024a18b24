//! `crm-sync connect salesforce` and `crm-sync disconnect salesforce`: the Salesforce end of a
//! source's connection provisioned from the configuration, least privilege, by an admin's
//! session (the work is in `crm::salesforce_connect`; this module reads the configuration and
//! secrets, keeps the ids in the connection state file and verifies as the integration user).
//!
//! The state file is `<config stem>.connections.json` beside the configuration: per source, the
//! ids of the permission set, user, assignments and connected app. It holds no secret. It is
//! saved after every step, so a run that fails half-way is completed by the next one (which
//! also finds its objects again by name if the file is lost).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use crm::salesforce_connect::{self as sfc, AdminSession, ConnectionSpec, ConnectionState, Step};
use mapping::{CrmKind, Entity, Mapper, SourceConfig};
use pipeline::config::Config;
use pipeline::connection::ConnectionConfig;
use pipeline::webhook::resolve_secret;
use serde::{Deserialize, Serialize};

/// Where the admin's access token comes from when not given.
pub const DEFAULT_ADMIN_TOKEN: &str = "env:SALESFORCE_ADMIN_TOKEN";

#[derive(Debug, Clone)]
pub struct SalesforceArgs {
    pub config: PathBuf,
    /// The source id; default: the only Salesforce source of the configuration.
    pub source: Option<String>,
    /// A secret reference (`env:NAME`, `file:/path`) to an administrator's access token.
    pub admin_token: String,
    /// The org's URL; default: the source's `base_url`.
    pub instance_url: Option<String>,
    /// The integration user's username; default `crm-sync.<source>@<instance host>`.
    pub username: Option<String>,
    /// Its email; default: the username.
    pub email: Option<String>,
}

/// The connection state file's contents.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateFile {
    #[serde(default)]
    pub salesforce: BTreeMap<String, ConnectionState>,
}

/// `crm-sync.toml` → `crm-sync.connections.json` in the same directory.
pub fn state_path(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "crm-sync".into());
    config.with_file_name(format!("{stem}.connections.json"))
}

pub fn load_state(config: &Path) -> anyhow::Result<StateFile> {
    let path = state_path(config);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a connection state file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile::default()),
        Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
    }
}

fn save_state(config: &Path, state: &StateFile) -> std::io::Result<()> {
    let path = state_path(config);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(state).unwrap_or_default(),
    )?;
    std::fs::rename(tmp, path)
}

/// The configuration, the Salesforce source and its mapper.
struct Target {
    source: SourceConfig,
    mapper: Mapper,
    connection: ConnectionConfig,
}

fn target(config: &Path, source: Option<&str>) -> anyhow::Result<Target> {
    let cfg = Config::load(config)?;
    let candidates: Vec<&SourceConfig> = cfg
        .sources
        .iter()
        .filter(|s| s.kind == CrmKind::Salesforce)
        .filter(|s| source.is_none_or(|id| s.id.as_str() == id))
        .collect();
    let source = match (candidates.as_slice(), source) {
        ([one], _) => (*one).clone(),
        ([], Some(id)) => bail!("{}: no Salesforce source `{id}`", config.display()),
        ([], None) => bail!("{}: no Salesforce source", config.display()),
        (_, _) => bail!(
            "{}: several Salesforce sources; say which with --source",
            config.display()
        ),
    };
    let sources = cfg.mappers()?;
    let mapper = sources
        .get(&source.id)
        .cloned()
        .ok_or_else(|| anyhow!("source {} has no mapping", source.id.as_str()))?;
    let section = source.connection.clone().ok_or_else(|| {
        anyhow!(
            "source {} has no [sources.connection]: add one with auth = \"salesforce-client-credentials\", token_url, client_id (the consumer key connect gives the app) and client_secret = \"file:/path\" (where connect writes the secret it generates)",
            source.id.as_str()
        )
    })?;
    let connection: ConnectionConfig = serde_json::from_value(section)
        .map_err(|e| anyhow!("sources.connection of {}: {e}", source.id.as_str()))?;
    Ok(Target {
        source,
        mapper,
        connection,
    })
}

fn fields_of(mapper: &Mapper) -> HashMap<Entity, Vec<String>> {
    Entity::ALL
        .iter()
        .map(|e| (*e, mapper.source_fields(*e)))
        .collect()
}

/// The consumer secret: the one the configuration's reference holds, or (for a `file:`
/// reference to a missing or empty file) a new random one written there, readable by the owner
/// only. Never printed.
fn consumer_secret(reference: &str) -> anyhow::Result<String> {
    if let Some(path) = reference.strip_prefix("file:") {
        let existing = std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if !existing.is_empty() {
            return Ok(existing);
        }
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        write_private(Path::new(path), &secret)
            .with_context(|| format!("cannot write the consumer secret to {path}"))?;
        return Ok(secret);
    }
    if reference.starts_with("aws-secret:") {
        bail!(
            "client_secret is an aws-secret: reference; connect writes the secret it generates to a file: reference (put that file's contents into the Secrets Manager secret afterwards)"
        );
    }
    Ok(resolve_secret(reference, "client_secret")?
        .expose()
        .to_string())
}

fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    writeln!(f, "{value}")
}

fn admin_session(args: &SalesforceArgs, source: &SourceConfig) -> anyhow::Result<AdminSession> {
    let token = resolve_secret(&args.admin_token, "--admin-token").map_err(|e| {
        anyhow!("{e} (an access token of a Salesforce administrator, e.g. from `sf org display`)")
    })?;
    let instance = args.instance_url.as_deref().unwrap_or(&source.base_url);
    Ok(AdminSession::new(instance, token.expose())?)
}

/// What `connect` did, and where the ids are kept.
#[derive(Debug)]
pub struct Report {
    pub source: String,
    pub steps: Vec<Step>,
    pub state_file: PathBuf,
}

/// Provisions, completes or updates (to the current mappings) the source's connection.
pub async fn connect_salesforce(args: &SalesforceArgs) -> anyhow::Result<Report> {
    let t = target(&args.config, args.source.as_deref())?;
    let (consumer_key, secret_ref) = match &t.connection {
        ConnectionConfig::SalesforceClientCredentials {
            client_id,
            client_secret,
            ..
        } => (client_id.clone(), client_secret.clone()),
        _ => bail!(
            "connect provisions a client credentials connection: set the source's connection auth = \"salesforce-client-credentials\" (the JWT bearer flow is not provisioned yet)"
        ),
    };
    let source_id = t.source.id.as_str().to_string();
    let host = t
        .source
        .base_url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .filter(|h| !h.is_empty())
        .unwrap_or("example.invalid")
        .to_string();
    let username = args
        .username
        .clone()
        .unwrap_or_else(|| format!("crm-sync.{source_id}@{host}"));
    let spec = ConnectionSpec {
        source: source_id.clone(),
        fields: fields_of(&t.mapper),
        email: args.email.clone().unwrap_or_else(|| username.clone()),
        username,
        consumer_key,
        consumer_secret: consumer_secret(&secret_ref)?,
    };
    let admin = admin_session(args, &t.source)?;
    let mut file = load_state(&args.config)?;
    let mut state = file.salesforce.get(&source_id).cloned().unwrap_or_default();
    let config = args.config.clone();
    let mut save = |s: &ConnectionState| {
        file.salesforce.insert(source_id.clone(), s.clone());
        if let Err(e) = save_state(&config, &file) {
            tracing::warn!(error = %e, "cannot save the connection state file");
        }
    };
    let steps = sfc::connect(&admin, &spec, &mut state, &mut save)
        .await
        .map_err(explain)?;
    Ok(Report {
        source: spec.source,
        steps,
        state_file: state_path(&args.config),
    })
}

/// Removes the source's connected app and permission set and deactivates its user.
pub async fn disconnect_salesforce(args: &SalesforceArgs) -> anyhow::Result<Report> {
    let t = target(&args.config, args.source.as_deref())?;
    let source_id = t.source.id.as_str().to_string();
    let admin = admin_session(args, &t.source)?;
    let mut file = load_state(&args.config)?;
    let state = file.salesforce.get(&source_id).cloned().unwrap_or_default();
    let steps = sfc::disconnect(&admin, &source_id, &state)
        .await
        .map_err(explain)?;
    file.salesforce.remove(&source_id);
    save_state(&args.config, &file)
        .with_context(|| format!("cannot write {}", state_path(&args.config).display()))?;
    Ok(Report {
        source: source_id,
        steps,
        state_file: state_path(&args.config),
    })
}

/// A provisioning error with what to do about it.
fn explain(e: sfc::ConnectError) -> anyhow::Error {
    if e.is_access() {
        anyhow!(
            "{e}\n  the admin token must be a current session of a Salesforce user with the System Administrator profile (Manage Users, Customize Application, Modify Metadata)"
        )
    } else if e.is_retryable() {
        anyhow!("{e}\n  run the command again: it continues where this run stopped")
    } else {
        anyhow!(e)
    }
}

/// What `--verify` found: per object, the fields the integration user cannot read.
#[derive(Debug, Default)]
pub struct Verified {
    pub source: String,
    pub checked: usize,
    pub unreadable: Vec<String>,
}

/// Logs in as the integration user (the configured connection) and checks that every field
/// crm-sync reads is readable (describe lists the fields field-level security lets it see).
pub async fn verify_salesforce(config: &Path, source: Option<&str>) -> anyhow::Result<Verified> {
    let t = target(config, source)?;
    let reader = t
        .connection
        .reader(&t.source, &t.mapper)
        .map_err(|e| anyhow!("sources.connection of {}: {e}", t.source.id.as_str()))?;
    let wanted = sfc::required_fields(&fields_of(&t.mapper));
    let mut out = Verified {
        source: t.source.id.as_str().to_string(),
        ..Verified::default()
    };
    for entity in Entity::ALL {
        let fields: Vec<String> = wanted[&entity].iter().cloned().collect();
        out.checked += fields.len();
        let object = match entity {
            Entity::Account => "Account",
            Entity::Contact => "Contact",
        };
        match reader.check(entity, &fields).await {
            Ok(fc) => out
                .unreadable
                .extend(fc.unreadable.iter().map(|f| format!("{object}.{f}"))),
            // Describe of an object the user may not read is not found.
            Err(crm::CrmError::Permanent(m)) if m.contains("NOT_FOUND") => {
                out.unreadable.push(format!("{object} (the object)"));
            }
            Err(e) => return Err(anyhow!("as the integration user: {e}")),
        }
    }
    Ok(out)
}

/// What `connect dataverse` did.
#[derive(Debug)]
pub struct DataverseReport {
    pub steps: Vec<dataverse::provision::Step>,
}

/// `crm-sync connect dataverse`: the role with exactly the privileges the configuration needs,
/// assigned to the configured app's application user, and the alternate key when the identity
/// strategy uses one. When the caller may not (no token, or not an administrator), the error
/// carries the exact steps to take by hand.
pub async fn connect_dataverse(
    config: &Path,
    admin_token: &str,
    key_wait: std::time::Duration,
) -> anyhow::Result<DataverseReport> {
    use dataverse::provision::{self, DataverseAdmin, RoleSpec};
    let cfg = Config::load(config)?;
    let sources = cfg.mappers()?;
    let mappers: Vec<&Mapper> = cfg
        .sources
        .iter()
        .filter_map(|s| sources.get(&s.id))
        .collect();
    let (Some(url), Some(app)) = (&cfg.dataverse.url, &cfg.dataverse.client_id) else {
        bail!(
            "{}: set [dataverse] url and client_id (the app whose application user crm-sync writes as)",
            config.display()
        );
    };
    let spec = RoleSpec {
        privileges: crate::preflight::required_privileges(&mappers),
        application_id: app.clone(),
        alternate_key: cfg.dataverse.identity == mapping::IdentityStrategy::AlternateKey,
        key_wait,
        key_poll: (key_wait / 20).clamp(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(10),
        ),
    };
    let by_hand = |why: String| {
        anyhow!(
            "{why}\n  an administrator of the environment can run this command with their own token, or do this by hand:\n{}",
            provision::manual_steps(&spec)
        )
    };
    let token = resolve_secret(admin_token, "--admin-token").map_err(|e| {
        by_hand(format!(
            "{e} (an access token of a System Administrator of the environment)"
        ))
    })?;
    let admin = DataverseAdmin::new(url, token.expose())?;
    match provision::connect(&admin, &spec).await {
        Ok(steps) => Ok(DataverseReport { steps }),
        Err(e) if e.is_access() => Err(by_hand(e.to_string())),
        Err(e) if e.is_retryable() => Err(anyhow!(
            "{e}\n  run the command again: it continues where this run stopped"
        )),
        Err(e) => Err(anyhow!(e)),
    }
}
