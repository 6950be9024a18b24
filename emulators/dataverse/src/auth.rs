//! The Entra ID token endpoint for the client credentials grant ("OAuth 2.0 client credentials
//! flow", https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow)
//! and bearer-token checking for the API. Tokens are opaque random strings: clients must not
//! read them. Error bodies never contain the submitted secret.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// Issued tokens and who they belong to.
#[derive(Debug, Default)]
pub struct Tokens {
    issued: HashMap<String, (String, Instant)>,
}

impl Tokens {
    pub fn issue(&mut self, client_id: &str, lifetime: Duration) -> String {
        let token = format!(
            "emu.{}.{}",
            Uuid::new_v4().simple(),
            Uuid::new_v4().simple()
        );
        self.issued.insert(
            token.clone(),
            (client_id.to_string(), Instant::now() + lifetime),
        );
        token
    }

    /// The user (client id) of a valid token.
    pub fn user(&self, token: &str) -> Option<String> {
        self.issued
            .get(token)
            .filter(|(_, exp)| Instant::now() < *exp)
            .map(|(c, _)| c.clone())
    }

    pub fn expire_all(&mut self) {
        self.issued.clear();
    }
}

/// Parses an `application/x-www-form-urlencoded` body.
pub fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .ok()
                    .map(|c| c.into_owned())
            };
            Some((dec(k)?, dec(v)?))
        })
        .collect()
}

/// A token endpoint error: (status, body). Shape per the "Error response" section of the client
/// credentials page: error, error_description, error_codes, timestamp, trace_id, correlation_id.
pub fn token_error(
    status: StatusCode,
    error: &str,
    code: u32,
    description: &str,
) -> (StatusCode, Value) {
    let trace = Uuid::new_v4();
    let correlation = Uuid::new_v4();
    let ts = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    (
        status,
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {ts}"
            ),
            "error_codes": [code],
            "timestamp": ts,
            "trace_id": trace.to_string(),
            "correlation_id": correlation.to_string(),
        }),
    )
}

/// Checks a token request. Ok: the client id to issue for.
pub fn check_request(
    form: &HashMap<String, String>,
    path_tenant: &str,
    tenant: &str,
    client_id: &str,
    client_secret: &str,
) -> Result<(), (StatusCode, Value)> {
    let bad = StatusCode::BAD_REQUEST;
    if path_tenant != tenant {
        return Err(token_error(
            bad,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{path_tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        ));
    }
    let Some(grant) = form.get("grant_type") else {
        return Err(token_error(
            bad,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        ));
    };
    if grant != "client_credentials" {
        return Err(token_error(
            bad,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        ));
    }
    let Some(id) = form.get("client_id") else {
        return Err(token_error(
            bad,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        ));
    };
    if id != client_id {
        return Err(token_error(
            bad,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        ));
    }
    let Some(scope) = form.get("scope") else {
        return Err(token_error(
            bad,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        ));
    };
    if !scope.ends_with("/.default") {
        return Err(token_error(
            bad,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
        ));
    }
    match form.get("client_secret") {
        None => Err(token_error(
            bad,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )),
        // 401 for a wrong secret, as Entra answers invalid_client (RFC 6749 §5.2).
        Some(s) if s != client_secret => Err(token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        )),
        Some(_) => Ok(()),
    }
}
