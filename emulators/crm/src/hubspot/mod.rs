//! HubSpot CRM emulator for companies and contacts: private app bearer tokens, the v3 object
//! list / read / search / batch read endpoints with HubSpot's paging, limits and error bodies,
//! archived objects, the ten-second rate limit, and webhooks signed like HubSpot's, as
//! HubSpot's developer documentation describes them (each module cites its pages, and says
//! where a behaviour could not be confirmed). Tests start it on 127.0.0.1 port 0 with
//! [`HubSpotEmulator::start`].
//!
//! Module map: `config` (knobs), `store` (objects, mutations, generation), `search` (the search
//! request), `routes` (HTTP, auth, rate limit, errors), `webhooks` (events, signing, delivery).

pub mod config;
mod routes;
mod search;
mod store;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::net::TcpListener;

pub use config::HubSpotConfig;
pub use routes::Stats;
pub use store::{HubSpotError, ObjectType};
pub use webhooks::{WebhookDelivery, sign_v1, sign_v3};

use crate::server::Server;
use routes::{Shared, lock};
use store::{Event, Store};

/// A running HubSpot emulator.
pub struct HubSpotEmulator {
    shared: Arc<Shared>,
    server: Server,
    sender: tokio::task::JoinHandle<()>,
}

impl HubSpotEmulator {
    /// Generates the portal, binds 127.0.0.1 on an ephemeral port and serves until
    /// [`HubSpotEmulator::shutdown`].
    pub async fn start(cfg: HubSpotConfig) -> std::io::Result<HubSpotEmulator> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let mut store = Store::new(cfg.seed);
        store::populate(&mut store, &cfg);
        let shared = Arc::new(Shared {
            rate_limit: std::sync::Mutex::new(cfg.rate_limit_per_window),
            hooks: webhooks::Hooks::new(&cfg),
            cfg,
            base_url: format!("http://127.0.0.1:{port}"),
            store: std::sync::Mutex::new(store),
            stats: Default::default(),
            window: std::sync::Mutex::new((Instant::now(), 0)),
            cursor_epoch: AtomicU64::new(1),
            link_base: std::sync::Mutex::new(None),
        });
        let app = routes::router(shared.clone());
        let server = Server::spawn(listener, app, "hubspot");
        // Webhook sender: wakes on a mutation, lets the batch fill for a moment, delivers.
        let sh = shared.clone();
        let sender = tokio::spawn(async move {
            loop {
                sh.hooks.notify.notified().await;
                tokio::time::sleep(sh.cfg.webhook_batch_delay).await;
                sh.hooks.deliver_pending(&sh.cfg).await;
            }
        });
        Ok(HubSpotEmulator {
            shared,
            server,
            sender,
        })
    }

    /// `http://127.0.0.1:PORT`, the stand-in for `https://api.hubapi.com`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn config(&self) -> &HubSpotConfig {
        &self.shared.cfg
    }

    fn queue(&self, events: Vec<Event>) {
        self.shared.hooks.queue(&self.shared.cfg, events);
    }

    /// Creates an object now (properties are strings; `associatedcompanyid` on a contact must
    /// name an active company); returns its id. Subscribers get `{type}.creation`.
    pub fn create(
        &self,
        t: ObjectType,
        properties: Map<String, Value>,
    ) -> Result<String, HubSpotError> {
        let (id, events) = lock(&self.shared.store).create(t, &properties)?;
        self.queue(events);
        Ok(id.to_string())
    }

    /// Changes properties of an active object (an empty string or null clears one);
    /// `updatedAt` becomes now. Subscribers get one `{type}.propertyChange` per changed
    /// property.
    pub fn update(
        &self,
        t: ObjectType,
        id: &str,
        properties: Map<String, Value>,
    ) -> Result<(), HubSpotError> {
        let events = lock(&self.shared.store).update(t, id, &properties)?;
        self.queue(events);
        Ok(())
    }

    /// Archives (HubSpot's delete) an active object; false when there was none. Subscribers
    /// get `{type}.deletion`.
    pub fn archive(&self, t: ObjectType, id: &str) -> bool {
        let events = lock(&self.shared.store).archive(t, id);
        let found = events.is_some();
        self.queue(events.unwrap_or_default());
        found
    }

    /// Merges `merged` into `primary`; `merged` leaves the listing (archived), contacts of a
    /// merged company move to the primary. Subscribers get `{type}.merge`.
    pub fn merge(&self, t: ObjectType, primary: &str, merged: &str) -> Result<(), HubSpotError> {
        let events = lock(&self.shared.store).merge(t, primary, merged)?;
        self.queue(events);
        Ok(())
    }

    /// An object as the API shows it, with every property it has (archived ones too).
    pub fn record(&self, t: ObjectType, id: &str) -> Option<Value> {
        let store = lock(&self.shared.store);
        let o = store.get(t, id)?;
        let all: Vec<String> = o
            .props
            .keys()
            .cloned()
            .chain(t.default_properties().iter().map(|s| s.to_string()))
            .collect();
        Some(routes::render(&store, o, t, Some(&all), &[t.other()]))
    }

    /// Active objects of a type.
    pub fn count(&self, t: ObjectType) -> usize {
        lock(&self.shared.store).active(t).count()
    }

    /// Ids of active objects, in id order.
    pub fn ids(&self, t: ObjectType) -> Vec<String> {
        lock(&self.shared.store)
            .active(t)
            .map(|o| o.id.to_string())
            .collect()
    }

    /// Ids of archived objects, in id order.
    pub fn archived_ids(&self, t: ObjectType) -> Vec<String> {
        lock(&self.shared.store)
            .archived(t)
            .map(|o| o.id.to_string())
            .collect()
    }

    /// Replaces the rate limit rule (`None`: unlimited); the current window restarts.
    pub fn set_rate_limit(&self, rule: Option<(u32, Duration)>) {
        *lock(&self.shared.rate_limit) = rule;
        *lock(&self.shared.window) = (Instant::now(), 0);
    }

    /// Every list cursor handed out so far stops working (400 on use), as a cursor that
    /// expired or was lost would.
    pub fn invalidate_cursors(&self) {
        self.shared.cursor_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Writes `paging.next.link` on this origin instead of the emulator's (`None`: back to
    /// normal), to test that clients refuse to follow links to other hosts.
    pub fn set_next_link_base(&self, base: Option<&str>) {
        *lock(&self.shared.link_base) = base.map(|b| b.trim_end_matches('/').to_string());
    }

    /// From now on every mutation posts its events to `target_url`, signed with
    /// `client_secret`.
    pub fn subscribe(&self, target_url: &str, client_secret: &str) {
        self.shared.hooks.subscribe(target_url, client_secret);
    }

    /// Stops sending webhooks; pending events are dropped.
    pub fn unsubscribe(&self) {
        self.shared.hooks.unsubscribe();
    }

    /// Sends every pending event now (with retries) and waits until none is pending or in
    /// flight.
    pub async fn flush_webhooks(&self) {
        self.shared.hooks.deliver_pending(&self.shared.cfg).await;
    }

    /// Every webhook POST so far, in order.
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.shared.hooks.deliveries()
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Stops serving and sending; open keep-alive connections are closed.
    pub async fn shutdown(self) {
        self.sender.abort();
        self.server.shutdown().await;
    }
}
