//! Zendesk Support reader: a [`CrmReader`] over reqwest for organizations (accounts) and users
//! with a contact role (contacts; `end-user` by default).
//!
//! Why it looks the way it does:
//! - Auth is an API token (Basic `{email}/token:{api_token}`) or an OAuth access token (Bearer),
//!   "Security and authentication" in the Zendesk API reference. Neither secret appears in
//!   errors, logs or `Debug` output.
//! - The snapshot walks the lists with cursor pagination (`page[size]` ≤ 100, `meta.has_more`,
//!   `links.next`; "Pagination", https://developer.zendesk.com/api-reference/introduction/pagination/).
//!   Offset pagination is not an option: it stops at 10,000 records. The page cursor handed to
//!   the caller is the `links.next` URL, followed only on the configured account's origin and
//!   under `/api/v2/`, since following it sends our credentials.
//! - Checkpoint mapping. Zendesk's list cursors are opaque and cannot be rebuilt from a position,
//!   and the lists are not ordered by time, so a snapshot checkpoint is the last id read
//!   (`Checkpoint.id`; `modified_at` is that record's `updated_at`, informational). The lists come
//!   in ascending id order; Zendesk does not document that for users and organizations, so every
//!   page is checked, and a page out of order fails loudly instead of letting a resume skip
//!   records. After a dead cursor the walk restarts from the first page and drops ids at or below
//!   the checkpoint; one call follows at most `max_resume_pages` pages before handing back a
//!   fresh cursor, so the cost of a resume is bounded per call.
//! - The catch-up pass (`modified_since`) uses the incremental exports ("Incremental Exports"
//!   and "Using the Incremental Exports API"): cursor-based for users
//!   (`/api/v2/incremental/users/cursor.json`), time-based for organizations
//!   (`/api/v2/incremental/organizations.json`, which has no cursor-based form). Both are in
//!   `updated_at` order, so here the checkpoint's `modified_at` is what counts: a dead export
//!   cursor resumes with `start_time` = the checkpoint's second. Records of that second are read
//!   again rather than risk skipping one (the order within a second is not documented);
//!   time-based pages repeat the records of their `end_time` second anyway (documented).
//!   Duplicates are harmless to idempotent upserts.
//! - Exports leave out the most recent minute and refuse a `start_time` within it, so
//!   `start_time` is clamped to `now - export_lag`; the export also shows changes up to
//!   `now - export_lag` only, so a catch-up pass sees changes made at least that long before it
//!   runs (webhooks carry the rest). Exports allow 10 requests a minute; a 429 there is a pause
//!   like any other.
//! - Exports list users of every role and deleted users (`active: false`, "false if the user has
//!   been deleted"); both kinds are dropped from contact pages. Deleted users come from
//!   `GET /api/v2/deleted_users.json` in [`CrmReader::list_deleted`]. Zendesk documents no list
//!   of deleted organizations, so `list_deleted` answers `None` for accounts (the
//!   `organization.deleted` event webhook carries those).
//! - `fetch_by_ids` uses `show_many` (up to 100 ids a request); ids not returned are missing.
//! - Records are trimmed to the fields the caller asked for (plus the ones paging and parent
//!   binding need): Zendesk has no field selection on these endpoints and user objects are large.
//! - 429 carries `Retry-After` (seconds; "Rate limits"); it becomes [`CrmError::RateLimited`].
//!   Error bodies are `{"error": "...", "description": "..."}` (some endpoints nest
//!   `{"error": {"title", "message"}}`).

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
use crate::reader::{Checkpoint, CrmError, CrmReader, Fetched, Page, PageRequest};

/// Cursor pagination's maximum `page[size]`.
const MAX_PAGE: u32 = 100;
/// Incremental exports return up to 1000 items per page.
const MAX_EXPORT_PAGE: u32 = 1000;
/// `show_many` takes up to 100 ids.
const IDS_PER_REQUEST: usize = 100;
/// Pause after a 429 without `Retry-After`.
const DEFAULT_RATE_PAUSE: Duration = Duration::from_secs(60);

/// How to authenticate.
#[derive(Clone)]
pub enum ZendeskAuth {
    /// API token: Basic `{email}/token:{token}`.
    ApiToken { email: String, token: String },
    /// OAuth access token: `Authorization: Bearer {token}`.
    Bearer(String),
}

impl ZendeskAuth {
    pub fn api_token(email: &str, token: &str) -> Self {
        ZendeskAuth::ApiToken {
            email: email.to_string(),
            token: token.to_string(),
        }
    }

    pub fn bearer(token: &str) -> Self {
        ZendeskAuth::Bearer(token.to_string())
    }

    /// Who we are, for error messages: never the secret.
    fn who(&self) -> String {
        match self {
            ZendeskAuth::ApiToken { email, .. } => format!("the API token of {email:?}"),
            ZendeskAuth::Bearer(_) => "the OAuth access token".into(),
        }
    }
}

impl fmt::Debug for ZendeskAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZendeskAuth::ApiToken { email, .. } => f
                .debug_struct("ApiToken")
                .field("email", email)
                .field("token", &"<redacted>")
                .finish(),
            ZendeskAuth::Bearer(_) => f.debug_tuple("Bearer").field(&"<redacted>").finish(),
        }
    }
}

/// Where and as whom to read.
#[derive(Clone, Debug)]
pub struct ZendeskSettings {
    /// `https://{subdomain}.zendesk.com`.
    pub base_url: String,
    pub auth: ZendeskAuth,
    /// User roles read as contacts.
    pub contact_roles: Vec<String>,
    /// How much of the most recent past the incremental exports leave out (documented: one
    /// minute); `start_time` is never later than now minus this.
    pub export_lag: Duration,
    /// Pages one call may read while skipping to a checkpoint after a dead cursor.
    pub max_resume_pages: u32,
}

impl ZendeskSettings {
    pub fn new(base_url: &str, auth: ZendeskAuth) -> Self {
        ZendeskSettings {
            base_url: base_url.to_string(),
            auth,
            contact_roles: vec!["end-user".into()],
            export_lag: Duration::from_secs(60),
            max_resume_pages: 20,
        }
    }
}

pub struct ZendeskClient {
    http: reqwest::Client,
    settings: ZendeskSettings,
    base: Url,
    fields: HashMap<Entity, Vec<String>>,
}

impl fmt::Debug for ZendeskClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZendeskClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// One Zendesk answer: the records, and how the listing goes on.
struct Listed {
    records: Vec<Value>,
    /// Next-page URL, if the listing says there is more.
    next: Option<String>,
    /// Whether more records follow.
    more: bool,
}

fn plural(entity: Entity) -> &'static str {
    match entity {
        Entity::Account => "organizations",
        Entity::Contact => "users",
    }
}

/// A Zendesk id: a JSON integer (or a numeric string).
fn id_of(r: &Value) -> Option<u64> {
    match r.get("id")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Epoch seconds of a time, rounded down (a `>=` bound stays inclusive).
fn epoch(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

impl ZendeskClient {
    /// `fields`: per entity, the top-level fields the caller needs (the pipeline passes
    /// `Mapper::source_fields`); records are trimmed to those plus `id`, `updated_at`, and for
    /// users `organization_id`, `role` and `active`. No fields named: records are kept whole.
    pub fn new(
        settings: ZendeskSettings,
        fields: HashMap<Entity, Vec<String>>,
    ) -> Result<Self, CrmError> {
        let base = Url::parse(&settings.base_url)
            .map_err(|e| CrmError::Permanent(format!("invalid Zendesk base URL: {e}")))?;
        check_origin(&base, "Zendesk")?;
        let http = http_client(Duration::from_secs(120))?;
        Ok(ZendeskClient {
            http,
            settings,
            base,
            fields,
        })
    }

    fn url(&self, path: &str, params: &[(&str, String)]) -> Result<Url, CrmError> {
        let mut url = self
            .base
            .join(path)
            .map_err(|e| CrmError::Permanent(format!("Zendesk URL {path}: {e}")))?;
        if !params.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    /// A link from a Zendesk answer (or a cursor handed back by the caller): accepted only on
    /// the configured account's origin and under `/api/v2/`, because following it sends our
    /// credentials.
    fn follow(&self, link: &str) -> Result<Url, CrmError> {
        follow_link(&self.base, link, "/api/v2/", "Zendesk")
    }

    /// GETs a URL and parses the JSON body. `cursor`: the request continues a cursor, so a 400
    /// about pagination means the cursor is dead.
    async fn get(&self, url: Url, cursor: bool) -> Result<Value, CrmError> {
        let path = url.path().to_string();
        let rb = self.http.get(url).header("Accept", "application/json");
        let rb = match &self.settings.auth {
            ZendeskAuth::ApiToken { email, token } => {
                rb.basic_auth(format!("{email}/token"), Some(token))
            }
            ZendeskAuth::Bearer(token) => rb.bearer_auth(token),
        };
        let resp = rb
            .send()
            .await
            .map_err(|e| CrmError::Unavailable(format!("Zendesk {path}: {}", e.without_url())))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .map_err(|e| CrmError::Unavailable(format!("Zendesk {path}: {}", e.without_url())))?;
        if !status.is_success() {
            return Err(self.classify(status, &headers, &text, &path, cursor));
        }
        serde_json::from_str(&text).map_err(|e| {
            CrmError::Permanent(format!("unreadable Zendesk response from {path}: {e}"))
        })
    }

    fn classify(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        text: &str,
        path: &str,
        cursor: bool,
    ) -> CrmError {
        let (code, description) = api_error(text);
        match status.as_u16() {
            429 => {
                let pause = retry_after(headers);
                tracing::warn!(?pause, path, "Zendesk rate limit reached");
                CrmError::RateLimited(pause)
            }
            401 | 403 => CrmError::Access(format!(
                "Zendesk refused {} ({status} on {path}: {code} {description})",
                self.settings.auth.who()
            )),
            400 if cursor && (code.contains("Pagination") || description.contains("cursor")) => {
                tracing::warn!(path, code = %code, "Zendesk cursor no longer valid");
                CrmError::CursorExpired
            }
            s if s >= 500 => CrmError::Unavailable(format!("Zendesk {status} on {path}: {code}")),
            _ => CrmError::Permanent(format!("Zendesk {status} on {path}: {code} {description}")),
        }
    }

    /// A cursor-paginated listing page: `{<key>: [...], meta: {has_more}, links: {next}}`.
    async fn list(&self, url: Url, key: &str, cursor: bool) -> Result<Listed, CrmError> {
        let path = url.path().to_string();
        let mut body = self.get(url, cursor).await?;
        let records = take_array(&mut body, key, &path)?;
        let more = body
            .pointer("/meta/has_more")
            .and_then(Value::as_bool)
            .ok_or_else(|| {
                CrmError::Permanent(format!(
                    "Zendesk response from {path} without meta.has_more"
                ))
            })?;
        let next = body
            .pointer("/links/next")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if more && next.is_none() {
            return Err(CrmError::Permanent(format!(
                "Zendesk response from {path} has more records but no links.next"
            )));
        }
        if let Some(n) = &next {
            // Refuse a poisoned link now, before it is queued for the next invocation.
            self.follow(n)?;
        }
        Ok(Listed {
            records,
            next: if more { next } else { None },
            more,
        })
    }

    fn first_list_url(&self, entity: Entity, size: u32) -> Result<Url, CrmError> {
        let mut params = vec![("page[size]", size.to_string())];
        if entity == Entity::Contact {
            for r in &self.settings.contact_roles {
                params.push(("role[]", r.clone()));
            }
        }
        self.url(&format!("/api/v2/{}.json", plural(entity)), &params)
    }

    /// Keeps a record when it is a live contact of a contact role (accounts: always).
    fn wanted(&self, entity: Entity, r: &Value) -> bool {
        if entity == Entity::Account {
            return true;
        }
        let active = r.get("active").and_then(Value::as_bool).unwrap_or(true);
        let role = r.get("role").and_then(Value::as_str).unwrap_or("end-user");
        active && self.settings.contact_roles.iter().any(|c| c == role)
    }

    /// The record reduced to the requested fields plus the ones paging and binding need.
    fn trim(&self, entity: Entity, r: Value) -> Value {
        let Some(wanted) = self.fields.get(&entity).filter(|f| !f.is_empty()) else {
            return r;
        };
        let Value::Object(mut m) = r else {
            return r;
        };
        let keep = |k: &str| {
            matches!(k, "id" | "updated_at")
                || (entity == Entity::Contact && matches!(k, "organization_id" | "role" | "active"))
                || wanted.iter().any(|w| w == k)
        };
        m.retain(|k, _| keep(k));
        Value::Object(m)
    }

    fn position(r: &Value) -> Result<Checkpoint, CrmError> {
        let id = id_of(r)
            .ok_or_else(|| CrmError::Permanent("Zendesk record without a numeric id".into()))?;
        let projected = json!({ "id": id.to_string(), "updated_at": r.get("updated_at") });
        checkpoint_of(&projected, "id", "updated_at", "Zendesk")
    }

    /// Snapshot page: ids must ascend, and start after `after` when given.
    fn check_order(entity: Entity, records: &[Value], after: Option<u64>) -> Result<(), CrmError> {
        let mut prev = after;
        for r in records {
            let id = id_of(r).ok_or_else(|| {
                CrmError::Permanent(format!("Zendesk {} record without an id", plural(entity)))
            })?;
            if prev.is_some_and(|p| id <= p) {
                return Err(CrmError::Permanent(format!(
                    "Zendesk listed {} out of ascending id order ({id} after {}); a checkpoint \
                     cannot resume such a walk",
                    plural(entity),
                    prev.unwrap_or_default()
                )));
            }
            prev = Some(id);
        }
        Ok(())
    }

    fn page_out(
        &self,
        entity: Entity,
        raw: Vec<Value>,
        keep: impl Fn(&Value) -> bool,
        cursor: Option<String>,
        more: bool,
        fallback: Option<Checkpoint>,
    ) -> Result<Page, CrmError> {
        let checkpoint = match raw.last() {
            Some(r) => Some(Self::position(r)?),
            None => fallback,
        };
        let records = raw
            .into_iter()
            .filter(|r| keep(r) && self.wanted(entity, r))
            .map(|r| self.trim(entity, r))
            .collect();
        Ok(Page {
            records,
            cursor,
            checkpoint,
            more,
            total: None,
        })
    }

    async fn snapshot_page(&self, entity: Entity, req: &PageRequest) -> Result<Page, CrmError> {
        let size = match req.page_size {
            0 => MAX_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = match &req.checkpoint {
            Some(cp) => Some(cp.id.parse::<u64>().map_err(|_| {
                CrmError::Permanent(format!("checkpoint id {:?} is not a Zendesk id", cp.id))
            })?),
            None => None,
        };
        if let Some(c) = &req.cursor {
            let listed = self.list(self.follow(c)?, plural(entity), true).await?;
            Self::check_order(entity, &listed.records, after)?;
            return self.page_out(
                entity,
                listed.records,
                |_| true,
                listed.next,
                listed.more,
                req.checkpoint.clone(),
            );
        }
        // From the start, or resuming after a dead cursor: skip what the checkpoint covers.
        let mut url = self.first_list_url(entity, size)?;
        let mut cursor_used = false;
        for _ in 0..self.settings.max_resume_pages.max(1) {
            let listed = self.list(url, plural(entity), cursor_used).await?;
            Self::check_order(entity, &listed.records, None)?;
            let fresh = after.is_none_or(|a| listed.records.last().and_then(id_of) > Some(a));
            match (&listed.next, fresh) {
                (Some(n), false) => {
                    url = self.follow(n)?;
                    cursor_used = true;
                }
                _ => {
                    return self.page_out(
                        entity,
                        listed.records,
                        |r| after.is_none_or(|a| id_of(r) > Some(a)),
                        listed.next,
                        listed.more,
                        req.checkpoint.clone(),
                    );
                }
            }
        }
        // Still behind the checkpoint: hand back the fresh cursor, with no records.
        Ok(Page {
            records: Vec::new(),
            cursor: Some(url.to_string()),
            checkpoint: req.checkpoint.clone(),
            more: true,
            total: None,
        })
    }

    /// `start_time` for an export: the later of `since` and the checkpoint, floored to the
    /// second, and never inside the excluded recent past.
    fn start_time(&self, since: DateTime<Utc>, cp: Option<&Checkpoint>) -> i64 {
        let from = cp.map_or(since, |c| c.modified_at.max(since));
        let lag = chrono::Duration::from_std(self.settings.export_lag).unwrap_or_default();
        epoch(from).min(epoch(Utc::now() - lag)).max(0)
    }

    async fn catch_up_page(
        &self,
        entity: Entity,
        since: DateTime<Utc>,
        req: &PageRequest,
    ) -> Result<Page, CrmError> {
        let per_page = match req.page_size {
            0 => MAX_EXPORT_PAGE,
            n => n.min(MAX_EXPORT_PAGE),
        };
        let (url, cursor) = match &req.cursor {
            Some(c) => (self.follow(c)?, true),
            None => {
                let start = self.start_time(since, req.checkpoint.as_ref()).to_string();
                let path = match entity {
                    Entity::Account => "/api/v2/incremental/organizations.json",
                    Entity::Contact => "/api/v2/incremental/users/cursor.json",
                };
                let url = self.url(
                    path,
                    &[("start_time", start), ("per_page", per_page.to_string())],
                )?;
                (url, false)
            }
        };
        let path = url.path().to_string();
        let mut body = self.get(url, cursor).await?;
        let raw = take_array(&mut body, plural(entity), &path)?;
        let end = body
            .get("end_of_stream")
            .and_then(Value::as_bool)
            .ok_or_else(|| {
                CrmError::Permanent(format!("Zendesk export from {path} without end_of_stream"))
            })?;
        let next_key = match entity {
            Entity::Account => "next_page",
            Entity::Contact => "after_url",
        };
        let next = body
            .get(next_key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let cursor = match (end, next) {
            (true, _) => None,
            (false, Some(n)) => {
                self.follow(&n)?;
                Some(n)
            }
            (false, None) => {
                return Err(CrmError::Permanent(format!(
                    "Zendesk export from {path} has more records but no {next_key}"
                )));
            }
        };
        let floor = epoch(since);
        self.page_out(
            entity,
            raw,
            |r| {
                r.get("updated_at")
                    .and_then(mapping::transform::parse_timestamp)
                    .is_none_or(|t| epoch(t) >= floor)
            },
            cursor,
            !end,
            req.checkpoint.clone(),
        )
    }

    /// Walks `deleted_users` to the end; ids of contact-role users deleted at or after `since`.
    async fn deleted_users(&self, since: DateTime<Utc>) -> Result<Vec<String>, CrmError> {
        let mut url = self.url(
            "/api/v2/deleted_users.json",
            &[("page[size]", MAX_PAGE.to_string())],
        )?;
        let mut out = Vec::new();
        let mut cursor = false;
        loop {
            let listed = self.list(url, "deleted_users", cursor).await?;
            for r in &listed.records {
                let role_ok = r
                    .get("role")
                    .and_then(Value::as_str)
                    .is_none_or(|role| self.settings.contact_roles.iter().any(|c| c == role));
                let when = r
                    .get("updated_at")
                    .and_then(mapping::transform::parse_timestamp);
                if let Some(id) =
                    id_of(r).filter(|_| role_ok && when.is_none_or(|t| epoch(t) >= epoch(since)))
                {
                    out.push(id.to_string());
                }
            }
            match listed.next {
                Some(n) => {
                    url = self.follow(&n)?;
                    cursor = true;
                }
                None => return Ok(out),
            }
        }
    }
}

#[async_trait]
impl CrmReader for ZendeskClient {
    async fn list_page(&self, entity: Entity, req: &PageRequest) -> Result<Page, CrmError> {
        match req.modified_since {
            None => self.snapshot_page(entity, req).await,
            Some(since) => self.catch_up_page(entity, since, req).await,
        }
    }

    async fn fetch_by_ids(&self, entity: Entity, ids: &[String]) -> Result<Fetched, CrmError> {
        // Strings that are not Zendesk ids are missing by definition and never reach a URL.
        let valid: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        let mut found: HashMap<String, Value> = HashMap::new();
        let path = format!("/api/v2/{}/show_many.json", plural(entity));
        for chunk in valid.chunks(IDS_PER_REQUEST) {
            let url = self.url(&path, &[("ids", chunk.join(","))])?;
            let mut body = self.get(url, false).await?;
            for r in take_array(&mut body, plural(entity), &path)? {
                if !self.wanted(entity, &r) {
                    continue;
                }
                if let Some(id) = id_of(&r) {
                    found.insert(id.to_string(), self.trim(entity, r));
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
        match entity {
            // No documented list of deleted organizations.
            Entity::Account => Ok(None),
            Entity::Contact => self.deleted_users(since).await.map(Some),
        }
    }
}

/// Takes the array under `key`, or says what the answer lacked.
fn take_array(body: &mut Value, key: &str, path: &str) -> Result<Vec<Value>, CrmError> {
    match body.get_mut(key).map(Value::take) {
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(CrmError::Permanent(format!(
            "Zendesk response from {path}: `{key}` is {} instead of an array",
            kind_of(&other)
        ))),
        None => Err(CrmError::Permanent(format!(
            "Zendesk response from {path} without a `{key}` array"
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How long the CRM asked us to wait (see [`crate::http::retry_after`]).
fn retry_after(headers: &HeaderMap) -> Duration {
    crate::http::retry_after(headers, std::time::SystemTime::now(), DEFAULT_RATE_PAUSE)
}

/// `{"error": "Code", "description": "..."}` or `{"error": {"title", "message"}}` →
/// (code, description). Plain-text bodies (Zendesk's 429) become the description, shortened.
fn api_error(text: &str) -> (String, String) {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => return (String::new(), text.chars().take(200).collect()),
    };
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
    match v.get("error") {
        Some(Value::Object(e)) => (s(e.get("title")), s(e.get("message"))),
        Some(e) => (s(Some(e)), s(v.get("description"))),
        None => (String::new(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ZendeskClient {
        ZendeskClient::new(
            ZendeskSettings::new(
                "https://acme.zendesk.com",
                ZendeskAuth::api_token("ops@acme.test", "hunter2"),
            ),
            HashMap::from([(Entity::Contact, vec!["name".into(), "email".into()])]),
        )
        .unwrap()
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let c = client();
        assert!(!format!("{c:?}").contains("hunter2"));
        let b = ZendeskSettings::new("https://acme.zendesk.com", ZendeskAuth::bearer("tok-123"));
        assert!(!format!("{b:?}").contains("tok-123"));
    }

    #[test]
    fn links_stay_on_the_account() {
        let c = client();
        assert!(
            c.follow("https://acme.zendesk.com/api/v2/users.json?page%5Bafter%5D=x")
                .is_ok()
        );
        assert!(c.follow("/api/v2/users.json").is_ok());
        assert!(c.follow("https://evil.example/api/v2/users.json").is_err());
        assert!(
            c.follow("http://acme.zendesk.com/api/v2/users.json")
                .is_err()
        );
        assert!(c.follow("https://acme.zendesk.com/other").is_err());
    }

    #[test]
    fn trims_to_requested_fields() {
        let c = client();
        let r = json!({"id": 1, "updated_at": "x", "name": "n", "email": "e", "phone": "p",
                       "organization_id": null, "role": "end-user", "photo": {}});
        let t = c.trim(Entity::Contact, r);
        let mut keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "email",
                "id",
                "name",
                "organization_id",
                "role",
                "updated_at"
            ]
        );
        let org = json!({"id": 1, "name": "n"});
        assert_eq!(c.trim(Entity::Account, org.clone()), org);
    }

    #[test]
    fn reads_error_bodies() {
        assert_eq!(
            api_error(r#"{"error":"RecordNotFound","description":"Not found"}"#),
            ("RecordNotFound".into(), "Not found".into())
        );
        assert_eq!(
            api_error(r#"{"error":{"title":"Forbidden","message":"no"}}"#),
            ("Forbidden".into(), "no".into())
        );
        assert_eq!(
            api_error("Number of allowed API requests per minute exceeded").1,
            "Number of allowed API requests per minute exceeded"
        );
    }

    #[test]
    fn order_is_checked() {
        let recs = vec![json!({"id": 5}), json!({"id": 9})];
        assert!(ZendeskClient::check_order(Entity::Account, &recs, Some(4)).is_ok());
        assert!(ZendeskClient::check_order(Entity::Account, &recs, Some(5)).is_err());
        let bad = vec![json!({"id": 9}), json!({"id": 5})];
        assert!(ZendeskClient::check_order(Entity::Account, &bad, None).is_err());
    }

    #[test]
    fn start_time_is_clamped() {
        let c = client();
        let now = Utc::now();
        let t = c.start_time(now, None);
        assert!(t <= epoch(now) - 60);
        let old = now - chrono::Duration::days(2);
        assert_eq!(c.start_time(old, None), epoch(old));
        let cp = Checkpoint {
            modified_at: old + chrono::Duration::hours(1),
            id: "7".into(),
        };
        assert_eq!(c.start_time(old, Some(&cp)), epoch(cp.modified_at));
    }
}
