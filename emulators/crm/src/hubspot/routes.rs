//! HTTP layer of the CRM v3 object APIs for companies and contacts:
//! - `GET /crm/v3/objects/{objectType}`: `limit` (default 10, OpenAPI spec of the contacts API),
//!   `after`, `properties`, `associations`, `archived`; results in id order; `paging.next`
//!   `{after, link}` only when more follow ("Retrieve contacts", spec
//!   `PublicApiSpecs/CRM/Contacts/Rollouts/424/v3/contacts.json` in
//!   https://github.com/HubSpot/HubSpot-public-api-spec-collection, and
//!   https://developers.hubspot.com/docs/api-reference/latest/crm/objects/companies/get-companies).
//!   The maximum of 100 per page is widely documented (e.g. SDK `PAGE_MAX_SIZE`); what HubSpot
//!   answers to a larger `limit` could not be confirmed on a HubSpot page — a 400
//!   `VALIDATION_ERROR` is returned here so a client that asks for more fails loudly instead
//!   of silently getting fewer;
//! - `GET /crm/v3/objects/{objectType}/{id}`;
//! - `GET /crm/v3/properties/{objectType}`: the object's property definitions, `{"results":
//!   [{name, label, type, fieldType, groupName, ...}]}` ("Properties API",
//!   https://developers.hubspot.com/docs/guides/api/crm/properties);
//! - `POST /crm/v3/objects/{objectType}/search` (see `search`);
//! - `POST /crm/v3/objects/{objectType}/batch/read`: `inputs: [{id}]` (at most 100, the batch
//!   limit HubSpot documents for CRM object batch endpoints), `properties`, `?archived=`; when
//!   some ids are missing the answer is 207 Multi-Status with `numErrors` and `errors`
//!   ("Multi-status errors", https://developers.hubspot.com/docs/api-reference/latest/error-handling,
//!   HubSpot/hubspot-api-php#619). The error's wording ("Could not get some CONTACT objects,
//!   they may be deleted or not exist. Check that ids are valid.", `context.ids`) is from
//!   memory of real responses, not a HubSpot page. When none is found, 404
//!   `OBJECT_NOT_FOUND`, as an integrator observed (bruin-data/ingestr#1203); also unconfirmed.
//!
//! Every call needs `Authorization: Bearer <private app token>`; otherwise 401 with HubSpot's
//! error body `{status, message, correlationId, category: INVALID_AUTHENTICATION}` (as quoted
//! in HubSpot/hubspot-api-nodejs#148 and #432). Errors use the documented body `{status:
//! "error", message, correlationId, category}` (spec `Error` schema). Rate limits: see
//! [`limited`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

use super::config::HubSpotConfig;
use super::search::{self, MAX_RESULTS};
use super::store::{Obj, ObjectType, Store, iso, now};
use super::webhooks::Hooks;

/// Default `limit` of the list endpoint (spec: `"default" : 10`).
const DEFAULT_LIMIT: usize = 10;
/// Largest `limit` of the list endpoint.
const MAX_LIMIT: usize = 100;
/// Inputs per batch read.
const MAX_BATCH: usize = 100;

/// Counters of what the emulator has seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Every HTTP request.
    pub requests: u64,
    /// Admitted `GET /crm/v3/objects/{type}` list requests.
    pub list_requests: u64,
    /// Admitted search requests.
    pub search_requests: u64,
    /// Admitted batch read requests.
    pub batch_read_requests: u64,
    pub by_status: BTreeMap<u16, u64>,
}

pub struct Shared {
    pub cfg: HubSpotConfig,
    pub base_url: String,
    pub store: Mutex<Store>,
    pub stats: Mutex<Stats>,
    pub rate_limit: Mutex<Option<(u32, Duration)>>,
    /// (window start, requests admitted in it)
    pub window: Mutex<(Instant, u32)>,
    /// Cursors carry the epoch they were issued in; bumping it kills every cursor out there.
    pub cursor_epoch: AtomicU64,
    /// Origin written into `paging.next.link` instead of our own (tests of clients that must
    /// refuse foreign links).
    pub link_base: Mutex<Option<String>>,
    pub hooks: Hooks,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// HubSpot's error body.
pub fn error(status: StatusCode, category: &str, message: &str) -> Response {
    (
        status,
        Json(json!({
            "status": "error",
            "message": message,
            "correlationId": uuid::Uuid::new_v4().to_string(),
            "category": category,
        })),
    )
        .into_response()
}

fn validation(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/crm/v3/objects/{object}", get(list))
        .route("/crm/v3/objects/{object}/search", post(search_objects))
        .route("/crm/v3/objects/{object}/batch/read", post(batch_read))
        .route("/crm/v3/objects/{object}/{id}", get(one))
        .route("/crm/v3/properties/{object}", get(properties))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                "resource not found",
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

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The token first (limits are per app), then the rate limit rule.
async fn gate(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if bearer(req.headers()) != Some(sh.cfg.token.as_str()) {
        let mut res = error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        );
        res.headers_mut().insert(
            "x-hubspot-auth-failure",
            HeaderValue::from_static("401 Unauthorized"),
        );
        return res;
    }
    let (rejected, headers) = limited(&sh);
    let mut res = match rejected {
        Some(r) => r,
        None => next.run(req).await,
    };
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            res.headers_mut().insert(k, v);
        }
    }
    res
}

/// A fixed-window rule standing in for HubSpot's rolling ten-second burst limit. Beyond it:
/// 429 with the body HubSpot sends (`{"status":"error","message":"You have reached your
/// ten_secondly_rolling limit.","errorType":"RATE_LIMIT","correlationId",
/// "policyName":"TEN_SECONDLY_ROLLING"}`, HubSpot/hubspot-api-python#117; the format is also in
/// the usage guidelines, https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines).
/// Every response carries `X-HubSpot-RateLimit-Max`, `-Remaining` and
/// `-Interval-Milliseconds` (the same page's header table). HubSpot documents no `Retry-After`
/// on its own 429s, so none is sent; clients wait out the interval.
fn limited(sh: &Shared) -> (Option<Response>, Vec<(&'static str, String)>) {
    let Some((limit, window)) = *lock(&sh.rate_limit) else {
        return (None, Vec::new());
    };
    let mut w = lock(&sh.window);
    let now = Instant::now();
    if now.duration_since(w.0) >= window {
        *w = (now, 0);
    }
    let admitted = w.1 < limit;
    if admitted {
        w.1 += 1;
    }
    let headers = vec![
        ("X-HubSpot-RateLimit-Max", limit.to_string()),
        (
            "X-HubSpot-RateLimit-Remaining",
            limit.saturating_sub(w.1).to_string(),
        ),
        (
            "X-HubSpot-RateLimit-Interval-Milliseconds",
            window.as_millis().to_string(),
        ),
    ];
    if admitted {
        return (None, headers);
    }
    let res = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "status": "error",
            "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": uuid::Uuid::new_v4().to_string(),
            "policyName": "TEN_SECONDLY_ROLLING",
        })),
    )
        .into_response();
    (Some(res), headers)
}

/// What HubSpot answers to an object type it does not know (message as seen in real
/// responses; not on a HubSpot page).
fn unknown_type(name: &str) -> Response {
    validation(&format!("Unable to infer object type from: {name}"))
}

/// An opaque list cursor: the epoch it was issued in and the last id returned. HubSpot's own
/// cursors are opaque base64 strings too (spec example `NTI1Cg%3D%3D`); this one is URL-safe
/// base64 without padding so it needs no escaping.
fn encode_cursor(epoch: u64, last: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{epoch}:{last}"))
}

fn decode_cursor(s: &str) -> Option<(u64, u64)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s.trim()).ok()?).ok()?;
    let (e, id) = raw.split_once(':')?;
    Some((e.parse().ok()?, id.parse().ok()?))
}

/// Repeated and comma-separated values of a query parameter (`properties=a,b&properties=c`:
/// the spec declares the list parameters `style: form, explode: true`; HubSpot's examples use
/// commas).
fn multi<'a>(params: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    params
        .iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn single<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// An object as the v3 APIs show it. `properties`: the requested ones HubSpot has (null when
/// empty; unknown names are ignored, spec: "If any of the specified properties are not present
/// on the requested object(s), they will be ignored") plus the ones always returned; `None`:
/// the default set. `associations`: for each asked-for type, the associated ids as
/// `{results: [{id, type}]}`, omitted when there are none. A contact's primary company shows
/// twice, labelled `contact_to_company` and `contact_to_company_unlabeled`, as v3 responses
/// do since association labels exist.
pub fn render(
    store: &Store,
    obj: &Obj,
    t: ObjectType,
    properties: Option<&[String]>,
    associations: &[ObjectType],
) -> Value {
    let mut names: Vec<&str> = match properties {
        None => t.default_properties().to_vec(),
        Some(p) => p
            .iter()
            .map(String::as_str)
            .chain(t.always_properties().iter().copied())
            .collect(),
    };
    names.sort_unstable();
    names.dedup();
    let mut props = Map::new();
    for n in names {
        if let Some(v) = obj.prop(t, n) {
            props.insert(n.to_string(), v.map_or(Value::Null, Value::String));
        }
    }
    let mut out = json!({
        "id": obj.id.to_string(),
        "properties": props,
        "createdAt": iso(obj.created_at),
        "updatedAt": iso(obj.updated_at),
        "archived": obj.archived_at.is_some(),
    });
    if let Some(a) = obj.archived_at {
        out["archivedAt"] = json!(iso(a));
    }
    let mut assoc = Map::new();
    for &other in associations {
        if other == t {
            continue;
        }
        let results: Vec<Value> = match t {
            ObjectType::Contacts => obj
                .company()
                .filter(|c| {
                    store
                        .get(ObjectType::Companies, &c.to_string())
                        .is_some_and(|o| o.archived_at.is_none())
                })
                .map(|c| {
                    vec![
                        json!({"id": c.to_string(), "type": "contact_to_company"}),
                        json!({"id": c.to_string(), "type": "contact_to_company_unlabeled"}),
                    ]
                })
                .unwrap_or_default(),
            ObjectType::Companies => store
                .active(ObjectType::Contacts)
                .filter(|c| c.company() == Some(obj.id))
                .map(|c| json!({"id": c.id.to_string(), "type": "company_to_contact"}))
                .collect(),
        };
        if !results.is_empty() {
            assoc.insert(other.name().to_string(), json!({ "results": results }));
        }
    }
    if !assoc.is_empty() {
        out["associations"] = Value::Object(assoc);
    }
    out
}

struct ReadParams {
    properties: Option<Vec<String>>,
    associations: Vec<ObjectType>,
    archived: bool,
}

fn read_params(params: &[(String, String)]) -> ReadParams {
    let props: Vec<String> = multi(params, "properties")
        .into_iter()
        .map(str::to_string)
        .collect();
    ReadParams {
        properties: (!props.is_empty()).then_some(props),
        // "If any of the specified associations do not exist, they will be ignored."
        associations: multi(params, "associations")
            .into_iter()
            .filter_map(ObjectType::parse)
            .collect(),
        archived: single(params, "archived").is_some_and(|v| v.eq_ignore_ascii_case("true")),
    }
}

/// The property definitions of an object type. Types are simplified: dates are `datetime`,
/// counts `number`, the rest `string`.
async fn properties(Path(object): Path<String>) -> Response {
    let Some(t) = ObjectType::parse(&object) else {
        return unknown_type(&object);
    };
    let results: Vec<Value> = t
        .properties()
        .into_iter()
        .map(|name| {
            let (ty, field) = match name {
                "createdate" | "hs_lastmodifieddate" | "lastmodifieddate" => ("datetime", "date"),
                "numberofemployees" | "hs_object_id" | "associatedcompanyid" => {
                    ("number", "number")
                }
                _ => ("string", "text"),
            };
            json!({
                "name": name,
                "label": name,
                "type": ty,
                "fieldType": field,
                "groupName": format!("{}information", t.singular()),
                "hidden": false,
                "calculated": false,
            })
        })
        .collect();
    Json(json!({ "results": results })).into_response()
}

async fn list(
    State(sh): State<Arc<Shared>>,
    Path(object): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let Some(t) = ObjectType::parse(&object) else {
        return unknown_type(&object);
    };
    lock(&sh.stats).list_requests += 1;
    let limit = match single(&params, "limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return validation(&format!(
                    "limit must be an integer between 1 and {MAX_LIMIT}, got {v:?}"
                ));
            }
        },
    };
    let epoch = sh.cursor_epoch.load(Ordering::SeqCst);
    let last = match single(&params, "after") {
        None => None,
        Some(a) => match decode_cursor(a) {
            Some((e, id)) if e == epoch => Some(id),
            // What HubSpot answers to an expired or forged cursor is not documented; a 400
            // VALIDATION_ERROR naming the parameter is the usual shape of its input errors.
            _ => return validation(&format!("Invalid 'after' paging cursor: {a}")),
        },
    };
    let rp = read_params(&params);
    let (results, next) = {
        let store = lock(&sh.store);
        let mut rows = store
            .after(t, last.unwrap_or(0))
            .filter(|o| o.archived_at.is_some() == rp.archived);
        let page: Vec<&Obj> = rows.by_ref().take(limit).collect();
        let more = rows.next().is_some();
        let next = more.then(|| page.last().map(|o| o.id)).flatten();
        let results: Vec<Value> = page
            .iter()
            .map(|o| render(&store, o, t, rp.properties.as_deref(), &rp.associations))
            .collect();
        (results, next)
    };
    let mut body = json!({ "results": results });
    if let Some(id) = next {
        let after = encode_cursor(epoch, id);
        let base = lock(&sh.link_base)
            .clone()
            .unwrap_or_else(|| sh.base_url.clone());
        let mut qs: Vec<String> = params
            .iter()
            .filter(|(k, _)| k != "after")
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(k, NON_ALPHANUMERIC),
                    utf8_percent_encode(v, NON_ALPHANUMERIC)
                )
            })
            .collect();
        qs.push(format!("after={after}"));
        body["paging"] = json!({
            "next": {
                "after": after,
                "link": format!("{base}/crm/v3/objects/{object}?{}", qs.join("&")),
            }
        });
    }
    Json(body).into_response()
}

async fn one(
    State(sh): State<Arc<Shared>>,
    Path((object, id)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let Some(t) = ObjectType::parse(&object) else {
        return unknown_type(&object);
    };
    let rp = read_params(&params);
    let store = lock(&sh.store);
    match store
        .get(t, &id)
        .filter(|o| o.archived_at.is_some() == rp.archived)
    {
        Some(o) => Json(render(
            &store,
            o,
            t,
            rp.properties.as_deref(),
            &rp.associations,
        ))
        .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "resource not found",
        ),
    }
}

fn json_body(body: &Bytes) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("Invalid input JSON: {e}"))
}

async fn search_objects(
    State(sh): State<Arc<Shared>>,
    Path(object): Path<String>,
    body: Bytes,
) -> Response {
    let Some(t) = ObjectType::parse(&object) else {
        return unknown_type(&object);
    };
    let req = match json_body(&body).and_then(|v| search::parse(&v)) {
        Ok(r) => r,
        Err(m) => return validation(&m),
    };
    lock(&sh.stats).search_requests += 1;
    if req.after >= MAX_RESULTS {
        return validation(&format!(
            "The search endpoints are limited to {MAX_RESULTS} total results for any given query; cannot page beyond them (after={})",
            req.after
        ));
    }
    let store = lock(&sh.store);
    let mut rows: Vec<&Obj> = store.active(t).filter(|o| req.matches(o, t)).collect();
    req.sort(&mut rows, t);
    let total = rows.len();
    let end = (req.after + req.limit).min(total).min(MAX_RESULTS);
    let results: Vec<Value> = rows
        .get(req.after.min(end)..end)
        .unwrap_or_default()
        .iter()
        .map(|o| render(&store, o, t, req.properties.as_deref(), &[]))
        .collect();
    let mut body = json!({ "total": total, "results": results });
    // A next page is announced even when it lies beyond the cap; asking for it is the 400.
    if end < total {
        body["paging"] = json!({ "next": { "after": end.to_string() } });
    }
    Json(body).into_response()
}

async fn batch_read(
    State(sh): State<Arc<Shared>>,
    Path(object): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let Some(t) = ObjectType::parse(&object) else {
        return unknown_type(&object);
    };
    let v = match json_body(&body) {
        Ok(v) => v,
        Err(m) => return validation(&m),
    };
    let Some(inputs) = v.get("inputs").and_then(Value::as_array) else {
        return validation("Invalid input JSON: inputs is required");
    };
    if inputs.len() > MAX_BATCH {
        return validation(&format!(
            "Batch input size {} exceeds the limit of {MAX_BATCH}",
            inputs.len()
        ));
    }
    if let Some(p) = v.get("idProperty").and_then(Value::as_str)
        && p != "hs_object_id"
    {
        return validation("idProperty is not supported by this emulator");
    }
    let mut ids: Vec<String> = Vec::new();
    for i in inputs {
        let Some(id) = i.get("id").and_then(|x| match x {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }) else {
            return validation("Invalid input JSON: every input needs an id");
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let properties: Option<Vec<String>> = v
        .get("properties")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.is_empty());
    let archived = single(&params, "archived").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    lock(&sh.stats).batch_read_requests += 1;
    let started = iso(now());
    let store = lock(&sh.store);
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for id in &ids {
        match store
            .get(t, id)
            .filter(|o| o.archived_at.is_some() == archived)
        {
            Some(o) => results.push(render(&store, o, t, properties.as_deref(), &[])),
            None => missing.push(id.clone()),
        }
    }
    let message = format!(
        "Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.",
        t.upper()
    );
    if results.is_empty() && !missing.is_empty() {
        return error(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", &message);
    }
    let mut out = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": iso(now()),
    });
    if missing.is_empty() {
        return Json(out).into_response();
    }
    out["numErrors"] = json!(1);
    out["errors"] = json!([{
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": message,
        "context": { "ids": missing },
        "links": {},
    }]);
    (StatusCode::MULTI_STATUS, Json(out)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let c = encode_cursor(3, 1_234_567_890);
        assert!(
            c.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(decode_cursor(&c), Some((3, 1_234_567_890)));
        assert_eq!(decode_cursor("not a cursor"), None);
    }
}
