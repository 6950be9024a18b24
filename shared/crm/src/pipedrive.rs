//! Pipedrive reader: a [`CrmReader`] over reqwest for organizations (accounts) and persons
//! (contacts), on API v2.
//!
//! Why it looks the way it does:
//! - Auth is the API token in the `x-api-token` header or an OAuth access token as Bearer
//!   ("Authentication", https://pipedrive.readme.io/docs/core-api-concepts-authentication; the
//!   v2 OpenAPI declares `x-api-token` as the api_key header). Never the `api_token` query
//!   parameter: URLs end up in logs. Neither token appears in errors, logs or `Debug` output.
//! - Every walk is `GET /api/v2/{organizations,persons}?sort_by=update_time&sort_direction=asc`
//!   paged with `cursor`/`limit` (limit ≤ 500; next page in `additional_data.next_cursor`,
//!   "Pagination", https://pipedrive.readme.io/docs/core-api-concepts-pagination). The cursor is
//!   an opaque token sent back as a query parameter to the configured host, never a URL: one
//!   that is not a plain token is refused before anything is sent.
//! - Checkpoint mapping: sorting by `update_time` makes the walk restartable by time. A
//!   checkpoint is the last record's (`update_time`, id); after a dead cursor the walk resumes
//!   with `updated_since` = the checkpoint's second ("update_time later than or equal to"), so
//!   records of that second are read again (the order within a second is not documented, so
//!   none is skipped); duplicates are harmless to idempotent upserts. The catch-up pass is the
//!   same walk with `updated_since` = `modified_since` (the later of the two on resume).
//! - `fetch_by_ids` uses the `ids` filter ("up to 100 entity ids ... If any of the requested
//!   entities do not exist or are not visible, they are not included"), 100 ids a request.
//! - Deletions: Pipedrive soft-deletes persons and organizations and purges them after 30 days
//!   (changelog "Permanent deletion logic for 6 core entities"). The v2 list endpoints document
//!   no way to list deleted records and no deletion log exists for these entities (v1
//!   `GET /recents` lists changes by item type, with no documented delete entries), so
//!   [`CrmReader::list_deleted`] answers `None`: deletions arrive through webhooks v2 (`delete`
//!   action), and `fetch_by_ids` reports a deleted record as missing.
//! - Records are trimmed to the fields the caller asked for plus `id`, `update_time` and (persons)
//!   `org_id`; v2 has no field selection for standard fields.
//! - Rate limits: 429 with `x-ratelimit-reset` (seconds until the window resets) and, per older
//!   docs, `Retry-After` ("Rate limiting", https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting)
//!   → [`CrmError::RateLimited`]. Error bodies are `{"success": false, "error": "..."}`.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use mapping::Entity;
use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

use crate::http::{check_origin, checkpoint_of, http_client};
use crate::reader::{Checkpoint, CrmError, CrmReader, Fetched, Page, PageRequest};

/// v2 lists: "a maximum value of 500 is allowed".
const MAX_LIMIT: u32 = 500;
/// The `ids` filter takes up to 100 ids.
const IDS_PER_REQUEST: usize = 100;
/// Pause after a 429 that says nothing about when to retry (the burst window is 2 seconds).
const DEFAULT_RATE_PAUSE: Duration = Duration::from_secs(2);
/// Longest cursor accepted from a caller.
const MAX_CURSOR_LEN: usize = 2048;

/// How to authenticate.
#[derive(Clone)]
pub enum PipedriveAuth {
    /// Company API token, sent in `x-api-token`.
    ApiToken(String),
    /// OAuth access token, sent as `Authorization: Bearer`.
    Bearer(String),
}

impl PipedriveAuth {
    pub fn api_token(token: &str) -> Self {
        PipedriveAuth::ApiToken(token.to_string())
    }

    pub fn bearer(token: &str) -> Self {
        PipedriveAuth::Bearer(token.to_string())
    }

    fn who(&self) -> &'static str {
        match self {
            PipedriveAuth::ApiToken(_) => "the API token",
            PipedriveAuth::Bearer(_) => "the OAuth access token",
        }
    }
}

impl fmt::Debug for PipedriveAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            PipedriveAuth::ApiToken(_) => "ApiToken",
            PipedriveAuth::Bearer(_) => "Bearer",
        };
        f.debug_tuple(name).field(&"<redacted>").finish()
    }
}

/// Where and as whom to read.
#[derive(Clone, Debug)]
pub struct PipedriveSettings {
    /// `https://{company}.pipedrive.com` (or `https://api.pipedrive.com`).
    pub base_url: String,
    pub auth: PipedriveAuth,
}

impl PipedriveSettings {
    pub fn new(base_url: &str, auth: PipedriveAuth) -> Self {
        PipedriveSettings {
            base_url: base_url.to_string(),
            auth,
        }
    }
}

pub struct PipedriveClient {
    http: reqwest::Client,
    settings: PipedriveSettings,
    base: Url,
    fields: HashMap<Entity, Vec<String>>,
}

impl fmt::Debug for PipedriveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipedriveClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn path_of(entity: Entity) -> &'static str {
    match entity {
        Entity::Account => "/api/v2/organizations",
        Entity::Contact => "/api/v2/persons",
    }
}

fn id_of(r: &Value) -> Option<u64> {
    match r.get("id")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// RFC 3339 at the second, rounded down: `updated_since` is inclusive, so flooring never skips.
fn rfc3339_floor(t: DateTime<Utc>) -> String {
    DateTime::<Utc>::from_timestamp(t.timestamp(), 0)
        .unwrap_or(t)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A cursor as Pipedrive hands them out: an opaque token of URL-safe characters.
fn is_token(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= MAX_CURSOR_LEN
        && c.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'.' | b'+' | b'/')
        })
}

impl PipedriveClient {
    /// `fields`: per entity, the top-level fields the caller needs (the pipeline passes
    /// `Mapper::source_fields`); records are trimmed to those plus `id`, `update_time` and, for
    /// persons, `org_id`. No fields named: records are kept whole.
    pub fn new(
        settings: PipedriveSettings,
        fields: HashMap<Entity, Vec<String>>,
    ) -> Result<Self, CrmError> {
        let base = Url::parse(&settings.base_url)
            .map_err(|e| CrmError::Permanent(format!("invalid Pipedrive base URL: {e}")))?;
        check_origin(&base, "Pipedrive")?;
        let http = http_client(Duration::from_secs(120))?;
        Ok(PipedriveClient {
            http,
            settings,
            base,
            fields,
        })
    }

    fn url(&self, entity: Entity, params: &[(&str, String)]) -> Result<Url, CrmError> {
        let mut url = self
            .base
            .join(path_of(entity))
            .map_err(|e| CrmError::Permanent(format!("Pipedrive URL: {e}")))?;
        url.query_pairs_mut()
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        Ok(url)
    }

    /// GETs a list URL: the `data` array and `additional_data.next_cursor`.
    async fn get(&self, url: Url, cursor: bool) -> Result<(Vec<Value>, Option<String>), CrmError> {
        let path = url.path().to_string();
        let rb = self.http.get(url).header("Accept", "application/json");
        let rb = match &self.settings.auth {
            PipedriveAuth::ApiToken(t) => rb.header("x-api-token", t),
            PipedriveAuth::Bearer(t) => rb.bearer_auth(t),
        };
        let resp = rb
            .send()
            .await
            .map_err(|e| CrmError::Unavailable(format!("Pipedrive {path}: {}", e.without_url())))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .map_err(|e| CrmError::Unavailable(format!("Pipedrive {path}: {}", e.without_url())))?;
        if !status.is_success() {
            return Err(self.classify(status, &headers, &text, &path, cursor));
        }
        let mut body: Value = serde_json::from_str(&text).map_err(|e| {
            CrmError::Permanent(format!("unreadable Pipedrive response from {path}: {e}"))
        })?;
        if body.get("success").and_then(Value::as_bool) != Some(true) {
            let (error, _) = api_error(&text);
            return Err(CrmError::Permanent(format!(
                "Pipedrive {path} answered success != true: {error}"
            )));
        }
        let data = match body.get_mut("data").map(Value::take) {
            Some(Value::Array(a)) => a,
            Some(Value::Null) => Vec::new(),
            Some(_) => {
                return Err(CrmError::Permanent(format!(
                    "Pipedrive response from {path}: `data` is not an array"
                )));
            }
            None => {
                return Err(CrmError::Permanent(format!(
                    "Pipedrive response from {path} without `data`"
                )));
            }
        };
        let next = match body.pointer("/additional_data/next_cursor") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => {
                if !is_token(s) {
                    return Err(CrmError::Permanent(format!(
                        "Pipedrive response from {path}: next_cursor is not an opaque token"
                    )));
                }
                Some(s.clone())
            }
            Some(_) => {
                return Err(CrmError::Permanent(format!(
                    "Pipedrive response from {path}: next_cursor is not a string"
                )));
            }
        };
        Ok((data, next))
    }

    fn classify(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        text: &str,
        path: &str,
        cursor: bool,
    ) -> CrmError {
        let (error, info) = api_error(text);
        match status.as_u16() {
            429 => {
                let pause = retry_after(headers);
                tracing::warn!(?pause, path, "Pipedrive rate limit reached");
                CrmError::RateLimited(pause)
            }
            401 | 403 => CrmError::Access(format!(
                "Pipedrive refused {} ({status} on {path}: {error})",
                self.settings.auth.who()
            )),
            400 if cursor && error.to_ascii_lowercase().contains("cursor") => {
                tracing::warn!(path, error = %error, "Pipedrive cursor no longer valid");
                CrmError::CursorExpired
            }
            s if s >= 500 => CrmError::Unavailable(format!("Pipedrive {status} on {path}")),
            _ => CrmError::Permanent(format!("Pipedrive {status} on {path}: {error} {info}")),
        }
    }

    fn trim(&self, entity: Entity, r: Value) -> Value {
        let Some(wanted) = self.fields.get(&entity).filter(|f| !f.is_empty()) else {
            return r;
        };
        let Value::Object(mut m) = r else {
            return r;
        };
        m.retain(|k, _| {
            matches!(k.as_str(), "id" | "update_time")
                || (entity == Entity::Contact && k == "org_id")
                || wanted.iter().any(|w| w == k)
        });
        Value::Object(m)
    }

    fn position(r: &Value) -> Result<Checkpoint, CrmError> {
        let id = id_of(r)
            .ok_or_else(|| CrmError::Permanent("Pipedrive record without a numeric id".into()))?;
        let projected = json!({ "id": id.to_string(), "update_time": r.get("update_time") });
        checkpoint_of(&projected, "id", "update_time", "Pipedrive")
    }
}

#[async_trait]
impl CrmReader for PipedriveClient {
    async fn list_page(&self, entity: Entity, req: &PageRequest) -> Result<Page, CrmError> {
        let limit = match req.page_size {
            0 => MAX_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let mut params = vec![
            ("sort_by", "update_time".to_string()),
            ("sort_direction", "asc".to_string()),
            ("limit", limit.to_string()),
        ];
        let cursor = match &req.cursor {
            Some(c) => {
                if !is_token(c) {
                    return Err(CrmError::Permanent(
                        "refusing a Pipedrive cursor that is not an opaque token (a URL or \
                         query syntax would be sent to the API)"
                            .into(),
                    ));
                }
                // The walk's own filter only: the cursor carries the position.
                if let Some(since) = req.modified_since {
                    params.push(("updated_since", rfc3339_floor(since)));
                }
                params.push(("cursor", c.clone()));
                true
            }
            None => {
                let from = match (&req.checkpoint, req.modified_since) {
                    (Some(cp), Some(since)) => Some(cp.modified_at.max(since)),
                    (Some(cp), None) => Some(cp.modified_at),
                    (None, since) => since,
                };
                if let Some(t) = from {
                    params.push(("updated_since", rfc3339_floor(t)));
                }
                false
            }
        };
        let (raw, next) = self.get(self.url(entity, &params)?, cursor).await?;
        let checkpoint = match raw.last() {
            Some(r) => Some(Self::position(r)?),
            None => req.checkpoint.clone(),
        };
        let records = raw
            .into_iter()
            .filter(|r| r.get("is_deleted").and_then(Value::as_bool) != Some(true))
            .map(|r| self.trim(entity, r))
            .collect();
        Ok(Page {
            records,
            more: next.is_some(),
            cursor: next,
            checkpoint,
            total: None,
        })
    }

    async fn fetch_by_ids(&self, entity: Entity, ids: &[String]) -> Result<Fetched, CrmError> {
        let valid: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        let mut found: HashMap<String, Value> = HashMap::new();
        for chunk in valid.chunks(IDS_PER_REQUEST) {
            let params = [
                ("ids", chunk.join(",")),
                ("limit", IDS_PER_REQUEST.to_string()),
            ];
            let (records, _) = self.get(self.url(entity, &params)?, false).await?;
            for r in records {
                if r.get("is_deleted").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                if let Some(id) = id_of(&r) {
                    found.insert(id.to_string(), self.trim(entity, r));
                }
            }
        }
        Ok(Fetched::in_order(ids, &found))
    }

    // `list_deleted` keeps the trait's default (`None`): see the module documentation.
}

/// How long the CRM asked us to wait (see [`crate::http::retry_after`]).
fn retry_after(headers: &HeaderMap) -> Duration {
    crate::http::retry_after(headers, std::time::SystemTime::now(), DEFAULT_RATE_PAUSE)
}

/// `{"success": false, "error": "...", "error_info": "..."}` → (error, error_info).
fn api_error(text: &str) -> (String, String) {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if v.is_null() {
        return (text.chars().take(200).collect(), String::new());
    }
    (s("error"), s("error_info"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> PipedriveClient {
        PipedriveClient::new(
            PipedriveSettings::new(
                "https://acme.pipedrive.com",
                PipedriveAuth::api_token("s3cr3t"),
            ),
            HashMap::from([(Entity::Contact, vec!["first_name".into(), "emails".into()])]),
        )
        .unwrap()
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        assert!(!format!("{:?}", client()).contains("s3cr3t"));
        let b = PipedriveSettings::new("https://x.pipedrive.com", PipedriveAuth::bearer("tok"));
        assert!(!format!("{b:?}").contains("tok\""));
    }

    #[test]
    fn cursors_are_tokens() {
        assert!(is_token("eyJmaWVsZCI6ImlkIiwiaWQiOjV9"));
        assert!(is_token("MTox-_Zg=="));
        assert!(!is_token("https://evil.example/api/v2/persons"));
        assert!(!is_token("a&api_token=x"));
        assert!(!is_token(""));
    }

    #[test]
    fn updated_since_is_floored() {
        let t = mapping::transform::parse_timestamp(&json!("2024-03-01T10:20:30.750Z")).unwrap();
        assert_eq!(rfc3339_floor(t), "2024-03-01T10:20:30Z");
    }

    #[test]
    fn trims_to_requested_fields() {
        let c = client();
        let r = json!({"id": 1, "update_time": "x", "first_name": "a", "emails": [],
                       "org_id": 3, "phones": [], "custom_fields": {}});
        let t = c.trim(Entity::Contact, r);
        let mut keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["emails", "first_name", "id", "org_id", "update_time"]
        );
    }

    #[test]
    fn reads_rate_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(2));
        h.insert("Retry-After", "5".parse().unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(5));
        assert_eq!(retry_after(&HeaderMap::new()), DEFAULT_RATE_PAUSE);
    }
}
