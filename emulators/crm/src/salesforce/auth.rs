//! The OAuth 2.0 token endpoint (client credentials flow) and bearer-token checks.
//!
//! Client credentials: `POST /services/oauth2/token` with `grant_type=client_credentials`,
//! `client_id`, `client_secret`; the response carries `access_token`, `signature`,
//! `token_format`, `instance_url`, `id`, `token_type` and `issued_at` (Salesforce Help, "OAuth
//! 2.0 Client Credentials Flow for Server-to-Server Integration"; Connect REST API quick start
//! "Step Three: Connect ... Using OAuth"). No refresh token is issued.
//!
//! JWT bearer (Salesforce Help, "OAuth 2.0 JWT Bearer Flow for Server-to-Server Integration",
//! https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm):
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and `assertion`, a JWT signed RS256
//! (the only algorithm Salesforce accepts) with the key of the certificate uploaded to the
//! connected app; `iss` the consumer key, `sub` the username, `aud` `https://login.salesforce.com`
//! or `https://test.salesforce.com`, `exp` no more than three minutes ahead. Refusals are 400
//! `invalid_grant` with the descriptions Salesforce sends (reported on Salesforce StackExchange
//! 184363 and 282513: `invalid assertion`, `audience is invalid`, `expired authorization code`,
//! `user hasn't approved this consumer`); a wrong `iss` is `invalid_client_id`.

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
        match grant {
            "client_credentials" => {
                if form.get("client_id").map(String::as_str) != Some(cfg.client_id.as_str()) {
                    return Err(OAuthError {
                        error: "invalid_client_id",
                        description: "client identifier invalid",
                    });
                }
                if form.get("client_secret").map(String::as_str) != Some(cfg.client_secret.as_str())
                {
                    return Err(OAuthError {
                        error: "invalid_client",
                        description: "invalid client credentials",
                    });
                }
            }
            JWT_GRANT => check_assertion(cfg, form.get("assertion").map(String::as_str))?,
            _ => {
                return Err(OAuthError {
                    error: "unsupported_grant_type",
                    description: "grant type not supported",
                });
            }
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

const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The audiences Salesforce accepts from a server (community URLs are not emulated).
const AUDIENCES: [&str; 2] = [
    "https://login.salesforce.com",
    "https://test.salesforce.com",
];

/// Checks a JWT bearer assertion as Salesforce does: signature first, then the claims.
fn check_assertion(cfg: &SalesforceConfig, assertion: Option<&str>) -> Result<(), OAuthError> {
    let invalid = OAuthError {
        error: "invalid_grant",
        description: "invalid assertion",
    };
    let (Some(assertion), Some(cert)) = (assertion, cfg.jwt_certificate_pem.as_deref()) else {
        return Err(invalid);
    };
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| invalid.clone())?;
    if header.alg != jsonwebtoken::Algorithm::RS256 {
        return Err(invalid);
    }
    let key =
        jsonwebtoken::DecodingKey::from_rsa_pem(cert.as_bytes()).map_err(|_| invalid.clone())?;
    // Claims are checked below, in Salesforce's order and with its messages.
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &v)
        .map_err(|_| invalid.clone())?
        .claims;
    let text = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or("");
    if text("iss") != cfg.client_id {
        return Err(OAuthError {
            error: "invalid_client_id",
            description: "client identifier invalid",
        });
    }
    if !AUDIENCES.contains(&text("aud").trim_end_matches('/')) {
        return Err(OAuthError {
            error: "invalid_grant",
            description: "audience is invalid",
        });
    }
    let now = Utc::now().timestamp();
    match claims.get("exp").and_then(Value::as_i64) {
        // Thirty seconds of clock skew on top of the documented three minutes. What Salesforce
        // answers for an `exp` further ahead is not documented; it is refused as invalid here.
        Some(exp) if exp > now && exp <= now + 180 + 30 => {}
        Some(exp) if exp <= now => {
            return Err(OAuthError {
                error: "invalid_grant",
                description: "expired authorization code",
            });
        }
        _ => return Err(invalid),
    }
    if text("sub") != cfg.username {
        return Err(OAuthError {
            error: "invalid_grant",
            description: "user hasn't approved this consumer",
        });
    }
    Ok(())
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
