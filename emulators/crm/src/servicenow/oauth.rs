//! The instance's OAuth 2.0 token endpoint, `POST /oauth_token.do` (form encoded), and the
//! access tokens it hands out.
//!
//! What ServiceNow documents:
//! - Password grant: `grant_type=password&client_id&client_secret&username&password`; the
//!   answer is `{scope, token_type: "Bearer", expires_in, refresh_token, access_token}`, and API
//!   calls then carry `Authorization: Bearer <access_token>` ("REST OAuth example",
//!   https://www.servicenow.com/docs/r/api-reference/rest-api-explorer/r_RESTOAuthExample.html;
//!   the sample says `"scope": "useraccount"`, `"expires_in": 1799`).
//! - Client credentials grant: `grant_type=client_credentials&client_id&client_secret` (scope
//!   optional) to the same endpoint ("Client credentials grant workflow", Australia release,
//!   https://www.servicenow.com/docs/r/fr-FR/platform-security/authentication/client-credentials-grant-workflow.html),
//!   only once the `glide.oauth.inbound.client.credential.grant_type.enabled` property is
//!   created and true ("Client Credentials", https://docs.servicenow.com/bundle/washingtondc-platform-security/page/integrate/authentication/concept/client-credentials.html:
//!   "By default the system property is false").
//! - An access token lives for the registry entry's "Access Token Lifespan".
//!
//! What is not documented and is modelled on reports: refusals. Instances are reported to answer
//! a failed token request with 401 `{"error":"server_error","error_description":"access_denied"}`
//! whatever went wrong (demisto/content-docs#1301 quotes it for a password grant); RFC 6749
//! codes are available behind `oauth_rfc_errors`. Whether the client credentials grant returns
//! a refresh token is not documented either: RFC 6749 section 4.4.3 says it should not, so none
//! is issued. The refresh grant (`grant_type=refresh_token`) is RFC 6749 section 6.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::config::ServiceNowConfig;

/// A refused token request, with its RFC 6749 code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, error: &'static str, description: &'static str) -> Refusal {
        Refusal {
            status,
            error,
            description,
        }
    }

    /// The answer in the configured style (see the module doc).
    pub fn response(self, cfg: &ServiceNowConfig) -> Response {
        let (status, error, description) = if cfg.oauth_rfc_errors {
            (self.status, self.error, self.description)
        } else {
            (StatusCode::UNAUTHORIZED, "server_error", "access_denied")
        };
        (
            status,
            Json(json!({ "error": error, "error_description": description })),
        )
            .into_response()
    }
}

#[derive(Debug, Default)]
pub struct Tokens {
    /// access token → when it stops working.
    access: HashMap<String, Instant>,
    refresh: HashSet<String>,
}

impl Tokens {
    pub fn is_valid(&self, token: &str) -> bool {
        self.access
            .get(token)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Ends every access token now, as if their lifespan had run out (refresh tokens live on).
    pub fn expire_all(&mut self) {
        self.access.clear();
    }

    /// Handles a token request: the JSON answer, or why not.
    pub fn issue(
        &mut self,
        cfg: &ServiceNowConfig,
        form: &HashMap<String, String>,
    ) -> Result<Value, Refusal> {
        let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        let client_ok = field("client_id") == cfg.oauth_client_id
            && field("client_secret") == cfg.oauth_client_secret;
        let bad_client = Refusal::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
        let refresh = match field("grant_type") {
            "password" => {
                if !client_ok {
                    return Err(bad_client);
                }
                if field("username") != cfg.user || field("password") != cfg.password {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "invalid resource owner credentials",
                    ));
                }
                Some(self.new_refresh())
            }
            "client_credentials" => {
                if !cfg.client_credentials_enabled {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "unauthorized_client",
                        "the client credentials grant is not enabled on this instance",
                    ));
                }
                if !client_ok {
                    return Err(bad_client);
                }
                None
            }
            "refresh_token" => {
                if !client_ok {
                    return Err(bad_client);
                }
                let token = field("refresh_token");
                if !self.refresh.contains(token) {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "invalid refresh token",
                    ));
                }
                Some(token.to_string())
            }
            _ => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "unsupported grant type",
                ));
            }
        };
        let now = Instant::now();
        self.access.retain(|_, until| *until > now);
        let access = token_string();
        self.access
            .insert(access.clone(), now + cfg.oauth_token_lifetime);
        let mut body = json!({
            "scope": "useraccount",
            "token_type": "Bearer",
            "expires_in": cfg.oauth_token_lifetime.as_secs(),
            "access_token": access,
        });
        if let Some(r) = refresh {
            body["refresh_token"] = Value::String(r);
        }
        Ok(body)
    }

    fn new_refresh(&mut self) -> String {
        let t = token_string();
        self.refresh.insert(t.clone());
        t
    }
}

/// An opaque token (the documented samples are 86 URL-safe characters).
fn token_string() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}
