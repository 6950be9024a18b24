//! Knobs of the HubSpot emulator: the generated portal (sizes, seed, time span), the private app
//! token every call must carry, an optional rate limit rule, and how webhooks are delivered.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

#[derive(Debug, Clone)]
pub struct HubSpotConfig {
    /// Same seed, same portal: ids, names and timestamps repeat exactly.
    pub seed: u64,
    pub companies: usize,
    pub contacts_per_company: usize,
    /// Contacts with no associated company.
    pub orphan_contacts: usize,
    /// The first this many companies (and the first contact of each) get values longer than
    /// Dataverse columns allow (name over 160 characters, last name over 50).
    pub overlong_values: usize,
    /// The private app access token: `Authorization: Bearer <token>`.
    pub token: String,
    /// `portalId` in webhook events (the HubSpot account id).
    pub portal_id: u64,
    /// `appId` in webhook events.
    pub app_id: u64,
    /// `(requests, window)`: requests beyond it in one window get 429 (HubSpot's burst limit is
    /// per 10 seconds, e.g. 100 or 190 per app). `None`: unlimited.
    pub rate_limit_per_window: Option<(u32, Duration)>,
    /// Generated `createdAt` / `updatedAt` values are spread over
    /// `[history_start, history_start + history_days)`.
    pub history_start: DateTime<Utc>,
    pub history_days: i64,
    /// Roughly one record in this many shares its `updatedAt` with the previous one, so a walk
    /// ordered by modification time must tie-break on the id.
    pub shared_stamp_every: usize,
    /// How long mutations are collected into one webhook batch before it is sent.
    pub webhook_batch_delay: Duration,
    /// Retries of a failed webhook delivery (HubSpot: up to 10, exponential backoff in minutes;
    /// scaled down here so tests stay fast).
    pub webhook_retries: u32,
    /// First retry delay; doubles with every attempt.
    pub webhook_retry_delay: Duration,
    /// How long the target has to answer (HubSpot's documented timeout has been 1 to 5 s).
    pub webhook_timeout: Duration,
}

impl Default for HubSpotConfig {
    fn default() -> Self {
        HubSpotConfig {
            seed: 42,
            companies: 100,
            contacts_per_company: 3,
            orphan_contacts: 5,
            overlong_values: 2,
            token: "pat-na1-00000000-0000-0000-0000-000000000000".into(),
            portal_id: 62515,
            app_id: 54321,
            rate_limit_per_window: None,
            history_start: Utc
                .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            history_days: 365,
            shared_stamp_every: 5,
            webhook_batch_delay: Duration::from_millis(20),
            webhook_retries: 3,
            webhook_retry_delay: Duration::from_millis(20),
            webhook_timeout: Duration::from_secs(5),
        }
    }
}
