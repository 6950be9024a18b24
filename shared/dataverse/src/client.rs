//! The Dataverse Web API client: the production [`DataverseWriter`].
//!
//! A sink in the vector sense: configuration → request building ([`crate::batch`], bulk targets)
//! → retry policy (here) → HTTP service (reqwest, no cookie store so requests spread over web
//! servers, as "Send parallel requests" advises). Writes go as single requests, `$batch` with
//! continue-on-error, or `UpsertMultiple`, by configuration; `auto` probes `sdkmessagefilters`
//! once per table and uses bulk where the table supports it, `$batch` otherwise (a `$batch`
//! counts as one request toward the 6,000-per-5-minutes limit, single requests would hit it at
//! 20 writes a second).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mapping::{DataverseOp, Method};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::auth::{AuthError, ClientCredentials, Credential, transport_error};
use crate::batch::{self, MAX_BATCH_OPERATIONS};
use crate::classify::{classify, error_of, parse_retry_after};
use crate::limiter::{Limiter, Throttle};
use crate::secret::Secret;
use crate::writer::{Applied, DataverseWriter, WriteError};

/// How writes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum WriteMode {
    /// Bulk where the table supports it, else `$batch` of 100.
    #[default]
    Auto,
    Single,
    Batch {
        size: usize,
    },
    Bulk {
        size: usize,
    },
}

#[derive(Debug, Clone)]
pub struct WebApiConfig {
    /// `https://{org}.crm.dynamics.com/api/data/v9.2/`
    pub api_url: String,
    /// `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Certificate credentials instead of the secret: (private key PEM, SHA-1 thumbprint).
    pub client_certificate: Option<(Secret, String)>,
    /// `https://{org}.crm.dynamics.com/.default`
    pub scope: String,
    pub mode: WriteMode,
    /// Never more requests in flight than this (the service's concurrency limit is 52).
    pub max_concurrency: u32,
    pub request_timeout: Duration,
    /// Attempts per request for 5xx, deadlocks and dropped connections.
    pub max_attempts: u32,
    /// Give up waiting on 429s after this long in total per request (the operation then fails
    /// as throttled and the queue brings it back).
    pub max_throttle_wait: Duration,
}

impl WebApiConfig {
    /// Settings for an organisation URL such as `https://contoso.crm.dynamics.com`.
    pub fn for_org(org_url: &str, tenant: &str, client_id: &str, secret: Secret) -> Self {
        let org = org_url.trim_end_matches('/');
        WebApiConfig {
            api_url: format!("{org}/api/data/v9.2/"),
            token_url: format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"),
            client_id: client_id.to_string(),
            client_secret: secret,
            client_certificate: None,
            scope: format!("{org}/.default"),
            mode: WriteMode::Auto,
            max_concurrency: 52,
            request_timeout: Duration::from_secs(30),
            max_attempts: 5,
            max_throttle_wait: Duration::from_secs(120),
        }
    }
}

/// Token refreshes per request on 401. A token can expire or be revoked while a request waits
/// out throttling or its retries, so one refresh is not always enough; a 401 answered to this
/// many fresh tokens in a row is a refusal (the application user lacks access), not expiry.
const MAX_REFRESHES: u32 = 3;

/// Counters since start.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub requests: AtomicU64,
    pub throttled: AtomicU64,
    pub retries: AtomicU64,
    pub throttle_wait_ms: AtomicU64,
    /// Request latencies not yet drained by [`DataverseWriter::drain_latencies`]; bounded so a
    /// client nobody drains stays small.
    latencies: Mutex<Vec<Duration>>,
    /// The last `x-ms-dop-hint` the service sent (0 before any): its recommended parallelism.
    pub dop_hint: AtomicU64,
}

/// The most latency samples kept between two drains.
const MAX_LATENCY_SAMPLES: usize = 10_000;

pub struct WebApiClient {
    http: reqwest::Client,
    cfg: WebApiConfig,
    api_path: String,
    auth: ClientCredentials,
    limiter: Limiter,
    locks: KeyLocks,
    bulk: tokio::sync::Mutex<HashMap<String, bool>>,
    pub stats: ClientStats,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid Dataverse settings: {0}")]
    Config(String),
}

/// One HTTP exchange's outcome, before classification.
struct Reply {
    status: u16,
    content_type: String,
    retry_after: Option<Duration>,
    body: bytes::Bytes,
}

impl WebApiClient {
    pub fn new(cfg: WebApiConfig) -> Result<Self, ClientError> {
        let url = reqwest::Url::parse(&cfg.api_url)
            .map_err(|e| ClientError::Config(format!("api_url: {e}")))?;
        if !cfg.api_url.ends_with('/') {
            return Err(ClientError::Config("api_url must end with `/`".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .pool_max_idle_per_host(cfg.max_concurrency as usize)
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        let credential = match &cfg.client_certificate {
            Some((key, thumbprint)) => {
                Credential::certificate(key, thumbprint).map_err(ClientError::Config)?
            }
            None => Credential::Secret(cfg.client_secret.clone()),
        };
        let auth = ClientCredentials::new(
            http.clone(),
            cfg.token_url.clone(),
            cfg.client_id.clone(),
            credential,
            cfg.scope.clone(),
        );
        Ok(WebApiClient {
            api_path: url.path().to_string(),
            limiter: Limiter::new(4, cfg.max_concurrency),
            http,
            auth,
            locks: KeyLocks::default(),
            bulk: tokio::sync::Mutex::new(HashMap::new()),
            stats: ClientStats::default(),
            cfg,
        })
    }

    /// Current adaptive concurrency.
    pub fn concurrency(&self) -> u32 {
        self.limiter.limit()
    }

    /// Sends one request with the retry policy: waits out 429s (Retry-After, shared by every
    /// request), refreshes the token on 401 (up to [`MAX_REFRESHES`] times), retries transport
    /// errors and 5xx with backoff.
    async fn exchange(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        deadline: Option<Instant>,
    ) -> Result<Reply, WriteError> {
        let mut attempt = 0u32;
        let mut refreshes = 0u32;
        let mut throttled_for = Duration::ZERO;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(WriteError::Retryable {
                    code: "deadline".into(),
                    message: "stopped before the invocation's deadline".into(),
                });
            }
            // The token request is bounded by the deadline too.
            let token = match deadline {
                Some(d) => tokio::time::timeout_at(d, self.auth.token())
                    .await
                    .unwrap_or_else(|_| {
                        Err(AuthError::Unavailable(
                            "token request outlived the deadline".into(),
                        ))
                    }),
                None => self.auth.token().await,
            };
            let token = token.map_err(|e| match e {
                AuthError::Rejected { status, .. } => WriteError::Permanent {
                    status,
                    code: "auth".into(),
                    message: e.to_string(),
                },
                AuthError::Unavailable(m) => WriteError::Retryable {
                    code: "auth".into(),
                    message: m,
                },
            })?;
            let permit = self.limiter.acquire().await;
            let mut req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token.expose())
                .header("OData-MaxVersion", "4.0")
                .header("OData-Version", "4.0")
                .header("Accept", "application/json");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            // A request never outlives the caller's deadline: past it, the answer is unusable.
            if let Some(d) = deadline {
                req = req.timeout(self.cfg.request_timeout.min(d - Instant::now()));
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let sent = req.send().await;
            let reply = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let h = resp.headers();
                    if let Some(dop) = h
                        .get("x-ms-dop-hint")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse().ok())
                    {
                        self.limiter.on_hint(dop);
                        self.stats.dop_hint.store(u64::from(dop), Ordering::Relaxed);
                    }
                    let retry_after = h
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let content_type = h
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    match resp.bytes().await {
                        Ok(body) => Ok(Reply {
                            status,
                            content_type,
                            retry_after,
                            body,
                        }),
                        Err(e) => Err(transport_error(&e)),
                    }
                }
                Err(e) => Err(transport_error(&e)),
            };
            drop(permit);
            {
                let mut l = self
                    .stats
                    .latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if l.len() < MAX_LATENCY_SAMPLES {
                    l.push(started.elapsed());
                }
            }
            attempt += 1;
            match reply {
                Ok(r) if r.status == 429 => {
                    self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                    // Microsoft's sample backs off exponentially when Retry-After is missing.
                    let wait = r
                        .retry_after
                        .unwrap_or(Duration::from_secs(1 << attempt.min(6)));
                    let limit = crate::classify::error_of(&r.body)
                        .map_or(Throttle::Concurrency, |(code, _)| Throttle::of_code(&code));
                    self.limiter.on_throttle(wait, limit);
                    throttled_for += wait;
                    self.stats
                        .throttle_wait_ms
                        .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
                    if throttled_for > self.cfg.max_throttle_wait
                        || deadline.is_some_and(|d| Instant::now() + wait >= d)
                    {
                        return Ok(r);
                    }
                }
                Ok(r) if r.status == 401 && refreshes < MAX_REFRESHES => {
                    refreshes += 1;
                    self.auth.invalidate(&token).await;
                }
                Ok(r) if is_transient(&r) && attempt < self.cfg.max_attempts => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Ok(r) => {
                    if r.status < 500 {
                        self.limiter.on_success();
                    }
                    return Ok(r);
                }
                Err(e) if attempt < self.cfg.max_attempts => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, attempt, "Dataverse request failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => {
                    return Err(WriteError::Retryable {
                        code: "transport".into(),
                        message: e,
                    });
                }
            }
        }
    }

    async fn single(
        &self,
        op: &DataverseOp,
        deadline: Option<Instant>,
    ) -> Result<Applied, WriteError> {
        let url = format!("{}{}", self.cfg.api_url, op.path);
        let (method, body) = match op.method {
            Method::Patch => (
                reqwest::Method::PATCH,
                Some(serde_json::to_vec(&op.body).expect("serialises")),
            ),
            Method::Delete => (reqwest::Method::DELETE, None),
        };
        let mut headers = vec![("Content-Type", "application/json; charset=utf-8")];
        if op.if_match_any {
            headers.push(("If-Match", "*"));
        }
        let r = self
            .exchange(method, &url, &headers, body, deadline)
            .await?;
        classify(op, r.status, r.retry_after, &r.body)
    }

    /// Sends `ops` as one `$batch` with continue-on-error and judges every part.
    async fn batch(
        &self,
        ops: &[DataverseOp],
        deadline: Option<Instant>,
    ) -> Vec<Result<Applied, WriteError>> {
        let boundary = format!("batch_{}", uuid::Uuid::new_v4());
        let req = batch::build(ops, &self.api_path, &boundary);
        let url = format!("{}$batch", self.cfg.api_url);
        let headers = [
            ("Content-Type", req.content_type.as_str()),
            ("Prefer", "odata.continue-on-error"),
        ];
        let reply = match self
            .exchange(
                reqwest::Method::POST,
                &url,
                &headers,
                Some(req.body),
                deadline,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => return vec![Err(e); ops.len()],
        };
        if reply.status != 200 {
            // The whole batch was refused (throttled, malformed, unauthorised): every operation
            // shares that fate.
            let whole = classify_whole(&reply);
            return vec![Err(whole); ops.len()];
        }
        let parts = match batch::parse_response(&reply.content_type, &reply.body) {
            Ok(p) if p.len() == ops.len() => p,
            Ok(p) => {
                let e = WriteError::Retryable {
                    code: "batch".into(),
                    message: format!(
                        "batch answered {} parts for {} requests",
                        p.len(),
                        ops.len()
                    ),
                };
                return vec![Err(e); ops.len()];
            }
            Err(e) => {
                let e = WriteError::Retryable {
                    code: "batch".into(),
                    message: e.to_string(),
                };
                return vec![Err(e); ops.len()];
            }
        };
        ops.iter()
            .zip(parts)
            .map(|(op, p)| {
                let ra = p
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                    .and_then(|(_, v)| parse_retry_after(v));
                classify(op, p.status, ra, &p.body)
            })
            .collect()
    }

    /// Sends upserts of one table as `UpsertMultiple`. On standard tables one bad record fails
    /// the whole request ("Use bulk operation messages"), so a refused request is re-sent as a
    /// `$batch` to find which record it was.
    async fn bulk(
        &self,
        set: &str,
        ops: &[DataverseOp],
        deadline: Option<Instant>,
    ) -> Vec<Result<Applied, WriteError>> {
        let logical = logical_name(set);
        let targets: Vec<Value> = ops
            .iter()
            .map(|op| {
                let mut t = op.body.clone().unwrap_or_default();
                t.insert(
                    "@odata.type".into(),
                    json!(format!("Microsoft.Dynamics.CRM.{logical}")),
                );
                match key_guid(&op.path) {
                    Some(guid) => {
                        t.insert(format!("{logical}id"), json!(guid));
                    }
                    None => {
                        t.insert("@odata.id".into(), json!(op.path));
                    }
                }
                Value::Object(t)
            })
            .collect();
        let url = format!(
            "{}{set}/Microsoft.Dynamics.CRM.UpsertMultiple",
            self.cfg.api_url
        );
        let body = serde_json::to_vec(&json!({ "Targets": targets })).expect("serialises");
        let headers = [("Content-Type", "application/json; charset=utf-8")];
        match self
            .exchange(reqwest::Method::POST, &url, &headers, Some(body), deadline)
            .await
        {
            Ok(r) if (200..300).contains(&r.status) => vec![Ok(Applied::Upserted); ops.len()],
            Ok(r) if r.status == 400 || r.status == 404 => self.batch(ops, deadline).await,
            Ok(r) => vec![Err(classify_whole(&r)); ops.len()],
            Err(e) => vec![Err(e); ops.len()],
        }
    }

    /// A read (`WhoAmI`, metadata, a page of rows) with the same retry policy as writes:
    /// `path` is relative to the API URL (`WhoAmI`, `accounts?$select=…`) or a whole
    /// `@odata.nextLink` on the same API. `prefer` is sent as the `Prefer` header (e.g.
    /// `odata.maxpagesize=500`, "Page results"). Non-2xx answers keep Dataverse's error code.
    pub async fn get_json(&self, path: &str, prefer: Option<&str>) -> Result<Value, WriteError> {
        let url = if path.starts_with(self.cfg.api_url.as_str()) {
            path.to_string()
        } else if path.contains("://") {
            // A next link is sent our bearer token: it must stay on the configured API.
            return Err(WriteError::Permanent {
                status: 0,
                code: "foreign-link".into(),
                message: "a link outside the configured Dataverse API was not followed".into(),
            });
        } else {
            format!("{}{}", self.cfg.api_url, path.trim_start_matches('/'))
        };
        let headers: Vec<(&str, &str)> = prefer.map(|p| ("Prefer", p)).into_iter().collect();
        let r = self
            .exchange(reqwest::Method::GET, &url, &headers, None, None)
            .await?;
        if !(200..300).contains(&r.status) {
            return Err(classify_whole(&r));
        }
        serde_json::from_slice(&r.body).map_err(|e| WriteError::Retryable {
            code: "invalid-json".into(),
            message: format!(
                "Dataverse answered {} with a body that is not JSON: {e}",
                r.status
            ),
        })
    }

    /// Whether a table supports the bulk messages: both CreateMultiple and UpdateMultiple must
    /// have an `sdkmessagefilters` row for it ("Use bulk operation messages"). Asked once.
    pub async fn supports_bulk(&self, set: &str, deadline: Option<Instant>) -> bool {
        let mut cache = self.bulk.lock().await;
        if let Some(b) = cache.get(set) {
            return *b;
        }
        let logical = logical_name(set);
        let mut supported = true;
        for message in ["CreateMultiple", "UpdateMultiple"] {
            let url = format!(
                "{}sdkmessagefilters?$select=sdkmessagefilterid&$filter=sdkmessageid/name eq '{message}' and primaryobjecttypecode eq '{logical}'",
                self.cfg.api_url
            );
            let found = match self
                .exchange(reqwest::Method::GET, &url, &[], None, deadline)
                .await
            {
                Ok(r) if r.status == 200 => serde_json::from_slice::<Value>(&r.body)
                    .ok()
                    .and_then(|v| v["value"].as_array().map(|a| !a.is_empty()))
                    .unwrap_or(false),
                // Could not tell: do not cache a guess.
                _ => return false,
            };
            supported &= found;
        }
        cache.insert(set.to_string(), supported);
        supported
    }

    async fn apply_chunk(
        &self,
        mode: WriteMode,
        ops: &[DataverseOp],
        deadline: Option<Instant>,
    ) -> Vec<Result<Applied, WriteError>> {
        let _locks = self
            .locks
            .acquire(ops.iter().map(|o| o.path.clone()).collect())
            .await;
        match mode {
            WriteMode::Single | WriteMode::Auto => {
                futures::future::join_all(ops.iter().map(|op| self.single(op, deadline))).await
            }
            WriteMode::Batch { .. } => self.batch(ops, deadline).await,
            WriteMode::Bulk { .. } => {
                let set = entity_set(&ops[0].path).to_string();
                let bulk_ok = ops.iter().all(|o| {
                    o.method == Method::Patch && !o.if_match_any && entity_set(&o.path) == set
                });
                if bulk_ok {
                    self.bulk(&set, ops, deadline).await
                } else {
                    self.batch(ops, deadline).await
                }
            }
        }
    }
}

#[async_trait]
impl DataverseWriter for WebApiClient {
    async fn apply(
        &self,
        ops: &[DataverseOp],
        deadline: Option<Instant>,
    ) -> Vec<Result<Applied, WriteError>> {
        if ops.is_empty() {
            return Vec::new();
        }
        // Group by entity set (bulk is per table) keeping each op's position.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let set = entity_set(&op.path);
            match groups.iter_mut().find(|(s, _)| s == set) {
                Some((_, v)) => v.push(i),
                None => groups.push((set.to_string(), vec![i])),
            }
        }
        let mut results: Vec<Option<Result<Applied, WriteError>>> = vec![None; ops.len()];
        for (set, idx) in groups {
            let mode = match self.cfg.mode {
                WriteMode::Auto if self.supports_bulk(&set, deadline).await => {
                    WriteMode::Bulk { size: 200 }
                }
                WriteMode::Auto => WriteMode::Batch { size: 100 },
                m => m,
            };
            let size = match mode {
                WriteMode::Batch { size } | WriteMode::Bulk { size } => {
                    size.clamp(1, MAX_BATCH_OPERATIONS)
                }
                _ => self.cfg.max_concurrency.max(1) as usize * 4,
            };
            let mut pending: Vec<usize> = idx;
            // Retryable failures inside a batch (a deadlock on one part) are re-sent here rather
            // than failing the whole queue message.
            for round in 0..self.cfg.max_attempts.max(1) {
                let chunks: Vec<Vec<usize>> = pending.chunks(size).map(<[usize]>::to_vec).collect();
                let outcomes = futures::future::join_all(chunks.iter().map(|chunk| {
                    let chunk_ops: Vec<DataverseOp> =
                        chunk.iter().map(|i| ops[*i].clone()).collect();
                    async move { self.apply_chunk(mode, &chunk_ops, deadline).await }
                }))
                .await;
                let mut again = Vec::new();
                for (chunk, outs) in chunks.iter().zip(outcomes) {
                    for (i, r) in chunk.iter().zip(outs) {
                        let retry = matches!(&r, Err(WriteError::Retryable { code, .. }) if code != "deadline")
                            && round + 1 < self.cfg.max_attempts
                            && mode != WriteMode::Single;
                        if retry {
                            again.push(*i);
                        }
                        results[*i] = Some(r);
                    }
                }
                if again.is_empty() {
                    break;
                }
                self.stats
                    .retries
                    .fetch_add(again.len() as u64, Ordering::Relaxed);
                tokio::time::sleep(backoff(round + 1)).await;
                pending = again;
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every operation has a result"))
            .collect()
    }

    fn drain_latencies(&self) -> Vec<Duration> {
        std::mem::take(
            &mut *self
                .stats
                .latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }
}

fn is_transient(r: &Reply) -> bool {
    matches!(r.status, 500 | 502 | 503 | 504)
}

fn classify_whole(r: &Reply) -> WriteError {
    let (code, message) =
        error_of(&r.body).unwrap_or_else(|| (format!("http-{}", r.status), String::new()));
    match r.status {
        429 => WriteError::Throttled {
            retry_after_ms: r.retry_after.unwrap_or(Duration::from_secs(5)).as_millis() as u64,
        },
        500..=599 => WriteError::Retryable { code, message },
        status => WriteError::Permanent {
            status,
            code,
            message,
        },
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 * (1 << attempt.min(6)))
}

/// `accounts(…)` → `accounts`.
fn entity_set(path: &str) -> &str {
    path.split('(').next().unwrap_or(path)
}

/// `accounts` → `account`, `contacts` → `contact`.
fn logical_name(set: &str) -> &str {
    set.strip_suffix('s').unwrap_or(set)
}

/// The GUID of a `set(<guid>)` path, if the key is one.
fn key_guid(path: &str) -> Option<&str> {
    let inner = path.split_once('(')?.1.strip_suffix(')')?;
    uuid::Uuid::try_parse(inner).ok().map(|_| inner)
}

/// Keeps two writes of the same record from running at once (they deadlock in SQL, per the
/// Dataverse guidance on parallel requests).
#[derive(Default)]
struct KeyLocks {
    held: Mutex<HashSet<String>>,
    released: Notify,
}

struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    keys: Vec<String>,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().expect("lock");
        for k in &self.keys {
            held.remove(k);
        }
        drop(held);
        self.locks.released.notify_waiters();
    }
}

impl KeyLocks {
    async fn acquire(&self, keys: Vec<String>) -> KeyGuard<'_> {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut held = self.held.lock().expect("lock");
                if keys.iter().all(|k| !held.contains(k)) {
                    held.extend(keys.iter().cloned());
                    return KeyGuard { locks: self, keys };
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(entity_set("accounts(x)"), "accounts");
        assert_eq!(logical_name("contacts"), "contact");
        assert_eq!(
            key_guid("accounts(0f8fad5b-d9cb-469f-a165-70867728950e)"),
            Some("0f8fad5b-d9cb-469f-a165-70867728950e")
        );
        assert_eq!(
            key_guid("accounts(msdyn_source_crm=2,msdyn_source_crm_id='x')"),
            None
        );
    }
}
