//! The two tables the emulator serves, their columns (from the shared `mapping` catalogue, the
//! same documented MaxLengths crm-sync checks against) and their navigation properties.

use std::collections::BTreeMap;

use mapping::columns::{Column, ColumnType};
use mapping::model::Entity;

/// A table: account or contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Account,
    Contact,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Account, Table::Contact];

    pub fn logical_name(self) -> &'static str {
        match self {
            Table::Account => "account",
            Table::Contact => "contact",
        }
    }

    pub fn set_name(self) -> &'static str {
        match self {
            Table::Account => "accounts",
            Table::Contact => "contacts",
        }
    }

    pub fn primary_key(self) -> &'static str {
        match self {
            Table::Account => "accountid",
            Table::Contact => "contactid",
        }
    }

    pub fn from_set(set: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.set_name() == set)
    }

    pub fn from_logical(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.logical_name() == name)
    }

    fn entity(self) -> Entity {
        match self {
            Table::Account => Entity::Account,
            Table::Contact => Entity::Contact,
        }
    }

    /// Writable columns with their types. statecode/statuscode come from the catalogue for
    /// account; both tables get them (account/contact reference pages: 0/1 Active, 1/2 Inactive).
    pub fn columns(self) -> BTreeMap<String, Column> {
        let mut cols = mapping::columns::catalogue(self.entity()).clone();
        for c in ["statecode", "statuscode"] {
            cols.entry(c.to_string()).or_insert(Column {
                ty: ColumnType::Choice,
                required: false,
            });
        }
        cols
    }

    pub fn column(self, name: &str) -> Option<Column> {
        mapping::columns::column(self.entity(), name).or_else(|| {
            matches!(name, "statecode" | "statuscode").then_some(Column {
                ty: ColumnType::Choice,
                required: false,
            })
        })
    }

    /// Columns the server sets; a value written to them is ignored as Dataverse ignores
    /// read-only attributes on create/update.
    pub fn read_only(self, name: &str) -> bool {
        matches!(
            name,
            "createdon" | "modifiedon" | "versionnumber" | "fullname" | "address1_composite"
        )
    }

    /// Single-valued navigation properties usable with `@odata.bind`
    /// ("Associate and disassociate table rows using the Web API").
    pub fn navigation(self, nav: &str) -> Option<Navigation> {
        let (target, lookup) = match (self, nav) {
            (Table::Contact, "parentcustomerid_account") => (Table::Account, "parentcustomerid"),
            (Table::Contact, "parentcustomerid_contact") => (Table::Contact, "parentcustomerid"),
            (Table::Account, "parentaccountid") => (Table::Account, "parentaccountid"),
            (Table::Account, "primarycontactid") => (Table::Contact, "primarycontactid"),
            _ => return None,
        };
        Some(Navigation { target, lookup })
    }

    /// Lookup columns, as `_x_value` names.
    pub fn lookups(self) -> &'static [&'static str] {
        match self {
            Table::Account => &["parentaccountid", "primarycontactid"],
            Table::Contact => &["parentcustomerid"],
        }
    }

    /// Whether `name` can be selected/filtered: a column, the key, a lookup value or a
    /// server-set column.
    pub fn readable(self, name: &str) -> bool {
        name == self.primary_key()
            || self.column(name).is_some()
            || self.read_only(name)
            || self.lookups().iter().any(|l| name == format!("_{l}_value"))
    }
}

/// Where an `@odata.bind` navigation property points.
#[derive(Debug, Clone, Copy)]
pub struct Navigation {
    pub target: Table,
    /// Lookup attribute; stored as `_{lookup}_value`.
    pub lookup: &'static str,
}
