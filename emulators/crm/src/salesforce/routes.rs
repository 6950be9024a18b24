//! HTTP layer: the axum router, the bearer/limit gate every `/services/data` request passes,
//! the `Sforce-Limit-Info` header on every response ("Limit Info Header", REST API Developer
//! Guide), and the resource handlers: query / queryAll / query more ("Query", "QueryAll",
//! "Query More Results"), getUpdated / getDeleted, sObject Collections retrieve and sObject Describe.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Extension, Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::Map;
use serde_json::{Value, json};

use super::auth::{Tokens, bearer};
use super::config::SalesforceConfig;
use super::error::ApiError;
use super::query::{run, shape};
use super::schema::{Object, Ty, canonical_id, format_datetime, make_id};
use super::setup::{Grants, Principal, Setup, setup_object, unsupported_type};
use super::soql;
use super::store::{Rec, Store};

/// A server-side query cursor: the result rows as of the query, and the fields to show.
pub struct Cursor {
    pub object: Object,
    pub fields: Vec<(&'static str, Ty)>,
    pub rows: Arc<Vec<Arc<Rec>>>,
}

/// Counters of what the emulator has seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Every HTTP request, token requests included.
    pub requests: u64,
    /// Requests counted against the daily API allocation.
    pub api_calls: u64,
    /// Initial `query` / `queryAll` requests.
    pub queries: u64,
    /// `nextRecordsUrl` follow-ups.
    pub query_more: u64,
    /// Sessions created by the token endpoint.
    pub sessions: u64,
    /// Query requests answered with an injected failure ([`QueryFaults`]).
    pub faults_injected: u64,
    pub by_status: BTreeMap<u16, u64>,
}

pub struct Shared {
    pub cfg: SalesforceConfig,
    pub base_url: String,
    pub store: Mutex<Store>,
    pub tokens: Mutex<Tokens>,
    pub cursors: Mutex<HashMap<String, Cursor>>,
    /// (used, daily limit)
    pub usage: Mutex<(u64, u64)>,
    pub stats: Mutex<Stats>,
    /// When set, `nextRecordsUrl` is made absolute on this origin (to test clients that must
    /// refuse to send their token elsewhere).
    pub next_url_origin: Mutex<Option<String>>,
    pub locators: AtomicU64,
    /// Injected query failures and the xorshift state they are drawn from.
    pub query_faults: Mutex<(QueryFaults, u64)>,
    /// Users, permission sets, connected apps created through the API, and their sessions.
    pub setup: Mutex<Setup>,
}

/// Failures injected into `query`, `queryAll` and query-more requests, as probabilities drawn
/// from a seeded generator (replayable). Both are documented API errors a long walk meets:
/// - `QUERY_TIMEOUT` (HTTP 400): "the query has timed out" (SOAP/REST API "Status Codes and
///   Error Responses" / `ExceptionCode`); the same request may succeed later.
/// - `REQUEST_LIMIT_EXCEEDED` (HTTP 403) "ConcurrentPerOrgLongTxn Limit exceeded": more than
///   the allowed long-running requests at once ("Salesforce Developer Limits and Allocations
///   Quick Reference", concurrent API request limits), a pause rather than a failure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryFaults {
    pub timeout_rate: f64,
    pub concurrency_limit_rate: f64,
    pub seed: u64,
}

impl Shared {
    /// What a session may read of Account and Contact.
    fn grants(&self, p: &Principal) -> Grants {
        lock(&self.setup).grants(p)
    }

    /// The injected failure for this query request, if one is drawn.
    fn query_fault(&self) -> Option<ApiError> {
        let mut g = lock(&self.query_faults);
        let (faults, state) = &mut *g;
        let mut draw = || {
            // xorshift64*
            let mut x = if *state == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                *state
            };
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            *state = x;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        };
        let e = if draw() < faults.timeout_rate {
            ApiError::query_timeout()
        } else if draw() < faults.concurrency_limit_rate {
            ApiError::concurrent_limit_exceeded()
        } else {
            return None;
        };
        drop(g);
        lock(&self.stats).faults_injected += 1;
        Some(e)
    }
}

/// Locks a mutex, recovering from poisoning: every mutation here is a single replace.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn router(shared: Arc<Shared>) -> Router {
    let data = Router::new()
        .route("/services/data/{version}/query", get(query))
        .route("/services/data/{version}/queryAll", get(query_all))
        .route("/services/data/{version}/query/{locator}", get(query_more))
        .route(
            "/services/data/{version}/queryAll/{locator}",
            get(query_more),
        )
        .route(
            "/services/data/{version}/sobjects/{object}/deleted/",
            get(deleted),
        )
        .route(
            "/services/data/{version}/sobjects/{object}/deleted",
            get(deleted),
        )
        .route(
            "/services/data/{version}/sobjects/{object}/updated/",
            get(updated),
        )
        .route(
            "/services/data/{version}/sobjects/{object}/updated",
            get(updated),
        )
        .route(
            "/services/data/{version}/composite/sobjects/{object}",
            get(retrieve),
        )
        .route(
            "/services/data/{version}/sobjects/{object}/describe",
            get(describe),
        )
        .route(
            "/services/data/{version}/sobjects/{object}/describe/",
            get(describe),
        )
        .route("/services/data/{version}/sobjects/{object}", post(create))
        .route(
            "/services/data/{version}/sobjects/{object}/{id}",
            get(read_record).patch(update_record).delete(delete_record),
        )
        .fallback(|| async { ApiError::not_found() })
        .layer(middleware::from_fn_with_state(shared.clone(), gate));
    Router::new()
        .route("/services/oauth2/token", post(token))
        .route("/services/Soap/m/{version}", post(super::metadata::soap))
        .merge(data)
        .layer(middleware::from_fn_with_state(shared.clone(), count))
        .with_state(shared)
}

/// Counts every request and its status.
async fn count(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    lock(&sh.stats).requests += 1;
    let res = next.run(req).await;
    *lock(&sh.stats)
        .by_status
        .entry(res.status().as_u16())
        .or_insert(0) += 1;
    res
}

/// Session check, then the daily allocation, then the handler; the usage header goes on
/// every API response, errors included.
async fn gate(State(sh): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    // The default connected app's sessions run as its integration user; sessions of apps
    // created through the Metadata API (and the admin's) as their own users.
    let principal = bearer(req.headers()).and_then(|t| {
        if lock(&sh.tokens).is_valid(t) {
            let setup = lock(&sh.setup);
            setup
                .user_by_name(&sh.cfg.username)
                .map(|user_id| Principal { user_id })
        } else {
            lock(&sh.setup).principal(t)
        }
    });
    let authorised = principal.is_some();
    if let Some(p) = principal {
        req.extensions_mut().insert(p);
    }
    let mut res = if !authorised {
        ApiError::invalid_session().into_response()
    } else {
        let admitted = {
            let mut u = lock(&sh.usage);
            if u.0 >= u.1 {
                false
            } else {
                u.0 += 1;
                true
            }
        };
        if admitted {
            lock(&sh.stats).api_calls += 1;
            next.run(req).await
        } else {
            ApiError::limit_exceeded().into_response()
        }
    };
    let (used, limit) = *lock(&sh.usage);
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{limit}")) {
        res.headers_mut().insert("Sforce-Limit-Info", v);
    }
    res
}

async fn token(
    State(sh): State<Arc<Shared>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let app = form
        .get("client_id")
        .filter(|id| {
            *id != &sh.cfg.client_id
                && form.get("grant_type").map(String::as_str) == Some("client_credentials")
        })
        .and_then(|id| {
            let secret = form.get("client_secret").map(String::as_str).unwrap_or("");
            lock(&sh.setup).issue_for_app(id, secret)
        });
    let issued = match app {
        Some(Ok((token, fresh))) => Ok((
            json!({
                "access_token": token,
                "signature": "",
                "token_format": "opaque",
                "instance_url": sh.base_url,
                "id": format!("{}/id/{}/005", sh.base_url, sh.cfg.org_id),
                "token_type": "Bearer",
                "issued_at": Utc::now().timestamp_millis().to_string(),
            }),
            fresh,
        )),
        Some(Err(e)) => Err(e),
        None => lock(&sh.tokens).issue(&sh.cfg, &sh.base_url, &form),
    };
    match issued {
        Ok((body, fresh)) => {
            if fresh {
                lock(&sh.stats).sessions += 1;
            }
            Json(body).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `vNN.N`, as in `/services/data/v62.0/...`.
fn check_version(v: &str) -> Result<(), ApiError> {
    let ok = v
        .strip_prefix('v')
        .and_then(|n| n.split_once('.'))
        .is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.chars().all(|c| c.is_ascii_digit())
                && b.chars().all(|c| c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

/// `Sforce-Query-Options: batchSize=N`: default 2,000, minimum 200, maximum 2,000, and "no
/// guarantee that the requested batch size is the actual batch size" ("Query Options Header"),
/// so out-of-range values are clamped rather than refused.
fn batch_size(headers: &HeaderMap) -> usize {
    headers
        .get("Sforce-Query-Options")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| {
            s.split([',', ';'])
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("batchSize"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        })
        .map_or(2000, |n| n.clamp(200, 2000))
}

async fn query(
    State(sh): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Path(version): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    start_query(&sh, &who, &version, &params, &headers, false)
}

async fn query_all(
    State(sh): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Path(version): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    start_query(&sh, &who, &version, &params, &headers, true)
}

/// The object after FROM, if the query names a setup object.
fn setup_from(q: &str) -> Option<(&'static str, String)> {
    let mut words = q.split_whitespace();
    words.find(|w| w.eq_ignore_ascii_case("FROM"))?;
    let name = words.next()?;
    setup_object(name).map(|o| (o, name.to_string()))
}

fn start_query(
    sh: &Shared,
    who: &Principal,
    version: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    all: bool,
) -> Result<Response, ApiError> {
    check_version(version)?;
    lock(&sh.stats).queries += 1;
    if let Some(e) = sh.query_fault() {
        return Err(e);
    }
    let q = params
        .get("q")
        .ok_or_else(|| ApiError::bad_request("MALFORMED_QUERY", "A query string is required"))?;
    if let Some((_, name)) = setup_from(q) {
        let setup = lock(&sh.setup);
        if !setup.is_admin(who) {
            return Err(ApiError::bad_request(
                "INVALID_TYPE",
                format!(
                    "\n{q}\nsObject type '{name}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names."
                ),
            ));
        }
        return Ok(Json(setup.query(q, version)?).into_response());
    }
    let grants = sh.grants(who);
    let parsed = soql::parse_visible(q, &|o, f| grants.can_read(o, f))
        .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
    let rows = Arc::new(run(&lock(&sh.store), &parsed, all));
    let n = sh.locators.fetch_add(1, Ordering::Relaxed);
    // Query locators look like record ids ("01gD0000002HU6KIAW" in the docs' example).
    let locator = make_id(Object::Account, "Dn", n).replacen("001", "01g", 1);
    let cursor = Cursor {
        object: parsed.object,
        fields: parsed.fields,
        rows,
    };
    let body = page(sh, version, &locator, &cursor, 0, batch_size(headers));
    if body.get("done") == Some(&Value::Bool(false)) {
        lock(&sh.cursors).insert(locator, cursor);
    }
    Ok(Json(body).into_response())
}

async fn query_more(
    State(sh): State<Arc<Shared>>,
    Path((version, locator)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_version(&version)?;
    lock(&sh.stats).query_more += 1;
    if let Some(e) = sh.query_fault() {
        return Err(e);
    }
    let (loc, offset) = locator
        .rsplit_once('-')
        .and_then(|(l, o)| Some((l.to_string(), o.parse::<usize>().ok()?)))
        .ok_or_else(ApiError::invalid_locator)?;
    let cursors = lock(&sh.cursors);
    let cursor = cursors.get(&loc).ok_or_else(ApiError::invalid_locator)?;
    if offset > cursor.rows.len() {
        return Err(ApiError::invalid_locator());
    }
    let body = page(&sh, &version, &loc, cursor, offset, batch_size(&headers));
    Ok(Json(body).into_response())
}

/// One batch of a cursor, with `nextRecordsUrl` (`/services/data/vXX.X/query/<locator>-<offset>`)
/// while more remain ("Query More Results").
fn page(
    sh: &Shared,
    version: &str,
    locator: &str,
    c: &Cursor,
    offset: usize,
    batch: usize,
) -> Value {
    let end = (offset + batch).min(c.rows.len());
    let records: Vec<Value> = c.rows[offset..end]
        .iter()
        .map(|r| shape(c.object, version, r, &c.fields))
        .collect();
    let mut body = json!({
        "totalSize": c.rows.len(),
        "done": end >= c.rows.len(),
    });
    if end < c.rows.len() {
        let path = format!("/services/data/{version}/query/{locator}-{end}");
        let url = match lock(&sh.next_url_origin).as_deref() {
            Some(origin) => format!("{origin}{path}"),
            None => path,
        };
        body["nextRecordsUrl"] = Value::String(url);
    }
    body["records"] = Value::Array(records);
    body
}

/// An object the session may read; one it may not is "not supported", as for an unknown one.
fn readable_object(sh: &Shared, who: &Principal, name: &str) -> Result<Object, ApiError> {
    let object = object_param(name)?;
    if sh.grants(who).can_read(object, None) {
        Ok(object)
    } else {
        Err(unsupported_type(name))
    }
}

fn object_param(name: &str) -> Result<Object, ApiError> {
    Object::parse(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!(
                "The requested resource does not exist: sObject type '{name}' is not supported"
            ),
        )
    })
}

/// `start`/`end` of getUpdated/getDeleted. Seconds are ignored (Salesforce works in whole
/// minutes here), and a `+` that form decoding turned into a space is put back.
fn window(
    params: &HashMap<String, String>,
    max_days: i64,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let get = |k: &str| -> Result<DateTime<Utc>, ApiError> {
        let raw = params.get(k).ok_or_else(|| {
            ApiError::bad_request("MISSING_ARGUMENT", format!("{k} was not specified"))
        })?;
        let t = DateTime::parse_from_rfc3339(&raw.replace(' ', "+"))
            .map_err(|_| {
                ApiError::bad_request(
                    "INVALID_REPLICATION_DATE",
                    format!("{k} is not a valid dateTime: {raw}"),
                )
            })?
            .with_timezone(&Utc);
        Ok(t.duration_trunc(Duration::minutes(1)).unwrap_or(t))
    };
    let (start, end) = (get("start")?, get("end")?);
    if end <= start {
        return Err(ApiError::bad_request(
            "INVALID_REPLICATION_DATE",
            "end date must be after start date",
        ));
    }
    if start < Utc::now() - Duration::days(max_days) {
        return Err(ApiError::bad_request(
            "INVALID_REPLICATION_DATE",
            format!("start date must be within the last {max_days} days"),
        ));
    }
    Ok((start, end))
}

fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::minutes(1)).unwrap_or(t)
}

/// "sObject Get Updated": ids changed in [start, end], ≤ 30 days back, by SystemModstamp.
async fn updated(
    State(sh): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Path((version, object)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_version(&version)?;
    let object = readable_object(&sh, &who, &object)?;
    let (start, end) = window(&params, 30)?;
    let store = lock(&sh.store);
    let ids: Vec<&str> = store
        .rows(object)
        .filter(|r| !r.is_deleted() && r.modstamp >= start && r.modstamp < end)
        .map(|r| r.id())
        .collect();
    let covered = minute(end.min(Utc::now()));
    Ok(Json(json!({ "ids": ids, "latestDateCovered": format_datetime(covered) })).into_response())
}

/// "sObject Get Deleted": the delete log in [start, end], ≤ 15 days back.
async fn deleted(
    State(sh): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Path((version, object)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_version(&version)?;
    let object = readable_object(&sh, &who, &object)?;
    let (start, end) = window(&params, 15)?;
    let store = lock(&sh.store);
    let log: Vec<(&str, DateTime<Utc>)> = store
        .rows(object)
        .filter_map(|r| r.deleted_at.map(|d| (r.id(), d)))
        .collect();
    let earliest = log
        .iter()
        .map(|(_, d)| minute(*d))
        .min()
        .unwrap_or_else(|| minute(Utc::now() - Duration::days(15)));
    let mut hits: Vec<_> = log
        .into_iter()
        .filter(|(_, d)| *d >= start && *d < end)
        .collect();
    hits.sort_by_key(|(id, d)| (*d, id.to_string()));
    let records: Vec<Value> = hits
        .into_iter()
        .map(|(id, d)| json!({ "id": id, "deletedDate": format_datetime(d) }))
        .collect();
    Ok(Json(json!({
        "deletedRecords": records,
        "earliestDateAvailable": format_datetime(earliest),
        "latestDateCovered": format_datetime(minute(end.min(Utc::now()))),
    }))
    .into_response())
}

/// "sObject Describe" (REST API Developer Guide): the object's metadata with a `fields` array,
/// each field's `name`, `label`, `type` (id, string, boolean, int, date, datetime, address) and
/// whether it is `filterable` and `permissionable` (field-level security applies). Only the
/// fields the emulator serves and this session may read are listed: a field hidden by
/// field-level security is absent from describe, and an object the user may not read is not
/// found ("Field-Level Security" and "DescribeFieldResult", SOAP API Developer Guide).
async fn describe(
    State(sh): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Path((version, object)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_version(&version)?;
    if let Some(o) = setup_object(&object) {
        return Err(unsupported_type(o));
    }
    let object = readable_object(&sh, &who, &object)?;
    let grants = sh.grants(&who);
    let fields: Vec<Value> = object
        .fields()
        .iter()
        .filter(|(name, _)| grants.can_read(object, Some(name)))
        .map(|(name, ty)| {
            let ty_name = match ty {
                Ty::Id => "id",
                Ty::Str => "string",
                Ty::Bool => "boolean",
                Ty::Int => "int",
                Ty::Date => "date",
                Ty::DateTime => "datetime",
                Ty::Address(_) => "address",
            };
            json!({
                "name": name,
                "label": name,
                "type": ty_name,
                "filterable": !matches!(ty, Ty::Address(_)),
                "permissionable": object.permissionable(name),
            })
        })
        .collect();
    Ok(Json(json!({
        "name": object.name(),
        "label": object.name(),
        "keyPrefix": object.key_prefix(),
        "queryable": true,
        "retrieveable": true,
        "fields": fields,
        "urls": {
            "describe": format!("/services/data/{version}/sobjects/{}/describe", object.name()),
        },
    }))
    .into_response())
}

/// "Get Records Using sObject Collections": `?ids=a,b&fields=f1,f2` → one entry per id, `null`
/// where the id is invalid or not accessible; an invalid field name is a 400.
async fn retrieve(
    State(sh): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Path((version, object)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_version(&version)?;
    let object = readable_object(&sh, &who, &object)?;
    let grants = sh.grants(&who);
    let list = |k: &str| -> Result<Vec<String>, ApiError> {
        let raw = params
            .get(k)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                ApiError::bad_request("MISSING_ARGUMENT", format!("{k} parameter is required"))
            })?;
        Ok(raw.split(',').map(|s| s.trim().to_string()).collect())
    };
    let (ids, names) = (list("ids")?, list("fields")?);
    let mut fields = Vec::new();
    for n in &names {
        let f = object
            .field(n)
            .filter(|(f, _)| grants.can_read(object, Some(f)))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "INVALID_FIELD",
                    format!("No such column '{n}' on entity '{}'", object.name()),
                )
            })?;
        fields.push(f);
    }
    let store = lock(&sh.store);
    let out: Vec<Value> = ids
        .iter()
        .map(|id| {
            canonical_id(id)
                .and_then(|id| store.get(object, &id))
                .filter(|r| !r.is_deleted())
                .map_or(Value::Null, |r| shape(object, &version, &r, &fields))
        })
        .collect();
    Ok(Json(Value::Array(out)).into_response())
}

/// A setup object this admin session may change; anything else is not found.
fn setup_param(sh: &Shared, who: &Principal, name: &str) -> Result<&'static str, ApiError> {
    match setup_object(name) {
        Some(o) if lock(&sh.setup).is_admin(who) => Ok(o),
        _ => Err(unsupported_type(name)),
    }
}

/// "Create a Record" (REST API Developer Guide): 201 with `{id, success, errors}`.
async fn create(
    State(sh): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Path((version, object)): Path<(String, String)>,
    Json(body): Json<Map<String, Value>>,
) -> Result<Response, ApiError> {
    check_version(&version)?;
    let object = setup_param(&sh, &who, &object)?;
    let id = lock(&sh.setup).create(object, body)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "success": true, "errors": []})),
    )
        .into_response())
}

/// "Retrieve a Record": the record with every field.
async fn read_record(
    State(sh): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Path((version, object, id)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    check_version(&version)?;
    let object = setup_param(&sh, &who, &object)?;
    let id = canonical_id(&id).ok_or_else(ApiError::not_found)?;
    let rec = lock(&sh.setup).shaped(object, &version, &id);
    rec.map(|r| Json(r).into_response())
        .ok_or_else(ApiError::not_found)
}

/// "Update a Record": 204 No Content.
async fn update_record(
    State(sh): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Path((version, object, id)): Path<(String, String, String)>,
    Json(body): Json<Map<String, Value>>,
) -> Result<Response, ApiError> {
    check_version(&version)?;
    let object = setup_param(&sh, &who, &object)?;
    let id = canonical_id(&id).ok_or_else(ApiError::not_found)?;
    lock(&sh.setup).update(object, &id, body)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// "Delete a Record": 204 No Content.
async fn delete_record(
    State(sh): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Path((version, object, id)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    check_version(&version)?;
    let object = setup_param(&sh, &who, &object)?;
    let id = canonical_id(&id).ok_or_else(ApiError::not_found)?;
    lock(&sh.setup).delete(object, &id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
