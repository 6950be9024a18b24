//! HTTP layer: the axum router, bearer authentication, service-protection admission, fault
//! injection, stats, and the headers every API response carries (`OData-Version: 4.0` and
//! `x-ms-dop-hint`, "Send parallel requests").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::Value;

use crate::api::{ApiRequest, ApiResponse, Ctx};
use crate::auth::{Tokens, check_request, parse_form};
use crate::config::{EmulatorConfig, Faults, Limits};
use crate::error::ApiError;
use crate::faults::{KillSwitch, Rng};
use crate::limits::Limiter;
use crate::schema::Table;
use crate::state::{Rules, Store};
use crate::{Stats, api, batch};

/// State shared by all handlers. Locks are never held across an await.
pub struct Shared {
    pub cfg: EmulatorConfig,
    pub base_url: String,
    pub api_url: String,
    pub rules: Rules,
    /// Roles, their assignment to the application user, keys created through the API.
    pub security: Mutex<crate::security::Security>,
    pub store: Mutex<Store>,
    pub tokens: Mutex<Tokens>,
    pub limiter: Mutex<Limiter>,
    pub limits: Mutex<Limits>,
    pub faults: Mutex<(Faults, Rng)>,
    pub stats: Mutex<Stats>,
}

/// Locks a mutex, recovering from poisoning (a panicked holder leaves consistent data here:
/// every mutation is a single insert/replace).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn roll(&self, pick: impl Fn(&Faults) -> f64) -> bool {
        let mut g = lock(&self.faults);
        let p = pick(&g.0);
        g.1.chance(p)
    }

    fn record(&self, status: StatusCode) {
        let mut s = lock(&self.stats);
        *s.by_status.entry(status.as_u16()).or_insert(0) += 1;
        if status == StatusCode::TOO_MANY_REQUESTS {
            s.throttled += 1;
        }
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/_emulator/rows/{table}", get(emulator_rows))
        .route("/api/data/v9.2/", any(api_handler))
        .route("/api/data/v9.2/{*rest}", any(api_handler))
        // Bulk requests may be large: Dataverse allows up to 116.85 MB with plug-ins registered.
        .layer(DefaultBodyLimit::max(128 * 1024 * 1024))
        .with_state(shared)
}

async fn token(State(s): State<Arc<Shared>>, Path(tenant): Path<String>, body: Bytes) -> Response {
    let form = parse_form(&body);
    let c = &s.cfg;
    let audience = format!("{}/{}/oauth2/v2.0/token", s.base_url, c.tenant);
    let cert = c
        .client_certificate
        .as_ref()
        .map(|cert| (cert, audience.as_str()));
    match check_request(
        &form,
        &tenant,
        &c.tenant,
        &c.client_id,
        &c.client_secret,
        cert,
    ) {
        Ok(()) => {
            let lifetime = c.token_lifetime;
            let token = lock(&s.tokens).issue(&c.client_id, lifetime);
            let secs = lifetime.as_secs();
            axum::Json(serde_json::json!({
                "token_type": "Bearer",
                "expires_in": secs,
                "ext_expires_in": secs,
                "access_token": token,
            }))
            .into_response()
        }
        Err((status, body)) => (status, axum::Json(body)).into_response(),
    }
}

/// Emulator-only, not part of Dataverse: the stored rows of a table, for tests and debugging.
async fn emulator_rows(State(s): State<Arc<Shared>>, Path(table): Path<String>) -> Response {
    match Table::from_logical(&table).or_else(|| Table::from_set(&table)) {
        Some(t) => axum::Json(Value::Array(
            lock(&s.store)
                .rows(t)
                .into_iter()
                .map(Value::Object)
                .collect(),
        ))
        .into_response(),
        None => (StatusCode::NOT_FOUND, format!("unknown table '{table}'")).into_response(),
    }
}

/// Releases the in-flight slot even if the client goes away mid-request.
struct InFlight {
    shared: Arc<Shared>,
    user: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.shared.limiter).release(&self.user);
    }
}

fn finish(s: &Shared, resp: ApiResponse, dop: u32) -> Response {
    s.record(resp.status);
    let mut builder = Response::builder().status(resp.status);
    for (k, v) in &resp.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder = builder
        .header("OData-Version", "4.0")
        .header("x-ms-dop-hint", dop.to_string());
    builder
        .body(axum::body::Body::from(resp.body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn api_handler(
    State(s): State<Arc<Shared>>,
    ConnectInfo(kill): ConnectInfo<KillSwitch>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&s.stats).requests += 1;
    let limits = lock(&s.limits).clone();
    let dop = limits.dop_hint;

    // "Use OAuth with Dataverse": without a valid bearer token the API answers 401 with a
    // WWW-Authenticate challenge naming the authority.
    let user = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| {
            let t = t.trim();
            // The administrator's own session (a System Administrator's token).
            if s.cfg.admin_token.as_deref() == Some(t) {
                return Some(crate::security::ADMIN.to_string());
            }
            lock(&s.tokens).user(t)
        });
    let Some(user) = user else {
        let mut r = ApiResponse::empty(StatusCode::UNAUTHORIZED);
        r.headers.push((
            "WWW-Authenticate".into(),
            format!(
                "Bearer authorization_uri={}/{}/oauth2/authorize, resource_id={}/",
                s.base_url, s.cfg.tenant, s.base_url
            ),
        ));
        return finish(&s, r, dop);
    };

    let admitted = lock(&s.limiter).admit(&user, &limits, Instant::now());
    if let Err(t) = admitted {
        let mut r = ApiResponse::error(&t.error);
        r.headers
            .push(("Retry-After".into(), t.retry_after_secs.to_string()));
        return finish(&s, r, dop);
    }
    let _slot = InFlight {
        shared: s.clone(),
        user: user.clone(),
    };
    {
        let now = lock(&s.limiter).in_flight();
        let mut st = lock(&s.stats);
        st.max_concurrency = st.max_concurrency.max(now);
    }

    let latency = lock(&s.faults).0.latency;
    if latency > Duration::ZERO {
        tokio::time::sleep(latency).await;
    }
    if s.roll(|f| f.drop_rate) {
        kill.kill();
        lock(&s.stats).dropped += 1;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if s.roll(|f| f.error_5xx_rate) {
        let status = if s.roll(|_| 0.5) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        return finish(&s, ApiResponse::error(&ApiError::server_error(status)), dop);
    }

    let rel = uri
        .path()
        .strip_prefix("/api/data/v9.2/")
        .unwrap_or("")
        .to_string();
    let req = ApiRequest {
        method,
        path: rel,
        query: uri.query().map(str::to_string),
        headers,
        body: body.to_vec(),
    };
    let mut rules = s.rules.clone();
    {
        let mut sec = lock(&s.security);
        sec.apply_keys(&mut rules, &req);
        rules.privileges.extend(sec.app_privileges());
        let app_user = crate::metadata::user_id(&s.cfg.tenant, &s.cfg.client_id);
        if let Some(r) = sec.route(
            &user,
            app_user,
            (&s.cfg.tenant, &s.cfg.client_id),
            &s.api_url,
            &req,
        ) {
            drop(sec);
            return finish(&s, r, dop);
        }
    }
    let (resp, ops) = {
        let shared = s.clone();
        let mut deadlock = move || shared.roll(|f| f.deadlock_rate);
        let mut ctx = Ctx {
            api_url: &s.api_url,
            rules: &rules,
            tables: &s.cfg.tables,
            tenant: &s.cfg.tenant,
            client_id: &s.cfg.client_id,
            deadlock: &mut deadlock,
            ops: 0,
        };
        let mut store = lock(&s.store);
        let resp = if req.path == "$batch" {
            if req.method == Method::POST {
                batch::run(&mut ctx, &mut store, &req.headers, &req.body)
            } else {
                ApiResponse::error(&ApiError::method_not_allowed(req.method.as_str(), "$batch"))
            }
        } else {
            api::execute(&mut ctx, &mut store, &req)
        };
        (resp, ctx.ops)
    };
    let cost = limits.cost_per_operation * ops;
    lock(&s.limiter).charge(&user, cost, Instant::now());
    lock(&s.stats).operations += u64::from(ops);
    if limits.simulate_cost && cost > Duration::ZERO {
        tokio::time::sleep(cost).await;
    }
    if s.roll(|f| f.slow_rate) {
        let slow = lock(&s.faults).0.slow;
        lock(&s.stats).slowed += 1;
        tokio::time::sleep(slow).await;
    }
    finish(&s, resp, dop)
}

/// Builds the shared state for a config.
pub fn shared(cfg: EmulatorConfig, base_url: String) -> Shared {
    let api_url = format!("{base_url}/api/data/v9.2/");
    let rules = Rules {
        alternate_key: cfg.alternate_key,
        choice_values: cfg.choice_values.clone(),
        privileges: cfg.privileges.clone(),
        attributes: cfg.attributes.clone(),
        key_by_table: BTreeMap::new(),
    };
    let security = crate::security::Security {
        key_build: cfg.key_build.clone(),
        ..Default::default()
    };
    Shared {
        base_url,
        api_url,
        rules,
        security: Mutex::new(security),
        store: Mutex::new(Store::default()),
        tokens: Mutex::new(Tokens::default()),
        limiter: Mutex::new(Limiter::default()),
        limits: Mutex::new(cfg.limits.clone()),
        faults: Mutex::new((cfg.faults.clone(), Rng::new(cfg.faults.seed))),
        stats: Mutex::new(Stats {
            by_status: BTreeMap::new(),
            ..Stats::default()
        }),
        cfg,
    }
}
