//! How the ServiceNow client authenticates: HTTP Basic on every call, or an OAuth 2.0 access
//! token from the instance's token endpoint.
//!
//! What ServiceNow documents (confirmed):
//! - The token endpoint is `POST https://<instance>.service-now.com/oauth_token.do`, form
//!   encoded. The password grant sends `grant_type=password&client_id&client_secret&username&
//!   password` and gets `{scope, token_type: "Bearer", expires_in, refresh_token, access_token}`;
//!   API calls then carry `Authorization: Bearer <access_token>` ("REST OAuth example",
//!   https://www.servicenow.com/docs/r/api-reference/rest-api-explorer/r_RESTOAuthExample.html).
//! - The client credentials grant sends `grant_type=client_credentials&client_id&client_secret`
//!   to the same endpoint ("Client credentials grant workflow",
//!   https://www.servicenow.com/docs/r/fr-FR/platform-security/authentication/client-credentials-grant-workflow.html).
//!   It works only once an admin creates the
//!   `glide.oauth.inbound.client.credential.grant_type.enabled` property and sets it true, and
//!   the token runs as the registry entry's "OAuth Application User" ("Client Credentials",
//!   https://docs.servicenow.com/bundle/washingtondc-platform-security/page/integrate/authentication/concept/client-credentials.html);
//!   older releases have no inbound client credentials grant, so the password grant stays.
//!
//! Not confirmed in ServiceNow's docs, handled defensively:
//! - Refusals. Instances are reported to answer a failed token request with 401
//!   `{"error":"server_error","error_description":"access_denied"}` whatever went wrong
//!   (demisto/content-docs#1301), not RFC 6749's `invalid_client` / `invalid_grant`. So a refusal
//!   is classified by HTTP status (4xx: [`CrmError::Access`], 5xx: unavailable), never by the
//!   code, and the message names whatever code and description came back.
//! - What a 401 to an expired token looks like: it is treated like any 401 to a bearer call:
//!   the token is dropped and a new one requested, once per call.
//! - The refresh token is not used: the configured grant is simply run again, which needs no
//!   second secret to keep and works for the client credentials grant, which has none.
//!
//! The token is cached until shortly before `expires_in` runs out (a tenth of it, at most a
//! minute, so a 30-minute token is renewed after 29). Secrets and tokens never appear in
//! errors, logs or `Debug` output; a refusal's description is scrubbed of them in case a server
//! echoes the request.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{RequestBuilder, StatusCode, Url};
use serde_json::Value;

use crate::reader::CrmError;

/// How the ServiceNow client authenticates.
#[derive(Clone)]
pub enum ServiceNowAuth {
    /// HTTP Basic with the integration user's name and password on every call.
    Basic { user: String, password: String },
    /// An OAuth 2.0 bearer token from `/oauth_token.do`.
    OAuth(ServiceNowOAuth),
}

/// The OAuth grant, with the application registry entry's client id and secret.
#[derive(Clone)]
pub enum ServiceNowOAuth {
    /// `grant_type=client_credentials`: needs a recent release and the
    /// `glide.oauth.inbound.client.credential.grant_type.enabled` property; calls run as the
    /// entry's OAuth Application User.
    ClientCredentials {
        client_id: String,
        client_secret: String,
    },
    /// `grant_type=password` (resource owner password credentials): every release; calls run as
    /// `user`.
    Password {
        client_id: String,
        client_secret: String,
        user: String,
        password: String,
    },
}

impl ServiceNowOAuth {
    pub fn client_id(&self) -> &str {
        match self {
            ServiceNowOAuth::ClientCredentials { client_id, .. }
            | ServiceNowOAuth::Password { client_id, .. } => client_id,
        }
    }

    fn grant_type(&self) -> &'static str {
        match self {
            ServiceNowOAuth::ClientCredentials { .. } => "client_credentials",
            ServiceNowOAuth::Password { .. } => "password",
        }
    }

    fn form(&self) -> Vec<(&'static str, &str)> {
        match self {
            ServiceNowOAuth::ClientCredentials {
                client_id,
                client_secret,
            } => vec![
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", client_secret),
            ],
            ServiceNowOAuth::Password {
                client_id,
                client_secret,
                user,
                password,
            } => vec![
                ("grant_type", "password"),
                ("client_id", client_id),
                ("client_secret", client_secret),
                ("username", user),
                ("password", password),
            ],
        }
    }

    /// What must never be shown.
    fn secrets(&self) -> Vec<&str> {
        match self {
            ServiceNowOAuth::ClientCredentials { client_secret, .. } => vec![client_secret],
            ServiceNowOAuth::Password {
                client_secret,
                password,
                ..
            } => vec![client_secret, password],
        }
    }
}

impl fmt::Debug for ServiceNowOAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceNowOAuth::ClientCredentials { client_id, .. } => f
                .debug_struct("ClientCredentials")
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .finish(),
            ServiceNowOAuth::Password {
                client_id, user, ..
            } => f
                .debug_struct("Password")
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

impl fmt::Debug for ServiceNowAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceNowAuth::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            ServiceNowAuth::OAuth(o) => f.debug_tuple("OAuth").field(o).finish(),
        }
    }
}

impl ServiceNowAuth {
    /// Who the calls run as, for error messages; never a secret.
    pub fn describe(&self) -> String {
        match self {
            ServiceNowAuth::Basic { user, .. } => format!("user {user:?}"),
            ServiceNowAuth::OAuth(ServiceNowOAuth::ClientCredentials { client_id, .. }) => {
                format!("OAuth client {client_id:?} (client credentials grant)")
            }
            ServiceNowAuth::OAuth(ServiceNowOAuth::Password {
                client_id, user, ..
            }) => format!("user {user:?} through OAuth client {client_id:?}"),
        }
    }
}

/// A cached access token.
pub(super) struct Token {
    access: String,
    /// When to stop using it; `None` when the answer named no lifetime (a 401 renews it).
    renew_at: Option<Instant>,
}

/// What one call authenticates with.
pub(super) enum Credential {
    Basic,
    Bearer(Arc<Token>),
}

impl Credential {
    pub(super) fn is_bearer(&self) -> bool {
        matches!(self, Credential::Bearer(_))
    }
}

/// Hands out credentials for calls: Basic as configured, or a cached OAuth token.
pub(super) struct Authenticator {
    auth: ServiceNowAuth,
    token_url: Url,
    cached: tokio::sync::Mutex<Option<Arc<Token>>>,
}

/// How long a token is used: its lifetime less a tenth, at most a minute, so a call is not sent
/// with a token about to expire on the way.
pub(super) fn usable_for(expires_in: Duration) -> Duration {
    expires_in - (expires_in / 10).min(Duration::from_secs(60))
}

impl Authenticator {
    pub(super) fn new(auth: ServiceNowAuth, instance: &Url) -> Result<Self, CrmError> {
        let token_url = instance
            .join("/oauth_token.do")
            .map_err(|e| CrmError::Permanent(format!("ServiceNow token URL: {e}")))?;
        Ok(Authenticator {
            auth,
            token_url,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    pub(super) fn auth(&self) -> &ServiceNowAuth {
        &self.auth
    }

    /// The credential for the next call: a cached token while it is fresh, else a new one.
    pub(super) async fn credential(&self, http: &reqwest::Client) -> Result<Credential, CrmError> {
        let ServiceNowAuth::OAuth(oauth) = &self.auth else {
            return Ok(Credential::Basic);
        };
        // Held across the token request, so concurrent calls wait for one token.
        let mut guard = self.cached.lock().await;
        if let Some(t) = guard.as_ref()
            && t.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(Credential::Bearer(t.clone()));
        }
        let t = Arc::new(self.request_token(http, oauth).await?);
        *guard = Some(t.clone());
        Ok(Credential::Bearer(t))
    }

    pub(super) fn apply(&self, rb: RequestBuilder, c: &Credential) -> RequestBuilder {
        match (c, &self.auth) {
            (Credential::Bearer(t), _) => rb.bearer_auth(&t.access),
            (Credential::Basic, ServiceNowAuth::Basic { user, password }) => {
                rb.basic_auth(user, Some(password))
            }
            // A Basic credential is only handed out for Basic settings.
            (Credential::Basic, ServiceNowAuth::OAuth(_)) => rb,
        }
    }

    /// Forgets a token the instance refused (unless another call already replaced it).
    pub(super) async fn invalidate(&self, stale: &Credential) {
        let Credential::Bearer(stale) = stale else {
            return;
        };
        let mut guard = self.cached.lock().await;
        if guard.as_ref().is_some_and(|t| Arc::ptr_eq(t, stale)) {
            *guard = None;
        }
    }

    async fn request_token(
        &self,
        http: &reqwest::Client,
        oauth: &ServiceNowOAuth,
    ) -> Result<Token, CrmError> {
        let resp = http
            .post(self.token_url.clone())
            .header("Accept", "application/json")
            .form(&oauth.form())
            .send()
            .await
            .map_err(|e| {
                CrmError::Unavailable(format!("ServiceNow token endpoint: {}", e.without_url()))
            })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(|e| {
            CrmError::Unavailable(format!("ServiceNow token endpoint: {}", e.without_url()))
        })?;
        if !status.is_success() {
            return Err(self.refusal(oauth, status, &headers, &text));
        }
        // Never echo this body: it holds the token.
        let body: Value = serde_json::from_str(&text).map_err(|_| {
            CrmError::Permanent("the ServiceNow token endpoint answered something not JSON".into())
        })?;
        let access = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                CrmError::Permanent("ServiceNow token response without access_token".into())
            })?;
        if let Some(kind) = body.get("token_type").and_then(Value::as_str)
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(CrmError::Permanent(format!(
                "ServiceNow token response has token_type {kind:?}, not Bearer"
            )));
        }
        let expires_in = body.get("expires_in").and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
        tracing::info!(
            client_id = %oauth.client_id(),
            grant = oauth.grant_type(),
            ?expires_in,
            "obtained a ServiceNow OAuth token"
        );
        Ok(Token {
            access: access.to_string(),
            renew_at: expires_in.map(|s| Instant::now() + usable_for(Duration::from_secs(s))),
        })
    }

    /// A refused token request: by status, naming the OAuth error code and description.
    fn refusal(
        &self,
        oauth: &ServiceNowOAuth,
        status: StatusCode,
        headers: &reqwest::header::HeaderMap,
        text: &str,
    ) -> CrmError {
        if status == StatusCode::TOO_MANY_REQUESTS {
            return CrmError::RateLimited(super::retry_after(headers));
        }
        if status.is_server_error() {
            return CrmError::Unavailable(format!("ServiceNow token endpoint answered {status}"));
        }
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let field = |k: &str| {
            let raw = v.get(k).and_then(Value::as_str).unwrap_or("");
            scrub(raw, &oauth.secrets())
        };
        let (code, description) = (field("error"), field("error_description"));
        let said = match (code.is_empty(), description.is_empty()) {
            (true, true) => "no OAuth error code".to_string(),
            (false, true) => code,
            (true, false) => description,
            (false, false) => format!("{code}: {description}"),
        };
        CrmError::Access(format!(
            "ServiceNow refused the OAuth {} grant for {} ({status}: {said})",
            oauth.grant_type(),
            self.auth.describe()
        ))
    }
}

/// A server's text with any secret of ours cut out, then shortened (in that order, so no part
/// of a secret survives the cut).
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s, "<redacted>");
    }
    if out.chars().count() > 200 {
        out = out.chars().take(200).collect::<String>() + "...";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_a_tenth_early_at_most_a_minute() {
        assert_eq!(
            usable_for(Duration::from_secs(1799)),
            Duration::from_secs(1739)
        );
        assert_eq!(usable_for(Duration::from_secs(10)), Duration::from_secs(9));
        assert_eq!(usable_for(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn secrets_stay_out_of_debug_and_descriptions() {
        let o = ServiceNowOAuth::Password {
            client_id: "cid".into(),
            client_secret: "s3cr3t-client".into(),
            user: "svc".into(),
            password: "pa55-word".into(),
        };
        let a = ServiceNowAuth::OAuth(o.clone());
        for shown in [format!("{a:?}"), format!("{o:?}"), a.describe()] {
            assert!(
                !shown.contains("s3cr3t") && !shown.contains("pa55"),
                "{shown}"
            );
        }
        assert!(format!("{a:?}").contains("cid"));
        let basic = ServiceNowAuth::Basic {
            user: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{basic:?}").contains("hunter2"));
        assert_eq!(
            scrub("bad secret s3cr3t-client given", &o.secrets()),
            "bad secret <redacted> given"
        );
        let cut = format!("{}s3cr3t-client", "x".repeat(195));
        assert!(!scrub(&cut, &o.secrets()).contains("s3cr"));
        assert_eq!(scrub("access_denied", &o.secrets()), "access_denied");
    }
}
