//! Error bodies as the REST API sends them: a JSON array of `{message, errorCode}` ("Status
//! Codes and Error Responses", REST API Developer Guide), and the OAuth token endpoint's
//! `{error, error_description}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: "The session ID or OAuth token used has expired or is invalid."
    pub fn invalid_session() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        )
    }

    pub fn not_found() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        )
    }

    /// "Invalid query locator": the cursor expired, died with its session, or never existed.
    pub fn invalid_locator() -> ApiError {
        ApiError::bad_request("INVALID_QUERY_LOCATOR", "invalid query locator")
    }

    /// Daily allocation used up: 403 with REQUEST_LIMIT_EXCEEDED ("API Request Limits and
    /// Allocations"; the message names the limit that was hit).
    pub fn query_timeout() -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "QUERY_TIMEOUT",
            "Your query request was running for too long.",
        )
    }

    pub fn concurrent_limit_exceeded() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "ConcurrentPerOrgLongTxn Limit exceeded.",
        )
    }

    pub fn limit_exceeded() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!([{ "message": self.message, "errorCode": self.code }])),
        )
            .into_response()
    }
}

/// An OAuth 2.0 token endpoint error (RFC 6749 section 5.2 shape, Salesforce's codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub error: &'static str,
    pub description: &'static str,
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": self.error, "error_description": self.description })),
        )
            .into_response()
    }
}
