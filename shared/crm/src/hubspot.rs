//! HubSpot CRM reader: a [`CrmReader`] over reqwest for companies (accounts) and contacts,
//! through the CRM v3 object APIs.
//!
//! Why it looks the way it does:
//! - Auth is a private app access token, `Authorization: Bearer <token>` (API keys were retired
//!   on 2022-11-30). The token never appears in errors, logs or `Debug`; error text taken from
//!   HubSpot's answers is scrubbed of it as well.
//! - Only the mapped properties are asked for (`properties=`): HubSpot returns a handful of
//!   defaults otherwise ("Properties are opt-in on reads"). `hs_object_id`, the modification
//!   time and, for contacts, `associatedcompanyid` (the primary company, the mapping's parent)
//!   are always added.
//! - Snapshot (no `modified_since`): `GET /crm/v3/objects/{type}?limit=100&after=...` until
//!   `paging.next` is absent ("Retrieve contacts", the v3 OpenAPI spec in
//!   HubSpot/HubSpot-public-api-spec-collection: `paging.next.after` is "the paging cursor
//!   token of the last successfully read resource"). Results come in id order. A short or
//!   empty page that still has `paging.next` is not the end. Contacts ask
//!   `associations=companies` so the parent is there twice.
//! - Checkpoints: each page's checkpoint is `(updatedAt, id)` of its last record. A list cursor
//!   can die (a lost message, an expired token: HubSpot answers 400); the walk then resumes
//!   from the checkpoint with the search endpoint, `hs_object_id GT <id>` sorted by
//!   `hs_object_id` ascending — the same id order as the list, so nothing is skipped or
//!   repeated. Only the id of a snapshot checkpoint is used; the timestamp is informational.
//! - Catch-up (`modified_since` set): `POST /crm/v3/objects/{type}/search` with
//!   `hs_lastmodifieddate` (contacts: `lastmodifieddate`) `GTE since` and, after the first
//!   page, `hs_object_id GT <checkpoint id>`, sorted by `hs_object_id`. Search stops at 10,000
//!   results per query ("Attempting to page beyond 10,000 will result in a 400 error", the
//!   search guide's Limitations), so the client never pages a search with `after`: every page
//!   is a new query whose lower bound moved past the last id read (keyset), and a catch-up of
//!   any size works. Why id order and not modification time: a search takes one sort rule, and
//!   modification times tie at the millisecond, so a keyset on `(hs_lastmodifieddate, id)`
//!   would need an id order inside ties that one sort cannot ask for. The price: a record
//!   modified *during* the catch-up, behind its position, is left to its webhook (or the next
//!   catch-up); everything modified since `modified_since` before the pass reached it is read.
//! - Deletions: `GET ...?archived=true` walked to the end, keeping records whose `archivedAt`
//!   is at or after `since` (HubSpot keeps archived records restorable for 90 days).
//! - Fetch by id: `POST /crm/v3/objects/{type}/batch/read` with at most 100 inputs; a 207
//!   Multi-Status names the missing ones in `errors` ("Multi-status errors" in the error
//!   handling guide); ids absent from `results` are reported missing, whatever the error
//!   body says. A 404 `OBJECT_NOT_FOUND` means none was found (any other 404 is an error, so a
//!   wrong base URL can never look like "everything was deleted").
//! - 429 (`errorType: RATE_LIMIT`, `policyName` `TEN_SECONDLY_ROLLING` / `SECONDLY` / `DAILY`)
//!   becomes [`CrmError::RateLimited`] with a wait from `Retry-After` if any, else the
//!   policy and `X-HubSpot-RateLimit-Interval-Milliseconds` (usage guidelines). 401/403 are
//!   access errors, 5xx and transport failures are retryable, the rest is permanent.
//! - A `paging.next.link` is never followed blindly: it must be on the configured origin and
//!   under `/crm/v3/objects/`, since following it sends the token.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mapping::Entity;
use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

use crate::http::{check_origin, checkpoint_of, follow_link, http_client};
use crate::reader::{Checkpoint, CrmError, CrmReader, Fetched, FieldCheck, Page, PageRequest};

/// HubSpot's API origin.
pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";
/// Largest page of the list endpoint.
const LIST_MAX: u32 = 100;
/// Largest page of the search endpoint (search request `limit`: "up to 200 objects").
const SEARCH_MAX: u32 = 200;
/// Inputs per batch read.
const BATCH_MAX: usize = 100;
/// Page size when the request names none.
const DEFAULT_PAGE: u32 = 100;
/// Pause after a 429 that says nothing more precise.
const DEFAULT_RATE_PAUSE: Duration = Duration::from_secs(1);
/// Longest pause taken from a rate limit interval header (the burst window is ten seconds).
const MAX_WINDOW_PAUSE: Duration = Duration::from_secs(10);
/// Pause after the daily limit (it resets at midnight in the account's time zone).
const DAILY_PAUSE: Duration = Duration::from_secs(15 * 60);
/// Top-level keys of a v3 object: mapping paths start with these, they are not properties.
const ENVELOPE: &[&str] = &[
    "id",
    "properties",
    "createdAt",
    "updatedAt",
    "archived",
    "archivedAt",
    "associations",
    "propertiesWithHistory",
    "url",
];

/// Where and as whom to read.
#[derive(Clone)]
pub struct HubSpotSettings {
    /// Normally [`DEFAULT_BASE_URL`].
    pub base_url: String,
    /// Private app access token.
    pub token: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl HubSpotSettings {
    pub fn new(base_url: &str, token: &str) -> Self {
        HubSpotSettings {
            base_url: base_url.to_string(),
            token: token.to_string(),
            timeout: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for HubSpotSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSpotSettings")
            .field("base_url", &self.base_url)
            .field("token", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

pub struct HubSpotClient {
    http: reqwest::Client,
    settings: HubSpotSettings,
    base: Url,
    fields: HashMap<Entity, Vec<String>>,
}

impl fmt::Debug for HubSpotClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSpotClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn object(entity: Entity) -> &'static str {
    match entity {
        Entity::Account => "companies",
        Entity::Contact => "contacts",
    }
}

/// The modification time property the search filters on: companies `hs_lastmodifieddate`,
/// contacts `lastmodifieddate` (the search guide's default properties of each).
fn modified_property(entity: Entity) -> &'static str {
    match entity {
        Entity::Account => "hs_lastmodifieddate",
        Entity::Contact => "lastmodifieddate",
    }
}

/// HubSpot ids are numeric strings; anything else is missing by definition and never sent.
fn is_object_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_property_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One HTTP answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl HubSpotClient {
    /// `fields`: per entity, the properties the caller needs. Plain property names
    /// (`firstname`), or the mapping's paths (`/properties/firstname`, `properties/firstname`);
    /// envelope names (`id`, `updatedAt`, `associations`, ...) are skipped.
    pub fn new(
        settings: HubSpotSettings,
        fields: HashMap<Entity, Vec<String>>,
    ) -> Result<Self, CrmError> {
        let base = Url::parse(&settings.base_url)
            .map_err(|e| CrmError::Permanent(format!("invalid HubSpot base URL: {e}")))?;
        check_origin(&base, "HubSpot")?;
        if settings.token.trim().is_empty() {
            return Err(CrmError::Access("no HubSpot private app token".into()));
        }
        let http = http_client(settings.timeout)?;
        Ok(HubSpotClient {
            http,
            settings,
            base,
            fields,
        })
    }

    /// The properties to ask for: the caller's, plus the id, the modification time and the
    /// contact's company, each once.
    fn properties(&self, entity: Entity) -> Vec<String> {
        let mut out: Vec<String> = vec!["hs_object_id".into(), modified_property(entity).into()];
        if entity == Entity::Contact {
            out.push("associatedcompanyid".into());
        }
        for f in self.fields.get(&entity).into_iter().flatten() {
            let name = f.trim_start_matches('/');
            let name = name.strip_prefix("properties/").unwrap_or(name);
            if ENVELOPE.contains(&name) {
                continue;
            }
            if !is_property_name(name) {
                tracing::warn!(field = %f, "skipping a HubSpot field that is not a property name");
                continue;
            }
            if !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
        }
        out
    }

    fn url(&self, path: &str) -> Result<Url, CrmError> {
        self.base
            .join(path)
            .map_err(|e| CrmError::Permanent(format!("HubSpot URL {path}: {e}")))
    }

    /// Error text from HubSpot, minus our token should it ever be echoed.
    fn scrub(&self, s: &str) -> String {
        let token = self.settings.token.trim();
        if token.is_empty() {
            s.to_string()
        } else {
            s.replace(token, "<redacted>")
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Answer, CrmError> {
        let resp = rb
            .bearer_auth(&self.settings.token)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| CrmError::Unavailable(format!("HubSpot: {}", e.without_url())))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .map_err(|e| CrmError::Unavailable(format!("HubSpot: {}", e.without_url())))?;
        Ok(Answer {
            status,
            headers,
            text,
        })
    }

    fn classify(&self, a: &Answer) -> CrmError {
        let body: Value = serde_json::from_str(&a.text).unwrap_or(Value::Null);
        let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
        let category = match field("category") {
            "" => field("errorType"),
            c => c,
        };
        let message = self.scrub(field("message"));
        let status = a.status;
        match status.as_u16() {
            429 => {
                let pause = rate_pause(&a.headers, field("policyName"));
                tracing::warn!(
                    ?pause,
                    policy = field("policyName"),
                    "HubSpot rate limit reached"
                );
                CrmError::RateLimited(pause)
            }
            401 | 403 => CrmError::Access(format!(
                "HubSpot refused the private app token ({status} {category}: {message})"
            )),
            s if s >= 500 => CrmError::Unavailable(format!("HubSpot {status} {category}")),
            _ => CrmError::Permanent(format!("HubSpot {status} {category}: {message}")),
        }
    }

    fn parse(&self, a: &Answer, what: &str) -> Result<Value, CrmError> {
        serde_json::from_str(&a.text).map_err(|e| {
            CrmError::Permanent(format!(
                "unreadable HubSpot {what} response (not JSON: {e})"
            ))
        })
    }

    /// A `paging.next.link` (or a cursor that is a URL): only on the configured origin and
    /// under `/crm/v3/objects/`, since following it sends the token.
    fn link_url(&self, link: &str) -> Result<Url, CrmError> {
        follow_link(&self.base, link, "/crm/v3/objects/", "HubSpot")
    }

    fn list_url(
        &self,
        entity: Entity,
        limit: u32,
        after: Option<&str>,
        archived: bool,
        properties: &str,
    ) -> Result<Url, CrmError> {
        let mut url = self.url(&format!("/crm/v3/objects/{}", object(entity)))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", &limit.to_string());
            q.append_pair("properties", properties);
            q.append_pair("archived", if archived { "true" } else { "false" });
            if entity == Entity::Contact && !archived {
                q.append_pair("associations", "companies");
            }
            if let Some(a) = after {
                q.append_pair("after", a);
            }
        }
        Ok(url)
    }

    /// One page of the list endpoint: (results, next `after`).
    async fn list_once(
        &self,
        url: Url,
        cursor_used: bool,
    ) -> Result<(Vec<Value>, Option<String>), CrmError> {
        let a = self.send(self.http.get(url)).await?;
        if !a.status.is_success() {
            if a.status == StatusCode::BAD_REQUEST && cursor_used {
                // HubSpot documents no "expired cursor" answer; a 400 to a request whose only
                // untrusted input is the cursor means the cursor is no good.
                tracing::info!(error = %self.classify(&a), "HubSpot refused the paging cursor");
                return Err(CrmError::CursorExpired);
            }
            return Err(self.classify(&a));
        }
        let mut body = self.parse(&a, "list")?;
        let results = match body.get_mut("results").map(Value::take) {
            Some(Value::Array(r)) => r,
            _ => {
                return Err(CrmError::Permanent(
                    "HubSpot list response without a results array".into(),
                ));
            }
        };
        let next = &body["paging"]["next"];
        if let Some(link) = next.get("link").and_then(Value::as_str) {
            // Refuse a poisoned link now, before its cursor is queued for the next page.
            self.link_url(link)?;
        }
        let after = match next.get("after") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(other) => {
                return Err(CrmError::Permanent(format!(
                    "HubSpot paging.next.after is not a cursor string: {other}"
                )));
            }
        };
        if next.is_object() && after.is_none() {
            return Err(CrmError::Permanent(
                "HubSpot paging.next without an after cursor".into(),
            ));
        }
        Ok((results, after))
    }

    /// A keyset search page: ids above `after_id`, optionally modified since `since`, in id
    /// order. Returns (results, more, total).
    async fn search_once(
        &self,
        entity: Entity,
        after_id: Option<&str>,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<(Vec<Value>, bool, Option<u64>), CrmError> {
        let mut filters = Vec::new();
        if let Some(id) = after_id {
            if !is_object_id(id) {
                return Err(CrmError::Permanent(format!(
                    "checkpoint id {id:?} is not a HubSpot object id"
                )));
            }
            filters.push(json!({"propertyName": "hs_object_id", "operator": "GT", "value": id}));
        }
        if let Some(t) = since {
            // Date-time filter values are epoch milliseconds.
            filters.push(json!({
                "propertyName": modified_property(entity),
                "operator": "GTE",
                "value": t.timestamp_millis().to_string(),
            }));
        }
        let mut body = json!({
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "properties": self.properties(entity),
            "limit": limit,
        });
        if !filters.is_empty() {
            body["filterGroups"] = json!([{ "filters": filters }]);
        }
        let url = self.url(&format!("/crm/v3/objects/{}/search", object(entity)))?;
        let a = self.send(self.http.post(url).json(&body)).await?;
        if !a.status.is_success() {
            return Err(self.classify(&a));
        }
        let mut v = self.parse(&a, "search")?;
        let results = match v.get_mut("results").map(Value::take) {
            Some(Value::Array(r)) => r,
            _ => {
                return Err(CrmError::Permanent(
                    "HubSpot search response without a results array".into(),
                ));
            }
        };
        let more = v["paging"]["next"].is_object();
        Ok((results, more, v.get("total").and_then(Value::as_u64)))
    }

    /// Reads a batch of up to 100 ids; the records found (none on a 404 `OBJECT_NOT_FOUND`).
    async fn batch_read(&self, entity: Entity, ids: &[&str]) -> Result<Vec<Value>, CrmError> {
        let mut url = self.url(&format!("/crm/v3/objects/{}/batch/read", object(entity)))?;
        url.query_pairs_mut().append_pair("archived", "false");
        let body = json!({
            "inputs": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            "properties": self.properties(entity),
        });
        let a = self.send(self.http.post(url).json(&body)).await?;
        match a.status.as_u16() {
            200 | 207 => {}
            404 => {
                let v: Value = serde_json::from_str(&a.text).unwrap_or(Value::Null);
                if v["category"] == "OBJECT_NOT_FOUND" {
                    return Ok(Vec::new());
                }
                return Err(self.classify(&a));
            }
            _ => return Err(self.classify(&a)),
        }
        let mut v = self.parse(&a, "batch read")?;
        match v.get_mut("results").map(Value::take) {
            Some(Value::Array(r)) => Ok(r),
            _ => Err(CrmError::Permanent(
                "HubSpot batch read response without a results array".into(),
            )),
        }
    }
}

/// How long to wait after a 429.
fn rate_pause(headers: &HeaderMap, policy: &str) -> Duration {
    let num = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(s) = num("Retry-After") {
        return Duration::from_secs(s.max(1));
    }
    if policy.eq_ignore_ascii_case("DAILY") {
        return DAILY_PAUSE;
    }
    if let Some(ms) = num("X-HubSpot-RateLimit-Interval-Milliseconds") {
        return Duration::from_millis(ms.max(100)).min(MAX_WINDOW_PAUSE);
    }
    DEFAULT_RATE_PAUSE
}

fn checkpoint(
    records: &[Value],
    fallback: &Option<Checkpoint>,
) -> Result<Option<Checkpoint>, CrmError> {
    match records.last() {
        Some(r) => checkpoint_of(r, "id", "updatedAt", "HubSpot").map(Some),
        None => Ok(fallback.clone()),
    }
}

#[async_trait]
impl CrmReader for HubSpotClient {
    async fn list_page(&self, entity: Entity, req: &PageRequest) -> Result<Page, CrmError> {
        let size = match req.page_size {
            0 => DEFAULT_PAGE,
            n => n,
        };
        // Catch-up, or a snapshot resuming from its checkpoint: keyset search in id order.
        if req.modified_since.is_some() || (req.cursor.is_none() && req.checkpoint.is_some()) {
            let after_id = req.checkpoint.as_ref().map(|c| c.id.as_str());
            let (records, more, total) = self
                .search_once(entity, after_id, req.modified_since, size.min(SEARCH_MAX))
                .await?;
            return Ok(Page {
                checkpoint: checkpoint(&records, &req.checkpoint)?,
                records,
                cursor: None,
                more,
                total,
            });
        }
        // Snapshot: the list endpoint and its cursor.
        let properties = self.properties(entity).join(",");
        let limit = size.min(LIST_MAX);
        let url = match req.cursor.as_deref() {
            Some(c) if c.contains("://") || c.starts_with('/') => self.link_url(c)?,
            c => self.list_url(entity, limit, c, false, &properties)?,
        };
        let (records, next) = self.list_once(url, req.cursor.is_some()).await?;
        Ok(Page {
            checkpoint: checkpoint(&records, &req.checkpoint)?,
            records,
            more: next.is_some(),
            cursor: next,
            total: None,
        })
    }

    /// "Properties API": `GET /crm/v3/properties/{objectType}` lists the object's properties
    /// without reading a record. The names checked are the properties this client reads (from
    /// the mapping's paths); `fields`, the paths' first segments, are `properties` here.
    async fn check(&self, entity: Entity, _fields: &[String]) -> Result<FieldCheck, CrmError> {
        let url = self.url(&format!("/crm/v3/properties/{}", object(entity)))?;
        let a = self.send(self.http.get(url)).await?;
        if !a.status.is_success() {
            return Err(self.classify(&a));
        }
        let body = self.parse(&a, "properties")?;
        let known: Vec<&str> = body["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        Ok(FieldCheck {
            unreadable: self
                .properties(entity)
                .into_iter()
                .filter(|p| !known.contains(&p.as_str()))
                .collect(),
            authoritative: true,
            sampled: false,
        })
    }

    async fn fetch_by_ids(&self, entity: Entity, ids: &[String]) -> Result<Fetched, CrmError> {
        let mut valid: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| is_object_id(id))
            .collect();
        valid.sort_unstable();
        valid.dedup();
        let mut found: HashMap<String, Value> = HashMap::new();
        for chunk in valid.chunks(BATCH_MAX) {
            for r in self.batch_read(entity, chunk).await? {
                if let Some(id) = r.get("id").and_then(Value::as_str) {
                    found.insert(id.to_string(), r);
                }
            }
        }
        Ok(Fetched::in_order(ids, &found))
    }

    async fn list_deleted(
        &self,
        entity: Entity,
        since: DateTime<Utc>,
    ) -> Result<Option<Vec<String>>, CrmError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let url = self.list_url(entity, LIST_MAX, after.as_deref(), true, "hs_object_id")?;
            let (records, next) = self.list_once(url, false).await?;
            for r in &records {
                let Some(id) = r.get("id").and_then(Value::as_str) else {
                    return Err(CrmError::Permanent(
                        "HubSpot archived record without an id".into(),
                    ));
                };
                // Without a readable archivedAt the deletion is kept: deleting what is gone
                // is harmless, missing a deletion is not.
                let at = r
                    .get("archivedAt")
                    .and_then(mapping::transform::parse_timestamp);
                if at.is_none_or(|t| t >= since) {
                    out.push(id.to_string());
                }
            }
            match next {
                Some(n) => after = Some(n),
                None => return Ok(Some(out)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> HubSpotClient {
        HubSpotClient::new(
            HubSpotSettings::new(DEFAULT_BASE_URL, "pat-na1-secret"),
            HashMap::from([(
                Entity::Contact,
                vec![
                    "/properties/firstname".into(),
                    "id".into(),
                    "updatedAt".into(),
                    "properties".into(),
                    "associations".into(),
                    "email".into(),
                    "hs_object_id".into(),
                    "x,y".into(),
                ],
            )]),
        )
        .unwrap()
    }

    #[test]
    fn properties_are_names_once() {
        assert_eq!(
            client().properties(Entity::Contact),
            [
                "hs_object_id",
                "lastmodifieddate",
                "associatedcompanyid",
                "firstname",
                "email"
            ]
        );
        assert_eq!(
            client().properties(Entity::Account),
            ["hs_object_id", "hs_lastmodifieddate"]
        );
    }

    #[test]
    fn token_stays_out_of_debug_and_errors() {
        let c = client();
        assert!(!format!("{c:?}").contains("pat-na1-secret"));
        assert_eq!(c.scrub("bad token pat-na1-secret"), "bad token <redacted>");
    }

    #[test]
    fn links_stay_on_the_api_origin() {
        let c = client();
        assert!(
            c.link_url("https://api.hubapi.com/crm/v3/objects/contacts?after=x")
                .is_ok()
        );
        assert!(c.link_url("/crm/v3/objects/contacts?after=x").is_ok());
        assert!(
            c.link_url("https://evil.example/crm/v3/objects/contacts")
                .is_err()
        );
        assert!(
            c.link_url("http://api.hubapi.com/crm/v3/objects/contacts")
                .is_err()
        );
        assert!(c.link_url("https://api.hubapi.com/oauth/v1/x").is_err());
    }

    #[test]
    fn rate_pauses() {
        let mut h = HeaderMap::new();
        assert_eq!(rate_pause(&h, "TEN_SECONDLY_ROLLING"), DEFAULT_RATE_PAUSE);
        assert_eq!(rate_pause(&h, "DAILY"), DAILY_PAUSE);
        h.insert(
            "X-HubSpot-RateLimit-Interval-Milliseconds",
            "10000".parse().unwrap(),
        );
        assert_eq!(
            rate_pause(&h, "TEN_SECONDLY_ROLLING"),
            Duration::from_secs(10)
        );
        h.insert("Retry-After", "3".parse().unwrap());
        assert_eq!(rate_pause(&h, ""), Duration::from_secs(3));
    }

    #[test]
    fn ids_are_numeric() {
        assert!(is_object_id("18139443271"));
        assert!(!is_object_id(""));
        assert!(!is_object_id("12 OR 1=1"));
        assert!(!is_object_id("-1"));
    }

    #[test]
    fn https_only_off_loopback() {
        assert!(
            HubSpotClient::new(
                HubSpotSettings::new("http://api.hubapi.com", "t"),
                HashMap::new()
            )
            .is_err()
        );
        assert!(
            HubSpotClient::new(
                HubSpotSettings::new("http://127.0.0.1:9", "t"),
                HashMap::new()
            )
            .is_ok()
        );
        assert!(
            HubSpotClient::new(
                HubSpotSettings::new("https://api.hubapi.com", " "),
                HashMap::new()
            )
            .is_err()
        );
    }
}
