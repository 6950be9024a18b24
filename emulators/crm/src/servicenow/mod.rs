//! ServiceNow Table API emulator for the CSM tables `customer_account` and `customer_contact`
//! and the deletion audit `sys_audit_delete`: Basic auth or OAuth bearer tokens from
//! `/oauth_token.do`, encoded queries (a subset, `^NQ` included), `sysparm_fields` /
//! `sysparm_limit` / `sysparm_offset`, `Link` and `X-Total-Count` paging headers, reference
//! fields, the documented error body and an inbound rate limit rule, as ServiceNow's "Table API"
//! reference documents them. Tests start it on 127.0.0.1 port 0 with
//! [`ServiceNowEmulator::start`].
//!
//! Module map: `config` (knobs), `store` (tables, records, generation, deletion audit), `query`
//! (encoded queries), `oauth` (token endpoint, tokens), `routes` (HTTP, auth, rate limit,
//! errors).

pub mod config;
mod oauth;
mod query;
mod routes;
mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::net::TcpListener;

pub use config::ServiceNowConfig;
pub use routes::Stats;
pub use store::StoreError;

use crate::notify::ContractNotifier;
use crate::server::Server;
use routes::{Shared, lock};
use store::{Store, Table};

/// A running ServiceNow emulator.
pub struct ServiceNowEmulator {
    shared: Arc<Shared>,
    /// Where changes made through this handle are announced, as the business rules would.
    notifier: std::sync::Mutex<Option<Arc<ContractNotifier>>>,
    server: Server,
}

impl ServiceNowEmulator {
    /// Generates the data, binds 127.0.0.1 on an ephemeral port and serves until
    /// [`ServiceNowEmulator::shutdown`].
    pub async fn start(cfg: ServiceNowConfig) -> std::io::Result<ServiceNowEmulator> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let mut store = Store::new(cfg.seed);
        store::populate(&mut store, &cfg);
        let shared = Arc::new(Shared {
            rate_limit: std::sync::Mutex::new(cfg.rate_limit_per_window),
            cfg,
            base_url: format!("http://127.0.0.1:{port}"),
            store: std::sync::Mutex::new(store),
            stats: Default::default(),
            tokens: Default::default(),
            window: std::sync::Mutex::new((Instant::now(), 0)),
        });
        let app = routes::router(shared.clone());
        let server = Server::spawn(listener, app, "servicenow");
        Ok(ServiceNowEmulator {
            shared,
            notifier: Default::default(),
            server,
        })
    }

    /// The instance URL, e.g. `http://127.0.0.1:PORT` (the Table API is under `/api/now/table`).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn config(&self) -> &ServiceNowConfig {
        &self.shared.cfg
    }

    /// Creates a record in `table` (or changes the one whose `sys_id` is given); returns its
    /// sys_id. Values must be strings; `account` on contacts is the account's sys_id. Only the
    /// CSM tables: `sys_audit_delete` is written by deletes.
    pub fn put(&self, table: &str, fields: Map<String, Value>) -> Result<String, StoreError> {
        let t = Table::parse(table)
            .filter(|t| t.is_csm())
            .ok_or_else(|| StoreError::NotFound(table.to_string()))?;
        let existed = fields
            .get("sys_id")
            .and_then(Value::as_str)
            .is_some_and(|id| self.record(id).is_some());
        let id = lock(&self.shared.store).put(t, fields)?;
        self.announce(t, &id, if existed { "update" } else { "create" });
        Ok(id)
    }

    /// Changes fields of a record; its `sys_updated_on` becomes now.
    pub fn update(&self, sys_id: &str, fields: Map<String, Value>) -> Result<(), StoreError> {
        lock(&self.shared.store).update(sys_id, fields)?;
        if let Some(t) = self.table_of(sys_id) {
            self.announce(t, sys_id, "update");
        }
        Ok(())
    }

    /// Deletes a record (ServiceNow deletes are hard); false when there was none. A CSM record's
    /// deletion is recorded in `sys_audit_delete` unless `audit_deletes` is off.
    pub fn delete(&self, sys_id: &str) -> bool {
        self.delete_at(sys_id, chrono::Utc::now())
    }

    /// [`ServiceNowEmulator::delete`], with the `sys_audit_delete` row dated `at` (for
    /// deletions that happened before a test's time window).
    pub fn delete_at(&self, sys_id: &str, at: chrono::DateTime<chrono::Utc>) -> bool {
        let table = self.table_of(sys_id);
        let audit = self.shared.cfg.audit_deletes.then_some(at);
        let deleted = lock(&self.shared.store).delete(sys_id, audit);
        if let (true, Some(t)) = (deleted, table) {
            self.announce(t, sys_id, "delete");
        }
        deleted
    }

    /// Ends every OAuth access token now, as if its lifespan had run out: the next Table API
    /// call with one gets 401.
    pub fn expire_tokens(&self) {
        lock(&self.shared.tokens).expire_all();
    }

    /// From now on every change made through this handle is posted to `url` as the business
    /// rules in `integrations/servicenow` post it, signed with `secret`.
    pub fn notify_to(&self, url: &str, secret: &str) -> Arc<ContractNotifier> {
        let n = Arc::new(ContractNotifier::start(url.to_string(), secret.to_string()));
        *lock(&self.notifier) = Some(n.clone());
        n
    }

    fn table_of(&self, sys_id: &str) -> Option<Table> {
        lock(&self.shared.store).get(sys_id).map(|r| r.table)
    }

    /// Posts the change if someone subscribed: the record's fields as `getValue` strings and its
    /// `sys_updated_on`; a delete carries no record and the time now.
    fn announce(&self, table: Table, sys_id: &str, operation: &str) {
        let Some(n) = lock(&self.notifier).clone() else {
            return;
        };
        let entity = match table {
            Table::Account => "account",
            Table::Contact => "contact",
            Table::AuditDelete => return,
        };
        if operation == "delete" {
            n.send(entity, operation, sys_id, chrono::Utc::now(), None);
            return;
        }
        let Some(fields) = self.record(sys_id) else {
            return;
        };
        let stamp = fields
            .get("sys_updated_on")
            .and_then(Value::as_str)
            .and_then(|s| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok())
            .map(|t| t.and_utc())
            .unwrap_or_else(chrono::Utc::now);
        n.send(
            entity,
            operation,
            sys_id,
            stamp,
            Some(Value::Object(fields)),
        );
    }

    /// Every field of a record, raw (references as plain sys_ids).
    pub fn record(&self, sys_id: &str) -> Option<Map<String, Value>> {
        lock(&self.shared.store)
            .get(sys_id)
            .map(|r| r.fields.clone())
    }

    /// Records in `table` ("customer_account", "customer_contact" or "sys_audit_delete"); 0 for
    /// other names.
    pub fn count(&self, table: &str) -> usize {
        Table::parse(table).map_or(0, |t| lock(&self.shared.store).count(t))
    }

    /// sys_ids of `table`, in sys_id order.
    pub fn ids(&self, table: &str) -> Vec<String> {
        let Some(t) = Table::parse(table) else {
            return Vec::new();
        };
        lock(&self.shared.store)
            .rows(t)
            .map(|r| r.get("sys_id").to_string())
            .collect()
    }

    /// Replaces the rate limit rule (`None`: unlimited); the current window restarts.
    pub fn set_rate_limit(&self, rule: Option<(u32, Duration)>) {
        *lock(&self.shared.rate_limit) = rule;
        *lock(&self.shared.window) = (Instant::now(), 0);
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Stops serving; open keep-alive connections are closed.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
