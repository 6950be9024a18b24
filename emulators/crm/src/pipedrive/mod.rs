//! Pipedrive API v2 emulator for organizations (accounts) and persons (contacts): API token and
//! OAuth auth, cursor paging with `limit`, `updated_since`/`updated_until`, `sort_by` /
//! `sort_direction`, the `ids` filter, the per-token burst rate limit with its `x-ratelimit-*`
//! headers, soft deletes and Pipedrive's `{success: false, error}` bodies. `routes` cites the
//! documentation each behaviour follows and says what could not be confirmed. Tests start it on
//! 127.0.0.1 port 0 with [`PipedriveEmulator::start`] and change data while a client walks it.
//!
//! Module map: `config` (knobs), `store` (records, generation, deletes), `routes` (HTTP).

pub mod config;
mod routes;
mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::net::TcpListener;

pub use config::PipedriveConfig;
pub use routes::Stats;
pub use store::StoreError;

use crate::server::Server;
use routes::{Shared, Window, lock};
use store::{Kind, Store};

/// A running Pipedrive emulator.
pub struct PipedriveEmulator {
    shared: Arc<Shared>,
    server: Server,
}

fn kind(name: &str) -> Result<Kind, StoreError> {
    Kind::parse(name).ok_or_else(|| StoreError::UnknownKind(name.to_string()))
}

impl PipedriveEmulator {
    /// Generates the company, binds 127.0.0.1 on an ephemeral port and serves until
    /// [`PipedriveEmulator::shutdown`].
    pub async fn start(cfg: PipedriveConfig) -> std::io::Result<PipedriveEmulator> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let mut store = Store::new(cfg.contact_sync);
        store::populate(&mut store, &cfg);
        let shared = Arc::new(Shared {
            limit: std::sync::Mutex::new(Window::new(cfg.rate_limit)),
            cfg,
            base_url: format!("http://127.0.0.1:{port}"),
            store: std::sync::Mutex::new(store),
            stats: Default::default(),
            cursor_generation: AtomicU64::new(1),
        });
        let app = routes::router(shared.clone());
        let server = Server::spawn(listener, app, "pipedrive");
        Ok(PipedriveEmulator { shared, server })
    }

    /// The company URL, e.g. `http://127.0.0.1:PORT` (the API is under `/api/v2`).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn config(&self) -> &PipedriveConfig {
        &self.shared.cfg
    }

    /// Creates an organization or person ("organizations" / "persons") now; returns its id.
    /// Fields are v2's (`name`, `first_name`, `emails`, `org_id`, ...); `id`, `add_time`,
    /// `update_time` and `is_deleted` are Pipedrive's own.
    pub fn put(&self, kind_name: &str, fields: Map<String, Value>) -> Result<u64, StoreError> {
        lock(&self.shared.store).create(kind(kind_name)?, fields)
    }

    /// Changes fields of a live record; its `update_time` becomes now.
    pub fn update(
        &self,
        kind_name: &str,
        id: u64,
        fields: Map<String, Value>,
    ) -> Result<(), StoreError> {
        lock(&self.shared.store).update(kind(kind_name)?, id, fields)
    }

    /// Marks a record deleted (`is_deleted: true`, no longer listed); false when there was no
    /// live record.
    pub fn delete(&self, kind_name: &str, id: u64) -> bool {
        kind(kind_name).is_ok_and(|k| lock(&self.shared.store).delete(k, id))
    }

    /// A record as v2 shows it, deleted or not.
    pub fn record(&self, kind_name: &str, id: u64) -> Option<Value> {
        let k = kind(kind_name).ok()?;
        lock(&self.shared.store)
            .get(k, id)
            .map(|r| Value::Object(r.fields.clone()))
    }

    /// Records not deleted, in id order.
    pub fn records(&self, kind_name: &str) -> Vec<Value> {
        let Ok(k) = kind(kind_name) else {
            return Vec::new();
        };
        lock(&self.shared.store)
            .live(k)
            .map(|(_, r)| Value::Object(r.fields.clone()))
            .collect()
    }

    /// Ids of the records not deleted, ascending.
    pub fn ids(&self, kind_name: &str) -> Vec<u64> {
        let Ok(k) = kind(kind_name) else {
            return Vec::new();
        };
        lock(&self.shared.store).live(k).map(|(id, _)| id).collect()
    }

    pub fn count(&self, kind_name: &str) -> usize {
        kind(kind_name).map_or(0, |k| lock(&self.shared.store).live(k).count())
    }

    /// Replaces the per-token rate limit (`None`: unlimited); the window restarts.
    pub fn set_rate_limit(&self, rule: Option<(u32, Duration)>) {
        *lock(&self.shared.limit) = Window::new(rule);
    }

    /// Every cursor handed out so far stops working (400).
    pub fn invalidate_cursors(&self) {
        self.shared
            .cursor_generation
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Stops serving; open keep-alive connections are closed.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
