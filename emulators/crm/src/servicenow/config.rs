//! Knobs of the ServiceNow emulator: the generated CSM data (sizes, seed, time span), the
//! integration user's Basic auth credentials, and an optional inbound REST rate limit rule.

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
