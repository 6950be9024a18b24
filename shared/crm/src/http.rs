//! What every HTTP CRM client shares: which URLs may receive our credentials, and reading the
//! walk position off a listed record.

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
