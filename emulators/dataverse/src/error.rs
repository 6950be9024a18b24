//! The Dataverse Web API error shape, `{"error":{"code":"0x…","message":"…"}}`, and the codes
//! the emulator returns. Each constructor names the documented error it stands for.

use http::StatusCode;
use serde_json::json;

/// An error the API answers with (status + Dataverse error code + message).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }

    /// Generic OData request error (malformed URL, body, header).
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "0x80060888", message)
    }

    /// "Troubleshoot Dataverse Web API client errors": unknown entity set → 404 0x8006088a
    /// "Resource not found for the segment 'Account'."
    pub fn segment_not_found(segment: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "0x8006088a",
            format!("Resource not found for the segment '{segment}'."),
        )
    }

    /// "Troubleshoot Dataverse Web API client errors": unknown property in `$select` → 400 0x0
    /// "Could not find a property named 'Name' on type 'Microsoft.Dynamics.CRM.account'."
    pub fn unknown_select(prop: &str, entity: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "0x0",
            format!(
                "Could not find a property named '{prop}' on type 'Microsoft.Dynamics.CRM.{entity}'."
            ),
        )
    }

    /// Unknown property in a write body: OData rejects undeclared properties on
    /// non-open types (observed code 0x80060888).
    pub fn unknown_property(prop: &str, entity: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "0x80060888",
            format!(
                "The property '{prop}' does not exist on type 'Microsoft.Dynamics.CRM.{entity}'. Make sure to only use property names that are defined by the type."
            ),
        )
    }

    /// ObjectDoesNotExist, 0x80040217 ("Web service error codes"); the Web API answers 404.
    pub fn does_not_exist(entity: &str, id: &uuid::Uuid) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "0x80040217",
            format!("{entity} With Id = {id} Does Not Exist"),
        )
    }

    /// No record for alternate key values: 0x80060891 (reported in MicrosoftDocs
    /// dynamics-365-customer-engagement#1044).
    pub fn no_record_for_key(entity: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "0x80060891",
            format!("A record with the specified key values does not exist in {entity} entity"),
        )
    }

    /// DuplicateRecord, 0x80040237 / -2147220937 ("Troubleshoot Dataverse client errors":
    /// "Cannot insert duplicate key"); `If-None-Match: *` on an existing row answers 412
    /// ("Perform conditional operations using the Web API").
    pub fn duplicate(entity: &str) -> Self {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "0x80040237",
            format!("A record with matching key values already exists. Entity: {entity}"),
        )
    }

    /// `If-Match` with an ETag that no longer matches: 412 ("Perform conditional operations").
    pub fn etag_mismatch() -> Self {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "0x80060882",
            "The version of the existing record doesn't match the RowVersion property provided.",
        )
    }

    /// Alternate key uniqueness: 412 0x80060892 "Entity Key … violated".
    pub fn key_violated(entity: &str) -> Self {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "0x80060892",
            format!(
                "Entity Key msdyn_source_crm_key violated. A record with the same value for msdyn_source_crm,msdyn_source_crm_id already exists on {entity}."
            ),
        )
    }

    /// Key columns not a defined (active) key: EntityKeyNotDefined 0x80060890, which the
    /// Web API maps to 400.
    pub fn key_not_defined(entity: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "0x80060890",
            format!(
                "The key in the request URI is not valid for resource 'Microsoft.Dynamics.CRM.{entity}'. Make sure that the key values are the correct types and that the specified key attributes are a defined, active key for the {entity} entity."
            ),
        )
    }

    /// Validation error 0x80044331 (the per-part example in "Execute batch operations using the
    /// Web API", and the MaxLength message Dataverse gives).
    pub fn validation(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "0x80044331", message)
    }

    /// Attribute value out of range (option set value not in the option set).
    pub fn out_of_range(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "0x8004431a", message)
    }

    /// A message not registered for a table, e.g. "The 'CreateMultiple' method does not support
    /// entities of type 'account'." (seen in public code bases for DeleteMultiple on contact).
    pub fn message_not_supported(message: &str, entity: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "0x80040800",
            format!(
                "The '{message}' method does not support entities of type '{entity}'. MessageProcessorCache returned MessageProcessor.Empty."
            ),
        )
    }

    /// Key columns both in `@odata.id` and in the body of an UpsertMultiple create
    /// (microsoft/PowerPlatform-DataverseClient-Python PR #127): 400 0x80040216.
    pub fn key_in_body(entity: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "0x80040216",
            format!(
                "An unexpected error occurred. The key attributes of {entity} were provided both in the key and as attribute values."
            ),
        )
    }

    /// "Troubleshoot Dataverse bulk operation errors": concurrent updates of one record →
    /// "Generic SQL error" -2147204784 (0x80044150), Sql Number 1205 (deadlock).
    pub fn deadlock() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "0x80044150",
            "Generic SQL error. CRM ErrorCode: -2147204784 Sql ErrorCode: -2146232060 Sql Number: 1205",
        )
    }

    /// Injected server error.
    pub fn server_error(status: StatusCode) -> Self {
        ApiError::new(status, "0x80040216", "An unexpected error occurred.")
    }

    /// 405 for methods a resource does not support.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "0x80060888",
            format!("The HTTP method '{method}' is not supported for '{path}'."),
        )
    }
}
