//! Microsoft Entra ID client credentials: one token for the application user, cached until shortly
//! before it expires and dropped after a 401, so every request carries a valid one.
//!
//! Per "Microsoft identity platform and the OAuth 2.0 client credentials flow":
//! `POST https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token` with a form body
//! `client_id`, `client_secret`, `grant_type=client_credentials`, `scope=https://{org}/.default`;
//! the answer is `{"token_type":"Bearer","expires_in":3599,"access_token":"..."}`, an error is a
//! 400/401 JSON with `error` and `error_description` (AADSTS codes). With a certificate instead of
//! a secret ("Microsoft identity platform application authentication certificate credentials"),
//! the form carries `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
//! and `client_assertion`, a JWT signed RS256 whose header names the certificate by its SHA-1
//! thumbprint (`x5t`) and whose claims are aud (the token endpoint), iss = sub = the client id,
//! jti, nbf and exp.

use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::secret::Secret;

/// Refresh this long before expiry, so a token never expires in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// The identity platform refused the credentials: fixing them is a person's job.
    #[error("token request refused (HTTP {status}, {error}): {description}")]
    Rejected {
        status: u16,
        error: String,
        description: String,
    },
    /// Could not reach the token endpoint, or it failed: retry later.
    #[error("token endpoint unavailable: {0}")]
    Unavailable(String),
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// How the application proves who it is.
pub enum Credential {
    Secret(Secret),
    /// An RSA private key (PEM) and the SHA-1 thumbprint of the certificate registered on the app.
    Certificate {
        key: jsonwebtoken::EncodingKey,
        x5t: String,
    },
}

impl Credential {
    /// A certificate credential from the private key PEM and the thumbprint as the Azure portal
    /// shows it (40 hex digits).
    pub fn certificate(private_key_pem: &Secret, thumbprint: &str) -> Result<Self, String> {
        use base64::Engine;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes())
            .map_err(|_| {
                "the client certificate's private key is not an RSA PEM key".to_string()
            })?;
        let hex: String = thumbprint
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .collect();
        if hex.len() != 40 {
            return Err("the certificate thumbprint must be 40 hex digits (SHA-1)".into());
        }
        let bytes: Vec<u8> = (0..40)
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
            .collect();
        Ok(Credential::Certificate {
            key,
            x5t: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        })
    }
}

pub struct ClientCredentials {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    credential: Credential,
    scope: String,
    cached: Mutex<Option<(Secret, Instant)>>,
}

impl ClientCredentials {
    pub fn new(
        http: reqwest::Client,
        token_url: String,
        client_id: String,
        credential: Credential,
        scope: String,
    ) -> Self {
        ClientCredentials {
            http,
            token_url,
            client_id,
            credential,
            scope,
            cached: Mutex::new(None),
        }
    }

    /// A valid access token, from the cache or freshly requested (one request at a time).
    pub async fn token(&self) -> Result<Secret, AuthError> {
        let mut cached = self.cached.lock().await;
        if let Some((t, refresh_at)) = cached.as_ref()
            && Instant::now() < *refresh_at
        {
            return Ok(t.clone());
        }
        let assertion;
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("scope", self.scope.as_str()),
        ];
        match &self.credential {
            Credential::Secret(s) => form.push(("client_secret", s.expose())),
            Credential::Certificate { key, x5t } => {
                assertion = self.assertion(key, x5t)?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ));
                form.push(("client_assertion", assertion.as_str()));
            }
        }
        let resp = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(transport_error(&e)))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| AuthError::Unavailable(transport_error(&e)))?;
        if status == 200 {
            let t: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
                AuthError::Unavailable("token response is not the documented JSON".into())
            })?;
            let lifetime = Duration::from_secs(t.expires_in);
            // Short-lived tokens (tests) refresh at 90 % of their life instead.
            let early = REFRESH_MARGIN.min(lifetime / 10);
            let token = Secret::new(t.access_token);
            *cached = Some((token.clone(), Instant::now() + lifetime - early));
            return Ok(token);
        }
        let e: TokenError = serde_json::from_slice(&body).unwrap_or(TokenError {
            error: format!("http-{status}"),
            error_description: String::new(),
        });
        // The description starts with the AADSTS code and reason; keep that line only.
        let description = e
            .error_description
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        Err(if status >= 500 || status == 429 {
            AuthError::Unavailable(format!("HTTP {status} {}", e.error))
        } else {
            AuthError::Rejected {
                status,
                error: e.error,
                description,
            }
        })
    }

    fn assertion(&self, key: &jsonwebtoken::EncodingKey, x5t: &str) -> Result<String, AuthError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.x5t = Some(x5t.to_string());
        let claims = serde_json::json!({
            "aud": self.token_url,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now.saturating_sub(60),
            "iat": now,
            "exp": now + 600,
        });
        jsonwebtoken::encode(&header, &claims, key).map_err(|_| AuthError::Rejected {
            status: 0,
            error: "client_assertion".into(),
            description: "could not sign the client assertion with the configured key".into(),
        })
    }

    /// Forgets `used` after the API answered 401 with it, so the next call fetches a new one.
    pub async fn invalidate(&self, used: &Secret) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|(t, _)| t == used) {
            *cached = None;
        }
    }
}

/// A transport error as text, without the URL's query (which never holds secrets here, but a
/// rule kept everywhere is easier to trust).
pub fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body failed"
    } else {
        "request failed"
    };
    match e.url() {
        Some(u) => format!(
            "{kind}: {}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.path()
        ),
        None => kind.to_string(),
    }
}
