//! A [`CrmReader`] for any CRM with a JSON REST API, described entirely by configuration
//! ([`GenericConfig`], written under a source's `[sources.connection]`).
//!
//! Why it looks the way it does:
//! - Per entity, URL templates say how to list (`list_url`, `since_url`) and fetch by id
//!   (`fetch_url`), and JSON pointers say where the records, ids and last-modified stamps are.
//!   Template encoding rules are in the `template` module.
//! - Four paging styles cover the common APIs: a next link in the body (Salesforce
//!   `nextRecordsUrl`), a `Link: rel="next"` header (ServiceNow), an opaque cursor in the body
//!   (HubSpot `after`), and offset/limit. The [`Page`] cursor is the next URL for link styles,
//!   the CRM's cursor, or the next offset. Offset paging's end rule is
//!   `response::offset_next`: with a total (pointer or `X-Total-Count`) the walk ends when the
//!   offset reaches it; without one, at the first empty page.
//! - Catch-up passes (`modified_since`) use `since_url`, else `{modified_since}` in `list_url`;
//!   a CRM configured with neither re-reads everything (a catch-up pass is then a full walk:
//!   nothing is missed, more is read).
//! - A request with a checkpoint but no cursor (the cursor expired, see
//!   `paging.cursor_expired`) resumes at the checkpoint's time when the configuration says the
//!   list is `sorted_by_modified` and pages by links; otherwise it restarts the walk. Either
//!   way nothing is skipped; some records are read twice (upserts are idempotent).
//! - Every URL requested, including next links from the CRM and cursors handed back by the
//!   caller, must be on `base_url`'s origin (and https, or http on loopback): a link to another
//!   host is a permanent error before anything is sent, so credentials never go elsewhere.
//!   Redirects are not followed for the same reason.
//! - Errors: 429/503 are [`CrmError::RateLimited`] with `Retry-After` (seconds or HTTP date) or
//!   `X-RateLimit-Reset`; 401/403 [`CrmError::Access`]; other 5xx, 408 and network trouble
//!   [`CrmError::Unavailable`]; other 4xx [`CrmError::Permanent`] with the status and a short
//!   excerpt of the body. Secrets (password, token, API key, client secret, access token, and
//!   their Basic encodings) are replaced in every excerpt and never logged.

mod auth;
mod config;
mod plan;
mod response;
mod template;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use mapping::Entity;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

pub use config::{
    Credentials, CredentialsKind, EntityConfig, ErrorMatch, GenericConfig, Paging, PagingStyle,
};

use self::auth::Token;
use self::plan::{Auth, EntityPlan, Plan};
use self::response::{
    classify, count_at, ended, id_string, link_next, offset_next, take_records, token_at,
    total_header,
};
use self::template::{Template, Var, Vars};
use crate::http::{check_origin, checkpoint_of, same_origin};
use crate::reader::{Checkpoint, CrmError, CrmReader, Fetched, Page, PageRequest};

/// Page size when the request names none.
const DEFAULT_PAGE: u32 = 100;
/// Pages one fetch batch may span before the CRM is assumed to loop.
const MAX_FETCH_PAGES: usize = 1_000;

pub struct GenericClient {
    http: reqwest::Client,
    plan: Plan,
    /// `CRM <host[:port]>`, in every message.
    label: String,
    /// `{fields}` per entity.
    fields: HashMap<Entity, String>,
    token: tokio::sync::Mutex<Option<Arc<Token>>>,
    /// Configured secrets and their Basic encodings, for redaction.
    secrets: Vec<String>,
}

impl fmt::Debug for GenericClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenericClient")
            .field("crm", &self.label)
            .field("base_url", &self.plan.base.as_str())
            .finish_non_exhaustive()
    }
}

/// Where a list request continues.
#[derive(Debug, Clone, PartialEq)]
enum Next {
    Url(Url),
    Cursor(String),
    Offset(u64),
}

impl Next {
    fn to_cursor(&self) -> String {
        match self {
            Next::Url(u) => u.to_string(),
            Next::Cursor(c) => c.clone(),
            Next::Offset(n) => n.to_string(),
        }
    }
}

/// A successful response.
struct Reply {
    url: Url,
    headers: HeaderMap,
    body: Value,
}

/// The first name of a pointer (`/properties/name` → `properties`), unescaped.
fn top_field(ptr: &str) -> Option<String> {
    let first = ptr.strip_prefix('/')?.split('/').next()?;
    Some(first.replace("~1", "/").replace("~0", "~"))
}

/// Field names as `{fields}` gets them: the id and modified fields first, then the caller's,
/// minus `skip_fields`, each once (case-insensitively), names only.
fn field_list(ent: &EntityPlan, wanted: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    let candidates = top_field(&ent.id)
        .into_iter()
        .chain(top_field(&ent.modified))
        .chain(wanted.iter().cloned());
    for f in candidates {
        let is_name = !f.is_empty()
            && f.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !is_name {
            tracing::warn!(field = %f, "skipping a field name that is not a plain name");
            continue;
        }
        let skipped = ent.skip_fields.iter().any(|s| s.eq_ignore_ascii_case(&f));
        if !skipped && !out.iter().any(|o| o.eq_ignore_ascii_case(&f)) {
            out.push(f);
        }
    }
    out.join(",")
}

impl GenericClient {
    /// `fields`: per entity, the fields the caller needs (the pipeline passes
    /// `Mapper::source_fields`), for `{fields}`. Validates `cfg` first: a configuration error
    /// is a [`CrmError::Permanent`] naming the key.
    pub fn new(cfg: GenericConfig, fields: HashMap<Entity, Vec<String>>) -> Result<Self, CrmError> {
        let plan = cfg
            .compile()
            .map_err(|e| CrmError::Permanent(e.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(plan.timeout)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CrmError::Permanent(format!("cannot build HTTP client: {e}")))?;
        let label = format!(
            "CRM {}{}",
            plan.base.host_str().unwrap_or("?"),
            plan.base
                .port()
                .map(|p| format!(":{p}"))
                .unwrap_or_default()
        );
        let b64 =
            |a: &str, b: &str| base64::engine::general_purpose::STANDARD.encode(format!("{a}:{b}"));
        let secrets = match &plan.auth {
            Auth::Basic { user, password } => vec![password.clone(), b64(user, password)],
            Auth::Bearer(t) => vec![t.clone()],
            Auth::Header(_, v) => vec![String::from_utf8_lossy(v.as_bytes()).into_owned()],
            Auth::ClientCredentials {
                client_id,
                client_secret,
                ..
            } => vec![client_secret.clone(), b64(client_id, client_secret)],
        };
        let fields = Entity::ALL
            .iter()
            .map(|e| {
                let wanted = fields.get(e).map(Vec::as_slice).unwrap_or_default();
                (*e, field_list(plan.entity(*e), wanted))
            })
            .collect();
        Ok(GenericClient {
            http,
            plan,
            label,
            fields,
            token: tokio::sync::Mutex::new(None),
            secrets,
        })
    }

    /// Every secret to keep out of messages, the current access token included.
    fn secrets<'a>(&'a self, token: Option<&'a Token>) -> Vec<&'a str> {
        self.secrets
            .iter()
            .map(String::as_str)
            .chain(token.map(|t| t.value.as_str()))
            .collect()
    }

    /// A URL we may send credentials to: on base_url's origin, https or loopback http.
    fn allowed(&self, url: Url) -> Result<Url, CrmError> {
        if !same_origin(&url, &self.plan.base) {
            return Err(CrmError::Permanent(format!(
                "refusing to follow a next-page URL on another host ({}); the CRM is {}",
                url.host_str().unwrap_or("?"),
                self.plan.base.host_str().unwrap_or("?")
            )));
        }
        check_origin(&url, &self.label)?;
        Ok(url)
    }

    /// A next link, relative to the URL that returned it.
    fn follow(&self, from: &Url, link: &str) -> Result<Url, CrmError> {
        let url = from.join(link).map_err(|e| {
            CrmError::Permanent(format!("{}: invalid next-page link: {e}", self.label))
        })?;
        self.allowed(url)
    }

    /// GETs `url` (credentials attached, one new OAuth token on a 401) and reads the JSON body.
    /// `continuation`: the URL came from a cursor or next link. `missing_ok`: 404/410 is
    /// `Ok(None)`.
    async fn get(
        &self,
        url: &Url,
        continuation: bool,
        missing_ok: bool,
    ) -> Result<Option<Reply>, CrmError> {
        let url = self.allowed(url.clone())?;
        let label = &self.label;
        for attempt in 0..2 {
            let token = self.token().await?;
            let mut headers = self.plan.headers.clone();
            if !headers.contains_key(ACCEPT) {
                headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
            }
            let rb = self.http.get(url.clone()).headers(headers);
            let resp = self
                .authorise(rb, token.as_deref())
                .send()
                .await
                .map_err(|e| CrmError::Unavailable(format!("{label}: {}", e.without_url())))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = resp
                .text()
                .await
                .map_err(|e| CrmError::Unavailable(format!("{label}: {}", e.without_url())))?;
            if status.is_success() {
                let body = serde_json::from_str(&text).map_err(|e| {
                    CrmError::Permanent(format!("{label}: the response is not JSON ({e})"))
                })?;
                return Ok(Some(Reply { url, headers, body }));
            }
            if missing_ok && matches!(status.as_u16(), 404 | 410) {
                return Ok(None);
            }
            if let Some(t) = &token
                && status == StatusCode::UNAUTHORIZED
                && attempt == 0
            {
                tracing::info!(crm = %label, "access token rejected; fetching a new one");
                self.invalidate(t).await;
                continue;
            }
            return Err(classify(
                label,
                status,
                &headers,
                &text,
                continuation,
                self.plan.paging.cursor_expired.as_ref(),
                &self.secrets(token.as_deref()),
            ));
        }
        Err(CrmError::Access(format!(
            "{label} refused a freshly issued access token (401)"
        )))
    }

    fn page_size(&self, req: &PageRequest) -> u32 {
        let n = if req.page_size == 0 {
            DEFAULT_PAGE
        } else {
            req.page_size
        };
        self.plan.max_page_size.map_or(n, |m| n.min(m))
    }

    fn is_link_style(&self) -> bool {
        matches!(
            self.plan.paging.style,
            PagingStyle::LinkHeader | PagingStyle::NextLinkBody
        )
    }

    /// The template and `{modified_since}` value for a first page from `since`.
    fn list_template<'a>(
        &self,
        ent: &'a EntityPlan,
        since: Option<DateTime<Utc>>,
    ) -> (&'a Template, Option<String>) {
        let Some(t) = since else {
            return (&ent.list, None);
        };
        let text = Some(self.plan.time.format(t));
        match &ent.since {
            Some(s) => (s, text),
            None if ent.list.uses(Var::ModifiedSince) => (&ent.list, text),
            None => {
                tracing::debug!(crm = %self.label, "no {{modified_since}} template: a full walk");
                (&ent.list, None)
            }
        }
    }

    /// Where the request starts: its cursor parsed for the paging style.
    fn resume(&self, cursor: &str) -> Result<Next, CrmError> {
        Ok(match self.plan.paging.style {
            PagingStyle::LinkHeader | PagingStyle::NextLinkBody => {
                let url = self.plan.base.join(cursor).map_err(|e| {
                    CrmError::Permanent(format!("{}: invalid cursor URL: {e}", self.label))
                })?;
                Next::Url(self.allowed(url)?)
            }
            PagingStyle::Cursor => Next::Cursor(cursor.to_string()),
            PagingStyle::Offset => Next::Offset(cursor.trim().parse().map_err(|_| {
                CrmError::Permanent(format!(
                    "{}: cursor {cursor:?} is not an offset",
                    self.label
                ))
            })?),
        })
    }

    /// The page after `reply`, per the paging style. `follows`: whether this template can
    /// express a cursor or offset (fetch templates may not).
    fn next_of(
        &self,
        reply: &Reply,
        offset: u64,
        received: usize,
        total: Option<u64>,
        follows: bool,
    ) -> Result<Option<Next>, CrmError> {
        let p = &self.plan.paging;
        let label = &self.label;
        let body_next = |what: &str| -> Result<Option<String>, CrmError> {
            let ptr = p.next.as_deref().unwrap_or_default();
            let value = token_at(&reply.body, ptr);
            match (
                ended(&reply.body, p.done.as_deref(), p.has_more.as_deref()),
                value,
            ) {
                (Some(true), _) => Ok(None),
                (Some(false), None) => Err(CrmError::Permanent(format!(
                    "{label}: the page says more follow, but paging.next ({ptr}) holds no {what}"
                ))),
                (_, v) => Ok(v),
            }
        };
        Ok(match p.style {
            PagingStyle::LinkHeader => link_next(&reply.headers)
                .map(|l| self.follow(&reply.url, &l))
                .transpose()?
                .map(Next::Url),
            PagingStyle::NextLinkBody => body_next("link")?
                .map(|l| self.follow(&reply.url, &l))
                .transpose()?
                .map(Next::Url),
            PagingStyle::Cursor if follows => body_next("cursor")?.map(Next::Cursor),
            PagingStyle::Offset if follows => {
                offset_next(offset, received, total).map(Next::Offset)
            }
            PagingStyle::Cursor | PagingStyle::Offset => None,
        })
    }

    fn total(&self, reply: &Reply) -> Option<u64> {
        match &self.plan.paging.total {
            Some(p) => count_at(&reply.body, p),
            None => total_header(&reply.headers),
        }
    }

    fn records(
        &self,
        reply: &mut Reply,
        ptr: &str,
        what: &str,
        fetch: bool,
    ) -> Result<Vec<Value>, CrmError> {
        take_records(&mut reply.body, ptr, fetch, fetch).ok_or_else(|| {
            CrmError::Permanent(format!(
                "{}: no array of records at {what} ({ptr:?}) in the response",
                self.label
            ))
        })
    }

    fn record_id(&self, ent: &EntityPlan, r: &Value) -> Option<String> {
        r.pointer(&ent.id).and_then(id_string)
    }

    /// The (modified, id) position of a listed record.
    fn checkpoint(
        &self,
        entity: Entity,
        ent: &EntityPlan,
        r: &Value,
    ) -> Result<Checkpoint, CrmError> {
        let id = self.record_id(ent, r).ok_or_else(|| {
            CrmError::Permanent(format!(
                "{}: a {entity} record without an id at {entity}.id ({:?})",
                self.label, ent.id
            ))
        })?;
        let stamp = r.pointer(&ent.modified).cloned().unwrap_or(Value::Null);
        checkpoint_of(
            &json!({ "id": id, "modified": stamp }),
            "id",
            "modified",
            &self.label,
        )
        .map_err(|_| {
            CrmError::Permanent(format!(
                "{}: {entity} record {id} without a readable timestamp at {entity}.modified ({:?})",
                self.label, ent.modified
            ))
        })
    }

    fn askable(&self, ent: &EntityPlan, single: bool, id: &str) -> bool {
        if id.is_empty() || (single && (id == "." || id == "..")) {
            return false;
        }
        match &ent.id_chars {
            Some(extra) => id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c)),
            None => true,
        }
    }
}

#[async_trait]
impl CrmReader for GenericClient {
    async fn list_page(&self, entity: Entity, req: &PageRequest) -> Result<Page, CrmError> {
        let ent = self.plan.entity(entity);
        let size = self.page_size(req);
        // A checkpoint without a cursor: the cursor died. Resume at its time if that is sound.
        let since = match (&req.cursor, &req.checkpoint) {
            (None, Some(cp)) if self.plan.sorted_by_modified && self.is_link_style() => Some(
                req.modified_since
                    .map_or(cp.modified_at, |s| s.max(cp.modified_at)),
            ),
            (None, Some(_)) => {
                tracing::warn!(crm = %self.label, %entity, "no cursor to continue from: the walk restarts");
                req.modified_since
            }
            _ => req.modified_since,
        };
        let start = req.cursor.as_deref().map(|c| self.resume(c)).transpose()?;
        let (template, since_text) = self.list_template(ent, since);
        let offset = match &start {
            Some(Next::Offset(n)) => *n,
            _ => 0,
        };
        let url = match &start {
            Some(Next::Url(u)) => u.clone(),
            other => {
                let vars = Vars {
                    page_size: Some(size),
                    offset: Some(offset),
                    cursor: match other {
                        Some(Next::Cursor(c)) => Some(c),
                        _ => None,
                    },
                    modified_since: since_text.as_deref(),
                    fields: self.fields.get(&entity).map(String::as_str),
                    ..Vars::default()
                };
                template
                    .expand(&self.plan.base, &vars, &ent.extra_query)
                    .map_err(|m| {
                        CrmError::Permanent(format!("{}: {entity}.list_url: {m}", self.label))
                    })?
            }
        };
        let Some(mut reply) = self.get(&url, start.is_some(), false).await? else {
            return Err(CrmError::Permanent(format!("{}: not found", self.label)));
        };
        let total = self.total(&reply);
        let records = self.records(
            &mut reply,
            &ent.records,
            &format!("{entity}.records"),
            false,
        )?;
        let next = self.next_of(&reply, offset, records.len(), total, true)?;
        if next.is_some() && next == start {
            // Following it would read the same page forever.
            return Err(CrmError::Permanent(format!(
                "{}: the next page is the page just read",
                self.label
            )));
        }
        let checkpoint = match records.last() {
            Some(r) => Some(self.checkpoint(entity, ent, r)?),
            None => req.checkpoint.clone(),
        };
        Ok(Page {
            records,
            more: next.is_some(),
            cursor: next.as_ref().map(Next::to_cursor),
            checkpoint,
            total,
        })
    }

    async fn fetch_by_ids(&self, entity: Entity, ids: &[String]) -> Result<Fetched, CrmError> {
        let ent = self.plan.entity(entity);
        let label = &self.label;
        let fetch = ent.fetch.as_ref().ok_or_else(|| {
            CrmError::Permanent(format!(
                "{label} has no fetch_url for {entity}: set {entity}.fetch_url to read records by id"
            ))
        })?;
        let fields = self.fields.get(&entity).map(String::as_str);
        let mut seen = HashSet::new();
        let wanted: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| self.askable(ent, fetch.single, id) && seen.insert(*id))
            .collect();
        // Ids with a comma cannot share a comma-joined list: each goes alone.
        let (alone, shared): (Vec<&str>, Vec<&str>) = wanted
            .iter()
            .partition(|id| fetch.single || id.contains(','));
        let batches = alone
            .chunks(1)
            .chain(shared.chunks(fetch.batch))
            .filter(|c| !c.is_empty());
        let follows = match self.plan.paging.style {
            PagingStyle::Cursor => fetch.url.uses(Var::Cursor),
            PagingStyle::Offset => fetch.url.uses(Var::Offset),
            _ => true,
        };
        let mut found: HashMap<String, Value> = HashMap::new();
        for chunk in batches {
            let joined = chunk.join(",");
            let mut next: Option<Next> = None;
            for page in 0.. {
                if page == MAX_FETCH_PAGES {
                    return Err(CrmError::Permanent(format!(
                        "{label}: a fetch by id ran past {MAX_FETCH_PAGES} pages"
                    )));
                }
                let offset = match &next {
                    Some(Next::Offset(n)) => *n,
                    _ => 0,
                };
                let url = match &next {
                    Some(Next::Url(u)) => u.clone(),
                    other => {
                        let vars = Vars {
                            ids: Some(&joined),
                            id: Some(chunk[0]),
                            count: Some(chunk.len()),
                            fields,
                            offset: Some(offset),
                            cursor: match other {
                                Some(Next::Cursor(c)) => Some(c),
                                _ => None,
                            },
                            ..Vars::default()
                        };
                        fetch
                            .url
                            .expand(&self.plan.base, &vars, &ent.extra_query)
                            .map_err(|m| {
                                CrmError::Permanent(format!("{label}: {entity}.fetch_url: {m}"))
                            })?
                    }
                };
                let Some(mut reply) = self.get(&url, next.is_some(), fetch.single).await? else {
                    break;
                };
                let total = self.total(&reply);
                let what = format!("{entity}.fetch_records");
                let records = self.records(&mut reply, &fetch.records, &what, true)?;
                let received = records.len();
                for r in records {
                    if let Some(id) = self.record_id(ent, &r)
                        && chunk.contains(&id.as_str())
                    {
                        found.insert(id, r);
                    }
                }
                let after = if fetch.single {
                    None
                } else {
                    self.next_of(&reply, offset, received, total, follows)?
                };
                if after.is_none() || (received == 0 && after == next) {
                    break;
                }
                next = after;
            }
        }
        Ok(Fetched::in_order(ids, &found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(extra: &str) -> GenericClient {
        let text = format!(
            r#"
base_url = "https://crm.example.com/api"
{extra}
[credentials]
type = "basic"
user = "u"
password = "hunter2"
[paging]
style = "link_header"
[account]
list_url = "/accounts?limit={{page_size}}&fields={{fields}}"
records = "/data"
id = "/id"
modified = "/meta/updated"
skip_fields = ["Address"]
[contact]
list_url = "/contacts"
records = ""
id = "/id"
modified = "/updated"
"#
        );
        let cfg: GenericConfig = toml::from_str(&text).unwrap();
        GenericClient::new(
            cfg,
            HashMap::from([(
                Entity::Account,
                vec!["name".into(), "ID".into(), "Address".into(), "x y".into()],
            )]),
        )
        .unwrap()
    }

    #[test]
    fn fields_hold_paging_fields_once() {
        let c = client("");
        assert_eq!(c.fields[&Entity::Account], "id,meta,name");
        assert_eq!(c.fields[&Entity::Contact], "id,updated");
        assert_eq!(top_field("/a~1b~0c/d").as_deref(), Some("a/b~c"));
    }

    #[test]
    fn debug_and_errors_hide_the_password() {
        let c = client("");
        assert!(!format!("{c:?}").contains("hunter2"));
        let secrets = c.secrets(None);
        assert!(secrets.contains(&"hunter2"));
        // base64("u:hunter2")
        assert!(secrets.contains(&"dTpodW50ZXIy"));
    }

    #[test]
    fn urls_stay_on_the_origin() {
        let c = client("");
        let from = Url::parse("https://crm.example.com/api/accounts").unwrap();
        assert!(c.follow(&from, "/api/accounts?page=2").is_ok());
        assert!(c.follow(&from, "accounts?page=2").is_ok());
        for bad in [
            "https://evil.example/api/accounts",
            "http://crm.example.com/api/accounts",
            "https://crm.example.com:8443/api/accounts",
            "//evil.example/x",
        ] {
            let e = c.follow(&from, bad).unwrap_err();
            assert!(matches!(e, CrmError::Permanent(_)), "{bad}");
        }
        assert!(c.resume("https://evil.example/api/accounts").is_err());
        assert_eq!(
            c.resume("/api/accounts?page=3").unwrap(),
            Next::Url(Url::parse("https://crm.example.com/api/accounts?page=3").unwrap())
        );
    }

    #[test]
    fn page_size_defaults_and_caps() {
        let c = client("max_page_size = 50");
        let req = |n| PageRequest {
            page_size: n,
            ..PageRequest::default()
        };
        assert_eq!(c.page_size(&req(0)), 50);
        assert_eq!(c.page_size(&req(10)), 10);
        assert_eq!(c.page_size(&req(500)), 50);
        assert_eq!(client("").page_size(&req(0)), DEFAULT_PAGE);
    }

    #[test]
    fn checkpoints_come_from_the_pointers() {
        let c = client("");
        let ent = c.plan.entity(Entity::Account);
        let cp = c
            .checkpoint(
                Entity::Account,
                ent,
                &json!({"id": 42, "meta": {"updated": "2024-01-16T17:43:01Z"}}),
            )
            .unwrap();
        assert_eq!(cp.id, "42");
        assert_eq!(cp.modified_at.to_rfc3339(), "2024-01-16T17:43:01+00:00");
        let e = c
            .checkpoint(Entity::Account, ent, &json!({"meta": {"updated": "x"}}))
            .unwrap_err();
        assert!(e.to_string().contains("account.id"), "{e}");
        let e = c
            .checkpoint(Entity::Account, ent, &json!({"id": "a", "meta": {}}))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("account.modified (\"/meta/updated\")"),
            "{e}"
        );
    }

    #[test]
    fn ids_that_cannot_be_asked_for() {
        let c = client("");
        let ent = c.plan.entity(Entity::Account);
        assert!(!c.askable(ent, false, ""));
        assert!(c.askable(ent, false, ".."));
        assert!(!c.askable(ent, true, ".."));
        let mut limited = ent.clone();
        limited.id_chars = Some("-".into());
        assert!(c.askable(&limited, false, "abc-123"));
        assert!(!c.askable(&limited, false, "abc^ORx"));
    }

    #[test]
    fn a_bad_config_is_a_permanent_error_naming_the_key() {
        let cfg: GenericConfig = toml::from_str(
            r#"
base_url = "https://x.example"
[credentials]
type = "bearer"
token = "t"
[paging]
style = "offset"
[account]
list_url = "/a"
records = "/r"
id = "/id"
modified = "/m"
[contact]
list_url = "/c?o={offset}"
records = "/r"
id = "/id"
modified = "/m"
"#,
        )
        .unwrap();
        let e = GenericClient::new(cfg, HashMap::new()).unwrap_err();
        assert!(
            matches!(&e, CrmError::Permanent(m) if m.contains("account.list_url") && m.contains("{offset}")),
            "{e}"
        );
    }
}
