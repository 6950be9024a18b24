//! The column catalogue: which Dataverse columns exist on account and contact, their types and
//! documented MaxLengths. Mapping checks every value against it, so an over-long or mistyped value
//! is caught here with a clear message instead of coming back from Dataverse as a 400.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::model::Entity;

/// A column's data type, as far as writing it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ColumnType {
    /// Single line of text; `max` is MaxLength in characters (UTF-16 code units, as Dataverse
    /// counts them).
    Text {
        max: u32,
    },
    /// Multiple lines of text.
    Memo {
        max: u32,
    },
    Integer {
        min: i64,
        max: i64,
    },
    Decimal,
    Money,
    Boolean,
    /// DateOnly: written as `YYYY-MM-DD`.
    Date,
    /// Written as RFC 3339 UTC.
    Datetime,
    /// Option set value (an integer).
    Choice,
}

impl ColumnType {
    pub fn max_length(self) -> Option<u32> {
        match self {
            ColumnType::Text { max } | ColumnType::Memo { max } => Some(max),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    #[serde(flatten)]
    pub ty: ColumnType,
    /// ApplicationRequired: a record that cannot fill it is refused.
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Deserialize)]
struct CatalogueFile {
    account: BTreeMap<String, Column>,
    contact: BTreeMap<String, Column>,
}

/// The built-in catalogue, parsed once from the embedded `catalogue.toml`.
pub fn catalogue(entity: Entity) -> &'static BTreeMap<String, Column> {
    static CATALOGUE: OnceLock<CatalogueFile> = OnceLock::new();
    let file = CATALOGUE.get_or_init(|| {
        toml::from_str(include_str!("catalogue.toml")).expect("embedded catalogue.toml is valid")
    });
    match entity {
        Entity::Account => &file.account,
        Entity::Contact => &file.contact,
    }
}

/// A built-in column.
pub fn column(entity: Entity, name: &str) -> Option<Column> {
    catalogue(entity).get(name).copied()
}

/// Columns crm-sync itself writes on every row; a mapping may not target them.
pub const RESERVED: [&str; 7] = [
    "msdyn_source_crm",
    "msdyn_source_crm_id",
    "msdyn_source_crm_url",
    "accountid",
    "contactid",
    "parentcustomerid",
    "parentcustomerid_account@odata.bind",
];

/// Length as Dataverse counts it: .NET string length, i.e. UTF-16 code units.
pub fn dataverse_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// The longest prefix of `s` whose Dataverse length is at most `max`, cut on a character
/// boundary (a surrogate pair is never split).
pub fn truncate_to(s: &str, max: usize) -> &str {
    let mut units = 0;
    for (i, c) in s.char_indices() {
        units += c.len_utf16();
        if units > max {
            return &s[..i];
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_max_lengths() {
        let len = |e, c| column(e, c).unwrap().ty.max_length().unwrap();
        assert_eq!(len(Entity::Account, "name"), 160);
        assert_eq!(len(Entity::Account, "telephone1"), 50);
        assert_eq!(len(Entity::Account, "emailaddress1"), 100);
        assert_eq!(len(Entity::Account, "websiteurl"), 200);
        assert_eq!(len(Entity::Account, "address1_line1"), 250);
        assert_eq!(len(Entity::Contact, "firstname"), 50);
        assert_eq!(len(Entity::Contact, "lastname"), 50);
        assert_eq!(len(Entity::Contact, "jobtitle"), 100);
        assert!(column(Entity::Account, "name").unwrap().required);
        assert!(column(Entity::Contact, "lastname").unwrap().required);
        let required: Vec<_> = Entity::ALL
            .iter()
            .flat_map(|e| catalogue(*e).iter().filter(|(_, c)| c.required))
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(required, ["name", "lastname"]);
    }

    #[test]
    fn truncation_counts_utf16_and_keeps_pairs_whole() {
        assert_eq!(dataverse_len("a😀"), 3);
        assert_eq!(truncate_to("a😀b", 2), "a");
        assert_eq!(truncate_to("a😀b", 3), "a😀");
        assert_eq!(truncate_to("abc", 10), "abc");
        assert_eq!(truncate_to("", 0), "");
    }
}
