//! The OAuth 2.0 token endpoint (client credentials flow) and bearer-token checks.
//!
//! Client credentials: `POST /services/oauth2/token` with `grant_type=client_credentials`,
//! `client_id`, `client_secret`; the response carries `access_token`, `signature`,
//! `token_format`, `instance_url`, `id`, `token_type` and `issued_at` (Salesforce Help, "OAuth
//! 2.0 Client Credentials Flow for Server-to-Server Integration"; Connect REST API quick start
//! "Step Three: Connect ... Using OAuth"). No refresh token is issued. The JWT bearer grant is
//! not emulated: it answers `unsupported_grant_type`.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use serde_json::{Value, json};

use super::config::SalesforceConfig;
use super::error::OAuthError;

#[derive(Debug, Default)]
pub struct Tokens {
    valid: HashSet<String>,
    /// The integration user's live session: handed out again while it is valid, so every
    /// caller shares one session (and its query cursors) until it expires.
    current: Option<String>,
}

impl Tokens {
    pub fn is_valid(&self, token: &str) -> bool {
        self.valid.contains(token)
    }

    /// Ends every session.
    pub fn expire_all(&mut self) {
        self.valid.clear();
        self.current = None;
    }

    /// Handles a token request; `Ok` is the JSON body and whether a new session was created.
    pub fn issue(
        &mut self,
        cfg: &SalesforceConfig,
        instance_url: &str,
        form: &HashMap<String, String>,
    ) -> Result<(Value, bool), OAuthError> {
        let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
        if grant != "client_credentials" {
            return Err(OAuthError {
                error: "unsupported_grant_type",
                description: "grant type not supported",
            });
        }
        if form.get("client_id").map(String::as_str) != Some(cfg.client_id.as_str()) {
            return Err(OAuthError {
                error: "invalid_client_id",
                description: "client identifier invalid",
            });
        }
        if form.get("client_secret").map(String::as_str) != Some(cfg.client_secret.as_str()) {
            return Err(OAuthError {
                error: "invalid_client",
                description: "invalid client credentials",
            });
        }
        let (token, fresh) = match &self.current {
            Some(t) if self.valid.contains(t) => (t.clone(), false),
            _ => {
                let t = format!(
                    "{}!AR{}",
                    &cfg.org_id[..15.min(cfg.org_id.len())],
                    uuid::Uuid::new_v4().simple()
                );
                self.valid.insert(t.clone());
                self.current = Some(t.clone());
                (t, true)
            }
        };
        let signature = base64(uuid::Uuid::new_v4().as_bytes());
        Ok((
            json!({
                "access_token": token,
                "signature": signature,
                "token_format": "opaque",
                "instance_url": instance_url,
                "id": format!("{instance_url}/id/{}/005Dn000000EmuIAA", cfg.org_id),
                "token_type": "Bearer",
                "issued_at": Utc::now().timestamp_millis().to_string(),
            }),
            fresh,
        ))
    }
}

/// Standard base64 with padding (the signature is only ever displayed, never verified).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads() {
        assert_eq!(super::base64(b"Ma"), "TWE=");
        assert_eq!(super::base64(b"Man"), "TWFu");
        assert_eq!(super::base64(b"M"), "TQ==");
    }
}
