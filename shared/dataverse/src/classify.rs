//! What a Dataverse response means for one operation: applied, or which kind of failure. Pure, so
//! single requests, `$batch` parts and bulk responses are all judged by the same rules.
//!
//! Sources: "Use Upsert to Create or Update a record" (204 on upsert; 201/200 with
//! return=representation; 404 under `If-Match: *`), "Service protection API limits" (429 +
//! Retry-After), "Associate and disassociate table rows" and Microsoft's known-issue reports
//! (404 0x80060891 / 0x80040217 for a lookup to a row that does not exist), and the Web API error
//! shape `{"error": {"code", "message"}}`.

use std::time::Duration;

use mapping::{DataverseOp, Method};
use serde::Deserialize;

use crate::writer::{Applied, WriteError};

/// Error codes that mean "a lookup target does not exist": the contact's parent account.
pub const MISSING_PARENT_CODES: [&str; 2] = ["0x80060891", "0x80040217"];

/// SQL deadlock and similar "please retry" platform errors.
pub const RETRYABLE_CODES: [&str; 3] = ["0x80044339", "0x80040265", "0x80072321"];

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Dataverse's error code and message from a response body, if it has the documented shape.
/// Messages are cut to 500 characters; Dataverse's name columns and keys, not secrets.
pub fn error_of(body: &[u8]) -> Option<(String, String)> {
    let e: ErrorBody = serde_json::from_slice(body).ok()?;
    Some((e.error.code, e.error.message.chars().take(500).collect()))
}

/// Judges one response to `op`.
pub fn classify(
    op: &DataverseOp,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Applied, WriteError> {
    match status {
        200..=299 => Ok(match (op.method, status) {
            (Method::Delete, _) => Applied::Deleted,
            (Method::Patch, 201) => Applied::Created,
            (Method::Patch, 200) => Applied::Updated,
            (Method::Patch, _) if op.if_match_any => Applied::Updated,
            (Method::Patch, _) => Applied::Upserted,
        }),
        429 => Err(WriteError::Throttled {
            retry_after_ms: retry_after.unwrap_or(Duration::from_secs(5)).as_millis() as u64,
        }),
        _ => {
            let (code, message) = error_of(body).unwrap_or_else(|| {
                (
                    format!("http-{status}"),
                    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                )
            });
            Err(match status {
                404 if op.method == Method::Delete || op.if_match_any => {
                    return Ok(Applied::AlreadyAbsent);
                }
                404 if MISSING_PARENT_CODES.contains(&code.as_str()) => {
                    WriteError::MissingParent { code, message }
                }
                // A concurrent create of the same key lost the race: the row exists now and the
                // same upsert will update it.
                412 if code == "0x80060892" => WriteError::Retryable { code, message },
                408 | 500..=599 => WriteError::Retryable { code, message },
                _ if RETRYABLE_CODES.contains(&code.as_str()) => {
                    WriteError::Retryable { code, message }
                }
                _ => WriteError::Permanent {
                    status,
                    code,
                    message,
                },
            })
        }
    }
}

/// Parses a `Retry-After` header value in seconds (the form Dataverse uses).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: Method, if_match_any: bool) -> DataverseOp {
        DataverseOp {
            method,
            path: "accounts(1)".into(),
            if_match_any,
            body: None,
        }
    }

    fn err(code: &str) -> Vec<u8> {
        format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#).into_bytes()
    }

    #[test]
    fn statuses_and_codes() {
        let patch = op(Method::Patch, false);
        assert_eq!(classify(&patch, 204, None, b""), Ok(Applied::Upserted));
        assert_eq!(classify(&patch, 201, None, b""), Ok(Applied::Created));
        assert_eq!(
            classify(&op(Method::Delete, false), 404, None, &err("0x80040217")),
            Ok(Applied::AlreadyAbsent)
        );
        assert_eq!(
            classify(&op(Method::Patch, true), 404, None, &err("0x80040217")),
            Ok(Applied::AlreadyAbsent)
        );
        assert!(matches!(
            classify(&patch, 404, None, &err("0x80060891")),
            Err(WriteError::MissingParent { .. })
        ));
        assert!(matches!(
            classify(&patch, 404, None, &err("0x80040217")),
            Err(WriteError::MissingParent { .. })
        ));
        assert_eq!(
            classify(&patch, 429, Some(Duration::from_secs(3)), b""),
            Err(WriteError::Throttled {
                retry_after_ms: 3000
            })
        );
        assert!(matches!(
            classify(&patch, 503, None, b"<html>"),
            Err(WriteError::Retryable { .. })
        ));
        assert!(matches!(
            classify(&patch, 500, None, &err("0x80044339")),
            Err(WriteError::Retryable { .. })
        ));
        assert!(matches!(
            classify(&patch, 400, None, &err("0x80044331")),
            Err(WriteError::Permanent { status: 400, .. })
        ));
        assert!(matches!(
            classify(&patch, 403, None, &err("0x80040220")),
            Err(WriteError::Permanent { status: 403, .. })
        ));
        assert!(matches!(
            classify(&patch, 412, None, &err("0x80060892")),
            Err(WriteError::Retryable { .. })
        ));
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
