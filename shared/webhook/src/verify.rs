//! Verifying that a webhook request comes from the CRM it claims to, over the raw body, before
//! anything is parsed. Every comparison is constant-time; no error message contains a secret or a
//! received signature.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// How long a signed request stays acceptable (HubSpot documents five minutes; the same window is
/// used for our own contract and Zendesk).
pub const WINDOW_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("signature does not match")]
    BadSignature,
    #[error("request timestamp is outside the {0}-minute window")]
    Stale(i64),
    #[error("credentials do not match")]
    BadCredentials,
}

/// Constant-time equality: the time taken does not depend on where the inputs differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hmac(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fresh(timestamp_ms: i64, now_ms: i64) -> Result<(), VerifyError> {
    // `abs_diff`, not `(now - ts).abs()`: the timestamp is the sender's, and one near i64::MIN
    // overflowed the subtraction (a panic in debug builds; in release, a difference of exactly
    // 2^63 wrapped to i64::MIN, whose `abs()` is negative and passed as fresh). Found by fuzzing.
    if now_ms.abs_diff(timestamp_ms) > WINDOW_MS as u64 {
        return Err(VerifyError::Stale(WINDOW_MS / 60_000));
    }
    Ok(())
}

/// HubSpot v1 ("Validating requests", v1): `X-HubSpot-Signature` = hex SHA-256 of
/// client secret + request body.
pub fn hubspot_v1(secret: &str, body: &[u8], signature: &str) -> Result<(), VerifyError> {
    // v1 is v2 without the method and URI.
    hubspot_v2(secret, "", "", body, signature)
}

/// HubSpot v2: hex SHA-256 of client secret + method + URI + body.
pub fn hubspot_v2(
    secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    signature: &str,
) -> Result<(), VerifyError> {
    let mut h = Sha256::new();
    h.update(secret.as_bytes());
    h.update(method.as_bytes());
    h.update(uri.as_bytes());
    h.update(body);
    let want = hex(&h.finalize());
    ct_eq(
        want.as_bytes(),
        signature.trim().to_ascii_lowercase().as_bytes(),
    )
    .then_some(())
    .ok_or(VerifyError::BadSignature)
}

/// HubSpot v3 ("Validate the v3 request signature"): reject a timestamp older than five
/// minutes; `X-HubSpot-Signature-v3` = base64 HMAC-SHA256(client secret, method + URI + body +
/// timestamp), the URI with HubSpot's listed percent-encodings decoded and the timestamp as the
/// raw header string (epoch milliseconds).
pub fn hubspot_v3(
    secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp: &str,
    signature: &str,
    now_ms: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::Malformed("X-HubSpot-Request-Timestamp"))?;
    fresh(ts, now_ms)?;
    let uri = hubspot_decode_uri(uri);
    let mac = hmac(
        secret.as_bytes(),
        &[
            method.as_bytes(),
            uri.as_bytes(),
            body,
            timestamp.trim().as_bytes(),
        ],
    );
    let got = B64
        .decode(signature.trim())
        .map_err(|_| VerifyError::Malformed("X-HubSpot-Signature-v3"))?;
    ct_eq(&mac, &got)
        .then_some(())
        .ok_or(VerifyError::BadSignature)
}

/// HubSpot decodes these percent-encodings in the URI before signing (its v3 validation guide
/// lists them); everything else stays encoded.
pub fn hubspot_decode_uri(uri: &str) -> String {
    const TABLE: [(&str, &str); 12] = [
        ("%3A", ":"),
        ("%2F", "/"),
        ("%3F", "?"),
        ("%40", "@"),
        ("%21", "!"),
        ("%24", "$"),
        ("%27", "'"),
        ("%28", "("),
        ("%29", ")"),
        ("%2A", "*"),
        ("%2C", ","),
        ("%3B", ";"),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let cand = rest.get(i..i + 3).unwrap_or("");
        match TABLE.iter().find(|(enc, _)| enc.eq_ignore_ascii_case(cand)) {
            Some((_, dec)) => {
                out.push_str(dec);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Our published contract (Apex callouts, ServiceNow business rules, generic CRMs):
/// `X-CrmSync-Timestamp` = epoch seconds, `X-CrmSync-Signature` = `v1=` + hex (or base64)
/// HMAC-SHA256(secret, timestamp + "." + body). The timestamp must be within five minutes.
pub fn contract(
    secret: &str,
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now_ms: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::Malformed("X-CrmSync-Timestamp"))?;
    fresh(ts.saturating_mul(1000), now_ms)?;
    let mac = hmac(
        secret.as_bytes(),
        &[timestamp.trim().as_bytes(), b".", body],
    );
    let got = signature
        .trim()
        .strip_prefix("v1=")
        .ok_or(VerifyError::Malformed("X-CrmSync-Signature"))?;
    // Hex (Apex's EncodingUtil.convertToHex) or base64 (ServiceNow's
    // GlideCertificateEncryption.generateMac returns base64): both encode the same MAC.
    let matches = if got.len() == 64 {
        ct_eq(hex(&mac).as_bytes(), got.to_ascii_lowercase().as_bytes())
    } else {
        B64.decode(got).is_ok_and(|b| ct_eq(&mac, &b))
    };
    matches.then_some(()).ok_or(VerifyError::BadSignature)
}

/// Signs a body the way the contract's senders do (for tests and the CRM emulators).
pub fn contract_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex(&hmac(
            secret.as_bytes(),
            &[timestamp.as_bytes(), b".", body]
        ))
    )
}

/// Zendesk ("Verifying webhook authenticity"): `X-Zendesk-Webhook-Signature` = base64
/// HMAC-SHA256(signing secret, timestamp + body), timestamp from
/// `X-Zendesk-Webhook-Signature-Timestamp` (ISO 8601). The window is checked by the caller,
/// which parses the timestamp.
pub fn zendesk(
    secret: &str,
    timestamp: &str,
    body: &[u8],
    signature: &str,
) -> Result<(), VerifyError> {
    let mac = hmac(secret.as_bytes(), &[timestamp.as_bytes(), body]);
    let got = B64
        .decode(signature.trim())
        .map_err(|_| VerifyError::Malformed("X-Zendesk-Webhook-Signature"))?;
    ct_eq(&mac, &got)
        .then_some(())
        .ok_or(VerifyError::BadSignature)
}

/// HTTP Basic auth (Pipedrive's webhook `http_auth_user`/`http_auth_password`, Microsoft's
/// any-CRM guide): the `Authorization` header against the configured user and password.
pub fn basic(header: &str, user: &str, password: &str) -> Result<(), VerifyError> {
    let encoded = header
        .trim()
        .strip_prefix("Basic ")
        .ok_or(VerifyError::Malformed("Authorization"))?;
    let decoded = B64
        .decode(encoded.trim())
        .map_err(|_| VerifyError::Malformed("Authorization"))?;
    let want = format!("{user}:{password}");
    ct_eq(want.as_bytes(), &decoded)
        .then_some(())
        .ok_or(VerifyError::BadCredentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_round_trip_window_and_tampering() {
        let now = 1_700_000_000_000;
        let ts = "1700000000";
        let sig = contract_signature("s3cret", ts, b"{}");
        assert_eq!(contract("s3cret", ts, b"{}", &sig, now), Ok(()));
        assert_eq!(
            contract("s3cret", ts, b"{ }", &sig, now),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            contract("other", ts, b"{}", &sig, now),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            contract("s3cret", ts, b"{}", &sig, now + 301_000),
            Err(VerifyError::Stale(5))
        );
        assert!(contract("s3cret", "x", b"{}", &sig, now).is_err());
        assert!(contract("s3cret", ts, b"{}", "deadbeef", now).is_err());
        let b64 = format!(
            "v1={}",
            B64.encode(hmac(b"s3cret", &[ts.as_bytes(), b".", b"{}"]))
        );
        assert_eq!(contract("s3cret", ts, b"{}", &b64, now), Ok(()));
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        let now = 1_700_000_000_000;
        let sig = contract_signature("s", "-9223372036854775808", b"{}");
        assert_eq!(
            contract("s", "-9223372036854775808", b"{}", &sig, now),
            Err(VerifyError::Stale(5))
        );
        // Exactly 2^63 ms before now: the difference that wrapped to i64::MIN.
        let ts = (now as i128 - (1i128 << 63)).to_string();
        let mac = B64.encode(hmac(
            b"s",
            &[b"POST", b"https://h.example/x", b"{}", ts.as_bytes()],
        ));
        assert_eq!(
            hubspot_v3("s", "POST", "https://h.example/x", b"{}", &ts, &mac, now),
            Err(VerifyError::Stale(5))
        );
        for ts in [i64::MIN, i64::MAX] {
            assert_eq!(fresh(ts, now), Err(VerifyError::Stale(5)));
            assert_eq!(fresh(now, ts), Err(VerifyError::Stale(5)));
        }
    }

    #[test]
    fn basic_auth() {
        let h = format!("Basic {}", B64.encode("pd:pw"));
        assert_eq!(basic(&h, "pd", "pw"), Ok(()));
        assert_eq!(basic(&h, "pd", "nope"), Err(VerifyError::BadCredentials));
        assert!(basic("Bearer x", "pd", "pw").is_err());
    }

    #[test]
    fn uri_decoding_is_limited_to_the_listed_characters() {
        assert_eq!(
            hubspot_decode_uri("https%3A%2F%2Fx.io%2Fhook%3Fa%3Db%26c%20d%"),
            "https://x.io/hook?a%3Db%26c%20d%"
        );
    }
}
