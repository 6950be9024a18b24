//! The org's setup side: users, profiles, licences, permission sets and their object and field
//! permissions, and connected apps, as the sObject REST API and the Metadata API expose them, so
//! `crm-sync connect salesforce` can provision a least-privilege connection against the emulator
//! and the emulator then enforces it on every read of Account and Contact.
//!
//! What it follows (Salesforce Object Reference, Salesforce Platform):
//! - "PermissionSet", "ObjectPermissions", "FieldPermissions", "PermissionSetAssignment",
//!   "PermissionSetLicenseAssign", "User", "Profile": create / query / update / delete as each
//!   object's "Supported Calls" list them; FieldPermissions' `Field` is a restricted picklist
//!   prefixed with the SobjectType (`Contact.Email`), and a record must have at least
//!   `PermissionsRead`; `PermissionsEdit` requires `PermissionsRead`.
//! - "Give Integration Users API Only Access" (Salesforce Help): the Salesforce Integration user
//!   licence brings the "Minimum Access - API Only Integrations" profile (no object access of its
//!   own) and the "Salesforce API Integration" permission set licence.
//! - Only users who can view setup (here: the System Administrator profile) may read or change
//!   these objects ("Special Access Rules"); for anyone else they do not exist (`INVALID_TYPE`).
//! - A user's data access is the union of its permission sets' ObjectPermissions and
//!   FieldPermissions; the System Administrator profile reads everything ("View All Data").
//!
//! Where Salesforce's exact words are not documented (duplicate names), the common REST error
//! shapes are used: `DUPLICATE_VALUE` "duplicate value found: <field> duplicates value on record
//! with id: <id>", `REQUIRED_FIELD_MISSING` "Required fields are missing: [...]".

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::schema::{Object, make_prefixed_id};

pub const ADMIN_PROFILE: &str = "System Administrator";
pub const INTEGRATION_PROFILE: &str = "Minimum Access - API Only Integrations";
pub const INTEGRATION_PSL: &str = "SalesforceAPIIntegrationPsl";

/// The setup objects served, their key prefixes and fields (what SELECT may name).
const OBJECTS: &[(&str, &str, &[&str])] = &[
    (
        "PermissionSet",
        "0PS",
        &[
            "Id",
            "Name",
            "Label",
            "Description",
            "IsOwnedByProfile",
            "LicenseId",
            "NamespacePrefix",
        ],
    ),
    (
        "ObjectPermissions",
        "110",
        &[
            "Id",
            "ParentId",
            "SobjectType",
            "PermissionsRead",
            "PermissionsCreate",
            "PermissionsEdit",
            "PermissionsDelete",
            "PermissionsViewAllRecords",
            "PermissionsModifyAllRecords",
        ],
    ),
    (
        "FieldPermissions",
        "01k",
        &[
            "Id",
            "ParentId",
            "SobjectType",
            "Field",
            "PermissionsRead",
            "PermissionsEdit",
        ],
    ),
    (
        "PermissionSetAssignment",
        "0Pa",
        &["Id", "AssigneeId", "PermissionSetId"],
    ),
    (
        "PermissionSetLicenseAssign",
        "2LA",
        &["Id", "AssigneeId", "PermissionSetLicenseId"],
    ),
    (
        "PermissionSetLicense",
        "0PL",
        &["Id", "DeveloperName", "MasterLabel"],
    ),
    (
        "User",
        "005",
        &[
            "Id",
            "Username",
            "LastName",
            "FirstName",
            "Email",
            "Alias",
            "ProfileId",
            "IsActive",
            "TimeZoneSidKey",
            "LocaleSidKey",
            "EmailEncodingKey",
            "LanguageLocaleKey",
        ],
    ),
    ("Profile", "00e", &["Id", "Name", "UserLicenseId"]),
    ("UserLicense", "100", &["Id", "Name"]),
];

/// The canonical name of a setup object, matched case-insensitively.
pub fn setup_object(name: &str) -> Option<&'static str> {
    OBJECTS
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .map(|(n, _, _)| *n)
}

fn fields_of(object: &str) -> &'static [&'static str] {
    OBJECTS
        .iter()
        .find(|(n, _, _)| *n == object)
        .map_or(&[], |(_, _, f)| f)
}

fn field_of(object: &str, name: &str) -> Option<&'static str> {
    fields_of(object)
        .iter()
        .find(|f| f.eq_ignore_ascii_case(name))
        .copied()
}

/// "sObject type 'X' is not supported": an object this session may not see.
pub fn unsupported_type(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("The requested resource does not exist: sObject type '{name}' is not supported"),
    )
}

fn no_such_column(object: &str, name: &str) -> ApiError {
    ApiError::bad_request(
        "INVALID_FIELD",
        format!(
            "No such column '{name}' on entity '{object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."
        ),
    )
}

/// A connected app created through the Metadata API.
#[derive(Debug, Clone)]
pub struct ConnectedApp {
    pub full_name: String,
    pub label: String,
    pub contact_email: String,
    pub consumer_key: String,
    pub consumer_secret: String,
    pub client_credentials: bool,
    /// Username of the client credentials flow's Run As user.
    pub run_as: Option<String>,
    pub admin_approved: bool,
    pub scopes: Vec<String>,
}

/// Who a session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
}

/// What a session may read of Account and Contact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Grants {
    /// View All Data (System Administrator): everything.
    #[default]
    All,
    /// The union of the user's permission sets.
    Only {
        objects: BTreeSet<Object>,
        fields: BTreeSet<(Object, String)>,
    },
}

impl Grants {
    pub fn can_read(&self, object: Object, field: Option<&str>) -> bool {
        match self {
            Grants::All => true,
            Grants::Only { objects, fields } => {
                if !objects.contains(&object) {
                    return false;
                }
                let Some(f) = field else { return true };
                if let Some((_, super::schema::Ty::Address(prefix))) = object.field(f) {
                    // A compound field is readable when its components are.
                    return ["Street", "City", "State", "PostalCode", "Country"]
                        .iter()
                        .all(|c| self.can_read(object, Some(&format!("{prefix}{c}"))));
                }
                !object.permissionable(f) || fields.contains(&(object, canonical_field(object, f)))
            }
        }
    }
}

fn canonical_field(object: Object, f: &str) -> String {
    object
        .field(f)
        .map_or_else(|| f.to_string(), |(n, _)| n.to_string())
}

#[derive(Debug, Default)]
pub struct Setup {
    tables: BTreeMap<&'static str, BTreeMap<String, Map<String, Value>>>,
    counter: u64,
    pub apps: BTreeMap<String, ConnectedApp>,
    /// Sessions issued to connected apps created here, and the admin's: token → user id and
    /// the app's full name (`None` for the admin's own login).
    sessions: HashMap<String, (String, Option<String>)>,
    /// The live session per app, handed out again while valid (as the default app's is).
    current: HashMap<String, String>,
}

impl Setup {
    /// Licences, the two profiles, the permission set licence, the admin (with a session as
    /// if logged in) and the default connected app's integration user (full access, as the
    /// emulator always gave it).
    pub fn new(admin_username: &str, admin_token: &str, integration_username: &str) -> Setup {
        let mut s = Setup::default();
        let sf = s.insert("UserLicense", json!({"Name": "Salesforce"}));
        let integ = s.insert("UserLicense", json!({"Name": "Salesforce Integration"}));
        let admin_profile = s.insert(
            "Profile",
            json!({"Name": ADMIN_PROFILE, "UserLicenseId": sf}),
        );
        s.insert(
            "Profile",
            json!({"Name": INTEGRATION_PROFILE, "UserLicenseId": integ}),
        );
        s.insert(
            "PermissionSetLicense",
            json!({"DeveloperName": INTEGRATION_PSL, "MasterLabel": "Salesforce API Integration"}),
        );
        for (user, last) in [
            (admin_username, "Admin"),
            (integration_username, "Integration"),
        ] {
            s.insert(
                "User",
                json!({
                    "Username": user, "LastName": last, "Email": user, "Alias": &last[..5],
                    "ProfileId": admin_profile, "IsActive": true, "TimeZoneSidKey": "GMT",
                    "LocaleSidKey": "en_US", "EmailEncodingKey": "UTF-8",
                    "LanguageLocaleKey": "en_US",
                }),
            );
        }
        let admin = s.user_by_name(admin_username).unwrap_or_default();
        s.sessions.insert(admin_token.to_string(), (admin, None));
        s
    }

    fn insert(&mut self, object: &'static str, v: Value) -> String {
        let prefix = OBJECTS
            .iter()
            .find(|(n, _, _)| *n == object)
            .map_or("000", |(_, p, _)| p);
        self.counter += 1;
        let id = make_prefixed_id(prefix, "Dn", self.counter);
        let mut m = match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        m.insert("Id".into(), Value::String(id.clone()));
        self.tables.entry(object).or_default().insert(id.clone(), m);
        id
    }

    fn rows(&self, object: &str) -> impl Iterator<Item = &Map<String, Value>> {
        self.tables.get(object).into_iter().flat_map(|t| t.values())
    }

    pub fn get(&self, object: &str, id: &str) -> Option<&Map<String, Value>> {
        self.tables.get(object)?.get(id)
    }

    /// Every record of a setup object (tests look at what was provisioned).
    pub fn all(&self, object: &str) -> Vec<Map<String, Value>> {
        self.rows(object).cloned().collect()
    }

    fn find(&self, object: &str, field: &str, value: &str) -> Option<&Map<String, Value>> {
        self.rows(object).find(|r| {
            r.get(field)
                .and_then(Value::as_str)
                .is_some_and(|v| v.eq_ignore_ascii_case(value))
        })
    }

    pub fn user_by_name(&self, username: &str) -> Option<String> {
        self.find("User", "Username", username)
            .and_then(|u| u.get("Id")?.as_str().map(str::to_string))
    }

    fn user_active(&self, user_id: &str) -> bool {
        self.get("User", user_id)
            .and_then(|u| u.get("IsActive")?.as_bool())
            .unwrap_or(false)
    }

    fn profile_name(&self, user_id: &str) -> Option<&str> {
        let profile = self.get("User", user_id)?.get("ProfileId")?.as_str()?;
        self.get("Profile", profile)?.get("Name")?.as_str()
    }

    /// Whether the user may read and change setup objects.
    pub fn is_admin(&self, p: &Principal) -> bool {
        self.profile_name(&p.user_id) == Some(ADMIN_PROFILE)
    }

    /// The session behind a bearer token issued here, if it is live and its user active.
    pub fn principal(&self, token: &str) -> Option<Principal> {
        let (user, _) = self.sessions.get(token)?;
        self.user_active(user).then(|| Principal {
            user_id: user.clone(),
        })
    }

    /// What the user may read: everything for the System Administrator profile, else the union
    /// of its permission sets (its profile grants no object access).
    pub fn grants(&self, p: &Principal) -> Grants {
        if self.is_admin(p) {
            return Grants::All;
        }
        let sets: BTreeSet<&str> = self
            .rows("PermissionSetAssignment")
            .filter(|a| a.get("AssigneeId").and_then(Value::as_str) == Some(&p.user_id))
            .filter_map(|a| a.get("PermissionSetId")?.as_str())
            .collect();
        let in_sets = |r: &&Map<String, Value>| {
            r.get("ParentId")
                .and_then(Value::as_str)
                .is_some_and(|id| sets.contains(id))
                && r.get("PermissionsRead").and_then(Value::as_bool) == Some(true)
        };
        let objects = self
            .rows("ObjectPermissions")
            .filter(in_sets)
            .filter_map(|r| Object::parse(r.get("SobjectType")?.as_str()?))
            .collect();
        let fields = self
            .rows("FieldPermissions")
            .filter(in_sets)
            .filter_map(|r| {
                let (o, f) = r.get("Field")?.as_str()?.split_once('.')?;
                let o = Object::parse(o)?;
                Some((o, canonical_field(o, f)))
            })
            .collect();
        Grants::Only { objects, fields }
    }

    /// A token for a connected app created here (client credentials flow), as the OAuth
    /// endpoint answers: `invalid_client_id` for an unknown key, `invalid_client` for a wrong
    /// secret, and `invalid_grant` when the app has no usable Run As user ("OAuth 2.0 Client
    /// Credentials Flow for Server-to-Server Integration": the flow needs an execution user).
    pub fn issue_for_app(
        &mut self,
        client_id: &str,
        client_secret: &str,
    ) -> Option<Result<(String, bool), super::error::OAuthError>> {
        use super::error::OAuthError;
        let app = self
            .apps
            .values()
            .find(|a| a.consumer_key == client_id)?
            .clone();
        if app.consumer_secret != client_secret {
            return Some(Err(OAuthError {
                error: "invalid_client",
                description: "invalid client credentials",
            }));
        }
        let user = app
            .run_as
            .as_deref()
            .filter(|_| app.client_credentials)
            .and_then(|u| self.user_by_name(u));
        let Some(user) = user else {
            return Some(Err(OAuthError {
                error: "invalid_grant",
                description: "no client credentials user enabled",
            }));
        };
        if !self.user_active(&user) {
            return Some(Err(OAuthError {
                error: "invalid_grant",
                description: "user is inactive",
            }));
        }
        if let Some(t) = self.current.get(&app.full_name)
            && self.sessions.contains_key(t)
        {
            return Some(Ok((t.clone(), false)));
        }
        let token = format!("00DDn000000EmuA!AR{}", uuid::Uuid::new_v4().simple());
        self.sessions
            .insert(token.clone(), (user, Some(app.full_name.clone())));
        self.current.insert(app.full_name.clone(), token.clone());
        Some(Ok((token, true)))
    }

    /// Ends the sessions of an app (deleting an app revokes its tokens).
    fn revoke_app(&mut self, full_name: &str) {
        self.sessions
            .retain(|_, (_, app)| app.as_deref() != Some(full_name));
        self.current.remove(full_name);
    }

    /// Ends the sessions issued to apps (what `expire_sessions` does to the default app's).
    pub fn expire_app_sessions(&mut self) {
        self.sessions.retain(|_, (_, app)| app.is_none());
        self.current.clear();
    }

    // ---- sObject REST -------------------------------------------------------------------

    /// "Create a Record": `POST /sobjects/{object}`.
    pub fn create(
        &mut self,
        object: &'static str,
        body: Map<String, Value>,
    ) -> Result<String, ApiError> {
        let mut rec = Map::new();
        for (k, v) in body {
            let Some(f) = field_of(object, &k).filter(|f| *f != "Id") else {
                return Err(no_such_column(object, &k));
            };
            rec.insert(f.to_string(), v);
        }
        let text = |rec: &Map<String, Value>, k: &str| {
            rec.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_default()
        };
        let required: &[&str] = match object {
            "PermissionSet" => &["Label", "Name"],
            "ObjectPermissions" => &["ParentId", "SobjectType"],
            "FieldPermissions" => &["ParentId", "SobjectType", "Field"],
            "PermissionSetAssignment" => &["AssigneeId", "PermissionSetId"],
            "PermissionSetLicenseAssign" => &["AssigneeId", "PermissionSetLicenseId"],
            "User" => &[
                "Username",
                "LastName",
                "Email",
                "Alias",
                "TimeZoneSidKey",
                "LocaleSidKey",
                "EmailEncodingKey",
                "LanguageLocaleKey",
                "ProfileId",
            ],
            _ => {
                return Err(ApiError::bad_request(
                    "INVALID_TYPE_FOR_OPERATION",
                    format!("entity type {object} does not support create"),
                ));
            }
        };
        let missing: Vec<&str> = required
            .iter()
            .filter(|k| text(&rec, k).is_empty())
            .copied()
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::bad_request(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
            ));
        }
        let duplicate = |this: &Setup,
                         rec: &Map<String, Value>,
                         keys: &[&str],
                         shown: &str|
         -> Result<(), ApiError> {
            let hit = this.rows(object).find(|r| {
                keys.iter().all(|k| {
                    r.get(*k).and_then(Value::as_str).map(str::to_lowercase)
                        == Some(text(rec, k).to_lowercase())
                })
            });
            match hit {
                Some(r) => Err(ApiError::bad_request(
                    "DUPLICATE_VALUE",
                    format!(
                        "duplicate value found: {shown} duplicates value on record with id: {}",
                        r.get("Id").and_then(Value::as_str).unwrap_or("")
                    ),
                )),
                None => Ok(()),
            }
        };
        let parent_exists = |this: &Setup,
                             rec: &Map<String, Value>,
                             key: &str,
                             target: &str|
         -> Result<(), ApiError> {
            if this.get(target, &text(rec, key)).is_none() {
                return Err(ApiError::bad_request(
                    "INVALID_CROSS_REFERENCE_KEY",
                    "invalid cross reference id",
                ));
            }
            Ok(())
        };
        match object {
            "PermissionSet" => {
                let name = text(&rec, "Name");
                if !developer_name(&name) {
                    return Err(ApiError::bad_request(
                        "INVALID_FIELD",
                        format!(
                            "The permission set API name can only contain underscores and alphanumeric characters. It must be unique, begin with a letter, not include spaces, not end with an underscore, and not contain two consecutive underscores: {name}"
                        ),
                    ));
                }
                duplicate(self, &rec, &["Name"], "Name")?;
                rec.entry("IsOwnedByProfile").or_insert(Value::Bool(false));
            }
            "ObjectPermissions" => {
                parent_exists(self, &rec, "ParentId", "PermissionSet")?;
                let o = text(&rec, "SobjectType");
                let Some(obj) = Object::parse(&o) else {
                    return Err(restricted_picklist("SObject Type Name", &o));
                };
                rec.insert("SobjectType".into(), obj.name().into());
                for p in [
                    "PermissionsRead",
                    "PermissionsCreate",
                    "PermissionsEdit",
                    "PermissionsDelete",
                    "PermissionsViewAllRecords",
                    "PermissionsModifyAllRecords",
                ] {
                    rec.entry(p).or_insert(Value::Bool(false));
                }
                object_permission_rules(&rec)?;
                duplicate(self, &rec, &["ParentId", "SobjectType"], "<unknown>")?;
            }
            "FieldPermissions" => {
                parent_exists(self, &rec, "ParentId", "PermissionSet")?;
                let o = text(&rec, "SobjectType");
                let Some(obj) = Object::parse(&o) else {
                    return Err(restricted_picklist("SObject Type Name", &o));
                };
                let field = text(&rec, "Field");
                let canonical = field
                    .split_once('.')
                    .filter(|(fo, _)| Object::parse(fo) == Some(obj))
                    .and_then(|(_, f)| {
                        // "Contact.Account" and "Contact.AccountId" name the same field
                        // (API 50.0 and later).
                        obj.field(f)
                            .or_else(|| obj.field(&format!("{f}Id")))
                            .filter(|(n, _)| obj.permissionable(n))
                    });
                let Some((name, _)) = canonical else {
                    return Err(restricted_picklist("Field Name", &field));
                };
                rec.insert("SobjectType".into(), obj.name().into());
                rec.insert("Field".into(), format!("{}.{name}", obj.name()).into());
                rec.entry("PermissionsRead").or_insert(Value::Bool(false));
                rec.entry("PermissionsEdit").or_insert(Value::Bool(false));
                field_permission_rules(&rec)?;
                duplicate(self, &rec, &["ParentId", "Field"], "<unknown>")?;
            }
            "PermissionSetAssignment" => {
                parent_exists(self, &rec, "AssigneeId", "User")?;
                parent_exists(self, &rec, "PermissionSetId", "PermissionSet")?;
                duplicate(self, &rec, &["AssigneeId", "PermissionSetId"], "<unknown>")?;
            }
            "PermissionSetLicenseAssign" => {
                parent_exists(self, &rec, "AssigneeId", "User")?;
                parent_exists(self, &rec, "PermissionSetLicenseId", "PermissionSetLicense")?;
                duplicate(
                    self,
                    &rec,
                    &["AssigneeId", "PermissionSetLicenseId"],
                    "<unknown>",
                )?;
            }
            "User" => {
                parent_exists(self, &rec, "ProfileId", "Profile")?;
                let username = text(&rec, "Username");
                let (local, domain) = username.split_once('@').unwrap_or(("", ""));
                if local.is_empty() || !domain.contains('.') {
                    return Err(ApiError::bad_request(
                        "INVALID_NEW_USERNAME",
                        "Invalid username: must be in the form of an email address (for example, john@acme.com)",
                    ));
                }
                if self.user_by_name(&username).is_some() {
                    return Err(ApiError::bad_request(
                        "DUPLICATE_USERNAME",
                        "Duplicate Username.The username already exists in this or another Salesforce organization. Usernames must be unique across all Salesforce organizations. To resolve, use a different username (it doesn't need to match the user's email address).",
                    ));
                }
                rec.entry("IsActive").or_insert(Value::Bool(true));
            }
            _ => {}
        }
        Ok(self.insert(object, Value::Object(rec)))
    }

    /// "Update a Record": `PATCH /sobjects/{object}/{id}`.
    pub fn update(
        &mut self,
        object: &'static str,
        id: &str,
        body: Map<String, Value>,
    ) -> Result<(), ApiError> {
        let updatable: &[&str] = match object {
            "PermissionSet" => &["Label", "Description"],
            "ObjectPermissions" => &[
                "PermissionsRead",
                "PermissionsCreate",
                "PermissionsEdit",
                "PermissionsDelete",
                "PermissionsViewAllRecords",
                "PermissionsModifyAllRecords",
            ],
            "FieldPermissions" => &["PermissionsRead", "PermissionsEdit"],
            "User" => &[
                "LastName",
                "FirstName",
                "Email",
                "Alias",
                "IsActive",
                "ProfileId",
            ],
            _ => &[],
        };
        let Some(current) = self.get(object, id).cloned() else {
            return Err(ApiError::not_found());
        };
        let mut next = current;
        for (k, v) in body {
            let Some(f) = field_of(object, &k) else {
                return Err(no_such_column(object, &k));
            };
            if !updatable.contains(&f) {
                return Err(ApiError::bad_request(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    format!(
                        "Unable to create/update fields: {f}. Please check the security settings of this field and verify that it is read/write for your profile or permission set."
                    ),
                ));
            }
            next.insert(f.to_string(), v);
        }
        match object {
            "ObjectPermissions" => object_permission_rules(&next)?,
            "FieldPermissions" => field_permission_rules(&next)?,
            _ => {}
        }
        if object == "User" && next.get("IsActive") == Some(&Value::Bool(false)) {
            // A deactivated user's sessions end with it.
            let id = id.to_string();
            self.sessions.retain(|_, (u, _)| *u != id);
        }
        if let Some(t) = self.tables.get_mut(object) {
            t.insert(id.to_string(), next);
        }
        Ok(())
    }

    /// "Delete a Record": `DELETE /sobjects/{object}/{id}`. Users cannot be deleted, only
    /// deactivated ("User" object: no delete() among its supported calls). Deleting a
    /// permission set deletes its permissions and assignments.
    pub fn delete(&mut self, object: &'static str, id: &str) -> Result<(), ApiError> {
        if matches!(
            object,
            "User" | "Profile" | "UserLicense" | "PermissionSetLicense"
        ) {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "HTTP Method 'DELETE' not allowed. Allowed are HEAD,GET,PATCH",
            ));
        }
        if self
            .tables
            .get_mut(object)
            .and_then(|t| t.remove(id))
            .is_none()
        {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "ENTITY_IS_DELETED",
                "entity is deleted",
            ));
        }
        if object == "PermissionSet" {
            for (child, key) in [
                ("ObjectPermissions", "ParentId"),
                ("FieldPermissions", "ParentId"),
                ("PermissionSetAssignment", "PermissionSetId"),
            ] {
                if let Some(t) = self.tables.get_mut(child) {
                    t.retain(|_, r| r.get(key).and_then(Value::as_str) != Some(id));
                }
            }
        }
        Ok(())
    }

    /// A record as REST returns it (`attributes`, then every field).
    pub fn shaped(&self, object: &str, version: &str, id: &str) -> Option<Value> {
        let r = self.get(object, id)?;
        Some(shape(object, version, r, fields_of(object)))
    }

    /// `SELECT f, ... FROM <setup object> [WHERE f = 'v' [AND ...]] [LIMIT n]`: the subset of
    /// SOQL the provisioning client uses (equality and IN on text, ids and booleans).
    pub fn query(&self, soql: &str, version: &str) -> Result<Value, ApiError> {
        let q = SetupQuery::parse(soql)?;
        let mut out = Vec::new();
        for r in self.rows(q.object) {
            let hit = q.filters.iter().all(|(f, vals)| {
                let v = r.get(*f).unwrap_or(&Value::Null);
                vals.iter().any(|want| match (v, want) {
                    (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
                    (a, b) => a == b,
                })
            });
            if hit {
                out.push(shape(q.object, version, r, &q.fields));
            }
        }
        if let Some(n) = q.limit {
            out.truncate(n);
        }
        Ok(json!({"totalSize": out.len(), "done": true, "records": out}))
    }

    // ---- Metadata API: ConnectedApp -------------------------------------------------------

    /// `createMetadata` of a ConnectedApp; `Err` is (statusCode, message) for its SaveResult.
    pub fn create_app(&mut self, app: ConnectedApp) -> Result<(), (&'static str, String)> {
        if !developer_name(&app.full_name) {
            return Err((
                "INVALID_NAME",
                format!("The API name '{}' is not valid", app.full_name),
            ));
        }
        if self.apps.contains_key(&app.full_name) {
            return Err((
                "DUPLICATE_DEVELOPER_NAME",
                format!("Connected App '{}' already exists", app.full_name),
            ));
        }
        if self
            .apps
            .values()
            .any(|a| a.consumer_key == app.consumer_key)
        {
            return Err((
                "DUPLICATE_VALUE",
                "The consumer key is already in use by another connected app".into(),
            ));
        }
        if app.consumer_secret.len() < 8 {
            return Err((
                "FIELD_INTEGRITY_EXCEPTION",
                "Consumer Secret: the secret must be at least 8 characters".into(),
            ));
        }
        if app.client_credentials {
            let Some(user) = app.run_as.as_deref().and_then(|u| self.user_by_name(u)) else {
                return Err((
                    "FIELD_INTEGRITY_EXCEPTION",
                    "Run As: enter the username of an active user for the client credentials flow"
                        .into(),
                ));
            };
            if !self.user_active(&user) {
                return Err((
                    "FIELD_INTEGRITY_EXCEPTION",
                    "Run As: the user is inactive".into(),
                ));
            }
        }
        self.apps.insert(app.full_name.clone(), app);
        Ok(())
    }

    /// `deleteMetadata` of a ConnectedApp; deleting it revokes its tokens.
    pub fn delete_app(&mut self, full_name: &str) -> Result<(), (&'static str, String)> {
        if self.apps.remove(full_name).is_none() {
            return Err((
                "INVALID_CROSS_REFERENCE_KEY",
                format!("In field: fullName - no ConnectedApp named {full_name} found"),
            ));
        }
        self.revoke_app(full_name);
        Ok(())
    }
}

fn shape(object: &str, version: &str, r: &Map<String, Value>, fields: &[&str]) -> Value {
    let id = r.get("Id").and_then(Value::as_str).unwrap_or("");
    let mut out = Map::new();
    out.insert(
        "attributes".into(),
        json!({"type": object, "url": format!("/services/data/{version}/sobjects/{object}/{id}")}),
    );
    for f in fields {
        out.insert(f.to_string(), r.get(*f).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

/// "bad value for restricted picklist field": a picklist value that is not one of its values.
fn restricted_picklist(label: &str, value: &str) -> ApiError {
    ApiError::bad_request(
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        format!("{label}: bad value for restricted picklist field: {value}"),
    )
}

/// ObjectPermissions' dependencies (Object Reference "ObjectPermissions": create, edit and
/// delete require read; delete requires edit; View All requires read, Modify All requires
/// delete and View All).
fn object_permission_rules(r: &Map<String, Value>) -> Result<(), ApiError> {
    let on = |k: &str| r.get(k).and_then(Value::as_bool).unwrap_or(false);
    let broken =
        (on("PermissionsCreate") || on("PermissionsEdit") || on("PermissionsViewAllRecords"))
            && !on("PermissionsRead")
            || on("PermissionsDelete") && !on("PermissionsEdit")
            || on("PermissionsModifyAllRecords")
                && !(on("PermissionsDelete") && on("PermissionsViewAllRecords"));
    if broken {
        return Err(ApiError::bad_request(
            "FIELD_INTEGRITY_EXCEPTION",
            "Permission Read is required for the other permissions on this object",
        ));
    }
    Ok(())
}

/// FieldPermissions: edit requires read, and a record with neither is meaningless (Salesforce
/// deletes it; refusing it keeps the emulator's state exact).
fn field_permission_rules(r: &Map<String, Value>) -> Result<(), ApiError> {
    let on = |k: &str| r.get(k).and_then(Value::as_bool).unwrap_or(false);
    if on("PermissionsEdit") && !on("PermissionsRead") || !on("PermissionsRead") {
        return Err(ApiError::bad_request(
            "FIELD_INTEGRITY_EXCEPTION",
            "Permission Read is required: a field permission needs at least read access",
        ));
    }
    Ok(())
}

/// An API name: letters, digits and single underscores, starting with a letter, not ending
/// with an underscore.
fn developer_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 80
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && !s.ends_with('_')
        && !s.contains("__")
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct SetupQuery {
    object: &'static str,
    fields: Vec<&'static str>,
    filters: Vec<(&'static str, Vec<Value>)>,
    limit: Option<usize>,
}

impl SetupQuery {
    fn parse(text: &str) -> Result<SetupQuery, ApiError> {
        let toks = tokens(text)?;
        let mut i = 0;
        let malformed = |t: Option<&String>| {
            ApiError::bad_request(
                "MALFORMED_QUERY",
                format!("unexpected token: '{}'", t.map_or("<EOF>", String::as_str)),
            )
        };
        let kw = |i: usize, k: &str| toks.get(i).is_some_and(|t| t.eq_ignore_ascii_case(k));
        if !kw(0, "SELECT") {
            return Err(malformed(toks.first()));
        }
        i += 1;
        let mut names = Vec::new();
        loop {
            names.push(toks.get(i).cloned().ok_or_else(|| malformed(None))?);
            i += 1;
            if toks.get(i).map(String::as_str) == Some(",") {
                i += 1;
            } else {
                break;
            }
        }
        if !kw(i, "FROM") {
            return Err(malformed(toks.get(i)));
        }
        let obj_name = toks.get(i + 1).ok_or_else(|| malformed(None))?;
        let object = setup_object(obj_name).ok_or_else(|| malformed(Some(obj_name)))?;
        i += 2;
        let resolve = |n: &str| field_of(object, n).ok_or_else(|| no_such_column(object, n));
        let fields = names
            .iter()
            .map(|n| resolve(n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut filters = Vec::new();
        if kw(i, "WHERE") {
            i += 1;
            loop {
                let f = resolve(toks.get(i).ok_or_else(|| malformed(None))?)?;
                i += 1;
                let mut vals = Vec::new();
                if toks.get(i).map(String::as_str) == Some("=") {
                    vals.push(literal(toks.get(i + 1)).ok_or_else(|| malformed(toks.get(i + 1)))?);
                    i += 2;
                } else if kw(i, "IN") && toks.get(i + 1).map(String::as_str) == Some("(") {
                    i += 2;
                    loop {
                        vals.push(literal(toks.get(i)).ok_or_else(|| malformed(toks.get(i)))?);
                        i += 1;
                        match toks.get(i).map(String::as_str) {
                            Some(",") => i += 1,
                            Some(")") => {
                                i += 1;
                                break;
                            }
                            _ => return Err(malformed(toks.get(i))),
                        }
                    }
                } else {
                    return Err(malformed(toks.get(i)));
                }
                filters.push((f, vals));
                if kw(i, "AND") {
                    i += 1;
                } else {
                    break;
                }
            }
        }
        let mut limit = None;
        if kw(i, "LIMIT") {
            limit = toks.get(i + 1).and_then(|n| n.parse().ok());
            if limit.is_none() {
                return Err(malformed(toks.get(i + 1)));
            }
            i += 2;
        }
        if i < toks.len() {
            return Err(malformed(toks.get(i)));
        }
        Ok(SetupQuery {
            object,
            fields,
            filters,
            limit,
        })
    }
}

/// Words, `'quoted strings'` (kept with a leading quote mark), and the symbols `, = ( )`.
fn tokens(s: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut v = String::from("'");
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(e) => v.push(e),
                        None => break,
                    },
                    Some('\'') => {
                        out.push(v);
                        break;
                    }
                    Some(c) => v.push(c),
                    None => {
                        return Err(ApiError::bad_request(
                            "MALFORMED_QUERY",
                            "unterminated string literal",
                        ));
                    }
                }
            }
        } else if ",=()".contains(c) {
            chars.next();
            out.push(c.to_string());
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || ",=()'".contains(c) {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

fn literal(t: Option<&String>) -> Option<Value> {
    let t = t?;
    if let Some(s) = t.strip_prefix('\'') {
        return Some(Value::String(s.to_string()));
    }
    match t.to_ascii_lowercase().as_str() {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        "null" => Some(Value::Null),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn field_permissions_refuse_fields_that_are_always_readable() {
        let mut s = Setup::new("a@x.example", "t", "i@x.example");
        let ps = s
            .create("PermissionSet", obj(json!({"Name": "P", "Label": "P"})))
            .unwrap();
        let e = s
            .create(
                "FieldPermissions",
                obj(json!({"ParentId": ps, "SobjectType": "Account", "Field": "Account.Name", "PermissionsRead": true})),
            )
            .unwrap_err();
        assert_eq!(e.code, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
        let ok = s.create(
            "FieldPermissions",
            obj(json!({"ParentId": ps, "SobjectType": "Contact", "Field": "Contact.Account", "PermissionsRead": true})),
        );
        assert!(ok.is_ok());
        let dup = s
            .create(
                "FieldPermissions",
                obj(json!({"ParentId": ps, "SobjectType": "Contact", "Field": "Contact.AccountId", "PermissionsRead": true})),
            )
            .unwrap_err();
        assert_eq!(dup.code, "DUPLICATE_VALUE");
    }

    #[test]
    fn setup_queries_filter_by_equality() {
        let s = Setup::new("a@x.example", "t", "i@x.example");
        let v = s
            .query(
                "SELECT Id, Name FROM Profile WHERE Name = 'Minimum Access - API Only Integrations'",
                "v62.0",
            )
            .unwrap();
        assert_eq!(v["totalSize"], 1);
        let e = s.query("SELECT Nope FROM Profile", "v62.0").unwrap_err();
        assert_eq!(e.code, "INVALID_FIELD");
    }
}
