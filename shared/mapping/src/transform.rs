//! Value transforms a real mapping needs, and the coercion of a mapped value to its column's type.
//!
//! Everything here works on one value at a time and is pure; [`crate::record`] decides which
//! transforms run for which column, and what a failure means (skip the column or refuse the
//! record).

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::columns::{ColumnType, dataverse_len, truncate_to};

/// A named string transform, applied in the order the mapping lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// Strip leading and trailing whitespace.
    Trim,
    /// Replace every run of whitespace with one space (and trim).
    CollapseWhitespace,
    Lowercase,
    Uppercase,
    /// Normalise a telephone number towards E.164 (see [`normalise_phone`]). Contact Center
    /// matches callers on telephone1/2/3 and mobilephone, so formatting must not hide a match.
    Phone,
    /// Keep only the first line (e.g. a street address with several lines).
    FirstLine,
}

/// Applies one transform to `s` in place (allocating only when the text really changes).
/// `phone_country` is the source's default country calling code.
pub fn apply(t: Transform, s: &mut String, phone_country: Option<&str>) -> Result<(), String> {
    match t {
        Transform::Trim => trim_in_place(s),
        Transform::CollapseWhitespace => {
            let clean = !s.starts_with(char::is_whitespace)
                && !s.ends_with(char::is_whitespace)
                && !s.contains("  ")
                && !s.contains(|c: char| c.is_whitespace() && c != ' ');
            if !clean {
                *s = s.split_whitespace().collect::<Vec<_>>().join(" ");
            }
        }
        Transform::Lowercase if s.is_ascii() => s.make_ascii_lowercase(),
        Transform::Lowercase => *s = s.to_lowercase(),
        Transform::Uppercase if s.is_ascii() => s.make_ascii_uppercase(),
        Transform::Uppercase => *s = s.to_uppercase(),
        Transform::Phone => *s = normalise_phone(s, phone_country)?,
        Transform::FirstLine => {
            if let Some(i) = s.find(['\n', '\r']) {
                s.truncate(i);
            }
            trim_in_place(s);
        }
    }
    Ok(())
}

fn trim_in_place(s: &mut String) {
    let end = s.trim_end().len();
    s.truncate(end);
    let start = s.len() - s.trim_start().len();
    if start > 0 {
        s.drain(..start);
    }
}

/// Normalises a telephone number: keeps the digits and a leading `+`, turns an international
/// `00` prefix into `+`, and prefixes the default country code (dropping one trunk `0`) when the
/// number has none. An extension (`x123`, `ext. 123`, `;ext=123`) is kept as ` x123`.
///
/// A value with fewer than 3 digits, or letters other than an extension marker, is not a phone
/// number: that is an error, so the caller can skip the column with a warning rather than write
/// garbage that looks like a number.
pub fn normalise_phone(s: &str, default_country: Option<&str>) -> Result<String, String> {
    let lower;
    let (main, ext) = if s
        .bytes()
        .any(|b| b.is_ascii_alphabetic() || b == b'#' || b == b';')
    {
        lower = s.to_ascii_lowercase();
        split_extension(&lower)
    } else {
        (s, None)
    };
    let main = main.trim();
    let mut digits = String::with_capacity(main.len());
    let mut plus = false;
    for (i, c) in main.char_indices() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 || main[..i].trim().is_empty() => plus = true,
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            _ => return Err("is not a telephone number (unexpected characters)".into()),
        }
    }
    if digits.len() < 3 {
        return Err("is not a telephone number (fewer than 3 digits)".into());
    }
    if digits.len() > 17 {
        return Err("is not a telephone number (more than 17 digits)".into());
    }
    let number = if plus {
        format!("+{digits}")
    } else if let Some(rest) = digits.strip_prefix("00") {
        format!("+{rest}")
    } else if let Some(cc) = default_country {
        let national = digits.strip_prefix('0').unwrap_or(&digits);
        // A national number that already starts with the country code (e.g. "1 555 ..." in the
        // US) must not get it twice.
        if cc == "1" && national.len() == 11 && national.starts_with('1') {
            format!("+{national}")
        } else {
            format!("+{cc}{national}")
        }
    } else {
        digits
    };
    // Checked on the result, so that normalising a normalised number changes nothing.
    if number.bytes().filter(u8::is_ascii_digit).count() < 3 {
        return Err("is not a telephone number (fewer than 3 digits)".into());
    }
    Ok(match ext {
        Some(e) => format!("{number} x{e}"),
        None => number,
    })
}

fn split_extension(s: &str) -> (&str, Option<String>) {
    for marker in [";ext=", "extension", "ext.", "ext", "x", "#"] {
        if let Some(pos) = s.rfind(marker) {
            let tail = s[pos + marker.len()..].trim();
            if !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit()) && pos > 0 {
                return (&s[..pos], Some(tail.to_string()));
            }
        }
    }
    (s, None)
}

/// How a value that does not fit its column is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// Cut to MaxLength and warn (the default: the record still reaches Dataverse).
    #[default]
    Truncate,
    /// Refuse the record.
    Reject,
}

/// The outcome of coercing one value to a column.
#[derive(Debug, Clone, PartialEq)]
pub struct Coerced {
    pub value: Value,
    /// Set when a text value was cut: (original length, max).
    pub truncated: Option<(usize, u32)>,
}

/// Why a value does not fit its column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoerceError {
    /// Text longer than MaxLength under [`Overflow::Reject`].
    TooLong { len: usize, max: u32 },
    /// The value is not of the column's type.
    Invalid(String),
}

impl std::fmt::Display for CoerceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoerceError::TooLong { len, max } => write!(
                f,
                "is {len} characters long; the column's MaxLength is {max}"
            ),
            CoerceError::Invalid(reason) => f.write_str(reason),
        }
    }
}

impl From<&str> for CoerceError {
    fn from(s: &str) -> Self {
        CoerceError::Invalid(s.to_string())
    }
}

impl From<String> for CoerceError {
    fn from(s: String) -> Self {
        CoerceError::Invalid(s)
    }
}

/// Turns a mapped scalar into the JSON Dataverse expects for the column's type.
/// Text values are expected already transformed; null stays null.
pub fn coerce(value: Value, ty: ColumnType, overflow: Overflow) -> Result<Coerced, CoerceError> {
    let plain = |value| Coerced {
        value,
        truncated: None,
    };
    if value.is_null() {
        return Ok(plain(Value::Null));
    }
    match ty {
        ColumnType::Text { max } | ColumnType::Memo { max } => {
            let s = match value {
                Value::String(s) => s,
                other => scalar_string(&other).ok_or("expected text, got an object or array")?,
            };
            // UTF-16 never needs more units than UTF-8 needs bytes: most values fit unmeasured.
            let len = if s.len() <= max as usize {
                s.len()
            } else {
                dataverse_len(&s)
            };
            if len <= max as usize {
                Ok(plain(Value::String(s)))
            } else if overflow == Overflow::Truncate {
                Ok(Coerced {
                    value: Value::String(truncate_to(&s, max as usize).to_string()),
                    truncated: Some((len, max)),
                })
            } else {
                Err(CoerceError::TooLong { len, max })
            }
        }
        ColumnType::Integer { min, max } => {
            let n = parse_integer(&value).ok_or("expected a whole number")?;
            if n < min || n > max {
                return Err(format!("{n} is outside the column's range {min}..={max}").into());
            }
            Ok(plain(Value::Number(n.into())))
        }
        ColumnType::Choice => {
            let n = parse_integer(&value).ok_or("expected an option set value (an integer)")?;
            i32::try_from(n).map_err(|_| "option set value does not fit in 32 bits")?;
            Ok(plain(Value::Number(n.into())))
        }
        ColumnType::Decimal | ColumnType::Money => {
            let f = parse_decimal(&value).ok_or("expected a number")?;
            Number::from_f64(f)
                .map(|n| plain(Value::Number(n)))
                .ok_or_else(|| "expected a finite number".into())
        }
        ColumnType::Boolean => parse_bool(&value)
            .map(|b| plain(Value::Bool(b)))
            .ok_or_else(|| "expected true or false".into()),
        ColumnType::Date => {
            let s = scalar_string(&value).ok_or("expected a date")?;
            let d = parse_date(&s).ok_or("expected a date such as 2024-05-31")?;
            Ok(plain(Value::String(format!(
                "{:04}-{:02}-{:02}",
                d.year(),
                d.month(),
                d.day()
            ))))
        }
        ColumnType::Datetime => {
            let t = parse_timestamp(&value).ok_or("expected a date and time")?;
            Ok(plain(Value::String(
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )))
        }
    }
}

/// A scalar's text form (numbers and booleans as JSON writes them); `None` for objects/arrays.
pub fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn parse_integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => {
            let t: String = s
                .trim()
                .chars()
                .filter(|c| *c != ',' && *c != '_')
                .collect();
            t.parse::<i64>().ok().or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                    .map(|f| f as i64)
            })
        }
        _ => None,
    }
}

fn parse_decimal(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace(',', "").parse::<f64>().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

fn parse_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" => Some(true),
            "false" | "0" | "no" | "n" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
        if let (Some(y), Some(m), Some(d)) = (n(0..4), n(5..7), n(8..10)) {
            return NaiveDate::from_ymd_opt(y as i32, m, d);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .or_else(|| parse_timestamp_str(s).map(|t| t.date_naive()))
}

/// Parses the timestamp formats the supported CRMs use, always to UTC:
/// RFC 3339 (HubSpot, Pipedrive v2, Zendesk), Salesforce's `2011-12-16T17:43:01.000+0000`,
/// ServiceNow's `2016-01-19 04:52:04` (UTC when `sysparm_display_value=false`), and epoch
/// milliseconds (HubSpot `occurredAt`, Salesforce CDC `commitTimestamp`) or seconds.
pub fn parse_timestamp(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::Number(n) => n.as_i64().and_then(from_epoch),
        Value::String(s) => parse_timestamp_str(s.trim()),
        _ => None,
    }
}

fn parse_timestamp_str(s: &str) -> Option<DateTime<Utc>> {
    if let Some(t) = fast_iso(s.as_bytes()) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    if !s.is_empty() && s.len() <= 16 && s.chars().all(|c| c.is_ascii_digit()) {
        return s.parse().ok().and_then(from_epoch);
    }
    None
}

/// The common shapes, parsed by hand because every record carries one:
/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]`, no offset meaning UTC.
fn fast_iso(b: &[u8]) -> Option<DateTime<Utc>> {
    fn num(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    }
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(num(&b[0..4])? as i32, num(&b[5..7])?, num(&b[8..10])?)?;
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let digits = &frac[..n.min(9)];
        nanos = num(digits)? * 10u32.pow(9 - digits.len() as u32);
        rest = &frac[n..];
    }
    let time = chrono::NaiveTime::from_hms_nano_opt(
        num(&b[11..13])?,
        num(&b[14..16])?,
        num(&b[17..19])?,
        nanos,
    )?;
    let naive = date.and_time(time);
    let offset_secs = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let h = num(&[*h1, *h2])? as i64;
            let m = num(&[*m1, *m2])? as i64;
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    Some(Utc.from_utc_datetime(&(naive - chrono::Duration::seconds(offset_secs))))
}

/// Epoch numbers above 10^11 are milliseconds (10^11 seconds is the year 5138).
fn from_epoch(n: i64) -> Option<DateTime<Utc>> {
    if n.abs() >= 100_000_000_000 {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn phone_normalisation() {
        let p = |s, cc| normalise_phone(s, cc);
        assert_eq!(p("+1 (415) 555-0100", None).unwrap(), "+14155550100");
        assert_eq!(p("(415) 555-0100", Some("1")).unwrap(), "+14155550100");
        assert_eq!(p("1-415-555-0100", Some("1")).unwrap(), "+14155550100");
        assert_eq!(p("0044 20 7946 0958", None).unwrap(), "+442079460958");
        assert_eq!(p("020 7946 0958", Some("44")).unwrap(), "+442079460958");
        assert_eq!(p("415.555.0100", None).unwrap(), "4155550100");
        assert_eq!(
            p("+1 415 555 0100 ext. 42", None).unwrap(),
            "+14155550100 x42"
        );
        assert_eq!(p("+1 415 555 0100 x42", None).unwrap(), "+14155550100 x42");
        assert!(p("call me", None).is_err());
        assert!(p("12", None).is_err());
        assert!(p("555-CALL-NOW", None).is_err());
    }

    #[test]
    fn timestamps_from_every_crm() {
        let want = "2016-01-19T04:52:04Z";
        for v in [
            json!("2016-01-19T04:52:04Z"),
            json!("2016-01-19T04:52:04.000+0000"),
            json!("2016-01-19 04:52:04"),
            json!(1453179124000i64),
            json!("1453179124000"),
            json!(1453179124),
            json!("2016-01-19T06:52:04+02:00"),
            json!("2016-01-19T00:52:04.123456789-0400"),
        ] {
            let t = parse_timestamp(&v).unwrap_or_else(|| panic!("{v}"));
            assert_eq!(
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                want,
                "{v}"
            );
        }
        assert!(parse_timestamp(&json!("yesterday")).is_none());
        assert!(parse_timestamp(&json!("2016-13-19T04:52:04Z")).is_none());
        assert!(parse_timestamp(&json!("2016-01-19T04:52:04+25:00")).is_none());
    }

    #[test]
    fn coercion_by_column_type() {
        let int = ColumnType::Integer { min: 0, max: 100 };
        assert_eq!(
            coerce(json!("42"), int, Overflow::Truncate).unwrap().value,
            json!(42)
        );
        assert_eq!(
            coerce(
                json!("1,000"),
                ColumnType::Integer {
                    min: 0,
                    max: 10_000
                },
                Overflow::Truncate
            )
            .unwrap()
            .value,
            json!(1000)
        );
        assert!(coerce(json!("101"), int, Overflow::Truncate).is_err());
        assert!(coerce(json!("many"), int, Overflow::Truncate).is_err());
        assert_eq!(
            coerce(json!("true"), ColumnType::Boolean, Overflow::Truncate)
                .unwrap()
                .value,
            json!(true)
        );
        assert_eq!(
            coerce(
                json!("1980-02-29T00:00:00Z"),
                ColumnType::Date,
                Overflow::Truncate
            )
            .unwrap()
            .value,
            json!("1980-02-29")
        );
        let text = ColumnType::Text { max: 3 };
        let c = coerce(json!("abcd"), text, Overflow::Truncate).unwrap();
        assert_eq!((c.value, c.truncated), (json!("abc"), Some((4, 3))));
        assert!(coerce(json!("abcd"), text, Overflow::Reject).is_err());
        assert_eq!(
            coerce(json!(12), text, Overflow::Reject).unwrap().value,
            json!("12")
        );
        assert!(coerce(json!({"a": 1}), text, Overflow::Reject).is_err());
        assert_eq!(
            coerce(Value::Null, int, Overflow::Reject).unwrap().value,
            Value::Null
        );
    }
}
