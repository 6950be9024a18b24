//! Emulator configuration: credentials, service-protection limits, table capabilities, the
//! alternate key's state and fault injection. Defaults are the real service's documented values
//! so a test that does not care gets realistic behaviour.

use std::collections::BTreeMap;
use std::time::Duration;

/// Everything an emulator instance is started with.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Entra tenant in the token URL (`/{tenant}/oauth2/v2.0/token`).
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    /// A certificate registered on the app (public key PEM and its SHA-1 thumbprint): token
    /// requests may then authenticate with a signed client assertion instead of the secret.
    pub client_certificate: Option<ClientCertificate>,
    /// `expires_in` of issued tokens; a token is refused once it has elapsed.
    pub token_lifetime: Duration,
    pub limits: Limits,
    pub tables: TableSettings,
    /// `None`: no alternate key on (`msdyn_source_crm`, `msdyn_source_crm_id`).
    pub alternate_key: Option<KeyStatus>,
    pub faults: Faults,
    /// Options of the `msdyn_source_crm` choice column.
    pub choice_values: Vec<i32>,
    /// Privileges of the application user's roles, by name (`prvCreateAccount`), all at Global
    /// depth: what `RetrieveUserPrivileges` answers. Default: everything crm-sync needs.
    pub privileges: Vec<String>,
    /// How this org's columns differ from the documented ones (`("account", "name")` → ...):
    /// an org may customise a column's MaxLength, or lack a solution's column altogether.
    pub attributes: BTreeMap<(String, String), AttributeChange>,
    /// An access token of a System Administrator of the environment (as if they had signed
    /// in), accepted as a bearer token: what `crm-sync connect dataverse` provisions with.
    pub admin_token: Option<String>,
    /// What happens to an alternate key created through the API.
    pub key_build: crate::security::KeyBuild,
}

/// A customisation of one column in this org.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeChange {
    /// The column does not exist (its solution is not installed, or it was deleted).
    Missing,
    /// The column's MaxLength was changed to this.
    MaxLength(u32),
}

/// The privileges crm-sync's application user needs: create, read, write, delete, append and
/// append to on account and contact ("Security roles and privileges": `prv{Action}{Table}`).
pub fn default_privileges() -> Vec<String> {
    let mut out = Vec::new();
    for table in ["Account", "Contact"] {
        for action in ["Create", "Read", "Write", "Delete", "Append", "AppendTo"] {
            out.push(format!("prv{action}{table}"));
        }
    }
    out
}

/// A certificate credential of the app registration.
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    /// `-----BEGIN PUBLIC KEY-----` PEM of the certificate's RSA key.
    pub public_key_pem: String,
    /// The certificate's SHA-1 thumbprint as the portal shows it (40 hex digits).
    pub thumbprint: String,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            tenant: "tenant-1".into(),
            client_id: "client-1".into(),
            client_secret: "secret-1".into(),
            client_certificate: None,
            // The Entra sample response ("OAuth 2.0 client credentials flow") shows 3599.
            token_lifetime: Duration::from_secs(3599),
            limits: Limits::default(),
            tables: TableSettings::default(),
            alternate_key: None,
            faults: Faults::default(),
            choice_values: vec![1, 2, 3],
            privileges: default_privileges(),
            attributes: BTreeMap::new(),
            admin_token: None,
            key_build: Default::default(),
        }
    }
}

/// Service protection limits, per user, sliding window ("Service protection API limits",
/// https://learn.microsoft.com/power-apps/developer/data-platform/api-limits).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Sliding window: 300 s.
    pub window: Duration,
    /// Requests per window: 6000.
    pub max_requests: u32,
    /// Combined execution time per window: 1,200 s.
    pub max_execution: Duration,
    /// Execution time each write operation costs (each `$batch` part, each bulk target).
    pub cost_per_operation: Duration,
    /// Concurrent requests: 52.
    pub max_concurrency: u32,
    /// Value of the `x-ms-dop-hint` header ("Send parallel requests").
    pub dop_hint: u32,
    /// Sleep for the cost so latency grows with work, as on the real service.
    pub simulate_cost: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            window: Duration::from_secs(300),
            max_requests: 6000,
            max_execution: Duration::from_secs(1200),
            cost_per_operation: Duration::from_millis(5),
            max_concurrency: 52,
            dop_hint: 50,
            simulate_cost: false,
        }
    }
}

/// Injected faults; all rates are probabilities in 0..=1 drawn from a seeded generator so a
/// failing test can be replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Added to every API request.
    pub latency: Duration,
    /// Share of API requests answered 500/503 with a Dataverse error body.
    pub error_5xx_rate: f64,
    /// Share of API requests whose connection is closed without any response.
    pub drop_rate: f64,
    /// Share of write operations failing with the documented SQL deadlock error (HTTP 500).
    pub deadlock_rate: f64,
    /// Share of API requests answered only after `slow` more, the work already done: a client
    /// whose timeout is shorter gives up on a request that took effect, and must retry it
    /// idempotently.
    pub slow_rate: f64,
    pub slow: Duration,
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency: Duration::ZERO,
            error_5xx_rate: 0.0,
            drop_rate: 0.0,
            deadlock_rate: 0.0,
            slow_rate: 0.0,
            slow: Duration::ZERO,
            seed: 1,
        }
    }
}

/// `EntityKeyIndexStatus` of the alternate key ("Define alternate keys for a table": the index
/// is built asynchronously and the key is usable only once Active).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Pending,
    InProgress,
    Active,
    Failed,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Pending => "Pending",
            KeyStatus::InProgress => "InProgress",
            KeyStatus::Active => "Active",
            KeyStatus::Failed => "Failed",
        }
    }
}

/// Per-table capabilities.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableSettings {
    pub account: TableSetting,
    pub contact: TableSetting,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableSetting {
    /// Whether CreateMultiple/UpdateMultiple/UpsertMultiple exist for the table. Default false:
    /// "Use bulk operation messages" names Account and Contact as examples of core tables that
    /// may not support them.
    pub bulk_supported: bool,
}
