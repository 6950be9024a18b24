//! Provisioning the Dataverse end of crm-sync's connection, least privilege, as a System
//! Administrator's session: a security role with only the privileges the configuration needs
//! on account and contact, assigned to the application user of the configured Entra app, and
//! (for the `alternate-key` identity) the alternate key on (`msdyn_source_crm`,
//! `msdyn_source_crm_id`), waited for until its index is Active. Used by `crm-sync connect
//! dataverse`.
//!
//! Each step looks first and changes only what differs, so a second run changes nothing and a
//! failed run is completed by the next. When the caller lacks the rights (401/403),
//! [`manual_steps`] says exactly what an administrator does by hand instead.
//!
//! Microsoft Learn, Dataverse Web API: "role EntityType" and "businessunit EntityType" (a role
//! belongs to a business unit; the root one has no parent), "ReplacePrivilegesRole Action" and
//! "RetrieveRolePrivilegesRole Function" (RolePrivilege: PrivilegeId, Depth, BusinessUnitId),
//! "privilege EntityType" (`prv{Action}{Table}` names), "Associate and disassociate table rows
//! using the Web API" (`systemuserroles_association/$ref`), "systemuser EntityType"
//! (`applicationid` of an application user), "Define alternate keys using the Web API" (POST
//! `EntityDefinitions(LogicalName='…')/Keys`, `EntityKeyIndexStatus`, the `AsyncJob` that
//! builds the index and whose message says why it failed).

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use thiserror::Error;

/// The role crm-sync creates.
pub const ROLE_NAME: &str = "crm-sync";
/// The alternate key crm-sync creates.
pub const KEY_NAME: &str = "msdyn_source_crm_key";
const KEY_COLUMNS: [&str; 2] = ["msdyn_source_crm", "msdyn_source_crm_id"];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProvisionError {
    #[error("Dataverse refused {call}: HTTP {status} {code}: {message}")]
    Api {
        call: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("Dataverse unavailable during {call}: {detail}")]
    Unavailable { call: String, detail: String },
    #[error("unexpected Dataverse answer to {call}: {detail}")]
    Protocol { call: String, detail: String },
    /// The alternate key's index could not be built.
    #[error("the alternate key on {table} failed: {reason}")]
    KeyFailed { table: String, reason: String },
    /// The index was still being built when the wait ended.
    #[error("the alternate key on {table} is still {status} after {waited:?}")]
    KeyPending {
        table: String,
        status: String,
        waited: Duration,
    },
}

impl ProvisionError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ProvisionError::Unavailable { .. } | ProvisionError::KeyPending { .. } => true,
            ProvisionError::Api { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The caller is not allowed to do this (not a System Administrator, or no session).
    pub fn is_access(&self) -> bool {
        matches!(
            self,
            ProvisionError::Api {
                status: 401 | 403,
                ..
            }
        )
    }
}

/// What to provision.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    /// `prvCreateAccount`, ... : exactly what the configuration needs.
    pub privileges: Vec<String>,
    /// The Entra app (client) id of the application user.
    pub application_id: String,
    pub alternate_key: bool,
    /// How long to wait for the key's index, and how often to look.
    pub key_wait: Duration,
    pub key_poll: Duration,
}

/// One thing done or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub what: String,
    pub outcome: &'static str,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>14}  {}", self.outcome, self.what)
    }
}

fn step(what: impl Into<String>, outcome: &'static str) -> Step {
    Step {
        what: what.into(),
        outcome,
    }
}

/// The steps an administrator takes by hand when crm-sync may not (Power Platform admin
/// center → the environment → Settings → Users + permissions).
pub fn manual_steps(spec: &RoleSpec) -> String {
    let mut out = format!(
        "1. Security roles → New role `{ROLE_NAME}` in the root business unit, with Organization (Global) depth on exactly:\n"
    );
    for p in &spec.privileges {
        out.push_str(&format!("     {p}\n"));
    }
    out.push_str(&format!(
        "   and nothing else.\n2. Application users → the app {} → Manage roles → assign `{ROLE_NAME}` (and remove broader roles).\n",
        spec.application_id
    ));
    if spec.alternate_key {
        out.push_str(&format!(
            "3. Tables → account and contact → Keys → New key `{KEY_NAME}` on Source CRM (msdyn_source_crm) and Source CRM ID (msdyn_source_crm_id); wait until its status is Active.\n"
        ));
    }
    out
}

/// An administrator's session on the environment's Web API. The token never appears in errors
/// or `Debug` output.
pub struct DataverseAdmin {
    http: reqwest::Client,
    api_url: String,
    token: String,
}

impl fmt::Debug for DataverseAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataverseAdmin")
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl DataverseAdmin {
    /// `org_url`: `https://org.crm.dynamics.com`; `token`: an access token of an administrator
    /// for that environment.
    pub fn new(org_url: &str, token: &str) -> Result<DataverseAdmin, ProvisionError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ProvisionError::Protocol {
                call: "HTTP client".into(),
                detail: e.to_string(),
            })?;
        Ok(DataverseAdmin {
            http,
            api_url: format!("{}/api/data/v9.2/", org_url.trim_end_matches('/')),
            token: token.to_string(),
        })
    }

    /// One request; the JSON answer (or `Null` for 204), Dataverse's error code otherwise.
    async fn call(
        &self,
        name: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(Value, Option<String>), ProvisionError> {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.api_url))
            .bearer_auth(&self.token)
            .header("OData-Version", "4.0")
            .header("OData-MaxVersion", "4.0")
            .header("Accept", "application/json");
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.map_err(|e| ProvisionError::Unavailable {
            call: name.into(),
            detail: e.without_url().to_string(),
        })?;
        let status = resp.status().as_u16();
        let entity = resp
            .headers()
            .get("OData-EntityId")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(ProvisionError::Api {
                call: name.into(),
                status,
                code: v["error"]["code"].as_str().unwrap_or("").to_string(),
                message: v["error"]["message"].as_str().unwrap_or("").to_string(),
            });
        }
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| ProvisionError::Protocol {
                call: name.into(),
                detail: e.to_string(),
            })?
        };
        Ok((v, entity))
    }

    async fn get(&self, name: &str, path: &str) -> Result<Value, ProvisionError> {
        Ok(self.call(name, Method::GET, path, None).await?.0)
    }

    /// The id in a created row's `OData-EntityId` (`.../roles(<id>)`).
    fn id_of(name: &str, entity: Option<String>) -> Result<String, ProvisionError> {
        entity
            .as_deref()
            .and_then(|e| e.rsplit('(').next())
            .map(|s| s.trim_end_matches(')').to_string())
            .filter(|s| !s.is_empty())
            .ok_or(ProvisionError::Protocol {
                call: name.into(),
                detail: "no OData-EntityId".into(),
            })
    }
}

fn first_str(v: &Value, field: &str) -> Option<String> {
    v["value"]
        .as_array()?
        .first()?
        .get(field)?
        .as_str()
        .map(str::to_string)
}

/// OData string literal: quotes doubled.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Provisions the role, its assignment and the key. See the module documentation.
pub async fn connect(admin: &DataverseAdmin, spec: &RoleSpec) -> Result<Vec<Step>, ProvisionError> {
    let mut steps = Vec::new();
    let bu_list = admin
        .get(
            "find the root business unit",
            "businessunits?$select=businessunitid&$filter=_parentbusinessunitid_value eq null",
        )
        .await?;
    let bu = first_str(&bu_list, "businessunitid").ok_or(ProvisionError::Protocol {
        call: "find the root business unit".into(),
        detail: "none".into(),
    })?;

    // 1. The role.
    let found = admin
        .get(
            "find the role",
            &format!(
                "roles?$select=roleid,name&$filter=name eq {} and _businessunitid_value eq {bu}",
                lit(ROLE_NAME)
            ),
        )
        .await?;
    let role = match first_str(&found, "roleid") {
        Some(id) => {
            steps.push(step(format!("security role {ROLE_NAME}"), "unchanged"));
            id
        }
        None => {
            let (_, entity) = admin
                .call(
                    "create the role",
                    Method::POST,
                    "roles",
                    Some(json!({
                        "name": ROLE_NAME,
                        "description": "crm-sync's application user: upserts (and deletes, when a source's delete policy says so) accounts and contacts",
                        "businessunitid@odata.bind": format!("/businessunits({bu})"),
                    })),
                )
                .await?;
            let id = DataverseAdmin::id_of("create the role", entity)?;
            steps.push(step(format!("security role {ROLE_NAME} ({id})"), "created"));
            id
        }
    };

    // 2. Exactly the privileges needed, at Global depth.
    let current = admin
        .get(
            "read the role's privileges",
            &format!("roles({role})/Microsoft.Dynamics.CRM.RetrieveRolePrivilegesRole()"),
        )
        .await?;
    let mut have: Vec<(String, String)> = current["RolePrivileges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["PrivilegeName"].as_str()?.to_string(),
                match &p["Depth"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) if n.as_u64() == Some(3) => "Global".into(),
                    other => other.to_string(),
                },
            ))
        })
        .collect();
    have.sort();
    let mut want: Vec<(String, String)> = spec
        .privileges
        .iter()
        .map(|p| (p.clone(), "Global".to_string()))
        .collect();
    want.sort();
    want.dedup();
    if have == want {
        steps.push(step(
            format!("{} privileges: {}", want.len(), spec.privileges.join(", ")),
            "unchanged",
        ));
    } else {
        let mut list = Vec::new();
        for (name, _) in &want {
            let v = admin
                .get(
                    "find a privilege",
                    &format!(
                        "privileges?$select=privilegeid,name&$filter=name eq {}",
                        lit(name)
                    ),
                )
                .await?;
            let id = first_str(&v, "privilegeid").ok_or_else(|| ProvisionError::Protocol {
                call: "find a privilege".into(),
                detail: format!("no privilege named {name}"),
            })?;
            list.push(json!({"PrivilegeId": id, "Depth": "Global", "BusinessUnitId": bu}));
        }
        admin
            .call(
                "set the role's privileges",
                Method::POST,
                &format!("roles({role})/Microsoft.Dynamics.CRM.ReplacePrivilegesRole"),
                Some(json!({ "Privileges": list })),
            )
            .await?;
        steps.push(step(
            format!(
                "{} privileges (Global): {}",
                want.len(),
                spec.privileges.join(", ")
            ),
            if have.is_empty() {
                "created"
            } else {
                "updated"
            },
        ));
    }

    // 3. Assigned to the application user.
    let users = admin
        .get(
            "find the application user",
            &format!(
                "systemusers?$select=systemuserid&$filter=applicationid eq {}",
                spec.application_id
            ),
        )
        .await?;
    let user = first_str(&users, "systemuserid").ok_or_else(|| ProvisionError::Api {
        call: "find the application user".into(),
        status: 404,
        code: "0x80040217".into(),
        message: format!(
            "no application user for the app {}: add it under Application users first",
            spec.application_id
        ),
    })?;
    let roles = admin
        .get(
            "read the user's roles",
            &format!("systemusers({user})/systemuserroles_association?$select=roleid,name"),
        )
        .await?;
    let assigned = roles["value"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["roleid"].as_str() == Some(role.as_str()));
    if assigned {
        steps.push(step("role assigned to the application user", "unchanged"));
    } else {
        admin
            .call(
                "assign the role",
                Method::POST,
                &format!("systemusers({user})/systemuserroles_association/$ref"),
                Some(json!({"@odata.id": format!("{}roles({role})", admin.api_url)})),
            )
            .await?;
        steps.push(step("role assigned to the application user", "created"));
    }
    let others: Vec<String> = roles["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["roleid"].as_str() != Some(role.as_str()))
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect();
    if !others.is_empty() {
        steps.push(step(
            format!(
                "the application user also holds {}: remove them for least privilege",
                others.join(", ")
            ),
            "warning",
        ));
    }

    // 4. The alternate key, Active.
    if spec.alternate_key {
        for table in ["account", "contact"] {
            steps.push(ensure_key(admin, table, spec).await?);
        }
    }
    Ok(steps)
}

async fn key_of(admin: &DataverseAdmin, table: &str) -> Result<Option<Value>, ProvisionError> {
    let v = admin
        .get(
            "read the table's keys",
            &format!(
                "EntityDefinitions(LogicalName='{table}')?$select=LogicalName&$expand=Keys($select=SchemaName,KeyAttributes,EntityKeyIndexStatus,AsyncJob)"
            ),
        )
        .await?;
    Ok(v["Keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| {
            let attrs: Vec<&str> = k["KeyAttributes"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut a = attrs.clone();
            a.sort_unstable();
            a == KEY_COLUMNS
        })
        .cloned())
}

async fn ensure_key(
    admin: &DataverseAdmin,
    table: &str,
    spec: &RoleSpec,
) -> Result<Step, ProvisionError> {
    let mut outcome = "unchanged";
    if key_of(admin, table).await?.is_none() {
        admin
            .call(
                "create the alternate key",
                Method::POST,
                &format!("EntityDefinitions(LogicalName='{table}')/Keys"),
                Some(json!({
                    "SchemaName": KEY_NAME,
                    "DisplayName": {"LocalizedLabels": [{"Label": "Source CRM record", "LanguageCode": 1033}]},
                    "KeyAttributes": KEY_COLUMNS,
                })),
            )
            .await?;
        outcome = "created";
    }
    let start = Instant::now();
    loop {
        let key = key_of(admin, table)
            .await?
            .ok_or(ProvisionError::Protocol {
                call: "read the table's keys".into(),
                detail: format!("the key on {table} vanished"),
            })?;
        let status = key["EntityKeyIndexStatus"]
            .as_str()
            .unwrap_or("")
            .to_string();
        match status.as_str() {
            "Active" => {
                return Ok(step(
                    format!("alternate key {KEY_NAME} on {table} (Active)"),
                    outcome,
                ));
            }
            "Failed" => {
                let reason = match key["AsyncJob"]["Id"].as_str() {
                    Some(job) => admin
                        .get(
                            "read the key's system job",
                            &format!("asyncoperations({job})?$select=message,friendlymessage"),
                        )
                        .await
                        .ok()
                        .and_then(|j| {
                            j["friendlymessage"]
                                .as_str()
                                .or(j["message"].as_str())
                                .filter(|m| !m.is_empty())
                                .map(str::to_string)
                        })
                        .unwrap_or_else(|| "Dataverse gave no reason".into()),
                    None => "Dataverse gave no reason".into(),
                };
                return Err(ProvisionError::KeyFailed {
                    table: table.into(),
                    reason,
                });
            }
            _ if start.elapsed() >= spec.key_wait => {
                return Err(ProvisionError::KeyPending {
                    table: table.into(),
                    status,
                    waited: spec.key_wait,
                });
            }
            _ => tokio::time::sleep(spec.key_poll).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_steps_name_every_privilege_the_app_and_the_key() {
        let spec = RoleSpec {
            privileges: vec!["prvReadAccount".into(), "prvDeleteContact".into()],
            application_id: "00000000-0000-0000-0000-000000000001".into(),
            alternate_key: true,
            key_wait: Duration::from_secs(1),
            key_poll: Duration::from_millis(10),
        };
        let s = manual_steps(&spec);
        assert!(
            s.contains("prvReadAccount\n") && s.contains("prvDeleteContact\n"),
            "{s}"
        );
        assert!(s.contains("00000000-0000-0000-0000-000000000001"), "{s}");
        assert!(s.contains("msdyn_source_crm_id"), "{s}");
    }

    #[test]
    fn access_refusals_are_neither_retried_nor_hidden() {
        let e = ProvisionError::Api {
            call: "create the role".into(),
            status: 403,
            code: "0x80040220".into(),
            message: "missing prvCreateRole".into(),
        };
        assert!(e.is_access() && !e.is_retryable());
        assert_eq!(lit("O'Brien"), "'O''Brien'");
    }
}
