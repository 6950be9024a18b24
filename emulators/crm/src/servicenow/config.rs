//! Knobs of the ServiceNow emulator: the generated CSM data (sizes, seed, time span), the
//! integration user's Basic auth credentials, the OAuth application registry entry the token
//! endpoint accepts, deletion auditing (`sys_audit_delete`) and whether the integration user may
//! read it, and an optional inbound REST rate limit rule.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

#[derive(Debug, Clone)]
pub struct ServiceNowConfig {
    /// Same seed, same instance: sys_ids, names and timestamps repeat exactly.
    pub seed: u64,
    pub accounts: usize,
    pub contacts_per_account: usize,
    /// Contacts whose `account` reference is empty.
    pub orphan_contacts: usize,
    /// Basic auth user and password every Table API call must carry.
    pub user: String,
    pub password: String,
    /// The OAuth application registry entry ("Create an endpoint for external clients to access
    /// the instance": System OAuth > Application Registry) `/oauth_token.do` accepts.
    pub oauth_client_id: String,
    pub oauth_client_secret: String,
    /// The entry's "Access Token Lifespan": `expires_in` of every access token, after which the
    /// Table API answers 401. ServiceNow's sample token response says `"expires_in": 1799`.
    pub oauth_token_lifetime: Duration,
    /// The `glide.oauth.inbound.client.credential.grant_type.enabled` system property: the
    /// client credentials grant works only when it is true ("Client Credentials", ServiceNow
    /// docs: "By default the system property is false"). True here so tests need not set it.
    pub client_credentials_enabled: bool,
    /// How `/oauth_token.do` refuses. `false` (default): as instances are reported to answer
    /// every refusal, 401 `{"error":"server_error","error_description":"access_denied"}`
    /// (demisto/content-docs#1301 quotes it; not in ServiceNow's docs). `true`: RFC 6749
    /// section 5.2 codes (401 `invalid_client`, 400 `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type`).
    pub oauth_rfc_errors: bool,
    /// Whether the CSM tables are audited for deletes: a delete writes a `sys_audit_delete` row
    /// (`tablename`, `documentkey` = the deleted sys_id, `sys_created_on`). False models a
    /// table with the `no_audit_delete=true` dictionary attribute.
    pub audit_deletes: bool,
    /// Whether the integration user may read `sys_audit_delete`; false: 403 on that table.
    pub audit_delete_readable: bool,
    /// `(requests, window)`: a rate limit rule (`sys_rate_limit_rules`); requests beyond it in
    /// one window get 429. `None`: unlimited.
    pub rate_limit_per_window: Option<(u32, Duration)>,
    /// Generated `sys_updated_on` values are spread over
    /// `[history_start, history_start + history_days)`.
    pub history_start: DateTime<Utc>,
    pub history_days: i64,
    /// Roughly one record in this many shares its `sys_updated_on` with the previous one
    /// (1-second resolution makes ties common), so keyset paging must tie-break on sys_id.
    pub shared_stamp_every: usize,
}

impl Default for ServiceNowConfig {
    fn default() -> Self {
        ServiceNowConfig {
            seed: 42,
            accounts: 100,
            contacts_per_account: 3,
            orphan_contacts: 5,
            user: "integration.user".into(),
            password: "emulator-password".into(),
            oauth_client_id: "62c5e0b2b7a31010a5d3c6e1f2a4b9d0".into(),
            oauth_client_secret: "emulator-client-secret".into(),
            oauth_token_lifetime: Duration::from_secs(1799),
            client_credentials_enabled: true,
            oauth_rfc_errors: false,
            audit_deletes: true,
            audit_delete_readable: true,
            rate_limit_per_window: None,
            history_start: Utc
                .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            history_days: 365,
            shared_stamp_every: 5,
        }
    }
}
