//! Mapping profiles: which CRM field feeds which Dataverse column, as data.
//!
//! Each CRM kind has a built-in profile (`profiles/<kind>.toml`, embedded in the binary). A
//! source's configuration can override any part of it: replace a column's mapping, add custom
//! columns, remove columns, or (for the `generic` kind) supply everything. This module holds the
//! profile's shape, the built-ins and the merge; [`crate::mapper`] validates and compiles the
//! result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{CrmKind, Entity};
use crate::transform::{Overflow, Transform};

/// One JSON pointer or several; the first that is present in the record wins. Several paths let
/// one profile read a CRM's different payload variants (e.g. Salesforce REST `BillingStreet` and
/// CDC `BillingAddress.Street`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Paths {
    One(String),
    Many(Vec<String>),
}

impl Paths {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(v) => v,
        }
    }
}

/// When a record counts as deleted (e.g. Salesforce `IsDeleted` from `queryAll`, HubSpot
/// `archived`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletedRule {
    pub path: String,
    pub equals: Value,
}

/// What to do with a value that a value map does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmapped {
    /// Keep the value as it is.
    #[default]
    Keep,
    /// Write null.
    Null,
    /// Leave the column out and warn.
    Skip,
    /// Refuse the record.
    Reject,
}

/// What to do with a value that cannot be coerced to its column's type (e.g. "many" for
/// `numberofemployees`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Invalid {
    /// Leave the column out and warn (the default: one bad optional field does not block a
    /// customer from being recognised).
    #[default]
    Skip,
    /// Refuse the record.
    Reject,
}

/// How one Dataverse column is filled. In TOML either a bare JSON pointer (`name = "/Name"`) or
/// a table with the keys below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ColumnSpec {
    /// Where the value is; the first present path wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Paths>,
    /// Join the non-empty values at these paths (e.g. street lines) with `separator`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// A constant instead of a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<Transform>,
    /// Value map, applied to the value's text before the transforms (e.g. industry names to
    /// option set values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub unmapped: Unmapped,
    /// Used when the value is missing or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default)]
    pub overflow: Overflow,
    #[serde(default)]
    pub invalid: Invalid,
    /// For custom columns that are not in the built-in catalogue: text, memo, integer, decimal,
    /// money, boolean, date, datetime or choice.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub column_type: Option<String>,
    /// MaxLength of a custom text or memo column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Range of a custom integer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// Refuse the record when the column gets no value (catalogue-required columns always are).
    #[serde(default)]
    pub required: bool,
}

impl Serialize for ColumnSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ColumnSpec::serialize(self, s)
    }
}

// A bare string is a path; a table goes through the derived (remote) impl, so a typo such as
// `pathh` is reported by name instead of as "did not match any variant".
impl<'de> Deserialize<'de> for ColumnSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ColumnSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON pointer such as \"/Name\", or a table with `path`, `join`, `value`, `transforms`, `map`, `default`, ...")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ColumnSpec, E> {
                Ok(ColumnSpec {
                    path: Some(Paths::One(s.to_string())),
                    ..ColumnSpec::default()
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<ColumnSpec, A::Error> {
                ColumnSpec::deserialize(serde::de::value::MapAccessDeserializer::new(m))
            }
        }
        d.deserialize_any(V)
    }
}

/// The mapping of one entity. Every key is optional so that a user override can name only what
/// it changes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityProfile {
    /// The CRM's name for the object or table (`Account`, `customer_account`, `companies`); used
    /// in record URLs and to recognise records in payloads.
    pub object: Option<String>,
    /// Where the record's id is.
    pub id: Option<Paths>,
    /// Where its last-modified time is.
    pub modified: Option<Paths>,
    /// For contacts: where the parent account's id is.
    pub parent: Option<Paths>,
    pub deleted: Option<DeletedRule>,
    /// Template of `msdyn_source_crm_url`: `{base_url}`, `{id}`, `{object}` and the source's
    /// `vars` are substituted.
    pub record_url: Option<String>,
    /// For list pages of the generic kind: JSON pointer to the array of records.
    pub records: Option<String>,
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnSpec>,
    /// Built-in columns to drop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl EntityProfile {
    /// Applies a user override on top of this profile.
    pub fn merge(&mut self, over: &EntityProfile) {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f.clone(); } )* };
        }
        take!(object, id, modified, parent, deleted, record_url, records);
        for name in &over.remove {
            self.columns.remove(name);
        }
        for (name, spec) in &over.columns {
            self.columns.insert(name.clone(), spec.clone());
        }
    }
}

/// How a CRM's record ids are canonicalised before they become part of an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdFormat {
    #[default]
    Plain,
    /// Salesforce: 15-character ids become their 18-character case-safe form, so a record named
    /// both ways maps to one Dataverse row.
    Salesforce,
}

/// A whole profile: both entities of one CRM kind.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub id_format: IdFormat,
    #[serde(default)]
    pub account: EntityProfile,
    #[serde(default)]
    pub contact: EntityProfile,
}

impl Profile {
    pub fn entity(&self, e: Entity) -> &EntityProfile {
        match e {
            Entity::Account => &self.account,
            Entity::Contact => &self.contact,
        }
    }

    pub fn entity_mut(&mut self, e: Entity) -> &mut EntityProfile {
        match e {
            Entity::Account => &mut self.account,
            Entity::Contact => &mut self.contact,
        }
    }

    /// The built-in profile of a CRM kind (empty for `generic`).
    pub fn builtin(kind: CrmKind) -> Profile {
        let text = match kind {
            CrmKind::Salesforce => include_str!("profiles/salesforce.toml"),
            CrmKind::Servicenow => include_str!("profiles/servicenow.toml"),
            CrmKind::Hubspot => include_str!("profiles/hubspot.toml"),
            CrmKind::Zendesk => include_str!("profiles/zendesk.toml"),
            CrmKind::Pipedrive => include_str!("profiles/pipedrive.toml"),
            CrmKind::Generic => return Profile::default(),
        };
        toml::from_str(text)
            .unwrap_or_else(|e| panic!("built-in profile for {kind} does not parse: {e}"))
    }
}

/// A source's overrides of its kind's profile, as written in the configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileOverrides {
    pub id_format: Option<IdFormat>,
    #[serde(default)]
    pub account: EntityProfile,
    #[serde(default)]
    pub contact: EntityProfile,
}

impl Profile {
    pub fn with_overrides(mut self, over: &ProfileOverrides) -> Profile {
        if let Some(f) = over.id_format {
            self.id_format = f;
        }
        self.account.merge(&over.account);
        self.contact.merge(&over.contact);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_parses() {
        for kind in CrmKind::ALL {
            let p = Profile::builtin(kind);
            if kind != CrmKind::Generic {
                assert!(p.account.columns.contains_key("name"), "{kind}");
                assert!(p.contact.columns.contains_key("lastname"), "{kind}");
                assert!(p.contact.parent.is_some(), "{kind}");
            }
        }
    }

    #[test]
    fn override_replaces_adds_and_removes() {
        let mut base = Profile::builtin(CrmKind::Salesforce);
        let over: ProfileOverrides = toml::from_str(
            r#"
            [account]
            remove = ["fax"]
            [account.columns]
            telephone1 = "/Phone__c"
            new_tier = { path = "/Tier__c", type = "text", max_length = 20 }
            "#,
        )
        .unwrap();
        base = base.with_overrides(&over);
        assert!(!base.account.columns.contains_key("fax"));
        assert_eq!(
            base.account.columns["telephone1"].path,
            Some(Paths::One("/Phone__c".into()))
        );
        assert_eq!(base.account.columns["new_tier"].max_length, Some(20));
        assert!(base.account.columns.contains_key("name"));
    }

    #[test]
    fn typos_in_a_column_spec_are_refused() {
        let r: Result<ProfileOverrides, _> =
            toml::from_str("[account.columns]\nname = { pathh = \"/Name\" }\n");
        assert!(r.is_err());
    }
}
