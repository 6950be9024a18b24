//! Provisioning the Salesforce end of a server-to-server connection, least privilege, through
//! Salesforce's own APIs, as an administrator's session: a permission set that reads exactly
//! what the mappings read, an integration user holding it, and a connected app for the client
//! credentials flow that runs as that user. Used by `crm-sync connect|disconnect salesforce`.
//!
//! Why it is built this way:
//! - Every step looks its object up by its natural key first (permission set `Name`, user
//!   `Username`, assignment pairs, app `fullName`) and creates only what is missing, so running
//!   it again changes nothing and a run that failed half-way is completed by the next one.
//! - Field permissions are reconciled, not appended: the set is computed from the mappings
//!   (plus Id, SystemModstamp, IsDeleted, AccountId, which paging, deletes and parent binding
//!   read), read-only, and fields no longer mapped lose their FieldPermissions. Fields that are
//!   not `permissionable` (describe: ids, audit and required name fields) are readable with the
//!   object and FieldPermissions refuses them, so they are skipped.
//! - The pure parts (which fields, the field plan, the SOAP messages and their results) are
//!   separate from the HTTP calls and tested without a server.
//!
//! Salesforce documentation followed: Object Reference "PermissionSet", "ObjectPermissions",
//! "FieldPermissions" (`Field` is `SobjectType.Field`, a restricted picklist; at least
//! PermissionsRead), "PermissionSetAssignment", "PermissionSetLicenseAssign", "User"; Salesforce
//! Help "Give Integration Users API Only Access" (Salesforce Integration licence, "Minimum
//! Access - API Only Integrations" profile, "Salesforce API Integration" permission set licence,
//! which must be assigned before regular permission sets); REST API "Create a Record", "Update a
//! Record", "Delete a Record", "sObject Describe" (`permissionable`); Metadata API
//! "createMetadata()", "readMetadata()", "deleteMetadata()", "ConnectedApp" / "ConnectedAppOauth
//! Config" (`consumerKey`, `consumerSecret`, `isClientCredentialEnabled`,
//! `oauthClientCredentialUser`, `isAdminApproved`). Users are never deleted, only deactivated.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use mapping::Entity;
use quick_xml::events::Event;
use quick_xml::reader::Reader;
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thiserror::Error;

use crate::http::{check_origin, http_client};
use crate::salesforce::{DEFAULT_API_VERSION, quote};

/// The profile of the Salesforce Integration user licence.
pub const INTEGRATION_PROFILE: &str = "Minimum Access - API Only Integrations";
/// The permission set licence an integration user needs before it can hold permission sets.
pub const INTEGRATION_PSL: &str = "SalesforceAPIIntegrationPsl";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectError {
    /// Salesforce refused a call; `code` is its errorCode (or SOAP statusCode / fault).
    #[error("Salesforce refused {call}: {status} {code}: {message}")]
    Api {
        call: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The network or Salesforce itself failed: running the command again continues.
    #[error("Salesforce unavailable during {call}: {detail}")]
    Unavailable { call: String, detail: String },
    /// An answer we cannot use.
    #[error("unexpected Salesforce answer to {call}: {detail}")]
    Protocol { call: String, detail: String },
}

impl ConnectError {
    /// Whether running again may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectError::Unavailable { .. } => true,
            ConnectError::Api { status, code, .. } => {
                *status >= 500 || code == "REQUEST_LIMIT_EXCEEDED" || code == "UNABLE_TO_LOCK_ROW"
            }
            ConnectError::Protocol { .. } => false,
        }
    }

    /// Whether the admin's session lacks the rights (or is not a session at all).
    pub fn is_access(&self) -> bool {
        matches!(
            self,
            ConnectError::Api {
                status: 401 | 403,
                ..
            }
        ) || matches!(self, ConnectError::Api { code, .. } if code == "INVALID_SESSION_ID" || code == "INSUFFICIENT_ACCESS" || code == "INVALID_TYPE")
    }
}

/// The names of what crm-sync creates for one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Permission set API name and connected app full name: `CrmSync_<source>`.
    pub api_name: String,
    pub label: String,
}

impl Names {
    pub fn for_source(source: &str) -> Names {
        let mut api = String::from("CrmSync_");
        for c in source.chars() {
            let c = if c.is_ascii_alphanumeric() { c } else { '_' };
            if !(c == '_' && api.ends_with('_')) {
                api.push(c);
            }
        }
        let api = api
            .trim_end_matches('_')
            .chars()
            .take(80)
            .collect::<String>();
        Names {
            api_name: api,
            label: format!("crm-sync {source}"),
        }
    }
}

/// What to provision.
#[derive(Clone)]
pub struct ConnectionSpec {
    pub source: String,
    /// Per entity, the Salesforce fields the mappings read (`Mapper::source_fields`).
    pub fields: HashMap<Entity, Vec<String>>,
    /// The integration user's username (unique across all Salesforce orgs) and email.
    pub username: String,
    pub email: String,
    /// The connected app's consumer key (the configuration's `client_id`) and secret.
    pub consumer_key: String,
    pub consumer_secret: String,
}

impl fmt::Debug for ConnectionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSpec")
            .field("source", &self.source)
            .field("username", &self.username)
            .field("consumer_key", &self.consumer_key)
            .finish_non_exhaustive()
    }
}

/// The ids of what was provisioned, kept beside the configuration so `disconnect` and the next
/// `connect` know them (they are found again by name when missing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionState {
    #[serde(default)]
    pub permission_set_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub license_assignment_id: Option<String>,
    #[serde(default)]
    pub assignment_id: Option<String>,
    #[serde(default)]
    pub connected_app: Option<String>,
    #[serde(default)]
    pub consumer_key: Option<String>,
}

/// One thing `connect` or `disconnect` did or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub what: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
    Removed,
    Absent,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = match self.outcome {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Removed => "removed",
            Outcome::Absent => "already absent",
        };
        write!(f, "{o:>14}  {}", self.what)
    }
}

fn step(what: impl Into<String>, outcome: Outcome) -> Step {
    Step {
        what: what.into(),
        outcome,
    }
}

// ---- pure: which fields -----------------------------------------------------------------

fn object_name(entity: Entity) -> &'static str {
    match entity {
        Entity::Account => "Account",
        Entity::Contact => "Contact",
    }
}

/// Compound address fields and their components (FLS applies to the components).
fn components(field: &str) -> Option<Vec<String>> {
    let prefix = ["Billing", "Shipping", "Mailing", "Other"]
        .into_iter()
        .find(|p| field.eq_ignore_ascii_case(&format!("{p}Address")))?;
    Some(
        ["Street", "City", "State", "PostalCode", "Country"]
            .iter()
            .map(|c| format!("{prefix}{c}"))
            .collect(),
    )
}

/// Per object, every field crm-sync reads: what the mappings read, plus Id, SystemModstamp and
/// IsDeleted (paging, deletions) and AccountId on Contact (the parent). Not-identifiers and
/// the Change Data Capture envelope are not fields.
pub fn required_fields(
    fields: &HashMap<Entity, Vec<String>>,
) -> BTreeMap<Entity, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for entity in Entity::ALL {
        let mut set: BTreeSet<String> = ["Id", "SystemModstamp", "IsDeleted"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if entity == Entity::Contact {
            set.insert("AccountId".into());
        }
        for f in fields.get(&entity).into_iter().flatten() {
            let ident = !f.is_empty()
                && f.starts_with(|c: char| c.is_ascii_alphabetic())
                && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ident || f.eq_ignore_ascii_case("ChangeEventHeader") {
                continue;
            }
            match components(f) {
                Some(parts) => set.extend(parts),
                None => {
                    set.insert(f.clone());
                }
            }
        }
        out.insert(entity, set);
    }
    out
}

/// An existing FieldPermissions record of the permission set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldGrant {
    pub id: String,
    /// `Contact.Email`
    pub field: String,
    pub read: bool,
    pub edit: bool,
}

/// What to change so the permission set reads exactly `wanted`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPlan {
    /// `Object.Field` to grant read on.
    pub create: Vec<String>,
    /// FieldPermissions to delete (fields no longer mapped).
    pub delete: Vec<FieldGrant>,
    /// FieldPermissions to set to read-only (edit granted by someone else).
    pub read_only: Vec<FieldGrant>,
    /// Mapped fields the object does not have (or this admin cannot see): reported, since a
    /// read of them will fail.
    pub unknown: Vec<String>,
}

/// `describe` is the object's fields as (name, permissionable); names compare
/// case-insensitively, as Salesforce's do.
pub fn field_plan(
    object: &str,
    wanted: &BTreeSet<String>,
    describe: &[(String, bool)],
    existing: &[FieldGrant],
) -> FieldPlan {
    let mut plan = FieldPlan::default();
    let mut keep: BTreeSet<String> = BTreeSet::new();
    for f in wanted {
        match describe.iter().find(|(n, _)| n.eq_ignore_ascii_case(f)) {
            None => plan.unknown.push(format!("{object}.{f}")),
            Some((_, false)) => {}
            Some((name, true)) => {
                let full = format!("{object}.{name}");
                keep.insert(full.to_lowercase());
                match existing
                    .iter()
                    .find(|g| g.field.eq_ignore_ascii_case(&full))
                {
                    None => plan.create.push(full),
                    Some(g) if g.edit || !g.read => plan.read_only.push(g.clone()),
                    Some(_) => {}
                }
            }
        }
    }
    plan.delete = existing
        .iter()
        .filter(|g| {
            g.field
                .split_once('.')
                .is_some_and(|(o, _)| o.eq_ignore_ascii_case(object))
                && !keep.contains(&g.field.to_lowercase())
        })
        .cloned()
        .collect();
    plan
}

// ---- pure: Metadata API SOAP ------------------------------------------------------------

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

fn soap(session: &str, call: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns="http://soap.sforce.com/2006/04/metadata"><soapenv:Header><SessionHeader><sessionId>{}</sessionId></SessionHeader></soapenv:Header><soapenv:Body>{call}</soapenv:Body></soapenv:Envelope>"#,
        esc(session)
    )
}

/// `createMetadata` of the connected app: client credentials enabled and running as the
/// integration user, admin-approved (pre-authorised), scope `Api` only.
pub fn create_app_call(names: &Names, spec: &ConnectionSpec, callback: &str) -> String {
    format!(
        "<createMetadata><metadata xsi:type=\"ConnectedApp\"><fullName>{}</fullName><contactEmail>{}</contactEmail><description>crm-sync reads Account and Contact for source {} (client credentials, runs as {})</description><label>{}</label><oauthConfig><callbackUrl>{}</callbackUrl><consumerKey>{}</consumerKey><consumerSecret>{}</consumerSecret><isAdminApproved>true</isAdminApproved><isClientCredentialEnabled>true</isClientCredentialEnabled><oauthClientCredentialUser>{}</oauthClientCredentialUser><scopes>Api</scopes></oauthConfig></metadata></createMetadata>",
        esc(&names.api_name),
        esc(&spec.email),
        esc(&spec.source),
        esc(&spec.username),
        esc(&names.label),
        esc(callback),
        esc(&spec.consumer_key),
        esc(&spec.consumer_secret),
        esc(&spec.username),
    )
}

pub fn read_app_call(full_name: &str) -> String {
    format!(
        "<readMetadata><type>ConnectedApp</type><fullNames>{}</fullNames></readMetadata>",
        esc(full_name)
    )
}

pub fn delete_app_call(full_name: &str) -> String {
    format!(
        "<deleteMetadata><type>ConnectedApp</type><fullNames>{}</fullNames></deleteMetadata>",
        esc(full_name)
    )
}

#[derive(Debug, Default)]
struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn text_of(&self, name: &str) -> String {
        self.child(name)
            .map(|c| c.text.trim().to_string())
            .unwrap_or_default()
    }

    fn find(&self, name: &str) -> Option<&Node> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

/// A SOAP answer as a tree of local names (DTDs refused).
fn parse_xml(text: &str) -> Result<Node, String> {
    let mut reader = Reader::from_str(text);
    let mut stack = vec![Node::default()];
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::DocType(_) => return Err("DOCTYPE in a SOAP answer".into()),
            Event::Start(e) => stack.push(Node {
                name: local(e.name().as_ref()),
                ..Node::default()
            }),
            Event::Empty(e) => {
                if let Some(top) = stack.last_mut() {
                    top.children.push(Node {
                        name: local(e.name().as_ref()),
                        ..Node::default()
                    });
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| e.to_string())?;
                let s = quick_xml::escape::unescape(&s).map_err(|e| e.to_string())?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::GeneralRef(r) => {
                let s = match &*String::from_utf8_lossy(&r) {
                    "lt" => "<",
                    "gt" => ">",
                    "amp" => "&",
                    "apos" => "'",
                    "quot" => "\"",
                    _ => "",
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(s);
                }
            }
            Event::End(_) => {
                let done = stack.pop().ok_or("unbalanced XML")?;
                stack
                    .last_mut()
                    .ok_or("unbalanced XML")?
                    .children
                    .push(done);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    stack.pop().ok_or_else(|| "empty XML".into())
}

fn local(name: &[u8]) -> String {
    let n = name.rsplit(|b| *b == b':').next().unwrap_or(name);
    String::from_utf8_lossy(n).into_owned()
}

/// The first result of a create/delete answer: `Ok(())` on success, else (statusCode, message).
pub fn save_result(xml: &str) -> Result<Result<(), (String, String)>, String> {
    let root = parse_xml(xml)?;
    if let Some(f) = root.find("Fault") {
        let code = f.text_of("faultcode");
        let code = code.rsplit(':').next().unwrap_or(&code).to_string();
        return Ok(Err((code, f.text_of("faultstring"))));
    }
    let r = root.find("result").ok_or("no result in the answer")?;
    if r.text_of("success") == "true" {
        return Ok(Ok(()));
    }
    let e = r.child("errors");
    Ok(Err((
        e.map(|e| e.text_of("statusCode")).unwrap_or_default(),
        e.map(|e| e.text_of("message")).unwrap_or_default(),
    )))
}

/// A connected app as `readMetadata` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFound {
    pub consumer_key: String,
    pub run_as: String,
    pub client_credentials: bool,
}

/// The component of a `readMetadata` answer; `None` when it does not exist (no record with a
/// `fullName`).
pub fn read_result(xml: &str) -> Result<Result<Option<AppFound>, (String, String)>, String> {
    let root = parse_xml(xml)?;
    if let Some(f) = root.find("Fault") {
        let code = f.text_of("faultcode");
        let code = code.rsplit(':').next().unwrap_or(&code).to_string();
        return Ok(Err((code, f.text_of("faultstring"))));
    }
    let Some(rec) = root
        .find("records")
        .filter(|r| !r.text_of("fullName").is_empty())
    else {
        return Ok(Ok(None));
    };
    let o = rec.child("oauthConfig");
    let t = |k: &str| o.map(|o| o.text_of(k)).unwrap_or_default();
    Ok(Ok(Some(AppFound {
        consumer_key: t("consumerKey"),
        run_as: t("oauthClientCredentialUser"),
        client_credentials: t("isClientCredentialEnabled") == "true",
    })))
}

// ---- I/O ---------------------------------------------------------------------------------

/// An administrator's session on the org: the REST and Metadata API calls provisioning needs.
/// The token never appears in errors or `Debug` output.
pub struct AdminSession {
    http: reqwest::Client,
    instance: Url,
    token: String,
    api_version: String,
}

impl fmt::Debug for AdminSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSession")
            .field("instance", &self.instance.as_str())
            .finish_non_exhaustive()
    }
}

impl AdminSession {
    /// `instance_url`: the org's My Domain URL; `token`: an access token of an administrator.
    pub fn new(instance_url: &str, token: &str) -> Result<AdminSession, ConnectError> {
        let bad = |detail: String| ConnectError::Protocol {
            call: "the instance URL".into(),
            detail,
        };
        let instance = Url::parse(instance_url).map_err(|e| bad(e.to_string()))?;
        check_origin(&instance, "Salesforce").map_err(|e| bad(e.to_string()))?;
        let http = http_client(Duration::from_secs(120)).map_err(|e| bad(e.to_string()))?;
        Ok(AdminSession {
            http,
            instance,
            token: token.to_string(),
            api_version: DEFAULT_API_VERSION.to_string(),
        })
    }

    fn url(&self, path: &str) -> Result<Url, ConnectError> {
        self.instance
            .join(&format!("/services/data/v{}/{path}", self.api_version))
            .map_err(|e| ConnectError::Protocol {
                call: path.into(),
                detail: e.to_string(),
            })
    }

    async fn send(
        &self,
        call: &str,
        rb: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, String), ConnectError> {
        let resp =
            rb.bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| ConnectError::Unavailable {
                    call: call.into(),
                    detail: e.without_url().to_string(),
                })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ConnectError::Unavailable {
            call: call.into(),
            detail: e.without_url().to_string(),
        })?;
        if status.is_success() {
            return Ok((status, text));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let first = v.get(0).unwrap_or(&v);
        let s = |k: &str| {
            first
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        Err(ConnectError::Api {
            call: call.into(),
            status: status.as_u16(),
            code: s("errorCode"),
            message: s("message"),
        })
    }

    fn json(call: &str, text: &str) -> Result<Value, ConnectError> {
        serde_json::from_str(text).map_err(|e| ConnectError::Protocol {
            call: call.into(),
            detail: e.to_string(),
        })
    }

    /// A SOQL query over a setup object (results are small: one page).
    pub async fn query(&self, soql: &str) -> Result<Vec<Value>, ConnectError> {
        let mut url = self.url("query")?;
        url.query_pairs_mut().append_pair("q", soql);
        let call = format!("query `{soql}`");
        let (_, text) = self.send(&call, self.http.get(url)).await?;
        let v = Self::json(&call, &text)?;
        Ok(v["records"].as_array().cloned().unwrap_or_default())
    }

    /// The id of the first record a query finds.
    async fn first_id(&self, soql: &str) -> Result<Option<String>, ConnectError> {
        Ok(self
            .query(soql)
            .await?
            .first()
            .and_then(|r| r["Id"].as_str().map(str::to_string)))
    }

    pub async fn create(&self, object: &str, body: Value) -> Result<String, ConnectError> {
        let call = format!("create {object}");
        let (_, text) = self
            .send(
                &call,
                self.http
                    .post(self.url(&format!("sobjects/{object}"))?)
                    .json(&body),
            )
            .await?;
        Self::json(&call, &text)?["id"]
            .as_str()
            .map(str::to_string)
            .ok_or(ConnectError::Protocol {
                call,
                detail: "no id in the answer".into(),
            })
    }

    pub async fn update(&self, object: &str, id: &str, body: Value) -> Result<(), ConnectError> {
        let call = format!("update {object} {id}");
        let url = self.url(&format!("sobjects/{object}/{id}"))?;
        self.send(&call, self.http.patch(url).json(&body)).await?;
        Ok(())
    }

    /// Deletes a record; one already gone is fine (`false`).
    pub async fn delete(&self, object: &str, id: &str) -> Result<bool, ConnectError> {
        let call = format!("delete {object} {id}");
        let url = self.url(&format!("sobjects/{object}/{id}"))?;
        match self.send(&call, self.http.delete(url)).await {
            Ok(_) => Ok(true),
            Err(ConnectError::Api { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// An object's fields as (name, permissionable), from "sObject Describe".
    pub async fn describe(&self, object: &str) -> Result<Vec<(String, bool)>, ConnectError> {
        let call = format!("describe {object}");
        let (_, text) = self
            .send(
                &call,
                self.http
                    .get(self.url(&format!("sobjects/{object}/describe"))?),
            )
            .await?;
        let v = Self::json(&call, &text)?;
        Ok(v["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| {
                Some((
                    f["name"].as_str()?.to_string(),
                    f["permissionable"].as_bool().unwrap_or(false),
                ))
            })
            .collect())
    }

    /// Posts a Metadata API call; the answer's XML (faults included).
    async fn metadata(&self, call: &str, body: String) -> Result<String, ConnectError> {
        let url = self
            .instance
            .join(&format!("/services/Soap/m/{}", self.api_version))
            .map_err(|e| ConnectError::Protocol {
                call: call.into(),
                detail: e.to_string(),
            })?;
        let resp = self
            .http
            .post(url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", "\"\"")
            .body(soap(&self.token, &body))
            .send()
            .await
            .map_err(|e| ConnectError::Unavailable {
                call: call.into(),
                detail: e.without_url().to_string(),
            })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ConnectError::Unavailable {
            call: call.into(),
            detail: e.without_url().to_string(),
        })?;
        // Faults come with 500; anything else that is not XML is the service failing.
        if status.is_server_error() && !text.contains("Fault") {
            return Err(ConnectError::Unavailable {
                call: call.into(),
                detail: format!("HTTP {status}"),
            });
        }
        Ok(text)
    }

    fn soap_error(call: &str, status: u16, (code, message): (String, String)) -> ConnectError {
        ConnectError::Api {
            call: call.into(),
            status,
            code,
            message,
        }
    }
}

fn protocol(call: &str) -> impl Fn(String) -> ConnectError + '_ {
    move |detail| ConnectError::Protocol {
        call: call.into(),
        detail,
    }
}

// ---- orchestration -------------------------------------------------------------------------

/// Provisions (or completes, or updates to the current mappings) the connection. `save` is
/// called with the ids after every step, so a failure leaves a state the next run picks up.
pub async fn connect(
    admin: &AdminSession,
    spec: &ConnectionSpec,
    state: &mut ConnectionState,
    save: &mut (dyn FnMut(&ConnectionState) + Send),
) -> Result<Vec<Step>, ConnectError> {
    let names = Names::for_source(&spec.source);
    let mut steps = Vec::new();

    // 1. The permission set.
    let ps = match admin
        .first_id(&format!(
            "SELECT Id FROM PermissionSet WHERE Name = {}",
            quote(&names.api_name)
        ))
        .await?
    {
        Some(id) => {
            steps.push(step(
                format!("permission set {}", names.api_name),
                Outcome::Unchanged,
            ));
            id
        }
        None => {
            let id = admin
                .create(
                    "PermissionSet",
                    json!({
                        "Name": names.api_name,
                        "Label": names.label,
                        "Description": format!("crm-sync source {}: read-only access to the Account and Contact fields its mappings read", spec.source),
                    }),
                )
                .await?;
            steps.push(step(
                format!("permission set {} ({id})", names.api_name),
                Outcome::Created,
            ));
            id
        }
    };
    state.permission_set_id = Some(ps.clone());
    save(state);

    // 2. Read (only) on Account and Contact.
    let existing = admin
        .query(&format!(
            "SELECT Id, SobjectType, PermissionsRead, PermissionsCreate, PermissionsEdit, PermissionsDelete, PermissionsViewAllRecords, PermissionsModifyAllRecords FROM ObjectPermissions WHERE ParentId = {}",
            quote(&ps)
        ))
        .await?;
    for entity in Entity::ALL {
        let object = object_name(entity);
        let found = existing.iter().find(|r| {
            r["SobjectType"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case(object))
        });
        let read_only = json!({
            "PermissionsRead": true, "PermissionsCreate": false, "PermissionsEdit": false,
            "PermissionsDelete": false, "PermissionsViewAllRecords": false,
            "PermissionsModifyAllRecords": false,
        });
        match found {
            None => {
                let mut body = read_only.clone();
                body["ParentId"] = json!(ps);
                body["SobjectType"] = json!(object);
                admin.create("ObjectPermissions", body).await?;
                steps.push(step(format!("read on {object}"), Outcome::Created));
            }
            Some(r) => {
                let exact = read_only
                    .as_object()
                    .is_some_and(|m| m.iter().all(|(k, v)| &r[k] == v));
                if exact {
                    steps.push(step(format!("read on {object}"), Outcome::Unchanged));
                } else {
                    let id = r["Id"].as_str().unwrap_or_default();
                    admin.update("ObjectPermissions", id, read_only).await?;
                    steps.push(step(format!("read on {object} (only)"), Outcome::Updated));
                }
            }
        }
    }

    // 3. Read on exactly the fields the mappings use.
    let grants: Vec<FieldGrant> = admin
        .query(&format!(
            "SELECT Id, Field, PermissionsRead, PermissionsEdit FROM FieldPermissions WHERE ParentId = {}",
            quote(&ps)
        ))
        .await?
        .iter()
        .filter_map(|r| {
            Some(FieldGrant {
                id: r["Id"].as_str()?.to_string(),
                field: r["Field"].as_str()?.to_string(),
                read: r["PermissionsRead"].as_bool().unwrap_or(false),
                edit: r["PermissionsEdit"].as_bool().unwrap_or(false),
            })
        })
        .collect();
    let wanted = required_fields(&spec.fields);
    let mut unknown = Vec::new();
    for entity in Entity::ALL {
        let object = object_name(entity);
        let describe = admin.describe(object).await?;
        let plan = field_plan(object, &wanted[&entity], &describe, &grants);
        for f in &plan.create {
            admin
                .create(
                    "FieldPermissions",
                    json!({"ParentId": ps, "SobjectType": object, "Field": f,
                           "PermissionsRead": true, "PermissionsEdit": false}),
                )
                .await?;
            steps.push(step(format!("read on {f}"), Outcome::Created));
        }
        for g in &plan.read_only {
            admin
                .update(
                    "FieldPermissions",
                    &g.id,
                    json!({"PermissionsRead": true, "PermissionsEdit": false}),
                )
                .await?;
            steps.push(step(
                format!("read on {} (only)", g.field),
                Outcome::Updated,
            ));
        }
        for g in &plan.delete {
            admin.delete("FieldPermissions", &g.id).await?;
            steps.push(step(
                format!("read on {} (no longer mapped)", g.field),
                Outcome::Removed,
            ));
        }
        unknown.extend(plan.unknown);
    }
    if !unknown.is_empty() {
        return Err(ConnectError::Api {
            call: "describe".into(),
            status: 400,
            code: "INVALID_FIELD".into(),
            message: format!(
                "the mappings read fields Salesforce does not have: {}",
                unknown.join(", ")
            ),
        });
    }
    let kept = grants.len();
    if steps
        .iter()
        .all(|s| !s.what.starts_with("read on ") || s.outcome == Outcome::Unchanged)
    {
        steps.push(step(
            format!("field permissions ({kept} fields, read-only)"),
            Outcome::Unchanged,
        ));
    }

    // 4. The integration user (active).
    let user = admin
        .query(&format!(
            "SELECT Id, IsActive FROM User WHERE Username = {}",
            quote(&spec.username)
        ))
        .await?;
    let user_id = match user.first() {
        Some(u) => {
            let id = u["Id"].as_str().unwrap_or_default().to_string();
            if u["IsActive"].as_bool() == Some(false) {
                admin.update("User", &id, json!({"IsActive": true})).await?;
                steps.push(step(
                    format!("integration user {} (reactivated)", spec.username),
                    Outcome::Updated,
                ));
            } else {
                steps.push(step(
                    format!("integration user {}", spec.username),
                    Outcome::Unchanged,
                ));
            }
            id
        }
        None => {
            let profile = admin
                .first_id(&format!(
                    "SELECT Id FROM Profile WHERE Name = {}",
                    quote(INTEGRATION_PROFILE)
                ))
                .await?
                .ok_or_else(|| ConnectError::Api {
                    call: "find the integration profile".into(),
                    status: 404,
                    code: "NOT_FOUND".into(),
                    message: format!("no profile named '{INTEGRATION_PROFILE}': the org needs Salesforce Integration user licences"),
                })?;
            let alias: String = spec
                .source
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(8)
                .collect();
            let id = admin
                .create(
                    "User",
                    json!({
                        "Username": spec.username, "Email": spec.email,
                        "LastName": format!("crm-sync {}", spec.source),
                        "FirstName": "Integration",
                        "Alias": if alias.is_empty() { "crmsync".to_string() } else { alias },
                        "ProfileId": profile, "TimeZoneSidKey": "GMT", "LocaleSidKey": "en_US",
                        "EmailEncodingKey": "UTF-8", "LanguageLocaleKey": "en_US",
                    }),
                )
                .await?;
            steps.push(step(
                format!("integration user {} ({id})", spec.username),
                Outcome::Created,
            ));
            id
        }
    };
    state.user_id = Some(user_id.clone());
    state.username = Some(spec.username.clone());
    save(state);

    // 5. The permission set licence, then the permission set.
    let psl = admin
        .first_id(&format!(
            "SELECT Id FROM PermissionSetLicense WHERE DeveloperName = {}",
            quote(INTEGRATION_PSL)
        ))
        .await?;
    if let Some(psl) = psl {
        let found = admin
            .first_id(&format!(
                "SELECT Id FROM PermissionSetLicenseAssign WHERE AssigneeId = {} AND PermissionSetLicenseId = {}",
                quote(&user_id),
                quote(&psl)
            ))
            .await?;
        let id = match found {
            Some(id) => {
                steps.push(step(
                    "Salesforce API Integration licence",
                    Outcome::Unchanged,
                ));
                id
            }
            None => {
                let id = admin
                    .create(
                        "PermissionSetLicenseAssign",
                        json!({"AssigneeId": user_id, "PermissionSetLicenseId": psl}),
                    )
                    .await?;
                steps.push(step("Salesforce API Integration licence", Outcome::Created));
                id
            }
        };
        state.license_assignment_id = Some(id);
        save(state);
    }
    let found = admin
        .first_id(&format!(
            "SELECT Id FROM PermissionSetAssignment WHERE AssigneeId = {} AND PermissionSetId = {}",
            quote(&user_id),
            quote(&ps)
        ))
        .await?;
    let assignment = match found {
        Some(id) => {
            steps.push(step(
                "permission set assigned to the user",
                Outcome::Unchanged,
            ));
            id
        }
        None => {
            let id = admin
                .create(
                    "PermissionSetAssignment",
                    json!({"AssigneeId": user_id, "PermissionSetId": ps}),
                )
                .await?;
            steps.push(step(
                "permission set assigned to the user",
                Outcome::Created,
            ));
            id
        }
    };
    state.assignment_id = Some(assignment);
    save(state);

    // 6. The connected app, running as the user.
    let call = "readMetadata ConnectedApp";
    let xml = admin.metadata(call, read_app_call(&names.api_name)).await?;
    let found = read_result(&xml)
        .map_err(protocol(call))?
        .map_err(|e| AdminSession::soap_error(call, 500, e))?;
    match found {
        Some(app)
            if app.consumer_key == spec.consumer_key
                && app.client_credentials
                && app.run_as.eq_ignore_ascii_case(&spec.username) =>
        {
            steps.push(step(
                format!("connected app {}", names.api_name),
                Outcome::Unchanged,
            ));
        }
        found => {
            let outcome = if found.is_some() {
                // Recreated: its key, secret or Run As user no longer match the configuration.
                let call = "deleteMetadata ConnectedApp";
                let xml = admin
                    .metadata(call, delete_app_call(&names.api_name))
                    .await?;
                save_result(&xml)
                    .map_err(protocol(call))?
                    .map_err(|e| AdminSession::soap_error(call, 400, e))?;
                Outcome::Updated
            } else {
                Outcome::Created
            };
            let call = "createMetadata ConnectedApp";
            let callback = admin
                .instance
                .join("/services/oauth2/success")
                .map(|u| u.to_string())
                .unwrap_or_default();
            let xml = admin
                .metadata(call, create_app_call(&names, spec, &callback))
                .await?;
            save_result(&xml)
                .map_err(protocol(call))?
                .map_err(|e| AdminSession::soap_error(call, 400, e))?;
            steps.push(step(
                format!(
                    "connected app {} (client credentials, runs as {})",
                    names.api_name, spec.username
                ),
                outcome,
            ));
        }
    }
    state.connected_app = Some(names.api_name.clone());
    state.consumer_key = Some(spec.consumer_key.clone());
    save(state);
    Ok(steps)
}

/// Removes the connected app, deactivates the integration user (Salesforce does not delete
/// users), and deletes the permission set and the licence assignment. What is already gone is
/// reported as such, so running it twice is harmless.
pub async fn disconnect(
    admin: &AdminSession,
    source: &str,
    state: &ConnectionState,
) -> Result<Vec<Step>, ConnectError> {
    let names = Names::for_source(source);
    let mut steps = Vec::new();
    let app = state
        .connected_app
        .clone()
        .unwrap_or(names.api_name.clone());
    let call = "deleteMetadata ConnectedApp";
    let xml = admin.metadata(call, delete_app_call(&app)).await?;
    match save_result(&xml).map_err(protocol(call))? {
        Ok(()) => steps.push(step(format!("connected app {app}"), Outcome::Removed)),
        Err((code, _)) if code == "INVALID_CROSS_REFERENCE_KEY" => {
            steps.push(step(format!("connected app {app}"), Outcome::Absent));
        }
        Err(e) => return Err(AdminSession::soap_error(call, 400, e)),
    }
    let user = match (&state.user_id, &state.username) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(u)) => {
            admin
                .first_id(&format!(
                    "SELECT Id FROM User WHERE Username = {}",
                    quote(u)
                ))
                .await?
        }
        _ => None,
    };
    let ps = match &state.permission_set_id {
        Some(id) => Some(id.clone()),
        None => {
            admin
                .first_id(&format!(
                    "SELECT Id FROM PermissionSet WHERE Name = {}",
                    quote(&names.api_name)
                ))
                .await?
        }
    };
    if let Some(ps) = &ps {
        let removed = admin.delete("PermissionSet", ps).await?;
        steps.push(step(
            format!("permission set {} and its assignment", names.api_name),
            if removed {
                Outcome::Removed
            } else {
                Outcome::Absent
            },
        ));
    } else {
        steps.push(step(
            format!("permission set {}", names.api_name),
            Outcome::Absent,
        ));
    }
    if let Some(user) = &user {
        if let Some(psl) = &state.license_assignment_id {
            admin.delete("PermissionSetLicenseAssign", psl).await?;
        }
        admin
            .update("User", user, json!({"IsActive": false}))
            .await?;
        steps.push(step(
            format!(
                "integration user {} deactivated",
                state.username.as_deref().unwrap_or(user)
            ),
            Outcome::Updated,
        ));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_fields_add_paging_and_expand_addresses() {
        let f = required_fields(&HashMap::from([
            (
                Entity::Account,
                vec!["Name".into(), "BillingAddress".into(), "x; y".into()],
            ),
            (
                Entity::Contact,
                vec!["Email".into(), "ChangeEventHeader".into()],
            ),
        ]));
        let acc: Vec<&str> = f[&Entity::Account].iter().map(String::as_str).collect();
        assert_eq!(
            acc,
            [
                "BillingCity",
                "BillingCountry",
                "BillingPostalCode",
                "BillingState",
                "BillingStreet",
                "Id",
                "IsDeleted",
                "Name",
                "SystemModstamp"
            ]
        );
        let con: Vec<&str> = f[&Entity::Contact].iter().map(String::as_str).collect();
        assert_eq!(
            con,
            ["AccountId", "Email", "Id", "IsDeleted", "SystemModstamp"]
        );
    }

    #[test]
    fn the_field_plan_grants_exactly_the_mapped_permissionable_fields() {
        let describe = vec![
            ("Id".to_string(), false),
            ("Email".to_string(), true),
            ("Title".to_string(), true),
            ("Phone".to_string(), true),
            ("LastName".to_string(), false),
        ];
        let g = |id: &str, field: &str, edit: bool| FieldGrant {
            id: id.into(),
            field: field.into(),
            read: true,
            edit,
        };
        let existing = vec![
            g("1", "Contact.Phone", false),
            g("2", "Contact.Email", true),
        ];
        let wanted: BTreeSet<String> = ["Id", "email", "Title", "LastName", "Nope"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let plan = field_plan("Contact", &wanted, &describe, &existing);
        assert_eq!(plan.create, ["Contact.Title"]);
        assert_eq!(plan.read_only, [g("2", "Contact.Email", true)]);
        assert_eq!(plan.delete, [g("1", "Contact.Phone", false)]);
        assert_eq!(plan.unknown, ["Contact.Nope"]);
    }

    #[test]
    fn names_are_api_names() {
        assert_eq!(
            Names::for_source("salesforce-prod").api_name,
            "CrmSync_salesforce_prod"
        );
        assert_eq!(Names::for_source("a--b_").api_name, "CrmSync_a_b");
    }

    #[test]
    fn soap_results_and_faults_are_read() {
        let ok = r#"<soapenv:Envelope xmlns:soapenv="s"><soapenv:Body><createMetadataResponse><result><fullName>X</fullName><success>true</success></result></createMetadataResponse></soapenv:Body></soapenv:Envelope>"#;
        assert_eq!(save_result(ok).unwrap(), Ok(()));
        let bad = r#"<Envelope><Body><r><result><errors><message>m &amp; n</message><statusCode>DUPLICATE_VALUE</statusCode></errors><success>false</success></result></r></Body></Envelope>"#;
        assert_eq!(
            save_result(bad).unwrap(),
            Err(("DUPLICATE_VALUE".into(), "m & n".into()))
        );
        let fault = r#"<Envelope><Body><Fault><faultcode>sf:INVALID_SESSION_ID</faultcode><faultstring>INVALID_SESSION_ID: bad</faultstring></Fault></Body></Envelope>"#;
        assert_eq!(
            save_result(fault).unwrap().unwrap_err().0,
            "INVALID_SESSION_ID"
        );
        let none = r#"<Envelope><Body><readMetadataResponse><result><records xsi:nil="true"/></result></readMetadataResponse></Body></Envelope>"#;
        assert_eq!(read_result(none).unwrap(), Ok(None));
    }

    #[test]
    fn the_secret_is_escaped_into_the_call_and_kept_out_of_debug() {
        let spec = ConnectionSpec {
            source: "sf".into(),
            fields: HashMap::new(),
            username: "u@x.example".into(),
            email: "e@x.example".into(),
            consumer_key: "key".into(),
            consumer_secret: "s<cret&1234".into(),
        };
        let call = create_app_call(&Names::for_source("sf"), &spec, "https://x/cb");
        assert!(call.contains("<consumerSecret>s&lt;cret&amp;1234</consumerSecret>"));
        assert!(
            call.contains("<oauthClientCredentialUser>u@x.example</oauthClientCredentialUser>")
        );
        assert!(!format!("{spec:?}").contains("s<cret"));
    }
}
