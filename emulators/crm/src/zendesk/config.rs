//! Knobs of the Zendesk Support emulator: the generated account (sizes, seed, time span), the
//! credentials every call must carry, the account-wide and incremental-export rate limits, and
//! how much of the most recent past the incremental exports leave out.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

#[derive(Debug, Clone)]
pub struct ZendeskConfig {
    /// Same seed, same account: ids, names and timestamps repeat exactly.
    pub seed: u64,
    pub organizations: usize,
    /// End users created in each organization (`organization_id` set).
    pub users_per_organization: usize,
    /// End users with `organization_id: null`.
    pub users_without_organization: usize,
    /// Users with role `agent` (not contacts; the users list returns them without a role filter).
    pub agents: usize,
    /// The first this-many organizations (and one user of each) get values longer than
    /// Dataverse's columns allow.
    pub overlong_values: usize,
    /// API token auth: Basic `{email}/token:{api_token}` ("Security and authentication", Zendesk
    /// API reference).
    pub email: String,
    pub api_token: String,
    /// OAuth access token accepted as `Authorization: Bearer ...`.
    pub oauth_token: String,
    /// `(requests, window)` for the whole account (Zendesk plans allow 200 to 2,500 requests a
    /// minute); `None`: unlimited.
    pub rate_limit: Option<(u32, Duration)>,
    /// `(requests, window)` for the incremental export endpoints, on top of the account limit.
    /// Documented: "You can make up to 10 requests per minute to these endpoints".
    pub export_rate_limit: Option<(u32, Duration)>,
    /// Incremental exports leave out items changed within this much of the request ("any items
    /// that were created or changed within the minute prior to your request are excluded"), and
    /// refuse a `start_time` more recent than that. Documented: one minute.
    pub export_lag: Duration,
    /// Generated `updated_at` values are spread over
    /// `[history_start, history_start + history_days)`, at 1-second resolution.
    pub history_start: DateTime<Utc>,
    pub history_days: i64,
    /// Roughly one record in this many shares its `updated_at` with the previous one.
    pub shared_stamp_every: usize,
}

impl Default for ZendeskConfig {
    fn default() -> Self {
        ZendeskConfig {
            seed: 7,
            organizations: 100,
            users_per_organization: 3,
            users_without_organization: 5,
            agents: 3,
            overlong_values: 2,
            email: "integration@example.com".into(),
            api_token: "emulator-api-token".into(),
            oauth_token: "emulator-oauth-token".into(),
            rate_limit: None,
            export_rate_limit: Some((10, Duration::from_secs(60))),
            export_lag: Duration::from_secs(60),
            history_start: Utc
                .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            history_days: 365,
            shared_stamp_every: 5,
        }
    }
}
