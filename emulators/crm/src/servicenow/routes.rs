//! HTTP layer of the Table API (`GET /api/now/table/{tableName}` and
//! `GET /api/now/table/{tableName}/{sys_id}`, ServiceNow "Table API" reference): Basic auth or
//! an OAuth bearer token on every call, an optional rate limit rule, the error body
//! `{"error":{"message","detail"},"status":"failure"}`, paging by `sysparm_limit` (default
//! 10000) / `sysparm_offset` with `Link` (rel first/prev/next/last) and `X-Total-Count` headers.
//! Plus the OAuth token endpoint `POST /oauth_token.do` (see `oauth`), which is neither
//! authenticated nor counted by the rate limit rule, and read access to `sys_audit_delete`,
//! which the config may deny: 403 "User Not Authorized", the answer "Table API security"
//! (https://docs.servicenow.com/bundle/geneva-servicenow-platform/page/integrate/inbound_rest/concept/c_TableAPISecurity.html)
//! documents for tables the user's roles do not open; the detail text is the emulator's own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

use super::config::ServiceNowConfig;
use super::oauth::Tokens;
use super::query;
use super::store::{Rec, Store, Table};

/// Default `sysparm_limit` ("Table API": "Default: 10000").
const DEFAULT_LIMIT: usize = 10_000;

/// Counters of what the emulator has seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Every HTTP request, token requests included.
    pub requests: u64,
    /// `POST /oauth_token.do` requests, granted or not.
    pub token_requests: u64,
    /// Access tokens handed out.
    pub tokens_issued: u64,
    /// Authorised, admitted `GET /api/now/table/{table}` list requests.
    pub list_requests: u64,
    pub by_status: BTreeMap<u16, u64>,
}

pub struct Shared {
    pub cfg: ServiceNowConfig,
    pub base_url: String,
    pub store: Mutex<Store>,
    pub stats: Mutex<Stats>,
    pub tokens: Mutex<Tokens>,
    pub rate_limit: Mutex<Option<(u32, Duration)>>,
    /// (window start, requests admitted in it)
    pub window: Mutex<(Instant, u32)>,
}

/// Locks a mutex, recovering from poisoning: every mutation here is a single replace.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Table API's error body.
pub fn error(status: StatusCode, message: &str, detail: &str) -> Response {
    (
        status,
        Json(json!({
            "error": { "message": message, "detail": detail },
            "status": "failure"
        })),
    )
        .into_response()
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/oauth_token.do", post(token))
        .route("/api/now/table/{table}", get(list))
        .route("/api/now/table/{table}/{sys_id}", get(one))
        .route("/api/now/v2/table/{table}", get(list))
        .route("/api/now/v2/table/{table}/{sys_id}", get(one))
        .fallback(|| async {
            error(
                StatusCode::BAD_REQUEST,
                "Requested URI does not represent any resource",
                "",
            )
        })
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

/// Auth first (rate limit rules are per user), then the rate limit rule. The token endpoint
/// passes: it authenticates its own way.
async fn gate(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/oauth_token.do" {
        return next.run(req).await;
    }
    let ok = basic(req.headers()).is_some_and(|(u, p)| u == sh.cfg.user && p == sh.cfg.password)
        || bearer(req.headers()).is_some_and(|t| lock(&sh.tokens).is_valid(t));
    if !ok {
        // What an instance answers to missing or wrong credentials, an expired bearer token
        // included (a real 401 to a bearer call also says `WWW-Authenticate: Basic`).
        let mut res = error(
            StatusCode::UNAUTHORIZED,
            "User Not Authenticated",
            "Required to provide Auth information",
        );
        res.headers_mut().insert(
            "WWW-Authenticate",
            HeaderValue::from_static("Basic realm=\"Service-now\""),
        );
        return res;
    }
    if let Some(res) = limited(&sh) {
        return res;
    }
    next.run(req).await
}

/// A fixed-window rule: beyond `limit` requests in a window, 429 with `X-RateLimit-Limit`,
/// `X-RateLimit-Reset` (epoch seconds of the window's end) and `Retry-After` ("Inbound REST
/// API rate limiting", ServiceNow docs).
fn limited(sh: &Shared) -> Option<Response> {
    let (limit, window) = (*lock(&sh.rate_limit))?;
    let mut w = lock(&sh.window);
    let now = Instant::now();
    if now.duration_since(w.0) >= window {
        *w = (now, 0);
    }
    if w.1 < limit {
        w.1 += 1;
        return None;
    }
    let left = window.saturating_sub(now.duration_since(w.0));
    let reset = SystemTime::now()
        .checked_add(left)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    let retry = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    let mut res = error(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        "The rate limit for this user has been exceeded",
    );
    let h = res.headers_mut();
    for (k, v) in [
        ("X-RateLimit-Limit", limit.to_string()),
        ("X-RateLimit-Reset", reset.to_string()),
        ("Retry-After", retry.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    Some(res)
}

/// `Authorization: Basic base64(user:password)`.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = String::from_utf8(base64_decode(b64.trim())?).ok()?;
    let (u, p) = raw.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

async fn token(
    State(sh): State<Arc<Shared>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    lock(&sh.stats).token_requests += 1;
    let issued = lock(&sh.tokens).issue(&sh.cfg, &form);
    match issued {
        Ok(body) => {
            lock(&sh.stats).tokens_issued += 1;
            Json(body).into_response()
        }
        Err(refusal) => refusal.response(&sh.cfg),
    }
}

/// 403 on a table the integration user may not read.
fn not_authorized(table: Table) -> Response {
    error(
        StatusCode::FORBIDDEN,
        "User Not Authorized",
        &format!("ACL restricts reading table {}", table.name()),
    )
}

/// Standard base64 with padding (RFC 4648 section 4); the crate has no base64 dependency and
/// this is all Basic auth needs.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

/// An unknown table: 400 "Invalid table <name>", as an instance answers.
fn invalid_table(name: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &format!("Invalid table {name}"),
        "",
    )
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|v| v == "true")
}

/// A record as the Table API shows it: the requested fields (all when none are named), every
/// value a string, references as `{link, value}` unless links are excluded.
fn render(sh: &Shared, rec: &Rec, fields: &[&str], exclude_links: bool) -> Value {
    let mut out = Map::new();
    let names: Vec<&str> = if fields.is_empty() {
        rec.table.fields().to_vec()
    } else {
        fields
            .iter()
            .copied()
            .filter(|f| rec.table.fields().contains(f))
            .collect()
    };
    for f in names {
        let v = rec.get(f);
        let shown = match rec.table.reference(f) {
            Some(target) if !v.is_empty() && !exclude_links => json!({
                "link": format!("{}/api/now/table/{}/{v}", sh.base_url, target.name()),
                "value": v,
            }),
            _ => Value::String(v.to_string()),
        };
        out.insert(f.to_string(), shown);
    }
    Value::Object(out)
}

fn field_list(params: &HashMap<String, String>) -> Vec<&str> {
    params
        .get("sysparm_fields")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

async fn list(
    State(sh): State<Arc<Shared>>,
    Path(table): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(t) = Table::parse(&table) else {
        return invalid_table(&table);
    };
    if t == Table::AuditDelete && !sh.cfg.audit_delete_readable {
        return not_authorized(t);
    }
    lock(&sh.stats).list_requests += 1;
    let limit = params
        .get("sysparm_limit")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_LIMIT);
    let offset = params
        .get("sysparm_offset")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let q = query::parse(params.get("sysparm_query").map_or("", String::as_str), t);
    let fields = field_list(&params);
    let exclude = flag(&params, "sysparm_exclude_reference_link");
    let (result, total) = {
        let store = lock(&sh.store);
        let mut rows: Vec<&Rec> = store.rows(t).filter(|r| q.matches(r)).collect();
        q.sort(&mut rows);
        let total = rows.len();
        let page: Vec<Value> = rows
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|r| render(&sh, r, &fields, exclude))
            .collect();
        (page, total)
    };
    let mut res = Json(json!({ "result": result })).into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&total.to_string()) {
        h.insert("X-Total-Count", v);
    }
    if let Ok(v) = HeaderValue::from_str(&links(&sh, &table, &params, offset, limit, total)) {
        h.insert("Link", v);
    }
    res
}

/// `<url>;rel="first",<url>;rel="prev",<url>;rel="next",<url>;rel="last"`: the same request
/// with other offsets; prev/next only when such a page exists.
fn links(
    sh: &Shared,
    table: &str,
    params: &HashMap<String, String>,
    offset: usize,
    limit: usize,
    total: usize,
) -> String {
    let url = |off: usize| {
        let mut pairs: Vec<(&str, String)> = params
            .iter()
            .filter(|(k, _)| k.as_str() != "sysparm_offset" && k.as_str() != "sysparm_limit")
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        pairs.sort();
        pairs.push(("sysparm_limit", limit.to_string()));
        pairs.push(("sysparm_offset", off.to_string()));
        let qs: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
            .collect();
        format!("{}/api/now/table/{table}?{}", sh.base_url, qs.join("&"))
    };
    let last = if total == 0 {
        0
    } else {
        (total - 1) / limit * limit
    };
    let mut parts = vec![format!("<{}>;rel=\"first\"", url(0))];
    if offset > 0 {
        parts.push(format!(
            "<{}>;rel=\"prev\"",
            url(offset.saturating_sub(limit))
        ));
    }
    if offset + limit < total {
        parts.push(format!("<{}>;rel=\"next\"", url(offset + limit)));
    }
    parts.push(format!("<{}>;rel=\"last\"", url(last)));
    parts.join(",")
}

async fn one(
    State(sh): State<Arc<Shared>>,
    Path((table, sys_id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(t) = Table::parse(&table) else {
        return invalid_table(&table);
    };
    if t == Table::AuditDelete && !sh.cfg.audit_delete_readable {
        return not_authorized(t);
    }
    let fields = field_list(&params);
    let exclude = flag(&params, "sysparm_exclude_reference_link");
    let store = lock(&sh.store);
    match store.get(&sys_id).filter(|r| r.table == t) {
        Some(r) => Json(json!({ "result": render(&sh, r, &fields, exclude) })).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "No Record found",
            "Record doesn't exist or ACL restricts the record retrieval",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn decodes_base64() {
        assert_eq!(
            base64_decode("dXNlcjpwdw==").as_deref(),
            Some(&b"user:pw"[..])
        );
        assert_eq!(base64_decode("YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(base64_decode("YQ").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("Y"), None);
        assert_eq!(base64_decode("!!"), None);
    }
}
