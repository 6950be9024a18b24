//! The verdicts of `crm-sync check`: what a configuration needs from Dataverse and the CRMs, and
//! what the probes' findings mean, one line each with what to do about a failure. Pure: the
//! probes run in [`crate::check`], so every verdict and its advice is tested without a server.
//!
//! Sources for the advice: "Define alternate keys for a table" (keys, `EntityKeyIndexStatus`,
//! `ReactivateEntityKey`), "Security roles and privileges" (`prv{Action}{Table}`, depths),
//! "Send parallel requests" (`x-ms-dop-hint`).

use std::collections::BTreeMap;
use std::fmt;

use crm::{CrmError, FieldCheck};
use dataverse::WriteError;
use dataverse::preflight::{AttributeInfo, EntityKey, Identity, KeyIndexStatus, Privilege};
use mapping::columns::{self, ColumnType};
use mapping::{DeletePolicy, Entity, Mapper};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub status: Status,
    /// What was checked: `dataverse connection`, `account columns`, `source sf: CRM access`.
    pub check: String,
    pub detail: String,
    /// What to do about a failure or warning.
    pub fix: Option<String>,
}

impl Line {
    pub fn pass(check: impl Into<String>, detail: impl Into<String>) -> Line {
        Line {
            status: Status::Pass,
            check: check.into(),
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Line {
        Line {
            status: Status::Fail,
            check: check.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn warn(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Line {
        Line {
            status: Status::Warn,
            ..Line::fail(check, detail, fix)
        }
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        write!(f, "{tag}  {}: {}", self.check, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n      fix: {fix}")?;
        }
        Ok(())
    }
}

/// The lines, then a count of each status.
pub fn report(lines: &[Line]) -> String {
    let mut out = String::new();
    for l in lines {
        out.push_str(&format!("{l}\n"));
    }
    let count = |s: Status| lines.iter().filter(|l| l.status == s).count();
    out.push_str(&format!(
        "{} passed, {} warnings, {} failed\n",
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail)
    ));
    out
}

/// Whether anything would fail.
pub fn failed(lines: &[Line]) -> bool {
    lines.iter().any(|l| l.status == Status::Fail)
}

/// Every Dataverse column a table gets from the configured sources, with the longest MaxLength
/// any mapping assumes for it (`None` for non-text columns), crm-sync's own columns included.
pub fn required_columns(mappers: &[&Mapper], entity: Entity) -> BTreeMap<String, ColumnType> {
    let mut out: BTreeMap<String, ColumnType> = BTreeMap::new();
    let own = [
        "msdyn_source_crm",
        "msdyn_source_crm_id",
        "msdyn_source_crm_url",
    ];
    for name in own {
        if let Some(c) = columns::column(entity, name) {
            out.insert(name.to_string(), c.ty);
        }
    }
    for m in mappers {
        for (name, col) in m.columns(entity) {
            let keep = match (
                out.get(name).and_then(|t| t.max_length()),
                col.ty.max_length(),
            ) {
                (Some(have), Some(new)) => new > have,
                (None, _) => !out.contains_key(name),
                (Some(_), None) => false,
            };
            if keep {
                out.insert(name.to_string(), col.ty);
            }
        }
    }
    out
}

/// The privileges the application user needs: create, read, write, append and append to on
/// account and contact, and delete when a source's delete policy is `delete`.
pub fn required_privileges(mappers: &[&Mapper]) -> Vec<String> {
    let delete = mappers
        .iter()
        .any(|m| m.delete_policy == DeletePolicy::Delete);
    let mut actions = vec!["Create", "Read", "Write", "Append", "AppendTo"];
    if delete {
        actions.push("Delete");
    }
    let mut out = Vec::new();
    for table in ["Account", "Contact"] {
        for a in &actions {
            out.push(format!("prv{a}{table}"));
        }
    }
    out
}

/// A Dataverse error as a line's detail: a refused token is "credentials refused", never with
/// anything but the identity platform's own error code and description.
pub fn dataverse_error(e: &WriteError) -> String {
    match e {
        WriteError::Permanent { code, message, .. } if code == "auth" => {
            // Entra's description ends with trace and correlation ids: noise on a terminal.
            let message = message.split(" Trace ID:").next().unwrap_or(message);
            format!("credentials refused ({message})")
        }
        WriteError::Permanent { status: 401, .. } => {
            "credentials refused: the token was not accepted (HTTP 401)".into()
        }
        WriteError::Permanent {
            status: 403,
            message,
            ..
        } => {
            format!("access denied (HTTP 403): {message}")
        }
        other => other.to_string(),
    }
}

/// `GET WhoAmI`.
pub fn connection(found: &Result<Identity, WriteError>) -> Line {
    const CHECK: &str = "dataverse connection";
    match found {
        Ok(id) => {
            let dop = match id.dop_hint {
                Some(n) => format!(
                    "; x-ms-dop-hint {n}: recommended parallelism {n} (dataverse.max_concurrency, split across Lambdas)"
                ),
                None => "; no x-ms-dop-hint sent".into(),
            };
            Line::pass(
                CHECK,
                format!("token accepted, application user {}{dop}", id.user_id),
            )
        }
        Err(e) => {
            let detail = dataverse_error(e);
            let fix = if detail.starts_with("credentials refused") {
                "check dataverse.tenant, dataverse.client_id and the client secret (or certificate) the config references; a secret may have expired in the app registration (Entra admin center → App registrations → Certificates & secrets)"
            } else {
                "check dataverse.url (https://<org>.crm.dynamics.com) and that this machine can reach it; then that an application user exists for the app (Power Platform admin center → Environment → Settings → Application users)"
            };
            Line::fail(CHECK, detail, fix)
        }
    }
}

/// A column the mapping writes, as the org has it: `Ok(None)` when it does not exist.
pub type ColumnFinding = Result<Option<AttributeInfo>, WriteError>;

/// The mapped columns of one table: exist, and fit the mapping's MaxLength.
pub fn columns_of(
    entity: Entity,
    required: &BTreeMap<String, ColumnType>,
    found: &BTreeMap<String, ColumnFinding>,
) -> Vec<Line> {
    let check = format!("{entity} columns");
    let mut lines = Vec::new();
    for (name, ty) in required {
        let Some(finding) = found.get(name) else {
            continue;
        };
        match finding {
            Err(e) => lines.push(Line::fail(
                &check,
                format!("could not read {entity}.{name}: {}", dataverse_error(e)),
                "re-run check; if it persists, check the application user can read table definitions",
            )),
            Ok(None) => {
                let fix = if name.starts_with("msdyn_source_crm") {
                    "install the Dynamics 365 Contact Center CRM connector solution that adds the msdyn_source_crm columns (or create them), then re-run check".to_string()
                } else {
                    format!(
                        "create the column {name} on {entity}, or remove it from [sources.mapping.{entity}]"
                    )
                };
                lines.push(Line::fail(
                    &check,
                    format!("{entity}.{name} does not exist in this environment"),
                    fix,
                ));
            }
            Ok(Some(info)) => {
                if let (Some(want), Some(have)) = (ty.max_length(), info.max_length)
                    && want > have
                {
                    lines.push(Line::fail(
                        &check,
                        format!(
                            "{entity}.{name} has MaxLength {have} in this environment, the mapping writes up to {want}"
                        ),
                        format!(
                            "raise {entity}.{name}'s MaxLength to {want} in Dataverse (Tables → {entity} → Columns), or values longer than {have} characters will be refused"
                        ),
                    ));
                }
            }
        }
    }
    if lines.is_empty() {
        lines.push(Line::pass(
            check,
            format!("{} mapped columns present, MaxLengths fit", required.len()),
        ));
    }
    lines
}

/// The `msdyn_source_crm` option set of one table holds every source's value.
pub fn choices_of(
    entity: Entity,
    wanted: &[(String, i32)],
    found: &Result<Option<Vec<i32>>, WriteError>,
) -> Line {
    let check = format!("{entity} msdyn_source_crm choices");
    let values = match found {
        Err(e) => {
            return Line::fail(
                check,
                format!("could not read the option set: {}", dataverse_error(e)),
                "re-run check; if it persists, check the application user can read table definitions",
            );
        }
        Ok(None) => {
            return Line::fail(
                check,
                format!("{entity}.msdyn_source_crm does not exist in this environment"),
                "install the Contact Center CRM connector solution that adds msdyn_source_crm",
            );
        }
        Ok(Some(v)) => v,
    };
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(_, v)| !values.contains(v))
        .map(|(s, v)| format!("{v} (source {s})"))
        .collect();
    if missing.is_empty() {
        let list: Vec<String> = wanted.iter().map(|(s, v)| format!("{s}={v}")).collect();
        return Line::pass(check, format!("values present: {}", list.join(", ")));
    }
    let have: Vec<String> = values.iter().map(i32::to_string).collect();
    Line::fail(
        check,
        format!(
            "no option {} in msdyn_source_crm (it has {})",
            missing.join(", "),
            if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            }
        ),
        "set the source's crm_choice to your environment's value for this CRM, or add the option to the msdyn_source_crm choice (Tables → account → Columns → msdyn_source_crm)",
    )
}

const KEY_COLUMNS: [&str; 2] = ["msdyn_source_crm", "msdyn_source_crm_id"];

/// Under `identity = "alternate-key"`: a key on (msdyn_source_crm, msdyn_source_crm_id) exists
/// and its index is Active.
pub fn alternate_key(entity: Entity, found: &Result<Option<Vec<EntityKey>>, WriteError>) -> Line {
    let check = format!("{entity} alternate key");
    let keys = match found {
        Err(e) => {
            return Line::fail(
                check,
                format!("could not read the table's keys: {}", dataverse_error(e)),
                "re-run check; if it persists, check the application user can read table definitions",
            );
        }
        Ok(None) => {
            return Line::fail(
                check,
                format!("table {entity} does not exist"),
                "check dataverse.url points at the right environment",
            );
        }
        Ok(Some(k)) => k,
    };
    let key = keys.iter().find(|k| {
        k.attributes.len() == KEY_COLUMNS.len()
            && KEY_COLUMNS
                .iter()
                .all(|c| k.attributes.iter().any(|a| a == c))
    });
    let Some(key) = key else {
        return Line::fail(
            check,
            "no alternate key on (msdyn_source_crm, msdyn_source_crm_id)",
            format!(
                "create the alternate key as an administrator: POST EntityDefinitions(LogicalName='{entity}')/Keys with {{\"SchemaName\":\"msdyn_source_crm_key\",\"DisplayName\":{{\"LocalizedLabels\":[{{\"Label\":\"Source CRM key\",\"LanguageCode\":1033}}]}},\"KeyAttributes\":[\"msdyn_source_crm\",\"msdyn_source_crm_id\"]}}, wait until it is Active, then re-run check (or use identity = \"deterministic-id\")"
            ),
        );
    };
    let name = &key.schema_name;
    match &key.status {
        KeyIndexStatus::Active => Line::pass(check, format!("{name} is Active")),
        KeyIndexStatus::Pending => Line::fail(
            check,
            format!("{name} is Pending: its index has not started building"),
            "wait for the system job that builds the index (Settings → System Jobs), then re-run check",
        ),
        KeyIndexStatus::InProgress => Line::fail(
            check,
            format!("{name} is InProgress: its index is being built"),
            "wait for the index build to finish (it takes longer on large tables), then re-run check",
        ),
        KeyIndexStatus::Failed => Line::fail(
            check,
            format!("{name} is Failed: the index could not be built"),
            format!(
                "rows with duplicate (msdyn_source_crm, msdyn_source_crm_id) values usually cause this (the failed system job names it): remove the duplicates, then reactivate the key: POST ReactivateEntityKey with {{\"EntityLogicalName\":\"{entity}\",\"EntityKeyLogicalName\":\"{}\"}}",
                name.to_lowercase()
            ),
        ),
        KeyIndexStatus::Other(s) => Line::fail(
            check,
            format!("{name} has the unknown status '{s}'"),
            "inspect the key in the maker portal and re-run check once it is Active",
        ),
    }
}

/// The application user's privileges cover what crm-sync does.
pub fn privileges(required: &[String], found: &Result<Vec<Privilege>, WriteError>) -> Line {
    const CHECK: &str = "dataverse privileges";
    let held = match found {
        Err(e) => {
            return Line::fail(
                CHECK,
                format!(
                    "could not read the application user's privileges: {}",
                    dataverse_error(e)
                ),
                "grant the application user's role prvReadUser (RetrieveUserPrivileges needs it), or check the roles by hand",
            );
        }
        Ok(h) => h,
    };
    let missing: Vec<&str> = required
        .iter()
        .filter(|r| !held.iter().any(|p| &p.name == *r))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Line::fail(
            CHECK,
            format!("the application user lacks {}", missing.join(", ")),
            format!(
                "grant {} to the application user's security role (Organization depth), Power Platform admin center → Environment → Settings → Security roles",
                missing.join(", ")
            ),
        );
    }
    let shallow: Vec<String> = required
        .iter()
        .filter_map(|r| {
            let p = held.iter().filter(|p| &p.name == r);
            // Several roles may grant the same privilege: the widest counts.
            (!p.clone().any(|p| p.depth == "Global")).then(|| {
                format!(
                    "{r} ({})",
                    p.map(|p| p.depth.as_str()).next().unwrap_or("?")
                )
            })
        })
        .collect();
    if !shallow.is_empty() {
        return Line::warn(
            CHECK,
            format!("below Organization depth: {}", shallow.join(", ")),
            "set these privileges to Organization in the application user's role, or rows owned outside its business unit will be refused",
        );
    }
    Line::pass(CHECK, format!("{} privileges held", required.len()))
}

/// One CRM source's reachability and field access, per entity.
pub fn crm_access(source: &str, found: &Result<Vec<(Entity, FieldCheck)>, CrmError>) -> Vec<Line> {
    let check = format!("source {source}: CRM access");
    let checks = match found {
        Err(CrmError::Access(m)) => {
            return vec![Line::fail(
                check,
                format!("credentials refused ({m})"),
                format!(
                    "check the credentials [sources.connection] of source {source} references, and that the integration user is active and allowed to use the API"
                ),
            )];
        }
        Err(e) => {
            return vec![Line::fail(
                check,
                format!("not reachable: {e}"),
                format!(
                    "check source {source}'s base_url / connection URLs and that this machine can reach them"
                ),
            )];
        }
        Ok(c) => c,
    };
    let mut lines = Vec::new();
    for (entity, fc) in checks {
        let fields_check = format!("source {source}: {entity} fields");
        if fc.unreadable.is_empty() {
            if fc.authoritative || fc.sampled {
                lines.push(Line::pass(fields_check, "every mapped field is readable"));
            } else {
                lines.push(Line::warn(
                    fields_check,
                    "no record to look at: field access not verified",
                    "re-run check once the CRM holds a record, or verify the integration user's field access by hand",
                ));
            }
        } else if fc.authoritative {
            lines.push(Line::fail(
                fields_check,
                format!(
                    "not readable by the integration user: {}",
                    fc.unreadable.join(", ")
                ),
                format!(
                    "grant the integration user read access to these fields (field-level security), or correct the paths in [sources.mapping.{entity}]"
                ),
            ));
        } else {
            lines.push(Line::warn(
                fields_check,
                format!(
                    "absent from a sample record: {}",
                    fc.unreadable.join(", ")
                ),
                "if the fields exist and are merely empty here, ignore this; otherwise grant the integration user read access or correct the mapping's paths",
            ));
        }
    }
    if lines.is_empty() {
        lines.push(Line::pass(check, "reachable, credentials accepted"));
    } else {
        lines.insert(0, Line::pass(check, "reachable, credentials accepted"));
    }
    lines
}

/// Whether a Salesforce source's connection was provisioned by `crm-sync connect` (ids in the
/// connection state file beside the configuration) or made by hand.
pub fn salesforce_connection(
    source: &str,
    state: Option<&crm::salesforce_connect::ConnectionState>,
    config: &std::path::Path,
) -> Line {
    let check = format!("source {source}: Salesforce connection");
    match state {
        Some(s) => Line::pass(
            check,
            format!(
                "provisioned by crm-sync connect: permission set {}, integration user {}, connected app {}",
                s.permission_set_id.as_deref().unwrap_or("?"),
                s.username.as_deref().unwrap_or("?"),
                s.connected_app.as_deref().unwrap_or("(not created yet)"),
            ),
        ),
        None => Line::warn(
            check,
            "not provisioned by crm-sync connect (made by hand, or connect not run yet)",
            format!(
                "crm-sync connect salesforce --config {} creates a least-privilege permission set, integration user and connected app",
                config.display()
            ),
        ),
    }
}

/// A source without `[sources.connection]`.
pub fn no_connection(source: &str) -> Line {
    Line::warn(
        format!("source {source}: CRM access"),
        "no [sources.connection]: initial sync, catch-up and fetches are off for this source",
        "add [sources.connection] with the CRM's credentials if this source should be synced, not only receive webhooks",
    )
}

/// A source's webhook verification: its secrets resolve.
pub fn webhook(source: &str, found: Option<&Result<(), String>>) -> Line {
    let check = format!("source {source}: webhook auth");
    match found {
        None => Line::warn(
            check,
            "no [sources.webhook]: webhooks from this source are refused",
            "add [sources.webhook] with the auth the CRM's notifications use, if it sends any",
        ),
        Some(Ok(())) => Line::pass(check, "secret set"),
        Some(Err(e)) => Line::fail(
            check,
            e.clone(),
            "set the secret the reference names (env:NAME in the environment, file:/path readable, non-empty)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(status: KeyIndexStatus) -> Result<Option<Vec<EntityKey>>, WriteError> {
        Ok(Some(vec![EntityKey {
            schema_name: "msdyn_source_crm_key".into(),
            attributes: vec!["msdyn_source_crm_id".into(), "msdyn_source_crm".into()],
            status,
        }]))
    }

    #[test]
    fn key_states_each_say_what_to_do() {
        assert_eq!(
            alternate_key(Entity::Account, &key(KeyIndexStatus::Active)).status,
            Status::Pass
        );
        let pending = alternate_key(Entity::Account, &key(KeyIndexStatus::Pending));
        assert_eq!(pending.status, Status::Fail);
        assert!(pending.fix.unwrap().contains("wait"));
        let failed = alternate_key(Entity::Contact, &key(KeyIndexStatus::Failed));
        assert!(
            failed
                .fix
                .as_deref()
                .unwrap()
                .contains("ReactivateEntityKey")
        );
        assert!(failed.fix.unwrap().contains("duplicate"));
        let none = alternate_key(Entity::Account, &Ok(Some(vec![])));
        assert!(
            none.fix
                .unwrap()
                .contains("POST EntityDefinitions(LogicalName='account')/Keys")
        );
        // A key on other columns is not ours.
        let other = Ok(Some(vec![EntityKey {
            schema_name: "accountnumber_key".into(),
            attributes: vec!["accountnumber".into()],
            status: KeyIndexStatus::Active,
        }]));
        assert_eq!(alternate_key(Entity::Account, &other).status, Status::Fail);
    }

    #[test]
    fn missing_and_short_columns_fail_by_name() {
        let required: BTreeMap<String, ColumnType> = [
            ("name".to_string(), ColumnType::Text { max: 160 }),
            (
                "msdyn_source_crm_url".to_string(),
                ColumnType::Text { max: 500 },
            ),
            (
                "numberofemployees".to_string(),
                ColumnType::Integer { min: 0, max: 10 },
            ),
        ]
        .into();
        let mut found: BTreeMap<String, ColumnFinding> = BTreeMap::new();
        found.insert(
            "name".into(),
            Ok(Some(AttributeInfo {
                max_length: Some(100),
            })),
        );
        found.insert("msdyn_source_crm_url".into(), Ok(None));
        found.insert(
            "numberofemployees".into(),
            Ok(Some(AttributeInfo { max_length: None })),
        );
        let lines = columns_of(Entity::Account, &required, &found);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().all(|l| l.status == Status::Fail));
        assert!(
            lines[0]
                .detail
                .contains("msdyn_source_crm_url does not exist")
        );
        assert!(lines[1].detail.contains("MaxLength 100"), "{}", lines[1]);
        // A longer column than the mapping assumes is fine.
        found.insert(
            "name".into(),
            Ok(Some(AttributeInfo {
                max_length: Some(400),
            })),
        );
        found.insert(
            "msdyn_source_crm_url".into(),
            Ok(Some(AttributeInfo {
                max_length: Some(500),
            })),
        );
        let lines = columns_of(Entity::Account, &required, &found);
        assert_eq!(lines[0].status, Status::Pass);
    }

    #[test]
    fn choices_name_the_source_and_value() {
        let wanted = vec![("sn".to_string(), 2), ("sf".to_string(), 7)];
        let l = choices_of(Entity::Account, &wanted, &Ok(Some(vec![1, 2, 3])));
        assert_eq!(l.status, Status::Fail);
        assert!(l.detail.contains("7 (source sf)"), "{l}");
        let l = choices_of(Entity::Account, &wanted, &Ok(Some(vec![2, 7])));
        assert_eq!(l.status, Status::Pass);
    }

    #[test]
    fn privileges_missing_fail_and_shallow_warn() {
        let required = vec![
            "prvCreateAccount".to_string(),
            "prvAppendToAccount".to_string(),
        ];
        let held = |names: &[(&str, &str)]| -> Result<Vec<Privilege>, WriteError> {
            Ok(names
                .iter()
                .map(|(n, d)| Privilege {
                    name: n.to_string(),
                    depth: d.to_string(),
                })
                .collect())
        };
        let l = privileges(&required, &held(&[("prvCreateAccount", "Global")]));
        assert_eq!(l.status, Status::Fail);
        assert!(l.fix.unwrap().starts_with("grant prvAppendToAccount"));
        let l = privileges(
            &required,
            &held(&[
                ("prvCreateAccount", "Global"),
                ("prvAppendToAccount", "Local"),
            ]),
        );
        assert_eq!(l.status, Status::Warn);
        let l = privileges(
            &required,
            &held(&[
                ("prvCreateAccount", "Global"),
                ("prvAppendToAccount", "Local"),
                ("prvAppendToAccount", "Global"),
            ]),
        );
        assert_eq!(l.status, Status::Pass);
    }

    #[test]
    fn refused_credentials_say_so() {
        let e = WriteError::Permanent {
            status: 401,
            code: "auth".into(),
            message: "token request refused (HTTP 401, invalid_client): AADSTS7000215".into(),
        };
        let l = connection(&Err(e));
        assert_eq!(l.status, Status::Fail);
        assert!(l.detail.starts_with("credentials refused"), "{l}");
        let l = crm_access("sf", &Err(CrmError::Access("invalid_client".into())));
        assert!(l[0].detail.starts_with("credentials refused"));
    }

    #[test]
    fn field_findings_fail_only_when_the_crm_says_so() {
        let fc = |authoritative| FieldCheck {
            unreadable: vec!["Region__c".into()],
            authoritative,
            sampled: !authoritative,
        };
        let l = crm_access("sf", &Ok(vec![(Entity::Account, fc(true))]));
        assert_eq!(l[1].status, Status::Fail);
        assert!(l[1].detail.contains("Region__c"));
        let l = crm_access("zd", &Ok(vec![(Entity::Account, fc(false))]));
        assert_eq!(l[1].status, Status::Warn);
    }

    #[test]
    fn privileges_follow_the_delete_policy() {
        let cfg = |policy: &str| -> Mapper {
            let text = format!(
                "id = \"sn\"\nkind = \"servicenow\"\nbase_url = \"https://x.service-now.com\"\ndelete_policy = \"{policy}\"\n"
            );
            let sc: mapping::SourceConfig = toml::from_str(&text).unwrap();
            Mapper::new(&sc).unwrap()
        };
        let keep = cfg("deactivate");
        assert!(
            !required_privileges(&[&keep])
                .iter()
                .any(|p| p.starts_with("prvDelete"))
        );
        let del = cfg("delete");
        assert!(required_privileges(&[&del]).contains(&"prvDeleteContact".to_string()));
        let cols = required_columns(&[&del], Entity::Contact);
        assert!(cols.contains_key("msdyn_source_crm_id") && cols.contains_key("lastname"));
    }
}
