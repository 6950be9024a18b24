//! The two sObjects the emulator serves (Account, Contact): their standard fields and types, id
//! key prefixes, and Salesforce's wire formats for ids and datetimes. Queries, retrieves and the
//! data generator all check names against this one list, so an unknown field fails everywhere
//! the way Salesforce fails it (INVALID_FIELD).

use chrono::{DateTime, NaiveDate, Utc};

/// Field types that matter for filtering, ordering and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Id,
    Str,
    Bool,
    Int,
    Date,
    DateTime,
    /// A compound address field (`BillingAddress`) built from the component fields that share
    /// the prefix; readable in SELECT, not filterable ("Compound fields" in the SOQL guide).
    Address(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Object {
    Account,
    Contact,
}

impl Object {
    /// Object names are case-insensitive in SOQL and URLs, like field names.
    pub fn parse(name: &str) -> Option<Object> {
        if name.eq_ignore_ascii_case("Account") {
            Some(Object::Account)
        } else if name.eq_ignore_ascii_case("Contact") {
            Some(Object::Contact)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Object::Account => "Account",
            Object::Contact => "Contact",
        }
    }

    /// Key prefix of record ids: 001 Account, 003 Contact (Salesforce's standard key prefixes).
    pub fn key_prefix(self) -> &'static str {
        match self {
            Object::Account => "001",
            Object::Contact => "003",
        }
    }

    pub fn fields(self) -> &'static [(&'static str, Ty)] {
        match self {
            Object::Account => ACCOUNT,
            Object::Contact => CONTACT,
        }
    }

    /// Whether field-level security applies to a field (describe's `permissionable`): ids,
    /// audit fields, the name fields an object requires and compound fields are always readable
    /// with the object, and FieldPermissions refuses them ("FieldPermissions", Object Reference:
    /// `Field` is a restricted picklist of the permissionable fields). Compound address fields
    /// follow their components.
    pub fn permissionable(self, field: &str) -> bool {
        const ALWAYS: &[&str] = &[
            "Id",
            "IsDeleted",
            "MasterRecordId",
            "OwnerId",
            "CreatedDate",
            "CreatedById",
            "LastModifiedDate",
            "LastModifiedById",
            "SystemModstamp",
        ];
        let name_fields: &[&str] = match self {
            Object::Account => &["Name"],
            Object::Contact => &["Name", "LastName", "FirstName", "Salutation"],
        };
        !ALWAYS
            .iter()
            .chain(name_fields)
            .any(|f| f.eq_ignore_ascii_case(field))
            && !matches!(self.field(field), Some((_, Ty::Address(_))) | None)
    }

    /// The canonical spelling and type of a field, matched case-insensitively.
    pub fn field(self, name: &str) -> Option<(&'static str, Ty)> {
        self.fields()
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .copied()
    }
}

const COMMON_HEAD: [(&str, Ty); 3] = [
    ("Id", Ty::Id),
    ("IsDeleted", Ty::Bool),
    ("MasterRecordId", Ty::Id),
];

const ACCOUNT: &[(&str, Ty)] = &[
    COMMON_HEAD[0],
    COMMON_HEAD[1],
    COMMON_HEAD[2],
    ("Name", Ty::Str),
    ("Type", Ty::Str),
    ("ParentId", Ty::Id),
    ("BillingStreet", Ty::Str),
    ("BillingCity", Ty::Str),
    ("BillingState", Ty::Str),
    ("BillingPostalCode", Ty::Str),
    ("BillingCountry", Ty::Str),
    ("BillingAddress", Ty::Address("Billing")),
    ("ShippingStreet", Ty::Str),
    ("ShippingCity", Ty::Str),
    ("ShippingState", Ty::Str),
    ("ShippingPostalCode", Ty::Str),
    ("ShippingCountry", Ty::Str),
    ("ShippingAddress", Ty::Address("Shipping")),
    ("Phone", Ty::Str),
    ("Fax", Ty::Str),
    ("AccountNumber", Ty::Str),
    ("Website", Ty::Str),
    ("Sic", Ty::Str),
    ("Industry", Ty::Str),
    ("NumberOfEmployees", Ty::Int),
    ("TickerSymbol", Ty::Str),
    ("Description", Ty::Str),
    ("OwnerId", Ty::Id),
    ("CreatedDate", Ty::DateTime),
    ("CreatedById", Ty::Id),
    ("LastModifiedDate", Ty::DateTime),
    ("LastModifiedById", Ty::Id),
    ("SystemModstamp", Ty::DateTime),
];

const CONTACT: &[(&str, Ty)] = &[
    COMMON_HEAD[0],
    COMMON_HEAD[1],
    COMMON_HEAD[2],
    ("AccountId", Ty::Id),
    ("LastName", Ty::Str),
    ("FirstName", Ty::Str),
    ("Salutation", Ty::Str),
    ("Name", Ty::Str),
    ("MailingStreet", Ty::Str),
    ("MailingCity", Ty::Str),
    ("MailingState", Ty::Str),
    ("MailingPostalCode", Ty::Str),
    ("MailingCountry", Ty::Str),
    ("MailingAddress", Ty::Address("Mailing")),
    ("Phone", Ty::Str),
    ("Fax", Ty::Str),
    ("MobilePhone", Ty::Str),
    ("HomePhone", Ty::Str),
    ("OtherPhone", Ty::Str),
    ("AssistantName", Ty::Str),
    ("AssistantPhone", Ty::Str),
    ("Email", Ty::Str),
    ("Title", Ty::Str),
    ("Department", Ty::Str),
    ("Birthdate", Ty::Date),
    ("Description", Ty::Str),
    ("OwnerId", Ty::Id),
    ("CreatedDate", Ty::DateTime),
    ("CreatedById", Ty::Id),
    ("LastModifiedDate", Ty::DateTime),
    ("LastModifiedById", Ty::Id),
    ("SystemModstamp", Ty::DateTime),
];

/// Datetimes in REST JSON look like `2011-12-16T17:43:01.000+0000` (REST API Developer Guide,
/// "Execute a SOQL Query" example responses and the getDeleted/getUpdated examples).
pub fn format_datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Parses a stored REST datetime back (only ever our own output).
pub fn parse_stored_datetime(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A SOQL dateTime literal: `YYYY-MM-DDThh:mm:ss(Z|±hh:mm)` ("Date Formats and Date Literals
/// in WHERE"), with optional fractional seconds as REST's "Valid Date and DateTime Formats"
/// allows (`yyyy-MM-ddTHH:mm:ss.SSSZ`).
pub fn parse_soql_datetime(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A SOQL date literal `YYYY-MM-DD`.
pub fn parse_soql_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// Ids: 15 case-sensitive characters, or 18 with the case-safe suffix. A 15-character id in a
/// filter matches the 18-character id of the same record.
pub fn canonical_id(raw: &str) -> Option<String> {
    mapping::identity::salesforce_id18(raw).ok()
}

/// Ascending base-62 digits in ASCII order, so a counter's text sorts like the counter.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The 18-character id of record number `n` of an object: key prefix, a two-character pod
/// marker, ten base-62 digits, then the case-safe suffix.
pub fn make_id(object: Object, pod: &str, n: u64) -> String {
    make_prefixed_id(object.key_prefix(), pod, n)
}

/// As [`make_id`], for any three-character key prefix (setup objects: `0PS` PermissionSet,
/// `005` User, ...).
pub fn make_prefixed_id(prefix: &str, pod: &str, n: u64) -> String {
    let mut digits = [b'0'; 10];
    let mut v = n;
    for d in digits.iter_mut().rev() {
        *d = BASE62[(v % 62) as usize];
        v /= 62;
    }
    let id15 = format!("{}{}{}", prefix, pod, String::from_utf8_lossy(&digits));
    // Only letters and digits went in, so the suffix computation cannot fail.
    canonical_id(&id15).unwrap_or(id15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_prefix_and_case_safe_suffix() {
        let id = make_id(Object::Account, "Dn", 12345);
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("001Dn"));
        assert_eq!(canonical_id(&id[..15]).as_deref(), Some(id.as_str()));
        // The documented pair from Salesforce's 15/18-character id article.
        assert_eq!(
            canonical_id("001D000000IRFma").as_deref(),
            Some("001D000000IRFmaIAH")
        );
        assert!(make_id(Object::Contact, "Dn", 1) < make_id(Object::Contact, "Dn", 2));
        assert!(make_id(Object::Contact, "Dn", 61) < make_id(Object::Contact, "Dn", 62));
    }

    #[test]
    fn datetimes_round_trip_in_rest_format() {
        let t = parse_soql_datetime("2024-01-16T17:43:01.250Z").unwrap();
        assert_eq!(format_datetime(t), "2024-01-16T17:43:01.250+0000");
        assert_eq!(parse_stored_datetime(&format_datetime(t)), Some(t));
        assert!(parse_soql_datetime("2024-01-16T17:43:01+01:00").is_some());
        assert!(parse_soql_datetime("2024-01-16").is_none());
    }
}
