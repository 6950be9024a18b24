//! The webhook function's handler: an API Gateway HTTP API request in, `handle_request` over the
//! queues, the status and body out. It holds no CRM or Dataverse credentials: only the webhook
//! secrets and the right to send to the two queues and the DLQ.

use std::time::{SystemTime, UNIX_EPOCH};

use lambda_http::{Body, Request, RequestExt, Response};
use pipeline::recent::RecentEvents;
use pipeline::sources::Sources;
use pipeline::webhook::{WebhookPorts, WebhookRequest, handle_request};
use pipeline::{Metrics, Queue};

pub struct App {
    pub sources: Sources,
    pub upsert: Box<dyn Queue>,
    pub sync: Box<dyn Queue>,
    pub dlq: Box<dyn Queue>,
    /// Events this container queued lately (CRM retries are answered without requeueing).
    pub recent: RecentEvents,
    /// What this invocation did; written out as EMF when it ends.
    pub metrics: Metrics,
}

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    // `{source}` from the route `/webhooks/{source}`, or the path's last segment when invoked
    // without API Gateway's parameters.
    let source = req
        .path_parameters_ref()
        .and_then(|p| p.first("source").map(str::to_string))
        .unwrap_or_else(|| {
            req.uri()
                .path()
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string()
        });
    let correlation_id = req
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_string(), v.to_string()))
        })
        .collect();
    let method = req.method().as_str().to_string();
    let query = req.uri().query().map(str::to_string);
    let body: &[u8] = match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let ports = WebhookPorts {
        sources: &app.sources,
        upsert: app.upsert.as_ref(),
        sync: app.sync.as_ref(),
        dlq: app.dlq.as_ref(),
        recent: Some(&app.recent),
        metrics: &app.metrics,
    };
    let wreq = WebhookRequest {
        method: &method,
        query: query.as_deref(),
        headers: &headers,
        body,
    };
    let r = handle_request(&source, &wreq, &correlation_id, &ports, now_ms).await;
    lambda_common::flush_metrics(&app.metrics);
    Response::builder()
        .status(r.status)
        .header("content-type", r.content_type)
        .header("x-correlation-id", correlation_id)
        .body(Body::Text(r.body))
        .unwrap_or_else(|_| Response::new(Body::Empty))
}
