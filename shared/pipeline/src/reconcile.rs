//! Reconciliation, the pure part: one CRM record (as the mapper would write it) against one
//! Dataverse row (as the Web API returns it), normalised and compared, and the pair classified as
//! missing, orphaned, different or in sync. No I/O: `crm-sync reconcile` walks both sides and
//! feeds the pairs through here.
//!
//! What "equal" means is what Dataverse would hold after the pipeline wrote the record again:
//! - only the columns the pipeline would write are compared (a column the record does not carry
//!   is left untouched by an upsert, so whatever Dataverse holds there is not drift);
//! - the key columns are compared like any other (`msdyn_source_crm`, `msdyn_source_crm_id` under
//!   `deterministic-id`, and `msdyn_source_crm_url`);
//! - a lookup written as `parentcustomerid_account@odata.bind: "/accounts(K)"` is read back as
//!   `_parentcustomerid_value: <guid>`: both become the parent's key path (`accounts(K)`), the
//!   Dataverse side through a resolver because under `alternate-key` only the I/O side knows
//!   which account a GUID is;
//! - `null`, an empty string and an unselected column are the same (Dataverse stores no empty
//!   strings); numbers are compared by value (`5`, `5.0`, `"5"` against a number);
//!   date-times by instant (`...Z` and `...+00:00`).

use std::collections::BTreeMap;

use chrono::DateTime;
use mapping::{Change, DeletePolicy, Entity, KeyError, Method, Operation, RowContext, row};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The lookups the pipeline writes, by navigation property: (lookup attribute, target entity).
/// Dataverse returns a lookup as `_{attribute}_value`.
const LOOKUPS: [(&str, &str, Entity); 1] = [(
    "parentcustomerid_account",
    "parentcustomerid",
    Entity::Account,
)];

/// What the pipeline would write for one CRM record, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    /// The row's key path (`accounts(<guid>)`, or the alternate-key predicate): where the
    /// pipeline writes it, so what a Dataverse row is matched on.
    pub key: String,
    pub source_id: String,
    /// Column → value; a lookup under its attribute name, valued by its target's key path.
    pub columns: BTreeMap<String, Value>,
}

/// One Dataverse row of the source, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Actual {
    pub key: String,
    /// `msdyn_source_crm_id`, when set.
    pub source_id: Option<String>,
    /// Deactivated (`statecode` 1): what the `deactivate` delete policy leaves behind.
    pub inactive: bool,
    /// Selected columns, lookups resolved to their target's key path (as in [`Expected`]).
    pub columns: Map<String, Value>,
}

/// What is wrong with one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// In the CRM, not in Dataverse.
    Missing,
    /// In Dataverse, not in the CRM (deleted there without us hearing of it).
    Orphaned,
    /// In both, with these columns not equal (sorted).
    Different { columns: Vec<String> },
}

impl Finding {
    pub fn name(&self) -> &'static str {
        match self {
            Finding::Missing => "missing",
            Finding::Orphaned => "orphaned",
            Finding::Different { .. } => "different",
        }
    }
}

/// Where a row of `entity` of this source lives: its key path.
pub fn key_of(ctx: &RowContext, entity: Entity, source_id: &str) -> Result<String, KeyError> {
    ctx.path(entity, source_id)
}

/// What the pipeline would write for a mapped change, or `None` for a change that deletes (a
/// record the CRM lists as deleted is not expected in Dataverse).
pub fn expected(change: &Change, ctx: &RowContext) -> Result<Option<Expected>, KeyError> {
    if matches!(change.op, Operation::Delete) {
        return Ok(None);
    }
    let Some(op) = row::build(change, ctx)? else {
        return Ok(None);
    };
    debug_assert_eq!(op.method, Method::Patch);
    let mut columns = BTreeMap::new();
    for (name, value) in op.body.unwrap_or_default() {
        match name.strip_suffix("@odata.bind") {
            Some(nav) => {
                let attr = LOOKUPS
                    .iter()
                    .find(|(n, _, _)| *n == nav)
                    .map_or(nav, |(_, a, _)| a);
                let target = value
                    .as_str()
                    .map(|p| Value::from(p.trim_start_matches('/')))
                    .unwrap_or(Value::Null);
                columns.insert(attr.to_string(), target);
            }
            None => {
                columns.insert(name, value);
            }
        }
    }
    Ok(Some(Expected {
        key: op.path,
        source_id: change.source_id.clone(),
        columns,
    }))
}

/// The columns to `$select` to compare rows of `entity` written by a mapping that writes
/// `mapped`: those, the key and identity columns, the lookups as `_x_value`, and `statecode`.
pub fn select(entity: Entity, mapped: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<String> {
    let mut cols: Vec<String> = mapped.into_iter().map(|c| c.as_ref().to_string()).collect();
    cols.push(entity.primary_key().into());
    cols.extend(
        [
            "msdyn_source_crm",
            "msdyn_source_crm_id",
            "msdyn_source_crm_url",
            "statecode",
        ]
        .map(String::from),
    );
    if entity == Entity::Contact {
        cols.extend(LOOKUPS.iter().map(|(_, attr, _)| format!("_{attr}_value")));
    }
    cols.sort();
    cols.dedup();
    cols
}

/// Reads a Dataverse row of `entity`. `parent_key` turns a lookup's GUID into its target's key
/// path (`accounts(<guid>)` under `deterministic-id`; under `alternate-key` the I/O side looks
/// the account up); `None` leaves the GUID path as is. `None` when the row has no primary key.
pub fn actual(
    row: &Map<String, Value>,
    entity: Entity,
    ctx: &RowContext,
    parent_key: &dyn Fn(Entity, &str) -> Option<String>,
) -> Option<Actual> {
    let guid = row.get(entity.primary_key())?.as_str()?;
    let source_id = row
        .get("msdyn_source_crm_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let key = match ctx.identity {
        mapping::IdentityStrategy::DeterministicId => format!("{}({guid})", entity.entity_set()),
        mapping::IdentityStrategy::AlternateKey => match &source_id {
            Some(id) => key_of(ctx, entity, id).ok()?,
            None => format!("{}({guid})", entity.entity_set()),
        },
    };
    let inactive = row.get("statecode").and_then(Value::as_i64) == Some(1);
    let mut columns = Map::new();
    for (name, value) in row {
        if name.contains('@') {
            continue;
        }
        let lookup = name
            .strip_prefix('_')
            .and_then(|n| n.strip_suffix("_value"))
            .and_then(|attr| LOOKUPS.iter().find(|(_, a, _)| *a == attr));
        match lookup {
            Some((_, attr, target)) => {
                let v = match value.as_str().filter(|g| !g.is_empty()) {
                    None => Value::Null,
                    Some(g) => Value::from(
                        parent_key(*target, g)
                            .unwrap_or_else(|| format!("{}({g})", target.entity_set())),
                    ),
                };
                columns.insert(attr.to_string(), v);
            }
            None => {
                columns.insert(name.clone(), value.clone());
            }
        }
    }
    Some(Actual {
        key,
        source_id,
        inactive,
        columns,
    })
}

/// The columns where Dataverse does not hold what the pipeline would write, sorted.
pub fn diff(expected: &Expected, actual: &Actual) -> Vec<String> {
    expected
        .columns
        .iter()
        .filter(|(name, want)| !same(want, actual.columns.get(*name).unwrap_or(&Value::Null)))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Whether two column values are the same once representation is set aside.
pub fn same(a: &Value, b: &Value) -> bool {
    match (blank_is_null(a), blank_is_null(b)) {
        (Value::Null, Value::Null) => true,
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(i), Some(j), _, _) => i == j,
                (_, _, Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            s.trim().parse::<f64>().is_ok_and(|f| Some(f) == n.as_f64())
        }
        (Value::String(x), Value::String(y)) => {
            x == y
                || matches!(
                    (DateTime::parse_from_rfc3339(x), DateTime::parse_from_rfc3339(y)),
                    (Ok(p), Ok(q)) if p == q
                )
        }
        (x, y) => x == y,
    }
}

fn blank_is_null(v: &Value) -> &Value {
    match v {
        Value::String(s) if s.is_empty() => &Value::Null,
        v => v,
    }
}

/// Classifies a CRM record and the row at its key (either may be absent). `None`: in sync, or
/// an orphan the `deactivate` policy already deactivated.
pub fn classify(
    expected: Option<&Expected>,
    actual: Option<&Actual>,
    policy: DeletePolicy,
) -> Option<Finding> {
    match (expected, actual) {
        (None, None) => None,
        (Some(_), None) => Some(Finding::Missing),
        (None, Some(a)) if policy == DeletePolicy::Deactivate && a.inactive => None,
        (None, Some(_)) => Some(Finding::Orphaned),
        (Some(e), Some(a)) => {
            let columns = diff(e, a);
            (!columns.is_empty()).then_some(Finding::Different { columns })
        }
    }
}

/// Whether the pipeline can reach an orphaned row with a delete: a delete is addressed by the
/// row's source id, so the row must sit where that id leads (a row someone else created at a
/// random GUID with our source's columns cannot be deleted through the pipeline).
pub fn deletable(actual: &Actual, entity: Entity, ctx: &RowContext) -> Option<String> {
    let id = actual.source_id.as_ref()?;
    (key_of(ctx, entity, id).ok()? == actual.key).then(|| id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapping::{IdentityStrategy, Parent, SourceId};
    use proptest::prelude::*;
    use serde_json::json;

    fn ctx(identity: IdentityStrategy) -> RowContext {
        RowContext {
            source: SourceId::new("sf").unwrap(),
            crm_choice: 7,
            guid_passthrough: false,
            delete_policy: DeletePolicy::Delete,
            identity,
        }
    }

    fn change(entity: Entity, id: &str, fields: Value, parent: Parent) -> Change {
        Change {
            source: SourceId::new("sf").unwrap(),
            entity,
            source_id: id.into(),
            op: Operation::Upsert {
                fields: fields.as_object().unwrap().clone(),
            },
            modified_at: None,
            parent,
            record_url: Some(format!("https://crm.example/{id}")),
        }
    }

    /// The row Dataverse would hold after the pipeline wrote `change`, as the Web API returns
    /// it: every selected column (null when unset), lookups as `_x_value` GUIDs.
    fn written(change: &Change, c: &RowContext) -> Map<String, Value> {
        let op = row::build(change, c).unwrap().unwrap();
        let mut row = Map::new();
        let guid =
            mapping::identity::record_guid(&c.source, change.entity, &change.source_id, false);
        row.insert(change.entity.primary_key().into(), json!(guid.to_string()));
        row.insert("msdyn_source_crm".into(), json!(c.crm_choice));
        row.insert("msdyn_source_crm_id".into(), json!(change.source_id));
        row.insert("statecode".into(), json!(0));
        for (k, v) in op.body.unwrap() {
            if let Some(nav) = k.strip_suffix("@odata.bind") {
                assert_eq!(nav, "parentcustomerid_account");
                let g = v.as_str().map(|p| {
                    let id = p.trim_start_matches("/accounts(").trim_end_matches(')');
                    json!(id)
                });
                row.insert("_parentcustomerid_value".into(), g.unwrap_or(Value::Null));
            } else {
                // Dataverse stores no empty strings and returns decimals as floats.
                let v = match v {
                    Value::String(s) if s.is_empty() => Value::Null,
                    Value::Number(n) if n.is_i64() => json!(n.as_i64().unwrap() as f64),
                    v => v,
                };
                row.insert(k, v);
            }
        }
        row.insert("telephone3".into(), Value::Null);
        row.insert("@odata.etag".into(), json!("W/\"1\""));
        row
    }

    fn guid_key(_: Entity, g: &str) -> Option<String> {
        Some(format!("accounts({g})"))
    }

    #[test]
    fn a_row_as_written_is_in_sync() {
        let c = ctx(IdentityStrategy::DeterministicId);
        let ch = change(
            Entity::Contact,
            "003A",
            json!({"lastname": "Ng", "emailaddress1": "", "numberofchildren": 2, "birthdate": "1990-01-01T00:00:00Z"}),
            Parent::Account("001A".into()),
        );
        let e = expected(&ch, &c).unwrap().unwrap();
        assert_eq!(
            e.columns["parentcustomerid"],
            json!(format!(
                "accounts({})",
                mapping::identity::record_guid(&c.source, Entity::Account, "001A", false)
            ))
        );
        let a = actual(&written(&ch, &c), Entity::Contact, &c, &guid_key).unwrap();
        assert_eq!(a.key, e.key);
        assert_eq!(a.source_id.as_deref(), Some("003A"));
        assert_eq!(classify(Some(&e), Some(&a), DeletePolicy::Delete), None);
    }

    #[test]
    fn each_difference_names_its_column() {
        let c = ctx(IdentityStrategy::DeterministicId);
        let ch = change(
            Entity::Contact,
            "003A",
            json!({"lastname": "Ng", "telephone1": "+1 555"}),
            Parent::Account("001A".into()),
        );
        let e = expected(&ch, &c).unwrap().unwrap();
        let mut row = written(&ch, &c);
        row.insert("telephone1".into(), json!("+1 556"));
        row.insert("_parentcustomerid_value".into(), Value::Null);
        row.insert("msdyn_source_crm_url".into(), json!("https://elsewhere/"));
        let a = actual(&row, Entity::Contact, &c, &guid_key).unwrap();
        assert_eq!(
            classify(Some(&e), Some(&a), DeletePolicy::Delete),
            Some(Finding::Different {
                columns: vec![
                    "msdyn_source_crm_url".into(),
                    "parentcustomerid".into(),
                    "telephone1".into()
                ]
            })
        );
    }

    #[test]
    fn a_cleared_parent_must_be_empty_and_an_unsaid_one_is_not_compared() {
        let c = ctx(IdentityStrategy::DeterministicId);
        let none = change(Entity::Contact, "1", json!({"lastname": "A"}), Parent::None);
        let unsaid = change(
            Entity::Contact,
            "1",
            json!({"lastname": "A"}),
            Parent::Unchanged,
        );
        let mut row = written(&none, &c);
        row.insert(
            "_parentcustomerid_value".into(),
            json!("0f8fad5b-d9cb-469f-a165-70867728950e"),
        );
        let a = actual(&row, Entity::Contact, &c, &guid_key).unwrap();
        let e = expected(&none, &c).unwrap().unwrap();
        assert_eq!(diff(&e, &a), ["parentcustomerid"]);
        let e = expected(&unsaid, &c).unwrap().unwrap();
        assert!(diff(&e, &a).is_empty());
    }

    #[test]
    fn classification_covers_every_pair() {
        let c = ctx(IdentityStrategy::DeterministicId);
        let ch = change(
            Entity::Account,
            "1",
            json!({"name": "A"}),
            Parent::Unchanged,
        );
        let e = expected(&ch, &c).unwrap().unwrap();
        let mut a = actual(&written(&ch, &c), Entity::Account, &c, &guid_key).unwrap();
        for policy in [
            DeletePolicy::Delete,
            DeletePolicy::Deactivate,
            DeletePolicy::Ignore,
        ] {
            assert_eq!(classify(None, None, policy), None);
            assert_eq!(classify(Some(&e), None, policy), Some(Finding::Missing));
            assert_eq!(classify(None, Some(&a), policy), Some(Finding::Orphaned));
            assert_eq!(classify(Some(&e), Some(&a), policy), None);
        }
        a.inactive = true;
        // Deactivated is what `deactivate` leaves of a deleted record: done, not drift.
        assert_eq!(classify(None, Some(&a), DeletePolicy::Deactivate), None);
        assert_eq!(
            classify(None, Some(&a), DeletePolicy::Delete),
            Some(Finding::Orphaned)
        );
        assert_eq!(
            classify(None, Some(&a), DeletePolicy::Ignore),
            Some(Finding::Orphaned)
        );
    }

    #[test]
    fn deleting_changes_expect_no_row() {
        let c = ctx(IdentityStrategy::DeterministicId);
        let mut ch = change(
            Entity::Account,
            "1",
            json!({"name": "A"}),
            Parent::Unchanged,
        );
        ch.op = Operation::Delete;
        assert_eq!(expected(&ch, &c).unwrap(), None);
    }

    #[test]
    fn alternate_keys_match_on_the_source_id_and_resolve_parents() {
        let c = ctx(IdentityStrategy::AlternateKey);
        let ch = change(
            Entity::Contact,
            "O'Brien",
            json!({"lastname": "O'Brien"}),
            Parent::Account("acc 1".into()),
        );
        let e = expected(&ch, &c).unwrap().unwrap();
        // Under alternate-key the key columns are in the path, not the body.
        assert!(!e.columns.contains_key("msdyn_source_crm_id"));
        let parent_path = key_of(&c, Entity::Account, "acc 1").unwrap();
        assert_eq!(e.columns["parentcustomerid"], json!(parent_path));
        let row = json!({
            "contactid": "0f8fad5b-d9cb-469f-a165-70867728950e",
            "msdyn_source_crm": 7, "msdyn_source_crm_id": "O'Brien",
            "lastname": "O'Brien", "msdyn_source_crm_url": "https://crm.example/O'Brien",
            "_parentcustomerid_value": "11111111-d9cb-469f-a165-70867728950e"
        });
        let resolve = |_: Entity, g: &str| {
            (g == "11111111-d9cb-469f-a165-70867728950e").then(|| parent_path.clone())
        };
        let a = actual(row.as_object().unwrap(), Entity::Contact, &c, &resolve).unwrap();
        assert_eq!(a.key, e.key);
        assert_eq!(classify(Some(&e), Some(&a), DeletePolicy::Delete), None);
        // An unknown parent GUID stays a GUID path: different.
        let a = actual(row.as_object().unwrap(), Entity::Contact, &c, &|_, _| None).unwrap();
        assert_eq!(diff(&e, &a), ["parentcustomerid"]);
    }

    #[test]
    fn orphans_are_deletable_only_where_their_id_leads() {
        let c = ctx(IdentityStrategy::DeterministicId);
        let ch = change(
            Entity::Account,
            "1",
            json!({"name": "A"}),
            Parent::Unchanged,
        );
        let mut a = actual(&written(&ch, &c), Entity::Account, &c, &guid_key).unwrap();
        assert_eq!(deletable(&a, Entity::Account, &c).as_deref(), Some("1"));
        a.key = "accounts(0f8fad5b-d9cb-469f-a165-70867728950e)".into();
        assert_eq!(deletable(&a, Entity::Account, &c), None);
        a.source_id = None;
        assert_eq!(deletable(&a, Entity::Account, &c), None);
    }

    #[test]
    fn representation_is_set_aside() {
        for (a, b) in [
            (json!(null), json!("")),
            (json!(5), json!(5.0)),
            (json!("5"), json!(5)),
            (json!(2.5), json!("2.50")),
            (
                json!("2024-05-01T10:00:00Z"),
                json!("2024-05-01T10:00:00.000+00:00"),
            ),
            (json!(true), json!(true)),
            (json!(u64::MAX), json!(u64::MAX)),
        ] {
            assert!(same(&a, &b), "{a} vs {b}");
            assert!(same(&b, &a), "{b} vs {a}");
        }
        for (a, b) in [
            (json!(null), json!("x")),
            (json!(null), json!(0)),
            (json!(5), json!(6)),
            (json!("5x"), json!(5)),
            (json!("a"), json!("A")),
            (json!(true), json!(1)),
            (json!(false), json!(null)),
            (json!("2024-05-01T10:00:00Z"), json!("2024-05-01T10:00:01Z")),
            (json!(i64::MAX), json!(i64::MAX - 1)),
        ] {
            assert!(!same(&a, &b), "{a} vs {b}");
            assert!(!same(&b, &a), "{b} vs {a}");
        }
    }

    #[test]
    fn select_asks_for_what_is_compared() {
        let s = select(Entity::Contact, ["lastname", "firstname"]);
        for c in [
            "contactid",
            "lastname",
            "firstname",
            "msdyn_source_crm_id",
            "_parentcustomerid_value",
            "statecode",
        ] {
            assert!(s.contains(&c.to_string()), "{c}");
        }
        assert!(!select(Entity::Account, ["name"]).contains(&"_parentcustomerid_value".into()));
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(|f| json!(f)),
            "[a-zA-Z0-9 @.+'-]{0,12}".prop_map(Value::from),
        ]
    }

    proptest! {
        /// Whatever a record holds, the row the pipeline writes for it compares equal, and
        /// changing any one written column behind its back is reported as that column alone.
        #[test]
        fn written_rows_compare_equal_and_one_change_is_named(
            fields in proptest::collection::btree_map("[a-z]{1,8}", value(), 0..8),
            id in "[A-Za-z0-9]{1,18}",
            parent in proptest::option::of("[A-Za-z0-9]{1,18}"),
            pick in any::<prop::sample::Index>(),
            replacement in "[a-z]{1,6}!",
            alternate in any::<bool>(),
        ) {
            let c = ctx(if alternate { IdentityStrategy::AlternateKey } else { IdentityStrategy::DeterministicId });
            let fields: Map<String, Value> = fields.into_iter().collect();
            let parent = parent.map_or(Parent::None, Parent::Account);
            let ch = change(Entity::Contact, &id, Value::Object(fields), parent.clone());
            let e = expected(&ch, &c).unwrap().unwrap();
            let resolve = |_: Entity, g: &str| match &parent {
                Parent::Account(p) => {
                    let guid = mapping::identity::record_guid(&c.source, Entity::Account, p, false);
                    (guid.to_string() == g).then(|| key_of(&c, Entity::Account, p).unwrap())
                }
                _ => None,
            };
            let mut row = written(&ch, &c);
            if alternate {
                // The key columns live in the URL: Dataverse holds them all the same.
                row.insert("msdyn_source_crm_id".into(), json!(id));
                let g = mapping::identity::record_guid(&c.source, Entity::Account, parent_id(&parent), false);
                if let Parent::Account(_) = parent {
                    row.insert("_parentcustomerid_value".into(), json!(g.to_string()));
                }
            }
            let a = actual(&row, Entity::Contact, &c, &resolve).unwrap();
            prop_assert_eq!(&a.key, &e.key);
            prop_assert_eq!(classify(Some(&e), Some(&a), DeletePolicy::Delete), None);

            let names: Vec<&String> = e.columns.keys().filter(|k| *k != "parentcustomerid").collect();
            let column = names[pick.index(names.len())].clone();
            let mut changed = row.clone();
            changed.insert(column.clone(), json!(replacement));
            let a = actual(&changed, Entity::Contact, &c, &resolve).unwrap();
            prop_assert_eq!(
                classify(Some(&e), Some(&a), DeletePolicy::Delete),
                Some(Finding::Different { columns: vec![column] })
            );
        }

        /// `same` is symmetric and reflexive on anything JSON.
        #[test]
        fn same_is_symmetric_and_reflexive(a in value(), b in value()) {
            prop_assert!(same(&a, &a));
            prop_assert_eq!(same(&a, &b), same(&b, &a));
        }
    }

    fn parent_id(p: &Parent) -> &str {
        match p {
            Parent::Account(id) => id,
            _ => "",
        }
    }
}
