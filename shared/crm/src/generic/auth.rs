//! Credentials on requests, and the OAuth 2.0 client credentials token (RFC 6749 section 4.4):
//! a form POST to the token endpoint, cached until shortly before `expires_in` (or, without
//! it, until the API answers 401), fetched again once on a 401.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::RequestBuilder;
use serde_json::Value;

use super::GenericClient;
use super::plan::Auth;
use super::response::{DEFAULT_RATE_PAUSE, excerpt, retry_after};
use crate::reader::CrmError;

/// A cached access token.
pub struct Token {
    pub value: String,
    /// When to fetch a new one; `None`: until a 401.
    pub refresh_at: Option<Instant>,
}

/// How long before `expires_in` a token is replaced: a tenth of its life, at most a minute.
fn margin(expires_in: u64) -> Duration {
    Duration::from_secs((expires_in / 10).min(60))
}

impl GenericClient {
    /// Adds the credentials to a request; `token` is the OAuth access token, if that is the
    /// scheme.
    pub(super) fn authorise(&self, rb: RequestBuilder, token: Option<&Token>) -> RequestBuilder {
        match (&self.plan.auth, token) {
            (Auth::Basic { user, password }, _) => rb.basic_auth(user, Some(password)),
            (Auth::Bearer(t), _) => rb.bearer_auth(t),
            (Auth::Header(name, value), _) => rb.header(name.clone(), value.clone()),
            (Auth::ClientCredentials { .. }, Some(t)) => rb.bearer_auth(&t.value),
            (Auth::ClientCredentials { .. }, None) => rb,
        }
    }

    /// The cached token, or a new one; `None` when the scheme is not OAuth.
    pub(super) async fn token(&self) -> Result<Option<Arc<Token>>, CrmError> {
        if !matches!(self.plan.auth, Auth::ClientCredentials { .. }) {
            return Ok(None);
        }
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref()
            && t.refresh_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(Some(t.clone()));
        }
        let t = Arc::new(self.request_token().await?);
        *guard = Some(t.clone());
        Ok(Some(t))
    }

    /// Forgets `stale`, unless another task already replaced it.
    pub(super) async fn invalidate(&self, stale: &Arc<Token>) {
        let mut guard = self.token.lock().await;
        if guard.as_ref().is_some_and(|t| Arc::ptr_eq(t, stale)) {
            *guard = None;
        }
    }

    async fn request_token(&self) -> Result<Token, CrmError> {
        let Auth::ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scope,
            basic,
        } = &self.plan.auth
        else {
            return Err(CrmError::Permanent("not an OAuth configuration".into()));
        };
        let label = &self.label;
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if !basic {
            form.push(("client_id", client_id));
            form.push(("client_secret", client_secret));
        }
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let mut rb = self
            .http
            .post(token_url.clone())
            .header("Accept", "application/json")
            .form(&form);
        if *basic {
            rb = rb.basic_auth(client_id, Some(client_secret));
        }
        let resp = rb.send().await.map_err(|e| {
            CrmError::Unavailable(format!("{label} token endpoint: {}", e.without_url()))
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(|e| {
            CrmError::Unavailable(format!("{label} token endpoint: {}", e.without_url()))
        })?;
        let secrets = self.secrets(None);
        if !status.is_success() {
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let field = |k: &str| {
                body.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let (error, description) = (field("error"), field("error_description"));
            let detail = if error.is_empty() {
                excerpt(&text, &secrets)
            } else {
                excerpt(&format!("{error}: {description}"), &secrets)
            };
            return Err(match status.as_u16() {
                429 | 503 => CrmError::RateLimited(retry_after(
                    &headers,
                    std::time::SystemTime::now(),
                    DEFAULT_RATE_PAUSE,
                )),
                s if s >= 500 => {
                    CrmError::Unavailable(format!("{label} token endpoint answered {status}"))
                }
                _ => CrmError::Access(format!(
                    "{label} token endpoint refused the client credentials ({status} {detail})"
                )),
            });
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| CrmError::Permanent(format!("{label} token response is not JSON: {e}")))?;
        let value = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                CrmError::Permanent(format!("{label} token response without access_token"))
            })?;
        let expires_in = match body.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let now = Instant::now();
        let refresh_at = expires_in.map(|s| now + Duration::from_secs(s) - margin(s));
        tracing::info!(crm = %label, ?expires_in, "OAuth token obtained");
        Ok(Token {
            value: value.to_string(),
            refresh_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_replaced_before_they_expire() {
        assert_eq!(margin(3600), Duration::from_secs(60));
        assert_eq!(margin(300), Duration::from_secs(30));
        assert_eq!(margin(5), Duration::ZERO);
    }
}
