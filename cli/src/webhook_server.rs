//! The webhook endpoint on one machine: `POST /webhooks/{source}` served by axum, each request
//! handed to the same `handle_request` the Lambda function calls, over the local pipeline's
//! queues. `crm-sync demo` points the CRM emulator's notifications at it; `crm-sync serve`
//! exposes it to real CRMs (behind a TLS-terminating proxy). `GET /metrics` answers with the
//! counters the steps keep (counts and ids of nothing: no record data), the local counterpart of
//! the functions' CloudWatch metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use pipeline::runner::LocalPipeline;
use pipeline::webhook::{WebhookPorts, WebhookRequest, handle_request};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What the endpoint hands requests to: the queues and sources of a pipeline (the in-process
/// one of the demo, or `crm-sync serve`'s over durable queues).
pub trait WebhookTarget: Send + Sync + 'static {
    fn webhook_ports(&self) -> WebhookPorts<'_>;
}

impl WebhookTarget for LocalPipeline {
    fn webhook_ports(&self) -> WebhookPorts<'_> {
        LocalPipeline::webhook_ports(self)
    }
}

/// A running webhook endpoint.
pub struct WebhookServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl WebhookServer {
    /// Serves on `addr` (port 0: any free port) until [`WebhookServer::shutdown`].
    pub async fn start<P: WebhookTarget>(
        pipeline: Arc<P>,
        addr: SocketAddr,
    ) -> std::io::Result<WebhookServer> {
        let pipeline: Arc<dyn WebhookTarget> = pipeline;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/webhooks/{source}", post(webhook))
            .route("/metrics", get(metrics))
            .with_state(pipeline);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = served.await {
                tracing::warn!(error = %e, "webhook server stopped");
            }
        });
        Ok(WebhookServer {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/webhooks/` : append a source id.
    pub fn base_url(&self) -> String {
        format!("http://{}/webhooks/", self.addr)
    }

    /// Stops accepting connections and lets requests in progress finish (up to 10 s), so a
    /// request that was answered was queued, and one that was cut off was not answered.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

async fn metrics(State(p): State<Arc<dyn WebhookTarget>>) -> Response {
    axum::Json(p.webhook_ports().metrics.snapshot().to_json()).into_response()
}

async fn webhook(
    State(pipeline): State<Arc<dyn WebhookTarget>>,
    Path(source): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.to_string(), v.to_string())))
        .collect();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let req = WebhookRequest {
        method: method.as_str(),
        query: query.as_deref(),
        headers: &headers,
        body: &body,
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let r = handle_request(
        &source,
        &req,
        &correlation_id,
        &pipeline.webhook_ports(),
        now_ms,
    )
    .await;
    (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [
            (header::CONTENT_TYPE, r.content_type.to_string()),
            (
                header::HeaderName::from_static("x-correlation-id"),
                correlation_id,
            ),
        ],
        r.body,
    )
        .into_response()
}
