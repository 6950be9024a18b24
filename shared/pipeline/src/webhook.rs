//! The webhook step: verify one CRM notification request and turn it into queue messages.
//!
//! Order matters: the size limit, then the caller's proof (signature, shared secret, Basic
//! credentials or Salesforce org id) over the raw body, and only then parsing. A refused request
//! enqueues nothing.
//!
//! Changes that carry the record go to the upsert queue, one message per record grouped by that
//! record; id-only notifications become fetch jobs on the sync queue; records that cannot be
//! mapped are reported to the DLQ with the reason. The caller answers success only when this
//! returns `Ok`, i.e. after the queues accepted every message; on a queue error the CRM gets a
//! 503 and retries, and the duplicates that may cause are harmless downstream.

use dataverse::Secret;
use mapping::payload::{Item, decode};
use mapping::{ConfigError, Notice, Outcome};
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;
use tracing::{info, warn};

use crate::message::FetchJob;
use crate::metrics::{Dims, Metric, Metrics};
use crate::queue::{ERROR_ATTRIBUTE, OutMessage, Queue};
use crate::recent::RecentEvents;
use crate::sources::Sources;
use crate::sync::{StepError, fetch_message, send_per_record};

pub struct WebhookPorts<'a> {
    pub sources: &'a Sources,
    pub upsert: &'a dyn Queue,
    pub sync: &'a dyn Queue,
    pub dlq: &'a dyn Queue,
    /// Events queued lately, to answer a CRM's retry without queueing it again.
    pub recent: Option<&'a RecentEvents>,
    pub metrics: &'a Metrics,
}

/// What a request was turned into.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub correlation_id: String,
    pub changes: usize,
    pub fetches: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Events already queued lately (a CRM's retry): answered, not queued again.
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicates: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WebhookError {
    #[error("no source named `{0}` is configured")]
    UnknownSource(String),
    #[error("webhooks are not enabled for source `{0}`")]
    NotEnabled(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    UnsupportedType(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("queue unavailable, retry later: {0}")]
    Unavailable(String),
}

impl WebhookError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::UnknownSource(_) | WebhookError::NotEnabled(_) => 404,
            WebhookError::Unauthorized(_) => 401,
            WebhookError::TooLarge(_) => 413,
            WebhookError::UnsupportedType(_) => 415,
            WebhookError::BadRequest(_) => 400,
            WebhookError::Unavailable(_) => 503,
        }
    }
}

/// Largest body accepted (a HubSpot batch of 100 events, a Salesforce message of 100
/// notifications are far below it).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How a source's webhook requests are verified, with its secrets resolved.
#[derive(Debug, Clone)]
pub enum WebhookAuth {
    Hubspot { secret: Secret, public_url: String },
    Contract { secret: Secret },
    Zendesk { secret: Secret },
    Basic { user: String, password: Secret },
    SalesforceOutbound { organization_id: String },
}

impl WebhookAuth {
    /// Resolves the configuration's secret references (`env:NAME`, `file:/path`, or a literal).
    pub fn resolve(c: &crate::config::WebhookConfig) -> Result<Self, ConfigError> {
        use crate::config::WebhookConfig as C;
        Ok(match c {
            C::Hubspot { secret, public_url } => {
                if !public_url.starts_with("https://") && !public_url.starts_with("http://") {
                    return Err(ConfigError::new(
                        "public_url",
                        "must be the absolute URL HubSpot calls",
                    ));
                }
                WebhookAuth::Hubspot {
                    secret: resolve_secret(secret, "secret")?,
                    public_url: public_url.clone(),
                }
            }
            C::Contract { secret } => WebhookAuth::Contract {
                secret: resolve_secret(secret, "secret")?,
            },
            C::Zendesk { secret } => WebhookAuth::Zendesk {
                secret: resolve_secret(secret, "secret")?,
            },
            C::Basic { user, password } => WebhookAuth::Basic {
                user: user.clone(),
                password: resolve_secret(password, "password")?,
            },
            C::SalesforceOutbound { organization_id } => WebhookAuth::SalesforceOutbound {
                organization_id: organization_id.clone(),
            },
        })
    }
}

/// `env:NAME` → that variable, `file:/path` → the file's content (trimmed), else the literal.
/// An `aws-secret:` reference is read by the Lambda functions before the configuration is
/// built; one that reaches here was not theirs to read (or this is not Lambda), and is refused
/// rather than taken for the secret itself.
pub fn resolve_secret(r: &str, key: &str) -> Result<Secret, ConfigError> {
    if r.starts_with("aws-secret:") {
        return Err(ConfigError::new(
            key,
            "is an aws-secret: reference, which only the Lambda function that owns it reads",
        ));
    }
    let value = if let Some(name) = r.strip_prefix("env:") {
        std::env::var(name)
            .map_err(|_| ConfigError::new(key, format!("environment variable {name} is not set")))?
    } else if let Some(path) = r.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(key, format!("cannot read {path}: {e}")))?
            .trim()
            .to_string()
    } else {
        r.to_string()
    };
    if value.is_empty() {
        return Err(ConfigError::new(key, "is empty"));
    }
    Ok(Secret::new(value))
}

/// One HTTP request as the webhook endpoint received it. Header names are matched
/// case-insensitively.
pub struct WebhookRequest<'a> {
    pub method: &'a str,
    /// The query string after `?`, if any (HubSpot signs the full URL).
    pub query: Option<&'a str>,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl WebhookRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl WebhookResponse {
    fn json(status: u16, v: serde_json::Value) -> Self {
        WebhookResponse {
            status,
            content_type: "application/json",
            body: v.to_string(),
        }
    }
}

/// Handles a webhook HTTP request for `source` end to end: limits, verification, parsing,
/// queueing. `now_ms` is the current time (signature windows).
pub async fn handle_request(
    source: &str,
    req: &WebhookRequest<'_>,
    correlation_id: &str,
    ports: &WebhookPorts<'_>,
    now_ms: i64,
) -> WebhookResponse {
    match verify_and_handle(source, req, correlation_id, ports, now_ms).await {
        Ok(r) => r,
        Err(e) => {
            info!(correlation_id, source = %source.chars().take(64).collect::<String>(), status = e.status(), error = %e, "webhook refused");
            WebhookResponse::json(
                e.status(),
                serde_json::json!({"error": e.to_string(), "correlation_id": correlation_id}),
            )
        }
    }
}

async fn verify_and_handle(
    source: &str,
    req: &WebhookRequest<'_>,
    correlation_id: &str,
    ports: &WebhookPorts<'_>,
    now_ms: i64,
) -> Result<WebhookResponse, WebhookError> {
    let mapper = ports
        .sources
        .by_name(source)
        .ok_or_else(|| WebhookError::UnknownSource(source.chars().take(64).collect()))?;
    let auth = ports
        .sources
        .webhook(&mapper.source)
        .ok_or_else(|| WebhookError::NotEnabled(mapper.source.to_string()))?;
    if req.body.len() > MAX_BODY_BYTES {
        return Err(WebhookError::TooLarge(MAX_BODY_BYTES));
    }
    let ctype = req
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    let unauthorized = |e: webhook::verify::VerifyError| WebhookError::Unauthorized(e.to_string());
    let need = |h: &'static str| {
        req.header(h)
            .ok_or(WebhookError::Unauthorized(format!("missing {h} header")))
    };
    if let WebhookAuth::SalesforceOutbound { organization_id } = auth {
        return outbound(
            source,
            organization_id,
            mapper,
            req,
            &ctype,
            correlation_id,
            ports,
        )
        .await;
    }
    if !(ctype.starts_with("application/json") || ctype.contains("+json")) {
        return Err(WebhookError::UnsupportedType(
            "expected Content-Type application/json".into(),
        ));
    }
    match auth {
        WebhookAuth::Hubspot { secret, public_url } => {
            let uri = match req.query {
                Some(q) if !q.is_empty() => format!("{public_url}?{q}"),
                _ => public_url.clone(),
            };
            if let Some(sig) = req.header("x-hubspot-signature-v3") {
                let ts = need("x-hubspot-request-timestamp")?;
                webhook::verify::hubspot_v3(
                    secret.expose(),
                    req.method,
                    &uri,
                    req.body,
                    ts,
                    sig,
                    now_ms,
                )
                .map_err(unauthorized)?;
            } else {
                let sig = need("x-hubspot-signature")?;
                match req.header("x-hubspot-signature-version").unwrap_or("v1") {
                    "v2" => webhook::verify::hubspot_v2(
                        secret.expose(),
                        req.method,
                        &uri,
                        req.body,
                        sig,
                    ),
                    _ => webhook::verify::hubspot_v1(secret.expose(), req.body, sig),
                }
                .map_err(unauthorized)?;
            }
        }
        WebhookAuth::Contract { secret } => {
            let ts = need("x-crmsync-timestamp")?;
            let sig = need("x-crmsync-signature")?;
            webhook::verify::contract(secret.expose(), ts, req.body, sig, now_ms)
                .map_err(unauthorized)?;
        }
        WebhookAuth::Zendesk { secret } => {
            let sig = need("x-zendesk-webhook-signature")?;
            let ts = need("x-zendesk-webhook-signature-timestamp")?;
            webhook::verify::zendesk(secret.expose(), ts, req.body, sig).map_err(unauthorized)?;
            let at = mapping::transform::parse_timestamp(&Value::String(ts.to_string())).ok_or(
                WebhookError::Unauthorized("malformed signature timestamp".into()),
            )?;
            if (now_ms - at.timestamp_millis()).abs() > webhook::verify::WINDOW_MS {
                return Err(WebhookError::Unauthorized(
                    "request timestamp is outside the 5-minute window".into(),
                ));
            }
        }
        WebhookAuth::Basic { user, password } => {
            let h = need("authorization")?;
            webhook::verify::basic(h, user, password.expose()).map_err(unauthorized)?;
        }
        // Answered by `outbound` above.
        WebhookAuth::SalesforceOutbound { .. } => {}
    }
    let accepted = handle_webhook(source, req.body, correlation_id, ports).await?;
    Ok(WebhookResponse::json(
        202,
        serde_json::to_value(&accepted).unwrap_or_default(),
    ))
}

/// Salesforce Outbound Messages carry no signature: the SOAP body is parsed (safely) and its
/// OrganizationId must be the configured org's.
async fn outbound(
    source: &str,
    organization_id: &str,
    mapper: &mapping::Mapper,
    req: &WebhookRequest<'_>,
    ctype: &str,
    correlation_id: &str,
    ports: &WebhookPorts<'_>,
) -> Result<WebhookResponse, WebhookError> {
    if !ctype.contains("xml") {
        return Err(WebhookError::UnsupportedType(
            "Salesforce outbound messages are text/xml".into(),
        ));
    }
    let om = webhook::soap::parse(req.body).map_err(|e| WebhookError::BadRequest(e.to_string()))?;
    if !webhook::verify::ct_eq(om.organization_id.as_bytes(), organization_id.as_bytes()) {
        return Err(WebhookError::Unauthorized(
            "OrganizationId does not match this source".into(),
        ));
    }
    let items: Vec<Item> = om
        .notifications
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let at = format!("Notification[{i}]");
            match mapper.entity_for_object(&n.object) {
                Some(e) => match mapper.map_record(e, &Value::Object(n.fields.clone()), None) {
                    Ok(m) => Item {
                        at,
                        outcome: Outcome::Notice {
                            notice: Notice::Change(m.change),
                            warnings: m.warnings,
                        },
                    },
                    Err(err) => Item {
                        at,
                        outcome: Outcome::Failed(err),
                    },
                },
                None => Item {
                    at,
                    outcome: Outcome::Skipped(format!("{} is not synced", n.object)),
                },
            }
        })
        .collect();
    // Salesforce resends a notification with the same Id until it is acknowledged.
    let keys: Vec<String> = om
        .notifications
        .iter()
        .map(|n| format!("outbound:{}:{}", om.organization_id, n.id))
        .collect();
    let keys = if om.notifications.iter().all(|n| !n.id.is_empty()) {
        keys
    } else {
        Vec::new()
    };
    enqueue_once(source, items, &keys, correlation_id, ports).await?;
    // Salesforce retries until it reads this acknowledgement.
    Ok(WebhookResponse {
        status: 200,
        content_type: "text/xml; charset=utf-8",
        body: webhook::soap::ACK.to_string(),
    })
}

impl From<StepError> for WebhookError {
    fn from(e: StepError) -> Self {
        WebhookError::Unavailable(e.to_string())
    }
}

/// Handles a verified notification body for `source`.
pub async fn handle_webhook(
    source: &str,
    body: &[u8],
    correlation_id: &str,
    ports: &WebhookPorts<'_>,
) -> Result<Accepted, WebhookError> {
    let mapper = ports
        .sources
        .by_name(source)
        .ok_or_else(|| WebhookError::UnknownSource(source.chars().take(64).collect()))?;
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| WebhookError::BadRequest(format!("body is not JSON: {e}")))?;
    let items =
        decode(mapper, &payload, None).map_err(|e| WebhookError::BadRequest(e.to_string()))?;
    let keys = mapping::events::event_keys(mapper.kind, &payload);
    enqueue_once(source, items, &keys, correlation_id, ports).await
}

/// [`enqueue`], unless every event was queued lately; the events are remembered once queued.
async fn enqueue_once(
    source: &str,
    items: Vec<Item>,
    keys: &[String],
    correlation_id: &str,
    ports: &WebhookPorts<'_>,
) -> Result<Accepted, WebhookError> {
    let now = std::time::Instant::now();
    if let Some(recent) = ports.recent
        && recent.all_seen(source, keys, now)
    {
        info!(
            correlation_id,
            source,
            events = keys.len(),
            "webhook events already queued; not queued again"
        );
        return Ok(Accepted {
            correlation_id: correlation_id.to_string(),
            duplicates: keys.len(),
            ..Accepted::default()
        });
    }
    let accepted = enqueue(source, items, correlation_id, ports).await?;
    if let Some(recent) = ports.recent {
        recent.remember(source, keys, now);
    }
    Ok(accepted)
}

/// Sends what a request's items mean to the queues: changes to the upsert queue (one message per
/// record), fetch jobs to the sync queue, unmappable items to the DLQ with their reasons.
async fn enqueue(
    source: &str,
    items: Vec<Item>,
    correlation_id: &str,
    ports: &WebhookPorts<'_>,
) -> Result<Accepted, WebhookError> {
    let mut accepted = Accepted {
        correlation_id: correlation_id.to_string(),
        ..Accepted::default()
    };
    let mut changes = Vec::new();
    let mut fetches = Vec::new();
    let mut failures = Vec::new();
    for item in items {
        match item.outcome {
            Outcome::Notice {
                notice: Notice::Change(c),
                ..
            } => changes.push(c),
            Outcome::Notice {
                notice: Notice::Fetch(h),
                ..
            } => fetches.push(FetchJob {
                source: h.source,
                entity: h.entity,
                ids: h.ids,
                reason: h.reason,
            }),
            Outcome::Skipped(reason) => {
                accepted.skipped += 1;
                info!(correlation_id, at = %item.at, %reason, "notification item skipped");
            }
            Outcome::Failed(e) => {
                failures.push(serde_json::json!({"at": item.at, "error": e.to_string()}))
            }
        }
    }

    send_per_record(ports.upsert, correlation_id, &changes).await?;
    for c in &changes {
        let dims = Dims::new(source, c.entity);
        ports.metrics.add(&dims, Metric::ChangesReceived, 1);
        ports.metrics.add(&dims, Metric::ChangesEnqueued, 1);
    }
    for f in &fetches {
        let dims = Dims::new(source, f.entity);
        ports
            .metrics
            .add(&dims, Metric::ChangesReceived, f.ids.len() as u64);
    }
    if !fetches.is_empty() {
        let msgs = fetches
            .iter()
            .map(|f| fetch_message(correlation_id, f.clone()))
            .collect();
        ports.sync.send(msgs).await.map_err(StepError::from)?;
        for f in &fetches {
            let dims = Dims::new(source, f.entity);
            ports
                .metrics
                .add(&dims, Metric::FetchesEnqueued, f.ids.len() as u64);
        }
    }
    if !failures.is_empty() {
        warn!(
            correlation_id,
            failed = failures.len(),
            "notification items could not be mapped"
        );
        let report = serde_json::json!({
            "source": source,
            "correlation_id": correlation_id,
            "failures": failures,
        });
        let mut m = OutMessage::new(report.to_string());
        m.attributes.insert(
            ERROR_ATTRIBUTE.into(),
            format!(
                "{} notification item(s) could not be mapped",
                failures.len()
            ),
        );
        ports.dlq.send(vec![m]).await.map_err(StepError::from)?;
        let dims = Dims::new(source, "-");
        ports
            .metrics
            .add(&dims, Metric::FailedPermanently, failures.len() as u64);
    }
    accepted.changes = changes.len();
    accepted.fetches = fetches.len();
    accepted.failed = failures.len();
    info!(
        correlation_id,
        source,
        changes = accepted.changes,
        fetches = accepted.fetches,
        failed = accepted.failed,
        "webhook accepted"
    );
    Ok(accepted)
}
