//! Events queued lately, so a CRM's retry of a notification that was already queued is answered
//! at once instead of being queued again. CRMs retry on timeouts even when the first delivery
//! succeeded (HubSpot up to 10 times, Salesforce Outbound Messages until acknowledged), and each
//! duplicate would cost an upsert or a CRM fetch.
//!
//! The memory is per process (one warm Lambda container, or `crm-sync serve`) and bounded: a
//! retry that reaches another container, or comes after the window, is queued again, which is
//! harmless because every downstream step is idempotent. Events are remembered only after the
//! queue accepted them, so a request that failed is never mistaken for a duplicate.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RecentEvents {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seen: HashMap<String, Instant>,
    /// Insertion order, for expiry and for the capacity bound.
    order: VecDeque<(Instant, String)>,
}

impl RecentEvents {
    /// `ttl`: how long an event is remembered; `capacity`: at most this many events.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        RecentEvents {
            ttl,
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether every one of `keys` (at least one) was queued for `source` within the window.
    pub fn all_seen(&self, source: &str, keys: &[String], now: Instant) -> bool {
        if keys.is_empty() {
            return false;
        }
        let mut inner = self.lock();
        inner.expire(now, self.ttl);
        keys.iter()
            .all(|k| inner.seen.contains_key(&scoped(source, k)))
    }

    /// Records that `keys` were queued for `source` at `now`.
    pub fn remember(&self, source: &str, keys: &[String], now: Instant) {
        let mut inner = self.lock();
        inner.expire(now, self.ttl);
        for k in keys {
            let k = scoped(source, k);
            if inner.seen.insert(k.clone(), now).is_none() {
                inner.order.push_back((now, k));
            }
        }
        while inner.order.len() > self.capacity {
            if let Some((_, k)) = inner.order.pop_front() {
                inner.seen.remove(&k);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map: keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for RecentEvents {
    /// Five minutes (HubSpot's and Zendesk's signature windows: a later retry is refused
    /// anyway) and 100,000 events (a few MiB at most).
    fn default() -> Self {
        RecentEvents::new(Duration::from_secs(300), 100_000)
    }
}

impl Inner {
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < ttl {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.seen.remove(&k);
            }
        }
    }
}

fn scoped(source: &str, key: &str) -> String {
    format!("{source}\u{1f}{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn remembers_within_the_window_per_source() {
        let r = RecentEvents::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        assert!(!r.all_seen("a", &keys(&["1"]), t0));
        r.remember("a", &keys(&["1", "2"]), t0);
        assert!(r.all_seen("a", &keys(&["1", "2"]), t0 + Duration::from_secs(9)));
        assert!(!r.all_seen("a", &keys(&["1", "3"]), t0), "one new event");
        assert!(!r.all_seen("b", &keys(&["1"]), t0), "another source");
        assert!(!r.all_seen("a", &[], t0), "no keys, no duplicate");
        assert!(!r.all_seen("a", &keys(&["1"]), t0 + Duration::from_secs(10)));
        assert!(r.is_empty(), "expired entries are dropped");
    }

    #[test]
    fn capacity_drops_the_oldest() {
        let r = RecentEvents::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        r.remember("a", &keys(&["1"]), t0);
        r.remember("a", &keys(&["2", "3"]), t0);
        assert_eq!(r.len(), 2);
        assert!(!r.all_seen("a", &keys(&["1"]), t0));
        assert!(r.all_seen("a", &keys(&["2", "3"]), t0));
    }
}
