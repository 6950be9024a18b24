//! What every HTTP CRM client shares: its HTTP client, which URLs may receive our credentials,
//! and reading the walk position off a listed record.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

use mapping::transform::parse_timestamp;
use reqwest::Url;
use serde_json::Value;

use crate::reader::{Checkpoint, CrmError};

/// https everywhere, plain http only on loopback (the emulators, local tests): a token or Basic
/// credentials must not cross a network in clear text.
pub fn check_origin(url: &Url, crm: &str) -> Result<(), CrmError> {
    let loopback = matches!(
        url.host_str(),
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
    );
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        other => Err(CrmError::Permanent(format!(
            "refusing a {other}:// {crm} URL on {}: https is required",
            url.host_str().unwrap_or("?")
        ))),
    }
}

/// The HTTP client of a CRM client: `timeout` per request, 10 s to connect.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, CrmError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| CrmError::Permanent(format!("cannot build HTTP client: {e}")))
}

pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// A next-page link (or a cursor that is one) joined to `base`, accepted only on `base`'s origin
/// and under the API's `path_prefix`: following it sends our credentials, so a link elsewhere is
/// a permanent error, never followed.
pub fn follow_link(base: &Url, link: &str, path_prefix: &str, crm: &str) -> Result<Url, CrmError> {
    let url = base
        .join(link)
        .map_err(|e| CrmError::Permanent(format!("invalid {crm} next-page URL: {e}")))?;
    if !same_origin(&url, base) {
        return Err(CrmError::Permanent(format!(
            "refusing to follow a next-page URL on another host ({}); {crm} is {}",
            url.host_str().unwrap_or("?"),
            base.host_str().unwrap_or("?")
        )));
    }
    if !url.path().starts_with(path_prefix) {
        return Err(CrmError::Permanent(format!(
            "refusing a {crm} next-page URL outside {path_prefix}"
        )));
    }
    Ok(url)
}

/// `X-RateLimit-Reset` values above this are epoch seconds, below it seconds to wait (APIs
/// use both; no delay is 30 years long).
const EPOCH_THRESHOLD: u64 = 1_000_000_000;

/// How long to wait: `Retry-After` (seconds or an HTTP date), else `X-RateLimit-Reset` (epoch
/// seconds, or seconds to wait when small), else `default`. Never zero.
pub fn retry_after(headers: &HeaderMap, now: SystemTime, default: Duration) -> Duration {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if let Some(v) = text("Retry-After") {
        if let Ok(s) = v.parse::<u64>() {
            return Duration::from_secs(s.max(1));
        }
        if let Ok(t) = DateTime::parse_from_rfc2822(v) {
            let at = t.with_timezone(&Utc).timestamp().max(0) as u64;
            return Duration::from_secs(at.saturating_sub(now_secs).max(1));
        }
    }
    if let Some(v) = text("X-RateLimit-Reset") {
        let secs = v
            .parse::<u64>()
            .ok()
            .or_else(|| v.parse::<f64>().ok().map(|f| f.max(0.0).ceil() as u64));
        if let Some(n) = secs {
            let wait = if n > EPOCH_THRESHOLD {
                n.saturating_sub(now_secs)
            } else {
                n
            };
            return Duration::from_secs(wait.max(1));
        }
    }
    default
}

/// The (last modified, id) position of a listed record; the timestamp in any of the CRMs'
/// formats (see `mapping::transform::parse_timestamp`).
pub fn checkpoint_of(
    record: &Value,
    id_field: &str,
    stamp_field: &str,
    crm: &str,
) -> Result<Checkpoint, CrmError> {
    let id = record
        .get(id_field)
        .and_then(Value::as_str)
        .ok_or_else(|| CrmError::Permanent(format!("{crm} record without {id_field}")))?;
    let modified_at = record
        .get(stamp_field)
        .and_then(parse_timestamp)
        .ok_or_else(|| {
            CrmError::Permanent(format!(
                "{crm} record {id} without a readable {stamp_field}"
            ))
        })?;
    Ok(Checkpoint {
        modified_at,
        id: id.to_string(),
    })
}
