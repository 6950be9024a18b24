//! Read-only probes of a Dataverse environment for `crm-sync check`: who the application user
//! is (and the parallelism the service recommends), the tables' alternate keys, a column's
//! existence and MaxLength, a choice column's values and the user's privileges. Each returns a
//! typed result; judging them is the caller's (pure) business.
//!
//! Requests, as "Query table definitions using the Web API" and "Use the Web API with table
//! definitions" show them:
//! - `GET WhoAmI` (the `x-ms-dop-hint` header rides on every response, "Send parallel requests");
//! - `GET EntityDefinitions(LogicalName='account')?$select=LogicalName&$expand=Keys(...)`;
//! - `GET EntityDefinitions(LogicalName='account')/Attributes(LogicalName='x')` and its casts to
//!   `Microsoft.Dynamics.CRM.StringAttributeMetadata` / `MemoAttributeMetadata` (MaxLength) and
//!   `PicklistAttributeMetadata` (OptionSet, GlobalOptionSet);
//! - `GET systemusers(<id>)/Microsoft.Dynamics.CRM.RetrieveUserPrivileges()` ("RetrieveUserPrivileges
//!   Function": `RolePrivileges`, each with `PrivilegeName` and `Depth`).
//!
//! A column or table that does not exist is answered 404 (ObjectDoesNotExist, 0x80040217); that
//! is a finding ([`None`]), not an error.

use std::sync::atomic::Ordering;

use serde_json::Value;

use crate::client::WebApiClient;
use crate::writer::WriteError;

/// `WhoAmI`, with the service's recommended degree of parallelism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub business_unit_id: String,
    /// `x-ms-dop-hint`, when the service sent it.
    pub dop_hint: Option<u32>,
}

/// `EntityKeyIndexStatus` ("Define alternate keys": the index is built asynchronously).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyIndexStatus {
    Pending,
    InProgress,
    Active,
    Failed,
    Other(String),
}

impl KeyIndexStatus {
    fn parse(s: &str) -> Self {
        match s {
            "Pending" => KeyIndexStatus::Pending,
            "InProgress" => KeyIndexStatus::InProgress,
            "Active" => KeyIndexStatus::Active,
            "Failed" => KeyIndexStatus::Failed,
            other => KeyIndexStatus::Other(other.to_string()),
        }
    }
}

/// One alternate key of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityKey {
    pub schema_name: String,
    pub attributes: Vec<String>,
    pub status: KeyIndexStatus,
}

/// Which metadata type to read a column as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeKind {
    /// Single line of text: `StringAttributeMetadata`, with MaxLength.
    String,
    /// Multiple lines of text: `MemoAttributeMetadata`, with MaxLength.
    Memo,
    /// Any other type: the base `AttributeMetadata`.
    Other,
}

/// A column as the org has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeInfo {
    /// MaxLength for text columns.
    pub max_length: Option<u32>,
}

/// A privilege the user holds through a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privilege {
    pub name: String,
    /// `PrivilegeDepth`: Basic, Local, Deep or Global.
    pub depth: String,
}

fn is_not_found(e: &WriteError) -> bool {
    matches!(e, WriteError::Permanent { status: 404, .. })
}

fn unexpected(what: &str) -> WriteError {
    WriteError::Permanent {
        status: 200,
        code: "unexpected-shape".into(),
        message: format!("Dataverse's answer has no {what}"),
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// `GET WhoAmI`.
pub async fn who_am_i(client: &WebApiClient) -> Result<Identity, WriteError> {
    let v = client.get_json("WhoAmI", None).await?;
    let user_id = text(&v, "UserId");
    if user_id.is_empty() {
        return Err(unexpected("UserId"));
    }
    let dop = client.stats.dop_hint.load(Ordering::Relaxed);
    Ok(Identity {
        user_id,
        business_unit_id: text(&v, "BusinessUnitId"),
        dop_hint: (dop > 0).then(|| u32::try_from(dop).unwrap_or(u32::MAX)),
    })
}

/// The alternate keys of `table` (a logical name); `None` if the table does not exist.
pub async fn keys(
    client: &WebApiClient,
    table: &str,
) -> Result<Option<Vec<EntityKey>>, WriteError> {
    let path = format!(
        "EntityDefinitions(LogicalName='{table}')?$select=LogicalName&$expand=Keys($select=SchemaName,KeyAttributes,EntityKeyIndexStatus)"
    );
    let v = match client.get_json(&path, None).await {
        Ok(v) => v,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let list = v["Keys"].as_array().ok_or_else(|| unexpected("Keys"))?;
    Ok(Some(
        list.iter()
            .map(|k| EntityKey {
                schema_name: text(k, "SchemaName"),
                attributes: k["KeyAttributes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
                status: KeyIndexStatus::parse(&text(k, "EntityKeyIndexStatus")),
            })
            .collect(),
    ))
}

fn attribute_path(table: &str, column: &str) -> String {
    format!("EntityDefinitions(LogicalName='{table}')/Attributes(LogicalName='{column}')")
}

/// A column of `table`; `None` if it does not exist.
pub async fn attribute(
    client: &WebApiClient,
    table: &str,
    column: &str,
    kind: AttributeKind,
) -> Result<Option<AttributeInfo>, WriteError> {
    let base = attribute_path(table, column);
    let path = match kind {
        AttributeKind::String => {
            format!("{base}/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=MaxLength")
        }
        AttributeKind::Memo => {
            format!("{base}/Microsoft.Dynamics.CRM.MemoAttributeMetadata?$select=MaxLength")
        }
        AttributeKind::Other => format!("{base}?$select=LogicalName"),
    };
    match client.get_json(&path, None).await {
        Ok(v) => Ok(Some(AttributeInfo {
            max_length: v["MaxLength"]
                .as_u64()
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        })),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The values of a choice column, local or global option set; `None` if the column does not
/// exist.
pub async fn choice_values(
    client: &WebApiClient,
    table: &str,
    column: &str,
) -> Result<Option<Vec<i32>>, WriteError> {
    let path = format!(
        "{}/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options),GlobalOptionSet($select=Options)",
        attribute_path(table, column)
    );
    let v = match client.get_json(&path, None).await {
        Ok(v) => v,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut values: Vec<i32> = ["OptionSet", "GlobalOptionSet"]
        .iter()
        .filter_map(|set| v[*set]["Options"].as_array())
        .flatten()
        .filter_map(|o| o["Value"].as_i64())
        .filter_map(|n| i32::try_from(n).ok())
        .collect();
    values.sort_unstable();
    values.dedup();
    Ok(Some(values))
}

/// The privileges `user_id` holds through its roles and teams.
pub async fn user_privileges(
    client: &WebApiClient,
    user_id: &str,
) -> Result<Vec<Privilege>, WriteError> {
    let path = format!("systemusers({user_id})/Microsoft.Dynamics.CRM.RetrieveUserPrivileges()");
    let v = client.get_json(&path, None).await?;
    let list = v["RolePrivileges"]
        .as_array()
        .ok_or_else(|| unexpected("RolePrivileges"))?;
    Ok(list
        .iter()
        .map(|p| Privilege {
            name: text(p, "PrivilegeName"),
            depth: text(p, "Depth"),
        })
        .collect())
}
