//! Running a parsed query over the store: filter, order, limit, and shaping result records as
//! the REST API returns them (`attributes {type, url}` followed by the selected fields only,
//! "Execute a SOQL Query").

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::schema::{Object, Ty, parse_soql_date, parse_stored_datetime};
use super::soql::{Cond, Lit, Op, Query};
use super::store::{Rec, Store};

/// Rows matching a query, ordered and limited. `all` is `queryAll`: soft-deleted rows too.
pub fn run(store: &Store, q: &Query, all: bool) -> Vec<Arc<Rec>> {
    let mut rows: Vec<Arc<Rec>> = store
        .rows(q.object)
        .filter(|r| all || !r.is_deleted())
        .filter(|r| q.filter.as_ref().is_none_or(|c| matches(r, c)))
        .cloned()
        .collect();
    rows.sort_by(|a, b| {
        for (field, ty, desc) in &q.order {
            let o = compare_fields(a, b, field, *ty);
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        // Salesforce leaves ties unordered; the emulator settles them by id so runs repeat.
        a.id().cmp(b.id())
    });
    if let Some(n) = q.limit {
        rows.truncate(n);
    }
    rows
}

fn matches(r: &Rec, c: &Cond) -> bool {
    match c {
        Cond::And(v) => v.iter().all(|c| matches(r, c)),
        Cond::Or(v) => v.iter().any(|c| matches(r, c)),
        Cond::Not(c) => !matches(r, c),
        Cond::Cmp { field, ty, op, lit } => compare_lit(r, field, *ty, *op, lit),
        Cond::In {
            field,
            ty,
            negate,
            lits,
        } => lits.iter().any(|l| compare_lit(r, field, *ty, Op::Eq, l)) != *negate,
    }
}

fn compare_lit(r: &Rec, field: &str, ty: Ty, op: Op, lit: &Lit) -> bool {
    let v = r.fields.get(field).unwrap_or(&Value::Null);
    if matches!(lit, Lit::Null) {
        return match op {
            Op::Eq => v.is_null(),
            Op::Ne => !v.is_null(),
            _ => false,
        };
    }
    if v.is_null() {
        return op == Op::Ne;
    }
    let ord = match (ty, lit) {
        (Ty::DateTime, Lit::DateTime(t)) => {
            let own = if field == "SystemModstamp" {
                Some(r.modstamp)
            } else {
                v.as_str().and_then(parse_stored_datetime)
            };
            own.map(|o| o.cmp(t))
        }
        (Ty::Date, Lit::Date(d)) => v.as_str().and_then(parse_soql_date).map(|o| o.cmp(d)),
        (Ty::Id, Lit::Str(s)) => v.as_str().map(|o| o.cmp(s.as_str())),
        // Text comparisons in SOQL are case-insensitive.
        (Ty::Str, Lit::Str(s)) => v.as_str().map(|o| o.to_lowercase().cmp(&s.to_lowercase())),
        (Ty::Bool, Lit::Bool(b)) => v.as_bool().map(|o| o.cmp(b)),
        (Ty::Int, Lit::Num(n)) => v.as_f64().and_then(|o| o.partial_cmp(n)),
        _ => None,
    };
    let Some(ord) = ord else { return false };
    match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
    }
}

/// Nulls first, then by value.
fn compare_fields(a: &Rec, b: &Rec, field: &str, ty: Ty) -> Ordering {
    if field == "SystemModstamp" {
        return a.modstamp.cmp(&b.modstamp);
    }
    let (va, vb) = (
        a.fields.get(field).unwrap_or(&Value::Null),
        b.fields.get(field).unwrap_or(&Value::Null),
    );
    match (va.is_null(), vb.is_null()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        _ => {}
    }
    match ty {
        Ty::DateTime => va
            .as_str()
            .and_then(parse_stored_datetime)
            .cmp(&vb.as_str().and_then(parse_stored_datetime)),
        Ty::Int => va
            .as_f64()
            .partial_cmp(&vb.as_f64())
            .unwrap_or(Ordering::Equal),
        Ty::Bool => va.as_bool().cmp(&vb.as_bool()),
        Ty::Str => va
            .as_str()
            .map(str::to_lowercase)
            .cmp(&vb.as_str().map(str::to_lowercase)),
        _ => va.as_str().cmp(&vb.as_str()),
    }
}

/// A record as the REST API returns it: `attributes`, then the selected fields in order.
pub fn shape(object: Object, version: &str, rec: &Rec, fields: &[(&'static str, Ty)]) -> Value {
    let mut out = Map::new();
    out.insert(
        "attributes".into(),
        json!({
            "type": object.name(),
            "url": format!("/services/data/{version}/sobjects/{}/{}", object.name(), rec.id()),
        }),
    );
    for (name, ty) in fields {
        let v = match ty {
            Ty::Address(prefix) => address(rec, prefix),
            _ => rec.fields.get(*name).cloned().unwrap_or(Value::Null),
        };
        out.insert(name.to_string(), v);
    }
    Value::Object(out)
}

/// A compound address value as REST returns it (lowercase component names, geocode fields).
fn address(rec: &Rec, prefix: &str) -> Value {
    let part = |s: &str| {
        rec.fields
            .get(&format!("{prefix}{s}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let parts = [
        ("city", part("City")),
        ("country", part("Country")),
        ("postalCode", part("PostalCode")),
        ("state", part("State")),
        ("street", part("Street")),
    ];
    if parts.iter().all(|(_, v)| v.is_null()) {
        return Value::Null;
    }
    let mut m: Map<String, Value> = parts.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    m.insert("geocodeAccuracy".into(), Value::Null);
    m.insert("latitude".into(), Value::Null);
    m.insert("longitude".into(), Value::Null);
    Value::Object(m)
}
