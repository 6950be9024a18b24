//! Salesforce REST API emulator: OAuth 2.0 client credentials, SOQL query / queryAll with
//! server-side cursors (`nextRecordsUrl`), getUpdated / getDeleted, sObject Collections
//! retrieve, the daily API allocation, and a generated org, behaving as Salesforce's REST API
//! Developer Guide documents them. Tests start it on 127.0.0.1 port 0 with
//! [`SalesforceEmulator::start`].
//!
//! Module map: `config` (knobs), `schema` (objects, fields, ids, datetimes), `store` (records),
//! `generate` (seeded data), `soql` (parser), `query` (evaluation and record shape), `auth`
//! (token endpoint), `error` (error bodies), `routes` (HTTP), `setup` (users, permission sets,
//! connected apps: what a session may read is enforced on every query, describe and retrieve),
//! `metadata` (the Metadata API's SOAP calls for ConnectedApp).

mod auth;
pub mod config;
mod error;
pub(crate) mod generate;
mod metadata;
mod query;
mod routes;
mod schema;
mod setup;
mod soql;
mod store;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde_json::{Map, Value};
use tokio::net::TcpListener;

pub use config::SalesforceConfig;
pub use routes::{QueryFaults, Stats};
pub use store::StoreError;

use crate::notify::ContractNotifier;
use crate::server::Server;
use routes::{Shared, lock};
use schema::Object;
use store::{Store, object_of};

/// The API version the emulator advertises in the URLs it builds for callers.
pub const API_VERSION: &str = "v62.0";

/// A running Salesforce emulator.
pub struct SalesforceEmulator {
    shared: Arc<Shared>,
    /// Where changes made through this handle are announced, as the Apex notifier would.
    notifier: std::sync::Mutex<Option<Arc<ContractNotifier>>>,
    port: u16,
    server: Server,
}

impl SalesforceEmulator {
    /// Generates the org, binds 127.0.0.1 on an ephemeral port and serves until
    /// [`SalesforceEmulator::shutdown`].
    pub async fn start(cfg: SalesforceConfig) -> std::io::Result<SalesforceEmulator> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let mut store = Store::new("Dn", cfg.seed % 1_000_000);
        generate::populate(&mut store, &cfg);
        let limit = cfg.daily_limit;
        let (cfg_admin_username, cfg_admin_token, cfg_username) = (
            cfg.admin_username.clone(),
            cfg.admin_token.clone(),
            cfg.username.clone(),
        );
        let shared = Arc::new(Shared {
            cfg,
            base_url: format!("http://127.0.0.1:{port}"),
            store: std::sync::Mutex::new(store),
            tokens: Default::default(),
            cursors: Default::default(),
            usage: std::sync::Mutex::new((0, limit)),
            stats: Default::default(),
            next_url_origin: Default::default(),
            locators: AtomicU64::new(1),
            query_faults: Default::default(),
            setup: std::sync::Mutex::new(setup::Setup::new(
                &cfg_admin_username,
                &cfg_admin_token,
                &cfg_username,
            )),
        });
        let app = routes::router(shared.clone());
        let server = Server::spawn(listener, app, "salesforce");
        Ok(SalesforceEmulator {
            shared,
            notifier: Default::default(),
            port,
            server,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The token endpoint (`{base}/services/oauth2/token`).
    pub fn token_url(&self) -> String {
        format!("{}/services/oauth2/token", self.base_url())
    }

    /// The `instance_url` the token endpoint returns.
    pub fn instance_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn config(&self) -> &SalesforceConfig {
        &self.shared.cfg
    }

    /// Creates an Account (or replaces the fields of the one whose `Id` is given); returns its id.
    pub fn put_account(&self, fields: Map<String, Value>) -> Result<String, StoreError> {
        self.put(Object::Account, fields)
    }

    /// Creates a Contact (or replaces the fields of the one whose `Id` is given); returns its id.
    pub fn put_contact(&self, fields: Map<String, Value>) -> Result<String, StoreError> {
        self.put(Object::Contact, fields)
    }

    fn put(&self, object: Object, fields: Map<String, Value>) -> Result<String, StoreError> {
        let existed = fields
            .get("Id")
            .and_then(Value::as_str)
            .is_some_and(|id| self.record(id).is_some());
        let id = lock(&self.shared.store).put(object, fields)?;
        self.announce(&id, if existed { "update" } else { "create" });
        Ok(id)
    }

    /// From now on every change made through this handle is posted to `url` as the Apex
    /// notifier in `integrations/salesforce` posts it, signed with `secret`.
    pub fn notify_to(&self, url: &str, secret: &str) -> Arc<ContractNotifier> {
        let n = Arc::new(ContractNotifier::start(url.to_string(), secret.to_string()));
        *lock(&self.notifier) = Some(n.clone());
        n
    }

    /// As [`SalesforceEmulator::notify_to`], with notifications repeated and reordered.
    pub fn notify_to_disordered(
        &self,
        url: &str,
        secret: &str,
        disorder: crate::notify::Disorder,
    ) -> Arc<ContractNotifier> {
        let n = Arc::new(ContractNotifier::start_disordered(
            url.to_string(),
            secret.to_string(),
            disorder,
        ));
        *lock(&self.notifier) = Some(n.clone());
        n
    }

    /// Posts the record's change if someone subscribed: the record as Apex serialises an SObject
    /// (with `attributes`), its SystemModstamp; a delete carries no record and the time now.
    fn announce(&self, id: &str, operation: &str) {
        let Some(n) = lock(&self.notifier).clone() else {
            return;
        };
        let Some(object) = object_of(id) else {
            return;
        };
        let entity = match object {
            Object::Account => "account",
            Object::Contact => "contact",
        };
        if operation == "delete" {
            // The Apex notifier sends `Datetime.now()` for a delete. Salesforce's stamps never
            // run ahead of its clock, but this store's do during a burst (each change is at
            // least 1 ms after the last), so the delete's own stamp stands for "now": never
            // before the record's last change, as on the real org.
            let at = self
                .record(id)
                .and_then(|r| {
                    r.get("SystemModstamp")
                        .and_then(Value::as_str)
                        .and_then(schema::parse_stored_datetime)
                })
                .unwrap_or_else(chrono::Utc::now)
                .max(chrono::Utc::now());
            n.send(entity, operation, id, at, None);
            return;
        }
        let Some(mut fields) = self.record(id) else {
            return;
        };
        let stamp = fields
            .get("SystemModstamp")
            .and_then(Value::as_str)
            .and_then(schema::parse_stored_datetime)
            .unwrap_or_else(chrono::Utc::now);
        fields.insert(
            "attributes".into(),
            serde_json::json!({
                "type": object.name(),
                "url": format!("/services/data/v62.0/sobjects/{}/{id}", object.name()),
            }),
        );
        n.send(entity, operation, id, stamp, Some(Value::Object(fields)));
    }

    /// Changes fields of a live record; its SystemModstamp moves to now.
    pub fn update(&self, id: &str, fields: Map<String, Value>) -> Result<(), StoreError> {
        lock(&self.shared.store).update(id, fields)?;
        self.announce(id, "update");
        Ok(())
    }

    /// Soft-deletes a record; false when there was no live record with that id.
    pub fn delete(&self, id: &str) -> bool {
        let deleted = lock(&self.shared.store).delete(id);
        if deleted {
            self.announce(id, "delete");
        }
        deleted
    }

    /// Every field of a record (deleted ones too), without `attributes`.
    pub fn record(&self, id: &str) -> Option<Map<String, Value>> {
        let object = object_of(id)?;
        lock(&self.shared.store)
            .get(object, id)
            .map(|r| r.fields.clone())
    }

    /// Ids of live records of `object` ("Account" or "Contact"), in id order.
    pub fn ids(&self, object: &str) -> Vec<String> {
        let Some(object) = Object::parse(object) else {
            return Vec::new();
        };
        lock(&self.shared.store)
            .rows(object)
            .filter(|r| !r.is_deleted())
            .map(|r| r.id().to_string())
            .collect()
    }

    /// Live records of an object.
    pub fn count(&self, object: &str) -> usize {
        Object::parse(object).map_or(0, |o| lock(&self.shared.store).live_count(o))
    }

    /// Every access token and every query cursor becomes invalid (a session timeout or an
    /// admin revoking the integration user's sessions; locators die with their session).
    pub fn expire_sessions(&self) {
        lock(&self.shared.tokens).expire_all();
        lock(&self.shared.setup).expire_app_sessions();
        lock(&self.shared.cursors).clear();
    }

    /// Every query cursor becomes invalid while sessions stay valid (cursor lifetime ended).
    pub fn expire_cursors(&self) {
        lock(&self.shared.cursors).clear();
    }

    /// Sets the daily API allocation; requests beyond it get 403 REQUEST_LIMIT_EXCEEDED.
    pub fn set_daily_limit(&self, limit: u64) {
        lock(&self.shared.usage).1 = limit;
    }

    /// Sets the API calls used so far today.
    pub fn set_api_usage(&self, used: u64) {
        lock(&self.shared.usage).0 = used;
    }

    /// Makes every `nextRecordsUrl` absolute on `origin` (e.g. `https://evil.example`), or
    /// back to a path with `None`.
    pub fn set_next_records_origin(&self, origin: Option<String>) {
        *lock(&self.shared.next_url_origin) = origin;
    }

    /// Injects query failures from now on (see [`QueryFaults`]).
    pub fn set_query_faults(&self, f: QueryFaults) {
        let seed = f.seed;
        *lock(&self.shared.query_faults) = (f, seed);
    }

    /// The administrator's access token (as if the admin had logged in), for provisioning.
    pub fn admin_token(&self) -> String {
        self.shared.cfg.admin_token.clone()
    }

    /// Every record of a setup object (`PermissionSet`, `FieldPermissions`, `User`, ...), to
    /// look at what was provisioned.
    pub fn setup_records(&self, object: &str) -> Vec<Map<String, Value>> {
        lock(&self.shared.setup).all(object)
    }

    /// Full names of the connected apps created through the Metadata API.
    pub fn connected_apps(&self) -> Vec<String> {
        lock(&self.shared.setup).apps.keys().cloned().collect()
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Stops serving; open keep-alive connections are closed.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
