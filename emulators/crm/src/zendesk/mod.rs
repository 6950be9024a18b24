//! Zendesk Support API emulator for organizations (accounts) and users (contacts are the users
//! with role `end-user`): API token and OAuth auth, cursor and offset pagination of the lists,
//! `show_many`, the incremental exports (time-based for organizations and users, cursor-based
//! for users) with their one-minute exclusion and 10-a-minute limit, the deleted users list,
//! account rate limits and Zendesk's error bodies. `routes` cites the documentation each
//! behaviour follows and says what could not be confirmed. Tests start it on 127.0.0.1 port 0
//! with [`ZendeskEmulator::start`] and change data while a client walks it.
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

pub use config::ZendeskConfig;
pub use routes::Stats;
pub use store::StoreError;

use crate::server::Server;
use routes::{Shared, Window, lock};
use store::{Kind, Store};

/// A running Zendesk Support emulator.
pub struct ZendeskEmulator {
    shared: Arc<Shared>,
    server: Server,
}

fn kind(name: &str) -> Result<Kind, StoreError> {
    Kind::parse(name).ok_or_else(|| StoreError::UnknownKind(name.to_string()))
}

impl ZendeskEmulator {
    /// Generates the account, binds 127.0.0.1 on an ephemeral port and serves until
    /// [`ZendeskEmulator::shutdown`].
    pub async fn start(cfg: ZendeskConfig) -> std::io::Result<ZendeskEmulator> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let base_url = format!("http://127.0.0.1:{port}");
        let mut store = Store::new(cfg.seed, &base_url);
        store::populate(&mut store, &cfg);
        let shared = Arc::new(Shared {
            account_limit: std::sync::Mutex::new(Window::new(cfg.rate_limit)),
            export_limit: std::sync::Mutex::new(Window::new(cfg.export_rate_limit)),
            cfg,
            base_url,
            store: std::sync::Mutex::new(store),
            stats: Default::default(),
            cursor_generation: AtomicU64::new(1),
            link_base: std::sync::Mutex::new(None),
        });
        let app = routes::router(shared.clone());
        let server = Server::spawn(listener, app, "zendesk");
        Ok(ZendeskEmulator { shared, server })
    }

    /// The account URL, e.g. `http://127.0.0.1:PORT` (the API is under `/api/v2`).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn config(&self) -> &ZendeskConfig {
        &self.shared.cfg
    }

    /// Creates an organization or user ("organizations" / "users") now; returns its id. Fields
    /// are the API's (`name`, `email`, `organization_id`, `user_fields`, ...); `id`,
    /// `created_at`, `updated_at`, `url` and `active` are Zendesk's own.
    pub fn put(&self, kind_name: &str, fields: Map<String, Value>) -> Result<u64, StoreError> {
        lock(&self.shared.store).create(kind(kind_name)?, fields)
    }

    /// Changes fields of a live record; its `updated_at` becomes now.
    pub fn update(
        &self,
        kind_name: &str,
        id: u64,
        fields: Map<String, Value>,
    ) -> Result<(), StoreError> {
        lock(&self.shared.store).update(kind(kind_name)?, id, fields)
    }

    /// Deletes a record: users are soft-deleted (listed by `deleted_users`, `active: false`),
    /// organizations removed and their users detached. False when there was no live record.
    pub fn delete(&self, kind_name: &str, id: u64) -> bool {
        kind(kind_name).is_ok_and(|k| lock(&self.shared.store).delete(k, id))
    }

    /// A record as the API shows it, live or soft-deleted.
    pub fn record(&self, kind_name: &str, id: u64) -> Option<Value> {
        let k = kind(kind_name).ok()?;
        lock(&self.shared.store)
            .get(k, id)
            .map(|r| Value::Object(r.fields.clone()))
    }

    /// Live records of a kind, in id order.
    pub fn records(&self, kind_name: &str) -> Vec<Value> {
        let Ok(k) = kind(kind_name) else {
            return Vec::new();
        };
        lock(&self.shared.store)
            .live(k)
            .map(|(_, r)| Value::Object(r.fields.clone()))
            .collect()
    }

    /// Ids of the live records of a kind, ascending.
    pub fn ids(&self, kind_name: &str) -> Vec<u64> {
        let Ok(k) = kind(kind_name) else {
            return Vec::new();
        };
        lock(&self.shared.store).live(k).map(|(id, _)| id).collect()
    }

    /// Live records of a kind.
    pub fn count(&self, kind_name: &str) -> usize {
        kind(kind_name).map_or(0, |k| lock(&self.shared.store).live(k).count())
    }

    /// Replaces the account-wide rate limit (`None`: unlimited); the window restarts.
    pub fn set_rate_limit(&self, rule: Option<(u32, Duration)>) {
        lock(&self.shared.account_limit).reset(rule);
    }

    /// Replaces the incremental exports' own limit (documented: 10 a minute).
    pub fn set_export_rate_limit(&self, rule: Option<(u32, Duration)>) {
        lock(&self.shared.export_limit).reset(rule);
    }

    /// Every cursor handed out so far stops working (400 `InvalidPaginationParameter`): what a
    /// client sees when a cursor outlives the server's state.
    pub fn invalidate_cursors(&self) {
        self.shared
            .cursor_generation
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Generated links (`links.next`, `after_url`, `next_page`) start with this base instead of
    /// the emulator's own URL (`None` restores it): a page that points elsewhere.
    pub fn set_link_base(&self, base: Option<&str>) {
        *lock(&self.shared.link_base) = base.map(str::to_string);
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Stops serving; open keep-alive connections are closed.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
