//! The two CSM tables and their records, plus seeded generation. ServiceNow stores every value
//! as a string in the Table API's raw form (`sysparm_display_value=false`): datetimes are UTC
//! `YYYY-MM-DD HH:MM:SS` with 1-second resolution, references hold the target's sys_id, and a
//! sys_id is 32 lowercase hex characters. Deletes are hard: the row is gone, and on a table
//! audited for deletes a `sys_audit_delete` row records which record of which table went when
//! (`tablename`, `documentkey` = the deleted sys_id, `sys_created_on`; ServiceNow KB0634666 and
//! "Restore a deleted record" in the platform administration docs).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use thiserror::Error;

use super::config::ServiceNowConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Account,
    Contact,
    /// `sys_audit_delete` ("Deleted Records"): one row per deleted record of an audited table.
    AuditDelete,
}

const ACCOUNT_FIELDS: &[&str] = &[
    "sys_id",
    "number",
    "name",
    "phone",
    "website",
    "street",
    "city",
    "state",
    "zip",
    "country",
    "number_of_employees",
    "customer",
    "sys_created_on",
    "sys_updated_on",
    "sys_mod_count",
    "sys_class_name",
];

const CONTACT_FIELDS: &[&str] = &[
    "sys_id",
    "account",
    "first_name",
    "last_name",
    "name",
    "title",
    "email",
    "phone",
    "mobile_phone",
    // customer_contact extends sys_user, whose address fields it inherits.
    "street",
    "city",
    "state",
    "zip",
    "country",
    "active",
    "sys_created_on",
    "sys_updated_on",
    "sys_mod_count",
    "sys_class_name",
];

/// The columns of `sys_audit_delete` the emulator keeps: `tablename` and `documentkey` as
/// KB0634666 names them for deletion audits, plus the system columns every table has. The real
/// table also keeps the deleted record's payload (for "Undelete"), which is not emulated.
const AUDIT_DELETE_FIELDS: &[&str] = &[
    "sys_id",
    "tablename",
    "documentkey",
    "sys_created_on",
    "sys_created_by",
    "sys_updated_on",
    "sys_mod_count",
    "sys_class_name",
];

impl Table {
    pub fn parse(name: &str) -> Option<Table> {
        match name {
            "customer_account" => Some(Table::Account),
            "customer_contact" => Some(Table::Contact),
            "sys_audit_delete" => Some(Table::AuditDelete),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Account => "customer_account",
            Table::Contact => "customer_contact",
            Table::AuditDelete => "sys_audit_delete",
        }
    }

    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Table::Account => ACCOUNT_FIELDS,
            Table::Contact => CONTACT_FIELDS,
            Table::AuditDelete => AUDIT_DELETE_FIELDS,
        }
    }

    /// The CSM tables records are written to (the audit table is written by deletes only).
    pub fn is_csm(self) -> bool {
        matches!(self, Table::Account | Table::Contact)
    }

    /// Reference fields and the table they point to.
    pub fn reference(self, field: &str) -> Option<Table> {
        (self == Table::Contact && field == "account").then_some(Table::Account)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub table: Table,
    /// Every column of the table, each a JSON string ("" when empty).
    pub fields: Map<String, Value>,
}

impl Rec {
    pub fn get(&self, field: &str) -> &str {
        self.fields.get(field).and_then(Value::as_str).unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    #[error("no column '{0}' on table {1}")]
    UnknownField(String, &'static str),
    #[error("value of '{0}' is not a string (the Table API stores strings)")]
    NotString(String),
    #[error("no record with sys_id {0}")]
    NotFound(String),
}

/// `YYYY-MM-DD HH:MM:SS`, UTC.
pub fn format_datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// SplitMix64: tiny, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items
            .get(self.below(items.len() as u64) as usize)
            .copied()
            .unwrap_or("")
    }
}

pub struct Store {
    /// sys_id → record, both tables (sys_ids are unique instance-wide).
    recs: BTreeMap<String, Rec>,
    rng: Rng,
    accounts_made: u64,
}

impl Store {
    pub fn new(seed: u64) -> Store {
        Store {
            recs: BTreeMap::new(),
            rng: Rng(seed),
            accounts_made: 0,
        }
    }

    fn new_sys_id(&mut self) -> String {
        loop {
            let id = format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64());
            if !self.recs.contains_key(&id) {
                return id;
            }
        }
    }

    fn insert_at(
        &mut self,
        table: Table,
        given: Map<String, Value>,
        stamp: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let mut fields: Map<String, Value> = table
            .fields()
            .iter()
            .map(|f| (f.to_string(), Value::String(String::new())))
            .collect();
        merge(table, &mut fields, given)?;
        let id = self.new_sys_id();
        let at = Value::String(format_datetime(stamp));
        fields.insert("sys_id".into(), Value::String(id.clone()));
        fields.insert("sys_created_on".into(), at.clone());
        fields.insert("sys_updated_on".into(), at);
        fields.insert("sys_mod_count".into(), Value::String("0".into()));
        fields.insert("sys_class_name".into(), Value::String(table.name().into()));
        if table == Table::Account && fields.get("number").and_then(Value::as_str) == Some("") {
            self.accounts_made += 1;
            fields.insert(
                "number".into(),
                Value::String(format!("ACCT{:07}", self.accounts_made)),
            );
        }
        self.recs.insert(id.clone(), Rec { table, fields });
        Ok(id)
    }

    /// Creates a record, or changes the record whose `sys_id` is given.
    pub fn put(&mut self, table: Table, given: Map<String, Value>) -> Result<String, StoreError> {
        let existing = given
            .get("sys_id")
            .and_then(Value::as_str)
            .filter(|id| self.get(id).is_some_and(|r| r.table == table))
            .map(str::to_string);
        let mut rest = given;
        rest.remove("sys_id");
        match existing {
            Some(id) => self.update(&id, rest).map(|()| id),
            None => self.insert_at(table, rest, Utc::now()),
        }
    }

    /// Changes fields of a record; `sys_updated_on` becomes now (to the second, so a change
    /// can share its stamp with others) and `sys_mod_count` goes up.
    pub fn update(&mut self, id: &str, given: Map<String, Value>) -> Result<(), StoreError> {
        let rec = self
            .recs
            .get(id)
            .ok_or_else(|| StoreError::NotFound(id.into()))?;
        let table = rec.table;
        let mut fields = rec.fields.clone();
        merge(table, &mut fields, given)?;
        let count = rec.get("sys_mod_count").parse::<u64>().unwrap_or(0) + 1;
        fields.insert("sys_mod_count".into(), Value::String(count.to_string()));
        fields.insert(
            "sys_updated_on".into(),
            Value::String(format_datetime(Utc::now())),
        );
        self.recs.insert(id.to_string(), Rec { table, fields });
        Ok(())
    }

    /// Removes a record. With `audit_at`, a CSM record's deletion is recorded in
    /// `sys_audit_delete` at that time (`sys_` tables themselves are not audited for deletes by
    /// default: "Enable auditing for a system table", ServiceNow docs).
    pub fn delete(&mut self, id: &str, audit_at: Option<DateTime<Utc>>) -> bool {
        let Some(rec) = self.recs.remove(id) else {
            return false;
        };
        if let (true, Some(at)) = (rec.table.is_csm(), audit_at) {
            let mut f = Map::new();
            f.insert("tablename".into(), s(rec.table.name()));
            f.insert("documentkey".into(), s(id));
            f.insert("sys_created_by".into(), s("admin"));
            // Known columns holding strings: cannot fail.
            let _ = self.insert_at(Table::AuditDelete, f, at);
        }
        true
    }

    pub fn get(&self, id: &str) -> Option<&Rec> {
        self.recs.get(id)
    }

    /// Records of a table in sys_id order.
    pub fn rows(&self, table: Table) -> impl Iterator<Item = &Rec> {
        self.recs.values().filter(move |r| r.table == table)
    }

    pub fn count(&self, table: Table) -> usize {
        self.rows(table).count()
    }
}

fn merge(
    table: Table,
    fields: &mut Map<String, Value>,
    given: Map<String, Value>,
) -> Result<(), StoreError> {
    for (k, v) in given {
        if !table.fields().contains(&k.as_str()) {
            return Err(StoreError::UnknownField(k, table.name()));
        }
        match v {
            Value::String(_) => {
                fields.insert(k, v);
            }
            _ => return Err(StoreError::NotString(k)),
        }
    }
    if table == Table::Contact {
        // `name` is the calculated full name on sys_user (and so on customer_contact).
        let name = [fields.get("first_name"), fields.get("last_name")]
            .into_iter()
            .filter_map(|v| v.and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        fields.insert("name".into(), Value::String(name));
    }
    Ok(())
}

const FIRST: &[&str] = &[
    "Olivia", "Liam", "Emma", "Noah", "José", "Zoë", "Aiko", "Lars", "Chloé", "Priya", "Ngozi",
    "Wei", "Siobhan", "Björn",
];
const LAST: &[&str] = &[
    "Smith",
    "O'Brien",
    "García",
    "Müller",
    "Nakamura",
    "Okafor",
    "Rossi",
    "Nguyen",
    "D'Angelo",
    "Patel",
    "Schröder",
    "Kim",
];
const ADJ: &[&str] = &[
    "Global", "Pacific", "Northern", "Summit", "Granite", "Bright", "Silver", "Atlas",
];
const NOUN: &[&str] = &[
    "Logistics",
    "Foods",
    "Systems",
    "Partners",
    "Health",
    "Energy",
    "Media",
    "Labs",
];
const CITY: &[&str] = &[
    "San Diego",
    "Chicago",
    "Zürich",
    "Montréal",
    "Lagos",
    "Osaka",
    "Dublin",
];
const TITLE: &[&str] = &["CTO", "Buyer", "Engineer", "Office Manager", "VP Sales"];

/// Generated `sys_updated_on` values: random over the history span, sometimes repeating the
/// previous one.
struct Stamps {
    start: DateTime<Utc>,
    span: u64,
    share_every: u64,
    last: DateTime<Utc>,
}

impl Stamps {
    fn next(&mut self, rng: &mut Rng) -> DateTime<Utc> {
        let share = self.share_every > 0 && rng.below(self.share_every) == 0;
        if !share {
            self.last = self.start + Duration::seconds(rng.below(self.span) as i64);
        }
        self.last
    }
}

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn contact(store: &mut Store, stamps: &mut Stamps, account: String) {
    let first = store.rng.pick(FIRST);
    let last_name = store.rng.pick(LAST);
    let n = store.rng.below(10_000);
    let mut f = Map::new();
    f.insert("account".into(), s(account));
    f.insert("first_name".into(), s(first));
    f.insert("last_name".into(), s(last_name));
    f.insert("title".into(), s(store.rng.pick(TITLE)));
    f.insert(
        "email".into(),
        s(format!("{}.{n}@example.com", first.to_lowercase())),
    );
    f.insert("phone".into(), s(format!("+1 555 {n:04}")));
    f.insert("city".into(), s(store.rng.pick(CITY)));
    f.insert("country".into(), s("USA"));
    f.insert("active".into(), s("true"));
    let t = stamps.next(&mut store.rng);
    // Generated fields are known columns holding strings, so this cannot fail.
    let _ = store.insert_at(Table::Contact, f, t);
}

/// Fills the store from the config's seed: accounts, their contacts, then orphan contacts.
pub fn populate(store: &mut Store, cfg: &ServiceNowConfig) {
    let mut stamps = Stamps {
        start: cfg.history_start,
        span: (cfg.history_days.max(1) * 86_400) as u64,
        share_every: cfg.shared_stamp_every as u64,
        last: cfg.history_start,
    };
    for _ in 0..cfg.accounts {
        let name = format!("{} {}", store.rng.pick(ADJ), store.rng.pick(NOUN));
        let mut f = Map::new();
        f.insert("name".into(), s(name));
        f.insert(
            "phone".into(),
            s(format!("+1 555 {:04}", store.rng.below(10_000))),
        );
        f.insert("website".into(), s("https://example.com"));
        f.insert("city".into(), s(store.rng.pick(CITY)));
        f.insert("country".into(), s("USA"));
        f.insert(
            "number_of_employees".into(),
            s(store.rng.below(5000).to_string()),
        );
        f.insert("customer".into(), s("true"));
        let t = stamps.next(&mut store.rng);
        let Ok(id) = store.insert_at(Table::Account, f, t) else {
            continue;
        };
        for _ in 0..cfg.contacts_per_account {
            contact(store, &mut stamps, id.clone());
        }
    }
    for _ in 0..cfg.orphan_contacts {
        contact(store, &mut stamps, String::new());
    }
}
