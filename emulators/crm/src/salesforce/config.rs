//! Knobs of the Salesforce emulator: the generated org (sizes, seed, time span) and the
//! connected app's credentials.

use chrono::{DateTime, TimeZone, Utc};

#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// Same seed, same org: ids, names and timestamps repeat exactly.
    pub seed: u64,
    pub accounts: usize,
    pub contacts_per_account: usize,
    /// Contacts with no AccountId ("private contacts").
    pub orphan_contacts: usize,
    /// How many accounts get a Name longer than Dataverse's 160 characters (and contacts a
    /// LastName longer than its 50).
    pub overlong_values: usize,
    /// Generated SystemModstamps are spread over `[history_start, history_start + history_days)`.
    pub history_start: DateTime<Utc>,
    pub history_days: i64,
    /// Roughly one record in this many shares its SystemModstamp with the previous one (bulk
    /// loads stamp many rows in the same millisecond), so keyset paging must tie-break on Id.
    pub shared_stamp_every: usize,
    /// The connected app's consumer key and secret (client credentials flow).
    pub client_id: String,
    pub client_secret: String,
    /// Daily API request allocation (`Sforce-Limit-Info: api-usage=N/limit`).
    pub daily_limit: u64,
    /// Organization id, in the identity URL and token prefix.
    pub org_id: String,
    /// The X.509 certificate (PEM) uploaded to the connected app for the JWT bearer flow
    /// ("Use digital signatures"); `None`: the app has none and JWT assertions are refused.
    pub jwt_certificate_pem: Option<String>,
    /// The username a JWT's `sub` must name: the pre-authorised integration user.
    pub username: String,
    /// A System Administrator of the org, and an access token of theirs that is valid from the
    /// start (as if they had logged in): what `crm-sync connect salesforce` provisions with.
    pub admin_username: String,
    pub admin_token: String,
}

impl Default for SalesforceConfig {
    fn default() -> Self {
        SalesforceConfig {
            seed: 42,
            accounts: 100,
            contacts_per_account: 3,
            orphan_contacts: 5,
            overlong_values: 3,
            history_start: Utc
                .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            history_days: 365,
            shared_stamp_every: 10,
            client_id: "3MVG9emulatorConsumerKey".into(),
            client_secret: "emulator-consumer-secret".into(),
            daily_limit: 100_000,
            org_id: "00DDn000000EmuAAA".into(),
            jwt_certificate_pem: None,
            username: "integration@emulator.example".into(),
            admin_username: "admin@emulator.example".into(),
            admin_token: "00DDn000000EmuA!ARadmin-session-emulator".into(),
        }
    }
}
