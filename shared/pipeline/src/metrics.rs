//! What the steps did, counted per source and entity, so an operator can see the integration
//! work without reading logs: the functions write the counters out as CloudWatch Embedded Metric
//! Format (one JSON line per source and entity at the end of each invocation; CloudWatch turns
//! them into metrics without any API call, "Specification: Embedded metric format"), and
//! `crm-sync serve` keeps them for its lifetime and answers `GET /metrics` with them.
//!
//! The counters are a port like the queues: every step takes a `&Metrics`, a test can read what
//! one call counted.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

/// One counter. The names are the CloudWatch metric names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Metric {
    /// Changes a webhook notification carried (after decoding, before queueing).
    ChangesReceived,
    /// Changes sent to the upsert queue (webhooks, sync pages, fetches, catch-up deletions).
    ChangesEnqueued,
    /// Id-only notifications turned into fetch jobs on the sync queue.
    FetchesEnqueued,
    /// Records read from a CRM by sync pages and fetches.
    RecordsRead,
    /// Sync pages done.
    SyncPages,
    /// Rows Dataverse created, updated, upserted (without saying which) and deleted.
    Created,
    Updated,
    Upserted,
    Deleted,
    /// Deletes of rows that were already gone.
    AlreadyAbsent,
    /// Changes left for a retry of their message (Dataverse unavailable, throttled).
    Retried,
    /// Changes Dataverse throttled (429).
    Throttled,
    /// The longest Retry-After Dataverse asked for in an invocation, in seconds.
    ThrottleRetryAfter,
    /// Contacts parked because their parent account does not exist yet.
    Parked,
    /// Changes (or messages) sent to a DLQ: they will not succeed without an operator.
    FailedPermanently,
    /// Changes of a redelivered sync page sent to be re-read instead of written.
    Refetched,
    /// Changes skipped because a newer change to the same record was in the batch.
    Superseded,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::ChangesReceived => "ChangesReceived",
            Metric::ChangesEnqueued => "ChangesEnqueued",
            Metric::FetchesEnqueued => "FetchesEnqueued",
            Metric::RecordsRead => "RecordsRead",
            Metric::SyncPages => "SyncPages",
            Metric::Created => "Created",
            Metric::Updated => "Updated",
            Metric::Upserted => "Upserted",
            Metric::Deleted => "Deleted",
            Metric::AlreadyAbsent => "AlreadyAbsent",
            Metric::Retried => "Retried",
            Metric::Throttled => "Throttled",
            Metric::ThrottleRetryAfter => "ThrottleRetryAfter",
            Metric::Parked => "Parked",
            Metric::FailedPermanently => "FailedPermanently",
            Metric::Refetched => "Refetched",
            Metric::Superseded => "Superseded",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Metric::ThrottleRetryAfter => "Seconds",
            _ => "Count",
        }
    }

    /// Whether the value is the largest seen rather than a sum.
    fn is_max(self) -> bool {
        self == Metric::ThrottleRetryAfter
    }
}

/// The source and entity a counter is kept for. The entity is `-` when a change could not be
/// attributed to one (an unreadable message).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Dims {
    pub source: String,
    pub entity: String,
}

impl Dims {
    pub fn new(source: impl Into<String>, entity: impl ToString) -> Self {
        Dims {
            source: source.into(),
            entity: entity.to_string(),
        }
    }
}

/// The most latency samples kept between two drains; beyond it, samples are dropped (the
/// counters stay exact). EMF takes at most 100 values per metric and document.
const MAX_SAMPLES: usize = 10_000;
const EMF_MAX_VALUES: usize = 100;

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub counters: BTreeMap<Dims, BTreeMap<Metric, u64>>,
    /// Dataverse request latencies in microseconds, in the order they were observed.
    pub dataverse_latency_us: Vec<u64>,
}

impl Snapshot {
    /// A counter summed over every source and entity.
    pub fn total(&self, m: Metric) -> u64 {
        self.counters.values().filter_map(|c| c.get(&m)).sum()
    }

    pub fn get(&self, dims: &Dims, m: Metric) -> u64 {
        self.counters
            .get(dims)
            .and_then(|c| c.get(&m))
            .copied()
            .unwrap_or(0)
    }

    /// The view `crm-sync serve` answers `GET /metrics` with: counters per `source/entity`,
    /// latency as count and percentiles.
    pub fn to_json(&self) -> Value {
        let mut counters = Map::new();
        for (d, c) in &self.counters {
            let m: Map<String, Value> = c
                .iter()
                .map(|(k, v)| (k.name().to_string(), Value::from(*v)))
                .collect();
            counters.insert(format!("{}/{}", d.source, d.entity), Value::Object(m));
        }
        let mut sorted = self.dataverse_latency_us.clone();
        sorted.sort_unstable();
        let ms = |us: Option<u64>| us.map(to_ms);
        json!({
            "counters": counters,
            "dataverse_latency_ms": {
                "count": sorted.len(),
                "p50": ms(percentile(&sorted, 50)),
                "p99": ms(percentile(&sorted, 99)),
                "max": ms(sorted.last().copied()),
            },
        })
    }
}

/// Microseconds as milliseconds with three decimals (CloudWatch takes fractional values; a
/// local emulator answers in well under a millisecond).
fn to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted.get(i.min(sorted.len() - 1)).copied()
}

/// The counters. Cheap to update from many tasks; never held across an await.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Snapshot>,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    pub fn add(&self, dims: &Dims, m: Metric, n: u64) {
        if n == 0 {
            return;
        }
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let v = s
            .counters
            .entry(dims.clone())
            .or_default()
            .entry(m)
            .or_insert(0);
        *v = if m.is_max() { (*v).max(n) } else { *v + n };
    }

    pub fn observe_latency(&self, d: Duration) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if s.dataverse_latency_us.len() < MAX_SAMPLES {
            s.dataverse_latency_us.push(d.as_micros() as u64);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The counters since the last drain, reset: what one invocation did.
    pub fn drain(&self) -> Snapshot {
        std::mem::take(&mut *self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The snapshot as EMF documents: one per source and entity (dimensions `Source`, `Entity`),
/// and the Dataverse latencies in documents of at most 100 values (dimension `Function`).
/// `namespace` keeps two stacks' metrics apart.
pub fn emf(s: &Snapshot, namespace: &str, function: &str, timestamp_ms: u64) -> Vec<String> {
    let mut out = Vec::new();
    for (dims, counters) in &s.counters {
        let mut doc = Map::new();
        let defs: Vec<Value> = counters
            .keys()
            .map(|m| json!({"Name": m.name(), "Unit": m.unit()}))
            .collect();
        doc.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": [["Source", "Entity"]],
                    "Metrics": defs,
                }],
            }),
        );
        doc.insert("Source".into(), Value::from(dims.source.as_str()));
        doc.insert("Entity".into(), Value::from(dims.entity.as_str()));
        doc.insert("Function".into(), Value::from(function));
        for (m, v) in counters {
            doc.insert(m.name().into(), Value::from(*v));
        }
        out.push(Value::Object(doc).to_string());
    }
    for chunk in s.dataverse_latency_us.chunks(EMF_MAX_VALUES) {
        let values: Vec<f64> = chunk.iter().copied().map(to_ms).collect();
        out.push(
            json!({
                "_aws": {
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": namespace,
                        "Dimensions": [["Function"]],
                        "Metrics": [{"Name": "DataverseRequestLatency", "Unit": "Milliseconds"}],
                    }],
                },
                "Function": function,
                "DataverseRequestLatency": values,
            })
            .to_string(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_per_dims_and_retry_after_keeps_the_largest() {
        let m = Metrics::new();
        let a = Dims::new("sf", "account");
        let c = Dims::new("sf", "contact");
        m.add(&a, Metric::Created, 2);
        m.add(&a, Metric::Created, 3);
        m.add(&c, Metric::Created, 1);
        m.add(&a, Metric::ThrottleRetryAfter, 7);
        m.add(&a, Metric::ThrottleRetryAfter, 3);
        m.add(&a, Metric::Deleted, 0);
        let s = m.snapshot();
        assert_eq!(s.get(&a, Metric::Created), 5);
        assert_eq!(s.total(Metric::Created), 6);
        assert_eq!(s.get(&a, Metric::ThrottleRetryAfter), 7);
        assert!(!s.counters[&a].contains_key(&Metric::Deleted));
        assert_eq!(m.drain(), s);
        assert_eq!(m.snapshot(), Snapshot::default());
    }

    #[test]
    fn emf_documents_follow_the_specification() {
        let m = Metrics::new();
        m.add(&Dims::new("sf", "contact"), Metric::Created, 4);
        m.add(&Dims::new("sf", "contact"), Metric::ThrottleRetryAfter, 2);
        for i in 0..150 {
            m.observe_latency(Duration::from_millis(i));
        }
        let docs = emf(&m.snapshot(), "CrmSync/test", "upsert", 1_700_000_000_000);
        assert_eq!(
            docs.len(),
            3,
            "one counters document, two latency documents"
        );
        let d: Value = serde_json::from_str(&docs[0]).unwrap();
        let def = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(d["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(def["Namespace"], "CrmSync/test");
        assert_eq!(def["Dimensions"], json!([["Source", "Entity"]]));
        // Every metric named in the directive, and every dimension, is a member of the root.
        for m in def["Metrics"].as_array().unwrap() {
            assert!(d[m["Name"].as_str().unwrap()].is_number(), "{m}");
        }
        assert_eq!(d["Created"], 4);
        assert_eq!(d["Source"], "sf");
        assert_eq!(d["Entity"], "contact");
        assert_eq!(
            def["Metrics"][1],
            json!({"Name": "ThrottleRetryAfter", "Unit": "Seconds"})
        );
        let l: Value = serde_json::from_str(&docs[1]).unwrap();
        assert_eq!(l["DataverseRequestLatency"].as_array().unwrap().len(), 100);
        let l2: Value = serde_json::from_str(&docs[2]).unwrap();
        assert_eq!(l2["DataverseRequestLatency"].as_array().unwrap().len(), 50);
        assert_eq!(l2["Function"], "upsert");
    }

    #[test]
    fn the_local_view_has_percentiles() {
        let m = Metrics::new();
        for i in 1..=100 {
            m.observe_latency(Duration::from_millis(i));
        }
        m.add(&Dims::new("hs", "account"), Metric::RecordsRead, 9);
        let v = m.snapshot().to_json();
        assert_eq!(v["counters"]["hs/account"]["RecordsRead"], 9);
        assert_eq!(v["dataverse_latency_ms"]["p50"], 50.0);
        assert_eq!(v["dataverse_latency_ms"]["p99"], 99.0);
        assert_eq!(v["dataverse_latency_ms"]["count"], 100);
    }
}
