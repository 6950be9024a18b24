//! Dataverse Web API v9.2 emulator: an axum server that behaves like Microsoft Dataverse (and
//! the Entra ID token endpoint) for what crm-sync uses, as Microsoft documents it, including
//! what the real service rejects. Tests start it on 127.0.0.1 port 0 with [`Emulator::start`].
//!
//! Module map: `config` (knobs), `auth` (tokens), `schema` (tables and columns), `state` (rows
//! and write rules), `keys` (key parsing), `odata` (query options), `api` (one request),
//! `batch` ($batch), `bulk` (…Multiple messages), `metadata`, `limits` (service protection),
//! `faults` (injected failures), `routes` (HTTP).

mod api;
mod auth;
mod batch;
mod bulk;
pub mod config;
pub mod error;
mod faults;
mod keys;
mod limits;
mod metadata;
mod odata;
mod routes;
mod schema;
pub mod security;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{
    AttributeChange, ClientCertificate, EmulatorConfig, Faults, KeyStatus, Limits, TableSetting,
    TableSettings, default_privileges,
};
pub use error::ApiError;

use faults::{KillSwitch, KillableListener, Rng};
use routes::{Shared, lock};

/// Counters of what the emulator has seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// API requests received (a `$batch` is one), including rejected ones.
    pub requests: u64,
    /// Write operations performed (each batch part and bulk target counts).
    pub operations: u64,
    /// Responses with status 429.
    pub throttled: u64,
    /// Connections closed without a response.
    pub dropped: u64,
    /// Responses held back by the `slow_rate` fault.
    pub slowed: u64,
    /// Responses by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Highest number of API requests in flight at once.
    pub max_concurrency: u32,
}

/// A running emulator.
pub struct Emulator {
    shared: Arc<Shared>,
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Emulator {
    /// Binds 127.0.0.1 on an ephemeral port and serves until [`Emulator::shutdown`].
    pub async fn start(cfg: EmulatorConfig) -> std::io::Result<Emulator> {
        Self::start_on(cfg, 0).await
    }

    /// Like [`Emulator::start`] on a given port (0 = ephemeral).
    pub async fn start_on(cfg: EmulatorConfig, port: u16) -> std::io::Result<Emulator> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(routes::shared(cfg, format!("http://127.0.0.1:{port}")));
        let app =
            routes::router(shared.clone()).into_make_service_with_connect_info::<KillSwitch>();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let server =
                axum::serve(KillableListener(listener), app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
            if let Err(e) = server.await {
                tracing::warn!("dataverse emulator stopped: {e}");
            }
        });
        Ok(Emulator {
            shared,
            port,
            stop: Some(stop),
            task,
        })
    }

    /// The security roles assigned to the application user, by name, each with its privileges
    /// (`prvReadAccount` → depth), to look at what `crm-sync connect dataverse` provisioned.
    pub fn app_user_roles(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let sec = routes::lock(&self.shared.security);
        sec.app_roles
            .iter()
            .filter_map(|id| sec.roles.get(id))
            .map(|r| (r.name.clone(), r.privileges.clone()))
            .collect()
    }

    /// Names of every security role created through the API.
    pub fn role_names(&self) -> Vec<String> {
        routes::lock(&self.shared.security)
            .roles
            .values()
            .map(|r| r.name.clone())
            .collect()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn api_url(&self) -> String {
        format!("{}/api/data/v9.2/", self.base_url())
    }

    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.base_url(),
            self.shared.cfg.tenant
        )
    }

    /// Stored rows of `account` or `contact` (logical or set name), lookups as `_x_value`.
    pub fn rows(&self, table: &str) -> Vec<Map<String, Value>> {
        schema::Table::from_logical(table)
            .or_else(|| schema::Table::from_set(table))
            .map(|t| lock(&self.shared.store).rows(t))
            .unwrap_or_default()
    }

    /// Invalidates every issued token (the next API call gets 401).
    pub fn expire_tokens(&self) {
        lock(&self.shared.tokens).expire_all();
    }

    pub fn set_faults(&self, f: Faults) {
        let rng = Rng::new(f.seed);
        *lock(&self.shared.faults) = (f, rng);
    }

    pub fn set_limits(&self, l: Limits) {
        *lock(&self.shared.limits) = l;
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Stops serving; open keep-alive connections are closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Graceful shutdown waits for in-flight requests; idle connections end at once.
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}
