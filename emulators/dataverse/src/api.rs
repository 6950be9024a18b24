//! One Web API request, independent of HTTP plumbing, so the same code serves a top-level
//! request and each part of a `$batch`: resource routing (`accounts(<key>)`, `contacts`,
//! bulk actions, metadata, `WhoAmI`, `sdkmessagefilters`) and the documented status codes and
//! headers of each operation.

use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::keys::{parse_key, parse_segment, split_segments};
use crate::odata::{self, QueryOptions};
use crate::schema::Table;
use crate::state::{Condition, Outcome, Rules, Store, representation_status};
use crate::{bulk, metadata};

/// A request addressed relative to the API root (`accounts(…)`, not `/api/data/v9.2/…`).
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    /// Raw (percent-encoded) path relative to the API root.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// A response before it becomes HTTP (or a `$batch` part).
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ApiResponse {
    pub fn empty(status: StatusCode) -> Self {
        ApiResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn json(status: StatusCode, v: &Value) -> Self {
        ApiResponse {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; odata.metadata=minimal".into(),
            )],
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }

    pub fn error(e: &ApiError) -> Self {
        Self::json(e.status, &e.body())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What executing a request needs besides the store.
pub struct Ctx<'a> {
    pub api_url: &'a str,
    pub rules: &'a Rules,
    pub tables: &'a crate::config::TableSettings,
    pub tenant: &'a str,
    pub client_id: &'a str,
    /// Decides, per write operation, whether to inject a deadlock.
    pub deadlock: &'a mut dyn FnMut() -> bool,
    /// Write operations performed (each adds execution time).
    pub ops: u32,
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn prefers(h: &HeaderMap, what: &str) -> bool {
    h.get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == what))
}

pub fn entity_id(api_url: &str, t: Table, id: &uuid::Uuid) -> String {
    format!("{api_url}{}({id})", t.set_name())
}

/// Executes one request against the store.
pub fn execute(ctx: &mut Ctx<'_>, store: &mut Store, req: &ApiRequest) -> ApiResponse {
    match route(ctx, store, req) {
        Ok(r) => r,
        Err(e) => ApiResponse::error(&e),
    }
}

fn route(ctx: &mut Ctx<'_>, store: &mut Store, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let path = crate::keys::decode(&req.path)?;
    let segs = split_segments(&path);
    let q = odata::parse_query(req.query.as_deref())?;
    let Some(first) = segs.first() else {
        return Err(ApiError::segment_not_found(""));
    };
    let (name, key) = parse_segment(first)?;
    match (name, key, segs.len()) {
        ("WhoAmI", None, 1) => {
            expect(&req.method, &[Method::GET], &path)?;
            Ok(ApiResponse::json(
                StatusCode::OK,
                &metadata::who_am_i(ctx.api_url, ctx.tenant, ctx.client_id),
            ))
        }
        ("sdkmessagefilters", None, 1) => {
            expect(&req.method, &[Method::GET], &path)?;
            Ok(ApiResponse::json(
                StatusCode::OK,
                &metadata::message_filters(ctx.api_url, ctx.tables, &q)?,
            ))
        }
        ("EntityDefinitions", Some(k), _) => {
            expect(&req.method, &[Method::GET], &path)?;
            Ok(ApiResponse::json(
                StatusCode::OK,
                &metadata::entity_definitions(ctx.api_url, k, &segs[1..], ctx.rules)?,
            ))
        }
        ("systemusers", Some(k), 2) => {
            expect(&req.method, &[Method::GET], &path)?;
            Ok(ApiResponse::json(
                StatusCode::OK,
                &metadata::user_privileges(
                    ctx.api_url,
                    ctx.tenant,
                    ctx.client_id,
                    k,
                    &segs[1],
                    ctx.rules,
                )?,
            ))
        }
        _ => {
            let t = Table::from_set(name).ok_or_else(|| ApiError::segment_not_found(name))?;
            match (key, segs.get(1)) {
                (None, None) => collection(ctx, store, req, t, &q),
                (Some(k), None) => record(ctx, store, req, t, k, &q),
                (None, Some(action)) if segs.len() == 2 => {
                    expect(&req.method, &[Method::POST], &path)?;
                    bulk::execute(ctx, store, t, action, &req.body)
                }
                _ => Err(ApiError::segment_not_found(
                    segs.last().map_or("", |s| s.as_str()),
                )),
            }
        }
    }
}

fn expect(m: &Method, allowed: &[Method], path: &str) -> Result<(), ApiError> {
    if allowed.contains(m) {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(m.as_str(), path))
    }
}

pub fn parse_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(ApiError::bad_request(format!("Invalid JSON. {e}"))),
    }
}

fn validate_select(
    rules: &Rules,
    t: Table,
    q: &QueryOptions,
) -> Result<Option<Vec<String>>, ApiError> {
    if let Some(sel) = &q.select {
        for c in sel {
            if !rules.readable(t, c) {
                return Err(ApiError::unknown_select(c, t.logical_name()));
            }
        }
    }
    Ok(q.select.clone())
}

fn context_url(api_url: &str, t: Table, select: Option<&[String]>, entity: bool) -> String {
    let cols = select
        .map(|s| format!("({})", s.join(",")))
        .unwrap_or_default();
    let suffix = if entity { "/$entity" } else { "" };
    format!("{api_url}$metadata#{}{cols}{suffix}", t.set_name())
}

fn write_guard(ctx: &mut Ctx<'_>) -> Result<(), ApiError> {
    ctx.ops += 1;
    if (ctx.deadlock)() {
        return Err(ApiError::deadlock());
    }
    Ok(())
}

/// Response of a successful write: 204 + OData-EntityId, or the record with
/// `Prefer: return=representation` ("Use Upsert": 201 on create, 200 on update).
fn write_response(
    ctx: &Ctx<'_>,
    store: &Store,
    req: &ApiRequest,
    t: Table,
    outcome: Outcome,
    select: Option<&[String]>,
) -> ApiResponse {
    let id = outcome.id();
    let eid = entity_id(ctx.api_url, t, &id);
    let mut resp = if prefers(&req.headers, "return=representation") {
        let mut body = Map::new();
        body.insert(
            "@odata.context".into(),
            Value::from(context_url(ctx.api_url, t, select, true)),
        );
        body.extend(store.represent(t, &id, select));
        let mut r = ApiResponse::json(representation_status(outcome), &Value::Object(body));
        r.headers
            .push(("Preference-Applied".into(), "return=representation".into()));
        r
    } else {
        ApiResponse::empty(StatusCode::NO_CONTENT)
    };
    resp.headers.push(("OData-EntityId".into(), eid));
    resp
}

fn collection(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    req: &ApiRequest,
    t: Table,
    q: &QueryOptions,
) -> Result<ApiResponse, ApiError> {
    match req.method {
        Method::GET => list(ctx, store, req, t, q),
        Method::POST => {
            let select = validate_select(ctx.rules, t, q)?;
            let body = parse_body(&req.body)?;
            write_guard(ctx)?;
            let id = store.create(t, &body, ctx.rules)?;
            Ok(write_response(
                ctx,
                store,
                req,
                t,
                Outcome::Created(id),
                select.as_deref(),
            ))
        }
        _ => Err(ApiError::method_not_allowed(
            req.method.as_str(),
            t.set_name(),
        )),
    }
}

fn record(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    req: &ApiRequest,
    t: Table,
    key_text: &str,
    q: &QueryOptions,
) -> Result<ApiResponse, ApiError> {
    let key = parse_key(key_text)?;
    let select = validate_select(ctx.rules, t, q)?;
    match req.method {
        Method::GET => {
            let id = store
                .resolve(t, &key, ctx.rules)?
                .ok_or_else(|| Store::missing(t, &key))?;
            let mut body = Map::new();
            body.insert(
                "@odata.context".into(),
                Value::from(context_url(ctx.api_url, t, select.as_deref(), true)),
            );
            body.extend(store.represent(t, &id, select.as_deref()));
            Ok(ApiResponse::json(StatusCode::OK, &Value::Object(body)))
        }
        Method::PATCH => {
            let cond = condition(&req.headers)?;
            let body = parse_body(&req.body)?;
            write_guard(ctx)?;
            let outcome = store.upsert(t, &key, &body, &cond, ctx.rules)?;
            Ok(write_response(
                ctx,
                store,
                req,
                t,
                outcome,
                select.as_deref(),
            ))
        }
        Method::DELETE => {
            write_guard(ctx)?;
            store.delete(t, &key, ctx.rules)?;
            Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::method_not_allowed(
            req.method.as_str(),
            t.set_name(),
        )),
    }
}

/// "Perform conditional operations using the Web API": `If-Match: *` prevents create,
/// `If-None-Match: *` prevents update; `If-None-Match: null` (as the samples send) is no
/// condition; `If-Match: W/"n"` is optimistic concurrency.
fn condition(h: &HeaderMap) -> Result<Condition, ApiError> {
    let if_match = header(h, "if-match").map(str::trim);
    let if_none = header(h, "if-none-match").map(str::trim);
    Ok(match (if_match, if_none) {
        (Some(_), Some("*")) => {
            return Err(ApiError::bad_request(
                "If-Match and If-None-Match: * cannot be combined.",
            ));
        }
        (Some("*"), _) => Condition::MatchAny,
        (Some(tag), _) => Condition::MatchEtag(tag.to_string()),
        (None, Some("*")) => Condition::NoneMatchAny,
        _ => Condition::None,
    })
}

fn list(
    ctx: &mut Ctx<'_>,
    store: &Store,
    req: &ApiRequest,
    t: Table,
    q: &QueryOptions,
) -> Result<ApiResponse, ApiError> {
    let select = validate_select(ctx.rules, t, q)?;
    let filter = q.filter.as_deref().map(odata::parse_filter).transpose()?;
    if let Some(f) = &filter {
        let mut props = Vec::new();
        f.properties(&mut props);
        if let Some(bad) = props.iter().find(|p| !ctx.rules.readable(t, p)) {
            return Err(ApiError::unknown_select(bad, t.logical_name()));
        }
    }
    let orderby = q.orderby.as_deref().map(odata::parse_orderby).transpose()?;
    if let Some(ob) = &orderby
        && let Some((bad, _)) = ob.iter().find(|(c, _)| !ctx.rules.readable(t, c))
    {
        return Err(ApiError::unknown_select(bad, t.logical_name()));
    }
    let mut rows: Vec<Map<String, Value>> = store
        .table(t)
        .filter(|(_, r)| filter.as_ref().is_none_or(|f| f.matches(&r.cols)))
        .map(|(id, _)| store.represent(t, id, select.as_deref()))
        .collect();
    if let Some(ob) = &orderby {
        odata::sort_rows(&mut rows, ob);
    }
    if let Some(top) = q.top {
        rows.truncate(top);
    }
    let total = rows.len();
    let prefer = req
        .headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let requested = odata::max_page_size(&prefer);
    // $top disables paging ("Page results": use $top or odata.maxpagesize, not both).
    let page_size = if q.top.is_some() {
        usize::MAX
    } else {
        requested.unwrap_or(odata::DEFAULT_PAGE_SIZE)
    };
    let offset = q
        .skiptoken
        .as_deref()
        .map(odata::decode_skiptoken)
        .transpose()?
        .unwrap_or(0);
    let page: Vec<Value> = rows
        .into_iter()
        .skip(offset)
        .take(page_size)
        .map(Value::Object)
        .collect();
    let next = offset.saturating_add(page.len());
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        Value::from(context_url(ctx.api_url, t, select.as_deref(), false)),
    );
    if q.count {
        body.insert("@odata.count".into(), Value::from(total));
    }
    body.insert("value".into(), Value::Array(page));
    if next < total {
        let mut params = q.passthrough.clone();
        params.push(format!("$skiptoken={}", odata::encode_skiptoken(next)));
        body.insert(
            "@odata.nextLink".into(),
            Value::from(format!(
                "{}{}?{}",
                ctx.api_url,
                t.set_name(),
                params.join("&")
            )),
        );
    }
    let mut r = ApiResponse::json(StatusCode::OK, &Value::Object(body));
    if let Some(n) = requested
        && q.top.is_none()
    {
        r.headers.push((
            "Preference-Applied".into(),
            format!("odata.maxpagesize={n}"),
        ));
    }
    Ok(r)
}
