//! Knobs of the Pipedrive emulator: the generated company (sizes, seed, time span), the API
//! token and OAuth token every call must carry, and an optional per-token burst rate limit.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

#[derive(Debug, Clone)]
pub struct PipedriveConfig {
    /// Same seed, same company: ids, names and timestamps repeat exactly.
    pub seed: u64,
    pub organizations: usize,
    /// Persons linked to each organization (`org_id` set).
    pub persons_per_organization: usize,
    /// Persons with `org_id: null`.
    pub persons_without_organization: usize,
    /// The first this-many organizations (and one person of each) get values longer than
    /// Dataverse's columns allow.
    pub overlong_values: usize,
    /// Accepted in the `x-api-token` header.
    pub api_token: String,
    /// Accepted as `Authorization: Bearer ...`.
    pub oauth_token: String,
    /// `(requests, window)` per token; Pipedrive's documented burst window is 2 seconds (20 to
    /// 120 requests per window with an API token depending on the plan). `None`: unlimited.
    pub rate_limit: Option<(u32, Duration)>,
    /// Whether contact sync is on: persons then carry `notes`, `im`, `birthday`, `job_title` and
    /// `postal_address` ("Get all persons": those fields "are only included if contact sync is
    /// enabled for the company").
    pub contact_sync: bool,
    /// Generated `update_time` values are spread over
    /// `[history_start, history_start + history_days)`, at 1-second resolution.
    pub history_start: DateTime<Utc>,
    pub history_days: i64,
    /// Roughly one record in this many shares its `update_time` with the previous one.
    pub shared_stamp_every: usize,
}

impl Default for PipedriveConfig {
    fn default() -> Self {
        PipedriveConfig {
            seed: 11,
            organizations: 100,
            persons_per_organization: 3,
            persons_without_organization: 5,
            overlong_values: 2,
            api_token: "emulator-api-token".into(),
            oauth_token: "emulator-oauth-token".into(),
            rate_limit: None,
            contact_sync: true,
            history_start: Utc
                .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            history_days: 365,
            shared_stamp_every: 5,
        }
    }
}
