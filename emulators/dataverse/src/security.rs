//! Security roles, their privileges, the application user's role assignments and alternate key
//! creation, so `crm-sync connect dataverse` can provision a least-privilege role (and the key)
//! against the emulator, and `RetrieveUserPrivileges` then answers what the roles grant.
//!
//! Requests, as Microsoft Learn documents them for the Web API:
//! - "role EntityType": `POST roles` with `name` and `businessunitid@odata.bind`; `GET roles?
//!   $filter=name eq '…'`; root business unit from `businessunits?$filter=parentbusinessunitid
//!   eq null`.
//! - "ReplacePrivilegesRole Action" (bound to role; `Privileges`: RolePrivilege with
//!   `PrivilegeId`, `Depth`, `BusinessUnitId`) and "RetrieveRolePrivilegesRole Function";
//!   privileges by name from `privileges?$filter=name eq 'prvReadAccount'`.
//! - "Associate and disassociate table rows using the Web API": `POST systemusers(<id>)/
//!   systemuserroles_association/$ref` with `@odata.id`; the application user found by
//!   `systemusers?$filter=applicationid eq <app id>`.
//! - "Define alternate keys using the Web API": `POST EntityDefinitions(LogicalName='account')/
//!   Keys` with `SchemaName`, `DisplayName`, `KeyAttributes`; the index is built by a system job:
//!   `EntityKeyIndexStatus` Pending, InProgress, then Active or Failed, the key's `AsyncJob`
//!   naming the `asyncoperations` row whose `message` says why it failed (for example duplicate
//!   values already in the table).
//!
//! Only the administrator's session may change security; the application user gets the
//! documented privilege error (403, 0x80040220 "Principal user ... is missing prvCreateRole
//! privilege").

use std::collections::{BTreeMap, BTreeSet};

use http::{Method, StatusCode};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::api::{ApiRequest, ApiResponse};
use crate::config::KeyStatus;
use crate::error::ApiError;
use crate::state::{KEY_COLUMNS, Rules};

/// The user name the administrator's token stands for.
pub const ADMIN: &str = "#admin";

fn stable_id(s: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, s.as_bytes())
}

/// What happens to an alternate key's index once created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KeyBuild {
    /// Pending, InProgress, then Active (one step per read of the table's definition).
    #[default]
    Succeeds,
    /// Pending, InProgress, then Failed with this message on its system job.
    Fails(String),
}

#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub business_unit: Uuid,
    /// Privilege name → depth.
    pub privileges: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub(crate) struct KeyJob {
    status: KeyStatus,
    job: Uuid,
}

#[derive(Debug, Default)]
pub struct Security {
    pub roles: BTreeMap<Uuid, Role>,
    /// Roles assigned to the application user.
    pub app_roles: BTreeSet<Uuid>,
    pub(crate) keys: BTreeMap<String, KeyJob>,
    pub key_build: KeyBuild,
}

/// The privileges that exist: every action on account and contact.
fn privilege_exists(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("prv") else {
        return false;
    };
    ["Account", "Contact"].iter().any(|t| {
        rest.strip_suffix(t).is_some_and(|a| {
            [
                "Create", "Read", "Write", "Delete", "Append", "AppendTo", "Assign", "Share",
            ]
            .contains(&a)
        })
    })
}

fn privilege_id(name: &str) -> Uuid {
    stable_id(&format!("privilege:{name}"))
}

pub fn root_business_unit(tenant: &str) -> Uuid {
    stable_id(&format!("bu:{tenant}"))
}

/// The value of `field eq 'x'` (or an unquoted GUID) in a `$filter`.
fn filter_eq(query: Option<&str>, field: &str) -> Option<String> {
    let q = crate::keys::decode(query?).ok()?;
    let start = q.find(&format!("{field} eq "))? + field.len() + 4;
    let rest = &q[start..];
    if let Some(body) = rest.strip_prefix('\'') {
        let mut out = String::new();
        let mut it = body.chars().peekable();
        while let Some(c) = it.next() {
            if c == '\'' {
                if it.peek() == Some(&'\'') {
                    out.push('\'');
                    it.next();
                } else {
                    return Some(out);
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        Some(
            rest.split(|c: char| c.is_whitespace() || c == '&')
                .next()
                .unwrap_or("")
                .to_string(),
        )
    }
}

fn missing_privilege(user: &str, privilege: &str, entity: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "0x80040220",
        format!(
            "Principal user (Id={user}, type=8, roleCount=1, privilegeCount=12, accessMode=4), is missing {privilege} privilege (Id={}) on OTC=1036 for entity '{entity}'.",
            stable_id(&format!("privilege:{privilege}"))
        ),
    )
}

fn body_of(req: &ApiRequest) -> Result<Map<String, Value>, ApiError> {
    crate::api::parse_body(&req.body)
}

fn guid_in(seg: &str, prefix: &str) -> Option<Uuid> {
    seg.strip_prefix(prefix)?
        .strip_suffix(')')
        .and_then(|g| Uuid::parse_str(g).ok())
}

impl Security {
    /// The application user's privileges from the roles assigned here.
    pub fn app_privileges(&self) -> Vec<String> {
        self.app_roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.privileges.keys().cloned())
            .collect()
    }

    /// Applies created keys to the request's rules: each read of a table's definition moves
    /// its index one step (Pending → InProgress → Active or Failed).
    pub fn apply_keys(&mut self, rules: &mut Rules, req: &ApiRequest) {
        if req.method == Method::GET && req.path.starts_with("EntityDefinitions(") {
            for k in self.keys.values_mut() {
                k.status = match (&k.status, &self.key_build) {
                    (KeyStatus::Pending, _) => KeyStatus::InProgress,
                    (KeyStatus::InProgress, KeyBuild::Succeeds) => KeyStatus::Active,
                    (KeyStatus::InProgress, KeyBuild::Fails(_)) => KeyStatus::Failed,
                    (s, _) => *s,
                };
            }
        }
        for (table, k) in &self.keys {
            rules.key_by_table.insert(table.clone(), (k.status, k.job));
        }
    }

    /// Handles a security request, or `None` when the path is not one of them.
    pub fn route(
        &mut self,
        user: &str,
        app_user: Uuid,
        (tenant, client_id): (&str, &str),
        api_url: &str,
        req: &ApiRequest,
    ) -> Option<ApiResponse> {
        let path = crate::keys::decode(&req.path).ok()?;
        let segs = crate::keys::split_segments(&path);
        let first = segs.first()?.as_str();
        let is_security = first == "roles"
            || first.starts_with("roles(")
            || first == "businessunits"
            || first == "privileges"
            || first.starts_with("asyncoperations(")
            || (first == "systemusers" && req.method == Method::GET)
            || (first.starts_with("systemusers(")
                && segs.get(1).map(String::as_str) == Some("systemuserroles_association"))
            || (first.starts_with("EntityDefinitions(")
                && segs.get(1).map(String::as_str) == Some("Keys")
                && req.method == Method::POST);
        if !is_security {
            return None;
        }
        let admin = user == ADMIN;
        let r = self.handle(admin, app_user, (tenant, client_id), api_url, req, &segs);
        Some(r.unwrap_or_else(|e| ApiResponse::error(&e)))
    }

    fn handle(
        &mut self,
        admin: bool,
        app_user: Uuid,
        (tenant, client_id): (&str, &str),
        api_url: &str,
        req: &ApiRequest,
        segs: &[String],
    ) -> Result<ApiResponse, ApiError> {
        let bu = root_business_unit(tenant);
        let q = req.query.as_deref();
        let caller = if admin {
            stable_id("user:admin")
        } else {
            app_user
        };
        let ok = |v: Value| Ok(ApiResponse::json(StatusCode::OK, &v));
        let created = |set: &str, id: Uuid| {
            let mut r = ApiResponse::empty(StatusCode::NO_CONTENT);
            r.headers
                .push(("OData-EntityId".into(), format!("{api_url}{set}({id})")));
            Ok(r)
        };
        let first = segs[0].as_str();
        match (&req.method, first, segs.get(1).map(String::as_str)) {
            (&Method::GET, "businessunits", None) => ok(json!({"value": [
                {"businessunitid": bu, "name": tenant, "_parentbusinessunitid_value": null}
            ]})),
            (&Method::GET, "privileges", None) => {
                let name = filter_eq(q, "name").unwrap_or_default();
                let rows: Vec<Value> = if privilege_exists(&name) {
                    vec![json!({"privilegeid": privilege_id(&name), "name": name})]
                } else {
                    vec![]
                };
                ok(json!({ "value": rows }))
            }
            (&Method::GET, "roles", None) => {
                if !admin {
                    return Err(missing_privilege(
                        &caller.to_string(),
                        "prvReadRole",
                        "role",
                    ));
                }
                let name = filter_eq(q, "name");
                let rows: Vec<Value> = self
                    .roles
                    .iter()
                    .filter(|(_, r)| name.as_ref().is_none_or(|n| r.name.eq_ignore_ascii_case(n)))
                    .map(|(id, r)| {
                        json!({"roleid": id, "name": r.name, "_businessunitid_value": r.business_unit})
                    })
                    .collect();
                ok(json!({ "value": rows }))
            }
            (&Method::POST, "roles", None) => {
                if !admin {
                    return Err(missing_privilege(
                        &caller.to_string(),
                        "prvCreateRole",
                        "role",
                    ));
                }
                let body = body_of(req)?;
                let name = body
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.trim().is_empty())
                    .ok_or_else(|| ApiError::bad_request("Role name is required."))?;
                let target = body
                    .get("businessunitid@odata.bind")
                    .and_then(Value::as_str)
                    .and_then(|b| guid_in(b.trim_start_matches('/'), "businessunits("))
                    .unwrap_or(bu);
                if self
                    .roles
                    .values()
                    .any(|r| r.name.eq_ignore_ascii_case(name) && r.business_unit == target)
                {
                    return Err(ApiError::new(
                        StatusCode::PRECONDITION_FAILED,
                        "0x80040237",
                        "A record with matching key values already exists.",
                    ));
                }
                let id = Uuid::new_v4();
                self.roles.insert(
                    id,
                    Role {
                        name: name.to_string(),
                        business_unit: target,
                        privileges: BTreeMap::new(),
                    },
                );
                created("roles", id)
            }
            (method, role, Some(action)) if role.starts_with("roles(") => {
                let id = guid_in(role, "roles(")
                    .ok_or_else(|| ApiError::bad_request(format!("Bad key: '{role}'.")))?;
                if !admin {
                    return Err(missing_privilege(
                        &caller.to_string(),
                        "prvWriteRole",
                        "role",
                    ));
                }
                let r = self
                    .roles
                    .get_mut(&id)
                    .ok_or_else(|| missing(&format!("role With Id = {id} Does Not Exist")))?;
                match (method, action) {
                    (&Method::POST, "Microsoft.Dynamics.CRM.ReplacePrivilegesRole") => {
                        let body = body_of(req)?;
                        let list = body
                            .get("Privileges")
                            .and_then(Value::as_array)
                            .ok_or_else(|| ApiError::bad_request("Privileges is required."))?;
                        let mut next = BTreeMap::new();
                        for p in list {
                            let pid = p
                                .get("PrivilegeId")
                                .and_then(Value::as_str)
                                .and_then(|s| Uuid::parse_str(s).ok())
                                .ok_or_else(|| ApiError::bad_request("PrivilegeId is required."))?;
                            let name = ["Account", "Contact"]
                                .iter()
                                .flat_map(|t| {
                                    [
                                        "Create", "Read", "Write", "Delete", "Append", "AppendTo",
                                        "Assign", "Share",
                                    ]
                                    .map(|a| format!("prv{a}{t}"))
                                })
                                .find(|n| privilege_id(n) == pid)
                                .ok_or_else(|| {
                                    missing(&format!("privilege With Id = {pid} Does Not Exist"))
                                })?;
                            let depth = match p.get("Depth") {
                                Some(Value::String(s)) => s.clone(),
                                Some(Value::Number(n)) => match n.as_u64() {
                                    Some(0) => "Basic".into(),
                                    Some(1) => "Local".into(),
                                    Some(2) => "Deep".into(),
                                    _ => "Global".into(),
                                },
                                _ => "Global".into(),
                            };
                            next.insert(name, depth);
                        }
                        r.privileges = next;
                        Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
                    }
                    (&Method::GET, "Microsoft.Dynamics.CRM.RetrieveRolePrivilegesRole()") => {
                        let list: Vec<Value> = r
                            .privileges
                            .iter()
                            .map(|(n, d)| {
                                json!({"PrivilegeId": privilege_id(n), "PrivilegeName": n,
                                       "Depth": d, "BusinessUnitId": r.business_unit})
                            })
                            .collect();
                        ok(json!({"RolePrivileges": list}))
                    }
                    _ => Err(ApiError::segment_not_found(action)),
                }
            }
            (&Method::GET, "systemusers", None) => {
                let app = filter_eq(q, "applicationid").unwrap_or_default();
                let rows: Vec<Value> = if app.eq_ignore_ascii_case(client_id) {
                    vec![json!({"systemuserid": app_user, "applicationid": app})]
                } else {
                    vec![]
                };
                ok(json!({ "value": rows }))
            }
            (method, u, Some("systemuserroles_association")) => {
                let id = guid_in(u, "systemusers(")
                    .ok_or_else(|| ApiError::bad_request(format!("Bad key: '{u}'.")))?;
                if id != app_user {
                    return Err(missing(&format!(
                        "systemuser With Id = {id} Does Not Exist"
                    )));
                }
                match (method, segs.get(2).map(String::as_str)) {
                    (&Method::GET, None) => {
                        let rows: Vec<Value> = self
                            .app_roles
                            .iter()
                            .filter_map(|r| {
                                self.roles
                                    .get(r)
                                    .map(|role| json!({"roleid": r, "name": role.name}))
                            })
                            .collect();
                        ok(json!({ "value": rows }))
                    }
                    (&Method::POST, Some("$ref")) => {
                        if !admin {
                            return Err(missing_privilege(
                                &caller.to_string(),
                                "prvAssignRole",
                                "role",
                            ));
                        }
                        let body = body_of(req)?;
                        let role = body
                            .get("@odata.id")
                            .and_then(Value::as_str)
                            .and_then(|s| s.rsplit('/').next())
                            .and_then(|s| guid_in(s, "roles("))
                            .filter(|r| self.roles.contains_key(r))
                            .ok_or_else(|| ApiError::bad_request("@odata.id must name a role."))?;
                        if !self.app_roles.insert(role) {
                            return Err(ApiError::new(
                                StatusCode::PRECONDITION_FAILED,
                                "0x80040237",
                                "Cannot insert duplicate key.",
                            ));
                        }
                        Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
                    }
                    _ => Err(ApiError::method_not_allowed(method.as_str(), u)),
                }
            }
            (&Method::POST, e, Some("Keys")) => {
                if !admin {
                    return Err(missing_privilege(
                        &caller.to_string(),
                        "prvCreateEntityKey",
                        "entitykey",
                    ));
                }
                let table = e
                    .strip_prefix("EntityDefinitions(LogicalName='")
                    .and_then(|s| s.strip_suffix("')"))
                    .filter(|t| ["account", "contact"].contains(t))
                    .ok_or_else(|| missing(&format!("entity '{e}'")))?;
                let body = body_of(req)?;
                let attrs: Vec<&str> = body
                    .get("KeyAttributes")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if attrs != KEY_COLUMNS {
                    return Err(ApiError::bad_request(
                        "The emulator serves only the key on (msdyn_source_crm, msdyn_source_crm_id).",
                    ));
                }
                if self.keys.contains_key(table) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80048403",
                        "An entity key with the same attributes already exists.",
                    ));
                }
                let job = Uuid::new_v4();
                self.keys.insert(
                    table.to_string(),
                    KeyJob {
                        status: KeyStatus::Pending,
                        job,
                    },
                );
                created("EntityDefinitions", stable_id(&format!("key:{table}")))
            }
            (&Method::GET, a, None) if a.starts_with("asyncoperations(") => {
                let id = guid_in(a, "asyncoperations(")
                    .ok_or_else(|| ApiError::bad_request(format!("Bad key: '{a}'.")))?;
                let k = self.keys.values().find(|k| k.job == id).ok_or_else(|| {
                    missing(&format!("asyncoperation With Id = {id} Does Not Exist"))
                })?;
                let (state, message) = match (&k.status, &self.key_build) {
                    (KeyStatus::Failed, KeyBuild::Fails(m)) => ("Failed", m.clone()),
                    (KeyStatus::Active, _) => ("Succeeded", String::new()),
                    _ => ("InProgress", String::new()),
                };
                ok(
                    json!({"asyncoperationid": id, "name": "Create Entity Key Index",
                          "statuscode@OData.Community.Display.V1.FormattedValue": state,
                          "message": message, "friendlymessage": message}),
                )
            }
            _ => Err(ApiError::segment_not_found(first)),
        }
    }
}

/// ObjectDoesNotExist, as the Web API answers a missing row (404 0x80040217).
fn missing(message: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "0x80040217", message)
}
