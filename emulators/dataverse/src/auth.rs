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

use crate::config::ClientCertificate;

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
    certificate: Option<(&ClientCertificate, &str)>,
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
    if let Some(assertion) = form.get("client_assertion") {
        return check_assertion(form, assertion, client_id, certificate);
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

/// Certificate credentials, per "Microsoft identity platform application authentication
/// certificate credentials": `client_assertion_type` is
/// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and `client_assertion` a JWT signed
/// RS256 with the registered certificate's key, whose header names the certificate (`x5t`, the
/// base64url SHA-1 thumbprint) and whose claims are `aud` (the token endpoint), `iss` and `sub`
/// (the client id), `jti`, `nbf` and `exp`.
fn check_assertion(
    form: &HashMap<String, String>,
    assertion: &str,
    client_id: &str,
    certificate: Option<(&ClientCertificate, &str)>,
) -> Result<(), (StatusCode, Value)> {
    let unauthorized =
        |code: u32, msg: &str| token_error(StatusCode::UNAUTHORIZED, "invalid_client", code, msg);
    if form.get("client_assertion_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return Err(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
            "Invalid JWT token. The client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
        ));
    }
    let Some((cert, audience)) = certificate else {
        return Err(unauthorized(
            700027,
            "Client assertion failed signature validation: no certificate is registered for this application.",
        ));
    };
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| unauthorized(50027, "Invalid JWT token. The token is malformed."))?;
    let expected_x5t = hex_to_base64url(&cert.thumbprint);
    if header.x5t.as_deref() != expected_x5t.as_deref() {
        return Err(unauthorized(
            700027,
            "Client assertion contains an invalid signature. The key was not found.",
        ));
    }
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(cert.public_key_pem.as_bytes())
        .map_err(|_| unauthorized(700027, "Client assertion failed signature validation."))?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[audience]);
    v.set_issuer(&[client_id]);
    v.sub = Some(client_id.to_string());
    v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    v.validate_nbf = true;
    jsonwebtoken::decode::<Value>(assertion, &key, &v).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature
        | jsonwebtoken::errors::ErrorKind::ImmatureSignature => unauthorized(
            700024,
            "Client assertion is not within its valid time range.",
        ),
        jsonwebtoken::errors::ErrorKind::InvalidAudience => unauthorized(
            700021,
            "Client assertion audience claim does not match Realm issuer.",
        ),
        _ => unauthorized(700027, "Client assertion failed signature validation."),
    })?;
    Ok(())
}

fn hex_to_base64url(hex: &str) -> Option<String> {
    use base64::Engine;
    let clean: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    let bytes: Option<Vec<u8>> = (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(clean.get(i..i + 2)?, 16).ok())
        .collect();
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes?))
}
