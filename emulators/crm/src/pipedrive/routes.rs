//! HTTP layer of the Pipedrive API v2 emulator: `GET /api/v2/organizations` and
//! `GET /api/v2/persons`.
//!
//! What each part follows:
//! - Parameters, from "Get all persons" / "Get all organizations"
//!   (https://developers.pipedrive.com/docs/api/v1/Persons#getPersons, v2 tab, and the v2
//!   OpenAPI as generated into pipedrive/client-nodejs `persons-api.ts`): `ids` ("comma
//!   separated string array of up to 100 entity ids ... If any of the requested entities do not
//!   exist or are not visible, they are not included in the response"), `owner_id`, `org_id`
//!   (persons), `updated_since` ("update_time later than or equal to", RFC 3339),
//!   `updated_until` ("earlier than"), `sort_by` (`id`, `update_time`, `add_time`; default
//!   `id`), `sort_direction` (`asc`, `desc`; default `asc`), `limit` (default 100, "a maximum
//!   value of 500 is allowed"), `cursor`. `filter_id` and `deal_id` are not emulated (400).
//! - Paging ("Pagination", https://pipedrive.readme.io/docs/core-api-concepts-pagination):
//!   `{success, data, additional_data: {next_cursor}}`; `next_cursor` is null on the last page.
//! - Strict input ("API v2 migration guide": "significantly stricter input validation"):
//!   values outside those ranges get 400. The exact wording of Pipedrive's validation and
//!   invalid-cursor errors is not confirmed; the emulator answers
//!   `{"success":false,"error":...,"errorCode":400,"error_info":...}`.
//! - Auth ("Authentication", https://pipedrive.readme.io/docs/core-api-concepts-authentication):
//!   the API token in the `x-api-token` header, or an OAuth access token as `Bearer`; otherwise
//!   401 `{"success":false,"error":"unauthorized access","errorCode":401,...}` (v1's body; v2's
//!   wording is not confirmed).
//! - Rate limits ("Rate limiting", https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting):
//!   `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset` (seconds until the window
//!   resets) on every response; beyond the limit 429 with `success: false`. `Retry-After` on the
//!   429 is from Pipedrive's older rate-limit text (quoted in amoniacou/pipedrive.rb issue #1);
//!   the current page's body text is not confirmed. The daily token budget is not emulated.
//! - Deleted records are never listed and `ids` leaves them out; whether v2 lists can include
//!   deleted records at all is not documented in what we read.

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
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::DateTime;
use serde_json::{Value, json};

use super::config::PipedriveConfig;
use super::store::{Kind, Rec, Store};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;
const MAX_IDS: usize = 100;

/// Counters of what the emulator has seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Every HTTP request.
    pub requests: u64,
    /// Authorised, admitted list requests.
    pub list_requests: u64,
    pub by_status: BTreeMap<u16, u64>,
}

#[derive(Debug)]
pub struct Window {
    rule: Option<(u32, Duration)>,
    started: Instant,
    used: u32,
}

/// What the limiter says about one request.
enum Admit {
    Unlimited,
    /// (limit, remaining, seconds to reset)
    Ok(u32, u32, u64),
    /// (limit, seconds to reset)
    Over(u32, u64),
}

impl Window {
    pub fn new(rule: Option<(u32, Duration)>) -> Window {
        Window {
            rule,
            started: Instant::now(),
            used: 0,
        }
    }

    fn admit(&mut self) -> Admit {
        let Some((limit, window)) = self.rule else {
            return Admit::Unlimited;
        };
        let now = Instant::now();
        if now.duration_since(self.started) >= window {
            self.started = now;
            self.used = 0;
        }
        let left = window.saturating_sub(now.duration_since(self.started));
        let reset = (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1);
        if self.used < limit {
            self.used += 1;
            Admit::Ok(limit, limit - self.used, reset)
        } else {
            Admit::Over(limit, reset)
        }
    }
}

pub struct Shared {
    pub cfg: PipedriveConfig,
    pub base_url: String,
    pub store: Mutex<Store>,
    pub stats: Mutex<Stats>,
    pub limit: Mutex<Window>,
    pub cursor_generation: AtomicU64,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pipedrive's error body.
fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({
            "success": false,
            "error": message,
            "errorCode": status.as_u16(),
            "error_info": "Please check developers.pipedrive.com",
            "data": null,
            "additional_data": null,
        })),
    )
        .into_response()
}

fn bad(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/api/v2/organizations",
            get(|s, q| list(s, q, Kind::Organization)),
        )
        .route("/api/v2/persons", get(|s, q| list(s, q, Kind::Person)))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Unknown method .") })
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

fn authorised(cfg: &PipedriveConfig, headers: &HeaderMap) -> bool {
    if let Some(t) = headers.get("x-api-token").and_then(|v| v.to_str().ok()) {
        return !cfg.api_token.is_empty() && t == cfg.api_token;
    }
    let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            !cfg.oauth_token.is_empty() && token.trim() == cfg.oauth_token
        }
        _ => false,
    }
}

fn set_limit_headers(h: &mut HeaderMap, limit: u32, remaining: u32, reset: u64) {
    for (k, v) in [
        ("x-ratelimit-limit", u64::from(limit)),
        ("x-ratelimit-remaining", u64::from(remaining)),
        ("x-ratelimit-reset", reset),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
            h.insert(k, v);
        }
    }
}

/// Credentials, then the token's burst window.
async fn gate(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if !authorised(&sh.cfg, req.headers()) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized access");
    }
    let admit = lock(&sh.limit).admit();
    match admit {
        Admit::Unlimited => next.run(req).await,
        Admit::Ok(limit, remaining, reset) => {
            let mut res = next.run(req).await;
            set_limit_headers(res.headers_mut(), limit, remaining, reset);
            res
        }
        Admit::Over(limit, reset) => {
            let mut res = error(StatusCode::TOO_MANY_REQUESTS, "Request over limit");
            set_limit_headers(res.headers_mut(), limit, 0, reset);
            if let Ok(v) = HeaderValue::from_str(&reset.to_string()) {
                res.headers_mut().insert("Retry-After", v);
            }
            res
        }
    }
}

type Params = Query<Vec<(String, String)>>;

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortBy {
    Id,
    UpdateTime,
    AddTime,
}

impl SortBy {
    fn tag(self) -> &'static str {
        match self {
            SortBy::Id => "id",
            SortBy::UpdateTime => "update_time",
            SortBy::AddTime => "add_time",
        }
    }

    /// The sort key of a record: (time, id); `id` sorts on (0, id).
    fn key(self, id: u64, r: &Rec) -> (i64, u64) {
        match self {
            SortBy::Id => (0, id),
            SortBy::UpdateTime => (r.updated, id),
            SortBy::AddTime => (r.added, id),
        }
    }
}

/// Cursors: base64url of `generation:sort:direction:time:id`, the last item of the page. A
/// cursor from an older generation or another sort is refused.
fn encode_cursor(sh: &Shared, sort: SortBy, desc: bool, key: (i64, u64)) -> String {
    let g = sh.cursor_generation.load(Ordering::Relaxed);
    let dir = if desc { "desc" } else { "asc" };
    URL_SAFE_NO_PAD.encode(format!("{g}:{}:{dir}:{}:{}", sort.tag(), key.0, key.1))
}

fn decode_cursor(sh: &Shared, sort: SortBy, desc: bool, cursor: &str) -> Option<(i64, u64)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor.trim()).ok()?).ok()?;
    let parts: Vec<&str> = raw.split(':').collect();
    let [g, s, d, t, id] = parts.as_slice() else {
        return None;
    };
    let dir = if desc { "desc" } else { "asc" };
    (g.parse::<u64>().ok()? == sh.cursor_generation.load(Ordering::Relaxed)
        && *s == sort.tag()
        && *d == dir)
        .then_some(())?;
    Some((t.parse().ok()?, id.parse().ok()?))
}

/// An early answer (boxed: a `Response` is large).
type Reject = Box<Response>;

fn int_param(params: &[(String, String)], name: &str) -> Result<Option<u64>, Reject> {
    match param(params, name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Box::new(bad(&format!("Parameter '{name}' must be an integer")))),
    }
}

fn time_param(params: &[(String, String)], name: &str) -> Result<Option<i64>, Reject> {
    match param(params, name) {
        None => Ok(None),
        Some(v) => DateTime::parse_from_rfc3339(v.trim())
            .map(|t| Some(t.timestamp()))
            .map_err(|_| {
                Box::new(bad(&format!(
                    "Parameter '{name}' must be an RFC 3339 date-time, e.g. 2025-01-01T10:20:00Z"
                )))
            }),
    }
}

/// One page of organizations or persons.
async fn list(State(sh): State<Arc<Shared>>, Query(params): Params, kind: Kind) -> Response {
    for unsupported in ["filter_id", "deal_id"] {
        if param(&params, unsupported).is_some() {
            return bad(&format!(
                "Parameter '{unsupported}' is not supported by this emulator"
            ));
        }
    }
    let limit = match param(&params, "limit").map(|v| v.trim().parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return bad(&format!(
                "Parameter 'limit' must be an integer between 1 and {MAX_LIMIT}"
            ));
        }
    };
    let sort = match param(&params, "sort_by") {
        None | Some("id") => SortBy::Id,
        Some("update_time") => SortBy::UpdateTime,
        Some("add_time") => SortBy::AddTime,
        Some(_) => {
            return bad("Parameter 'sort_by' must be one of: id, update_time, add_time");
        }
    };
    let desc = match param(&params, "sort_direction") {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return bad("Parameter 'sort_direction' must be one of: asc, desc"),
    };
    let ids: Option<HashSet<u64>> = match param(&params, "ids") {
        None => None,
        Some(raw) => {
            let mut set = HashSet::new();
            for part in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match part.parse::<u64>() {
                    Ok(id) => {
                        set.insert(id);
                    }
                    Err(_) => return bad("Parameter 'ids' must be a list of integers"),
                }
            }
            if set.len() > MAX_IDS {
                return bad(&format!("Parameter 'ids' accepts at most {MAX_IDS} ids"));
            }
            Some(set)
        }
    };
    let (owner, org, since, until) = match (
        int_param(&params, "owner_id"),
        if kind == Kind::Person {
            int_param(&params, "org_id")
        } else {
            Ok(None)
        },
        time_param(&params, "updated_since"),
        time_param(&params, "updated_until"),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        (Err(r), _, _, _) | (_, Err(r), _, _) | (_, _, Err(r), _) | (_, _, _, Err(r)) => {
            return *r;
        }
    };
    let after = match param(&params, "cursor") {
        None => None,
        Some(c) => match decode_cursor(&sh, sort, desc, c) {
            Some(k) => Some(k),
            None => return bad("Invalid cursor"),
        },
    };
    lock(&sh.stats).list_requests += 1;
    let store = lock(&sh.store);
    let mut rows: Vec<((i64, u64), &Rec)> = store
        .live(kind)
        .filter(|(id, r)| {
            ids.as_ref().is_none_or(|s| s.contains(id))
                && owner.is_none_or(|o| r.int("owner_id") == Some(o))
                && org.is_none_or(|o| r.int("org_id") == Some(o))
                && since.is_none_or(|t| r.updated >= t)
                && until.is_none_or(|t| r.updated < t)
        })
        .map(|(id, r)| (sort.key(id, r), r))
        .collect();
    rows.sort_by_key(|(k, _)| *k);
    if desc {
        rows.reverse();
    }
    let mut rest = rows
        .into_iter()
        .filter(|(k, _)| match after {
            None => true,
            Some(a) if desc => *k < a,
            Some(a) => *k > a,
        })
        .peekable();
    let page: Vec<((i64, u64), &Rec)> = rest.by_ref().take(limit).collect();
    let more = rest.peek().is_some();
    let next_cursor = match (more, page.last()) {
        (true, Some((k, _))) => Value::String(encode_cursor(&sh, sort, desc, *k)),
        _ => Value::Null,
    };
    let data: Vec<Value> = page
        .into_iter()
        .map(|(_, r)| Value::Object(r.fields.clone()))
        .collect();
    Json(json!({
        "success": true,
        "data": data,
        "additional_data": { "next_cursor": next_cursor },
    }))
    .into_response()
}
