//! HTTP layer of the Zendesk Support emulator.
//!
//! What each part follows (all read through the Zendesk developer documentation):
//! - Auth ("Security and authentication",
//!   https://developer.zendesk.com/api-reference/introduction/security-and-auth/): API token as
//!   Basic `{email}/token:{api_token}`, or an OAuth access token as `Authorization: Bearer`. A
//!   request without valid credentials gets 401 `{"error":"Couldn't authenticate you"}` (the body
//!   Zendesk sends; the `WWW-Authenticate` value is not confirmed).
//! - Cursor pagination ("Pagination",
//!   https://developer.zendesk.com/api-reference/introduction/pagination/): `page[size]` (most
//!   endpoints: at most 100), `page[after]` / `page[before]`; the body carries
//!   `meta: {has_more, after_cursor, before_cursor}` and `links: {next, prev}`. Records come in
//!   ascending id order (what the emulator does; Zendesk does not state the order of the users and
//!   organizations lists). How Zendesk answers `page[size]` above 100 or a cursor it cannot use is
//!   not documented in what we read: the emulator answers 400
//!   `{"error":"InvalidPaginationParameter","description":...}`. Without `page[size]`, offset
//!   pagination (`page`, `per_page`, `next_page`, `count`), limited to the first 100 pages
//!   ("offset-based pagination requests over the first 10,000 records (100 pages) will result in
//!   a 400 Bad Request", https://developer.zendesk.com/documentation/api-basics/pagination/paginating-through-lists).
//! - `GET /api/v2/{organizations,users}/show_many.json?ids=` ("Show Many Users": "Accepts a
//!   comma-separated list of up to 100 user ids"); ids that name nothing are simply absent. The
//!   answer to more than 100 ids is not documented; the emulator answers 400.
//! - Incremental exports ("Incremental Exports",
//!   https://developer.zendesk.com/api-reference/ticketing/ticket-management/incremental_exports/,
//!   and "Using the Incremental Exports API",
//!   https://developer.zendesk.com/documentation/ticketing/managing-tickets/using-the-incremental-export-api):
//!   time-based `GET /api/v2/incremental/{organizations,users}.json?start_time=` answering
//!   `{count, end_time, next_page, end_of_stream}` (duplicates across pages are documented: the
//!   next page starts at `end_time`, inclusive), cursor-based
//!   `GET /api/v2/incremental/users/cursor.json?start_time=|cursor=` answering
//!   `{after_cursor, after_url, before_cursor, before_url, end_of_stream}`; `per_page` up to 1000;
//!   10 requests a minute; items changed within the last minute are left out. A `start_time`
//!   within that minute gets 400 `{"error":"InvalidValue","description":"Too recent start_time.
//!   Use a start_time older than 1 minute"}` (the rule is documented; the exact body is from
//!   client libraries, not confirmed). When a whole time-based page shares one second the
//!   emulator stretches the page over that second and moves `end_time` past it, so the stream
//!   always advances (Zendesk's behaviour there is not documented).
//! - `GET /api/v2/deleted_users.json` ("List Deleted Users": deleted users, cursor or offset
//!   pagination, at most 100 per page).
//! - Rate limits ("Rate limits", https://developer.zendesk.com/api-reference/introduction/rate-limits/,
//!   and "Best practices for avoiding rate limiting"): `X-Rate-Limit` / `X-Rate-Limit-Remaining`
//!   on responses; beyond the limit 429 with `Retry-After` (seconds) and a plain-text body such as
//!   "Number of allowed API requests per minute exceeded".
//! - Other errors: `{"error": "RecordNotFound", "description": "Not found"}` style bodies.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

use super::config::ZendeskConfig;
use super::store::{Kind, Rec, Store, now};

/// Cursor pagination: "Most endpoints limit this to a maximum of 100".
const MAX_PAGE_SIZE: usize = 100;
/// Offset pagination's default and maximum `per_page`.
const OFFSET_PER_PAGE: usize = 100;
/// Offset pagination stops after the first 100 pages.
const OFFSET_MAX_PAGE: usize = 100;
/// Incremental exports return up to 1000 items per page.
const EXPORT_PER_PAGE: usize = 1000;
/// `show_many` accepts up to 100 ids.
const MAX_SHOW_MANY: usize = 100;

/// Counters of what the emulator has seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Every HTTP request.
    pub requests: u64,
    /// Admitted list requests (`/organizations.json`, `/users.json`).
    pub list_requests: u64,
    /// Admitted incremental export requests.
    pub export_requests: u64,
    /// Admitted `show_many` requests.
    pub show_many_requests: u64,
    /// Admitted `deleted_users` requests.
    pub deleted_requests: u64,
    pub by_status: BTreeMap<u16, u64>,
}

/// A fixed-window rate limit: `(limit, window)` and the current window's start and count.
#[derive(Debug)]
pub struct Window {
    pub rule: Option<(u32, Duration)>,
    started: Instant,
    used: u32,
}

impl Window {
    pub fn new(rule: Option<(u32, Duration)>) -> Window {
        Window {
            rule,
            started: Instant::now(),
            used: 0,
        }
    }

    pub fn reset(&mut self, rule: Option<(u32, Duration)>) {
        *self = Window::new(rule);
    }

    /// Admits a request: `Ok(Some((limit, remaining)))`, `Ok(None)` when unlimited, or
    /// `Err(seconds to wait)`.
    fn admit(&mut self) -> Result<Option<(u32, u32)>, u64> {
        let Some((limit, window)) = self.rule else {
            return Ok(None);
        };
        let now = Instant::now();
        if now.duration_since(self.started) >= window {
            self.started = now;
            self.used = 0;
        }
        if self.used < limit {
            self.used += 1;
            return Ok(Some((limit, limit - self.used)));
        }
        let left = window.saturating_sub(now.duration_since(self.started));
        Err((left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1))
    }
}

pub struct Shared {
    pub cfg: ZendeskConfig,
    pub base_url: String,
    pub store: Mutex<Store>,
    pub stats: Mutex<Stats>,
    pub account_limit: Mutex<Window>,
    pub export_limit: Mutex<Window>,
    /// Bumped to make every cursor handed out so far invalid.
    pub cursor_generation: AtomicU64,
    /// Overrides the scheme and host of generated links (tests: a poisoned page).
    pub link_base: Mutex<Option<String>>,
}

impl Shared {
    fn link_base(&self) -> String {
        lock(&self.link_base)
            .clone()
            .unwrap_or_else(|| self.base_url.clone())
    }
}

/// Locks a mutex, recovering from poisoning: every mutation here is a single replace.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Zendesk's usual error body.
fn error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "description": description })),
    )
        .into_response()
}

fn bad_pagination(description: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "InvalidPaginationParameter",
        description,
    )
}

fn too_many(retry_after: u64) -> Response {
    let mut res = (
        StatusCode::TOO_MANY_REQUESTS,
        [("content-type", "text/plain; charset=utf-8")],
        "Number of allowed API requests per minute exceeded",
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
        res.headers_mut().insert("Retry-After", v);
    }
    res
}

pub fn router(shared: Arc<Shared>) -> Router {
    let mut r = Router::new();
    for suffix in ["", ".json"] {
        r = r
            .route(
                &format!("/api/v2/organizations{suffix}"),
                get(|s, q| list(s, q, Kind::Organization)),
            )
            .route(
                &format!("/api/v2/users{suffix}"),
                get(|s, q| list(s, q, Kind::User)),
            )
            .route(
                &format!("/api/v2/organizations/show_many{suffix}"),
                get(|s, q| show_many(s, q, Kind::Organization)),
            )
            .route(
                &format!("/api/v2/users/show_many{suffix}"),
                get(|s, q| show_many(s, q, Kind::User)),
            )
            .route(
                &format!("/api/v2/incremental/organizations{suffix}"),
                get(|s, q| export_time(s, q, Kind::Organization)),
            )
            .route(
                &format!("/api/v2/incremental/users{suffix}"),
                get(|s, q| export_time(s, q, Kind::User)),
            )
            .route(
                &format!("/api/v2/incremental/users/cursor{suffix}"),
                get(export_users_cursor),
            )
            .route(
                &format!("/api/v2/deleted_users{suffix}"),
                get(deleted_users),
            );
    }
    r.fallback(|| async { error(StatusCode::NOT_FOUND, "InvalidEndpoint", "Not found") })
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .layer(middleware::from_fn_with_state(shared.clone(), count))
        .with_state(shared)
}

async fn count(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    lock(&sh.stats).requests += 1;
    let res = next.run(req).await;
    *lock(&sh.stats)
        .by_status
        .entry(res.status().as_u16())
        .or_insert(0) += 1;
    res
}

/// Credentials first, then the account-wide rate limit; the limit headers go on the answer.
async fn gate(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if !authorised(&sh.cfg, req.headers()) {
        let mut res = (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "Couldn't authenticate you" })),
        )
            .into_response();
        res.headers_mut().insert(
            "WWW-Authenticate",
            HeaderValue::from_static("Basic realm=\"Web Password\""),
        );
        return res;
    }
    let admitted = lock(&sh.account_limit).admit();
    match admitted {
        Err(wait) => too_many(wait),
        Ok(limit) => {
            let mut res = next.run(req).await;
            if let Some((limit, remaining)) = limit {
                let h = res.headers_mut();
                for (k, v) in [
                    ("X-Rate-Limit", limit),
                    ("X-Rate-Limit-Remaining", remaining),
                ] {
                    if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
                        h.insert(k, v);
                    }
                }
            }
            res
        }
    }
}

/// Basic `{email}/token:{api_token}` or `Bearer {oauth_token}`.
fn authorised(cfg: &ZendeskConfig, headers: &HeaderMap) -> bool {
    let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, rest)) = v.split_once(' ') else {
        return false;
    };
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return !cfg.oauth_token.is_empty() && rest == cfg.oauth_token;
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Some(raw) = STANDARD
        .decode(rest)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return false;
    };
    let Some((user, token)) = raw.split_once(':') else {
        return false;
    };
    user.strip_suffix("/token")
        .is_some_and(|email| email.eq_ignore_ascii_case(&cfg.email))
        && !cfg.api_token.is_empty()
        && token == cfg.api_token
}

type Params = Query<Vec<(String, String)>>;

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `role=x` and `role[]=x&role[]=y` (users only).
fn roles(params: &[(String, String)]) -> Option<HashSet<String>> {
    let set: HashSet<String> = params
        .iter()
        .filter(|(k, _)| k == "role" || k == "role[]")
        .map(|(_, v)| v.clone())
        .collect();
    (!set.is_empty()).then_some(set)
}

/// Everything but RFC 3986's unreserved characters.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A query string from pairs, keys and values percent-encoded (`page[size]` →
/// `page%5Bsize%5D`).
fn qs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, QUERY),
                utf8_percent_encode(v, QUERY)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Opaque cursors: base64url of `generation:tag:a:b`. A cursor from an older generation (see
/// `ZendeskEmulator::invalidate_cursors`) or another listing is refused.
fn encode_cursor(sh: &Shared, tag: &str, a: i64, b: u64) -> String {
    let g = sh.cursor_generation.load(Ordering::Relaxed);
    URL_SAFE_NO_PAD.encode(format!("{g}:{tag}:{a}:{b}"))
}

fn decode_cursor(sh: &Shared, tag: &str, cursor: &str) -> Option<(i64, u64)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor.trim()).ok()?).ok()?;
    let mut parts = raw.split(':');
    let g: u64 = parts.next()?.parse().ok()?;
    if g != sh.cursor_generation.load(Ordering::Relaxed) || parts.next()? != tag {
        return None;
    }
    let a = parts.next()?.parse().ok()?;
    let b = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((a, b))
}

fn render(r: &Rec) -> Value {
    Value::Object(r.fields.clone())
}

fn render_deleted_user(r: &Rec) -> Value {
    let mut out = Map::new();
    for k in [
        "id",
        "url",
        "name",
        "email",
        "created_at",
        "updated_at",
        "time_zone",
        "phone",
        "shared_phone_number",
        "photo",
        "locale_id",
        "locale",
        "organization_id",
        "role",
        "active",
    ] {
        out.insert(
            k.to_string(),
            r.fields.get(k).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(out)
}

/// One page of a cursor-paginated listing over `rows` (ascending id), in Zendesk's
/// `{<key>: [...], meta, links}` shape. `keep` carries the filter params into the links.
fn cursor_page(
    sh: &Shared,
    path: &str,
    key: &str,
    tag: &str,
    rows: Vec<(u64, &Rec)>,
    render: fn(&Rec) -> Value,
    params: &[(String, String)],
) -> Response {
    let size = match param(params, "page[size]").map(str::parse::<usize>) {
        None => MAX_PAGE_SIZE,
        Some(Ok(n)) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
        Some(Ok(n)) if n > MAX_PAGE_SIZE => {
            return bad_pagination(&format!(
                "page[size] must be less than or equal to {MAX_PAGE_SIZE}"
            ));
        }
        _ => return bad_pagination("page[size] must be a positive integer"),
    };
    let after = match param(params, "page[after]") {
        Some(c) => match decode_cursor(sh, tag, c) {
            Some((_, id)) => Some(id),
            None => return bad_pagination("page[after] is not a valid cursor"),
        },
        None => None,
    };
    let before = match param(params, "page[before]") {
        Some(c) => match decode_cursor(sh, tag, c) {
            Some((_, id)) => Some(id),
            None => return bad_pagination("page[before] is not a valid cursor"),
        },
        None => None,
    };
    let (page, has_more): (Vec<(u64, &Rec)>, bool) = match before {
        Some(b) => {
            let earlier: Vec<(u64, &Rec)> = rows.into_iter().filter(|(id, _)| *id < b).collect();
            let skip = earlier.len().saturating_sub(size);
            (earlier.into_iter().skip(skip).collect(), skip > 0)
        }
        None => {
            let mut later = rows
                .into_iter()
                .filter(|(id, _)| after.is_none_or(|a| *id > a));
            let page: Vec<(u64, &Rec)> = later.by_ref().take(size).collect();
            let more = later.next().is_some();
            (page, more)
        }
    };
    let first = page.first().map(|(id, _)| *id);
    let last = page.last().map(|(id, _)| *id);
    let after_cursor = last.map(|id| encode_cursor(sh, tag, 0, id));
    let before_cursor = first.map(|id| encode_cursor(sh, tag, 0, id));
    let keep: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| !k.starts_with("page["))
        .cloned()
        .collect();
    let link = |dir: &str, cursor: &str| {
        let mut pairs = vec![("page[size]".to_string(), size.to_string())];
        pairs.push((format!("page[{dir}]"), cursor.to_string()));
        pairs.extend(keep.iter().cloned());
        format!("{}{path}?{}", sh.link_base(), qs(&pairs))
    };
    let next = match (&after_cursor, has_more || before.is_some()) {
        (Some(c), true) => Value::String(link("after", c)),
        _ => Value::Null,
    };
    let prev = before_cursor
        .as_deref()
        .map_or(Value::Null, |c| Value::String(link("before", c)));
    let mut body = Map::new();
    body.insert(
        key.to_string(),
        Value::Array(page.into_iter().map(|(_, r)| render(r)).collect()),
    );
    body.insert(
        "meta".into(),
        json!({
            "has_more": has_more,
            "after_cursor": after_cursor,
            "before_cursor": before_cursor,
        }),
    );
    body.insert("links".into(), json!({ "next": next, "prev": prev }));
    Json(Value::Object(body)).into_response()
}

/// Offset pagination (no `page[size]`): `page`, `per_page`, `next_page`, `previous_page`,
/// `count`; page 101 and beyond are refused.
fn offset_page(
    sh: &Shared,
    path: &str,
    key: &str,
    rows: Vec<(u64, &Rec)>,
    render: fn(&Rec) -> Value,
    params: &[(String, String)],
) -> Response {
    let per_page = param(params, "per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(OFFSET_PER_PAGE)
        .min(OFFSET_PER_PAGE);
    let page = param(params, "page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1);
    if page > OFFSET_MAX_PAGE {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidPaginationParameter",
            "Offset pagination is limited to the first 100 pages; use cursor pagination",
        );
    }
    let count = rows.len();
    let items: Vec<Value> = rows
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(_, r)| render(r))
        .collect();
    let keep: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "page" && k != "per_page")
        .cloned()
        .collect();
    let url = |p: usize| {
        let mut pairs = keep.clone();
        pairs.push(("page".into(), p.to_string()));
        pairs.push(("per_page".into(), per_page.to_string()));
        format!("{}{path}?{}", sh.link_base(), qs(&pairs))
    };
    let next = (page * per_page < count).then(|| url(page + 1));
    let prev = (page > 1).then(|| url(page - 1));
    let mut body = Map::new();
    body.insert(key.to_string(), Value::Array(items));
    body.insert("next_page".into(), json!(next));
    body.insert("previous_page".into(), json!(prev));
    body.insert("count".into(), json!(count));
    Json(Value::Object(body)).into_response()
}

async fn list(State(sh): State<Arc<Shared>>, Query(params): Params, kind: Kind) -> Response {
    lock(&sh.stats).list_requests += 1;
    let wanted = if kind == Kind::User {
        roles(&params)
    } else {
        None
    };
    let store = lock(&sh.store);
    let rows: Vec<(u64, &Rec)> = store
        .live(kind)
        .filter(|(_, r)| wanted.as_ref().is_none_or(|w| w.contains(r.role())))
        .collect();
    let path = format!("/api/v2/{}.json", kind.plural());
    let tag = match kind {
        Kind::Organization => "lo",
        Kind::User => "lu",
    };
    if param(&params, "page[size]").is_some()
        || param(&params, "page[after]").is_some()
        || param(&params, "page[before]").is_some()
    {
        cursor_page(&sh, &path, kind.plural(), tag, rows, render, &params)
    } else {
        offset_page(&sh, &path, kind.plural(), rows, render, &params)
    }
}

async fn show_many(State(sh): State<Arc<Shared>>, Query(params): Params, kind: Kind) -> Response {
    let Some(raw) = param(&params, "ids") else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidValue",
            "ids or external_ids is required",
        );
    };
    let mut ids = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match part.parse::<u64>() {
            Ok(id) => ids.push(id),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidValue",
                    &format!("ids: {part:?} is not an id"),
                );
            }
        }
    }
    if ids.len() > MAX_SHOW_MANY {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidValue",
            &format!("ids: at most {MAX_SHOW_MANY} ids are accepted"),
        );
    }
    lock(&sh.stats).show_many_requests += 1;
    let wanted: HashSet<u64> = ids.into_iter().collect();
    let store = lock(&sh.store);
    let found: Vec<Value> = store
        .live(kind)
        .filter(|(id, _)| wanted.contains(id))
        .map(|(_, r)| Value::Object(r.fields.clone()))
        .collect();
    let mut body = Map::new();
    body.insert(kind.plural().to_string(), Value::Array(found));
    Json(Value::Object(body)).into_response()
}

/// The per-endpoint limit of the incremental exports, then the shared export checks:
/// `per_page` and the newest time an export may show.
/// An early answer (boxed: a `Response` is large).
type Reject = Box<Response>;

fn export_admit(sh: &Shared, params: &[(String, String)]) -> Result<(usize, i64), Reject> {
    if let Err(wait) = lock(&sh.export_limit).admit() {
        return Err(Box::new(too_many(wait)));
    }
    lock(&sh.stats).export_requests += 1;
    let per_page = match param(params, "per_page").map(str::parse::<usize>) {
        None => EXPORT_PER_PAGE,
        Some(Ok(n)) if (1..=EXPORT_PER_PAGE).contains(&n) => n,
        Some(_) => {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "InvalidValue",
                &format!("per_page must be between 1 and {EXPORT_PER_PAGE}"),
            )));
        }
    };
    let lag = sh.cfg.export_lag.as_secs() as i64;
    Ok((per_page, now() - lag))
}

/// `start_time`: required, epoch seconds, not within the excluded last minute.
fn start_time(sh: &Shared, params: &[(String, String)], horizon: i64) -> Result<i64, Reject> {
    let Some(raw) = param(params, "start_time") else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "InvalidValue",
            "start_time is required",
        )));
    };
    let Ok(t) = raw.trim().parse::<i64>() else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "InvalidValue",
            "start_time must be a Unix epoch time in seconds",
        )));
    };
    if t > horizon {
        let lag = sh.cfg.export_lag.as_secs();
        let older = if lag == 60 {
            "1 minute".to_string()
        } else {
            format!("{lag} seconds")
        };
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "InvalidValue",
            &format!("Too recent start_time. Use a start_time older than {older}"),
        )));
    }
    Ok(t.max(0))
}

fn export_record(r: &Rec) -> Value {
    Value::Object(r.fields.clone())
}

/// Time-based export: items with `updated_at >= start_time`, oldest first, up to `per_page`;
/// `end_time` is the last item's time and the next page starts there (inclusive).
async fn export_time(State(sh): State<Arc<Shared>>, Query(params): Params, kind: Kind) -> Response {
    let (per_page, horizon) = match export_admit(&sh, &params) {
        Ok(v) => v,
        Err(res) => return *res,
    };
    let start = match start_time(&sh, &params, horizon) {
        Ok(t) => t,
        Err(res) => return *res,
    };
    let store = lock(&sh.store);
    let rows: Vec<(i64, u64, &Rec)> = store
        .by_update(kind)
        .into_iter()
        .filter(|(t, _, _)| *t >= start && *t <= horizon)
        .collect();
    let mut take = rows.len().min(per_page);
    let mut end_time = rows.get(take.wrapping_sub(1)).map_or(start, |r| r.0);
    if take > 0 && take < rows.len() && rows[0].0 == end_time {
        // The whole page is one second: stretch it over that second and move past it.
        while take < rows.len() && rows[take].0 == end_time {
            take += 1;
        }
        end_time += 1;
    }
    let end_of_stream = take >= rows.len();
    let items: Vec<Value> = rows[..take]
        .iter()
        .map(|(_, _, r)| export_record(r))
        .collect();
    let mut next_pairs = vec![("start_time".to_string(), end_time.to_string())];
    if let Some(p) = param(&params, "per_page") {
        next_pairs.push(("per_page".into(), p.to_string()));
    }
    let next_page = format!(
        "{}/api/v2/incremental/{}.json?{}",
        sh.link_base(),
        kind.plural(),
        qs(&next_pairs)
    );
    let mut body = Map::new();
    body.insert("count".into(), json!(items.len()));
    body.insert(kind.plural().to_string(), Value::Array(items));
    body.insert("end_time".into(), json!(end_time));
    body.insert("next_page".into(), json!(next_page));
    body.insert("end_of_stream".into(), json!(end_of_stream));
    Json(Value::Object(body)).into_response()
}

/// Cursor-based user export: the first request names `start_time`, the following ones the
/// `cursor` from `after_cursor`; items in (updated_at, id) order after that position.
async fn export_users_cursor(State(sh): State<Arc<Shared>>, Query(params): Params) -> Response {
    let (per_page, horizon) = match export_admit(&sh, &params) {
        Ok(v) => v,
        Err(res) => return *res,
    };
    let after: (i64, u64) = match param(&params, "cursor") {
        Some(c) => match decode_cursor(&sh, "xu", c) {
            Some(k) => k,
            None => return bad_pagination("cursor is not a valid cursor"),
        },
        None => match start_time(&sh, &params, horizon) {
            Ok(t) => (t - 1, u64::MAX),
            Err(res) => return *res,
        },
    };
    let store = lock(&sh.store);
    let rows: Vec<(i64, u64, &Rec)> = store
        .by_update(Kind::User)
        .into_iter()
        .filter(|(t, id, _)| (*t, *id) > after && *t <= horizon)
        .collect();
    let take = rows.len().min(per_page);
    let end_of_stream = take >= rows.len();
    let last = rows[..take].last().map_or(after, |(t, id, _)| (*t, *id));
    let after_cursor = encode_cursor(&sh, "xu", last.0, last.1);
    let mut pairs = vec![("cursor".to_string(), after_cursor.clone())];
    if let Some(p) = param(&params, "per_page") {
        pairs.push(("per_page".into(), p.to_string()));
    }
    let after_url = format!(
        "{}/api/v2/incremental/users/cursor.json?{}",
        sh.link_base(),
        qs(&pairs)
    );
    let items: Vec<Value> = rows[..take]
        .iter()
        .map(|(_, _, r)| export_record(r))
        .collect();
    Json(json!({
        "users": items,
        "after_url": after_url,
        "after_cursor": after_cursor,
        "before_url": null,
        "before_cursor": null,
        "end_of_stream": end_of_stream,
    }))
    .into_response()
}

async fn deleted_users(State(sh): State<Arc<Shared>>, Query(params): Params) -> Response {
    lock(&sh.stats).deleted_requests += 1;
    let store = lock(&sh.store);
    let rows: Vec<(u64, &Rec)> = store.deleted_users().collect();
    let path = "/api/v2/deleted_users.json";
    if param(&params, "page[size]").is_some()
        || param(&params, "page[after]").is_some()
        || param(&params, "page[before]").is_some()
    {
        cursor_page(
            &sh,
            path,
            "deleted_users",
            "ld",
            rows,
            render_deleted_user,
            &params,
        )
    } else {
        offset_page(
            &sh,
            path,
            "deleted_users",
            rows,
            render_deleted_user,
            &params,
        )
    }
}
