//! The CRM search request (`POST /crm/v3/objects/{objectType}/search`): filter groups, one
//! sort, properties, limit and the `after` offset, as the search guide documents them
//! (https://developers.hubspot.com/docs/api-reference/search/guide):
//! - filter groups are OR-ed, the filters inside a group AND-ed; at most 5 groups, 10 filters in
//!   a group and 25 in all (changelog "Breaking Change: Expanded Filtering Capabilities",
//!   https://developers.hubspot.com/changelog/breaking-change-expanded-filtering-capabilities-and-error-messaging-in-hubspots-search-api;
//!   the OpenAPI spec says "Up to 6 groups" — the changelog's 5 is enforced);
//! - `limit` up to 200 (spec `PublicObjectSearchRequest.limit`: "up to 200 objects"), default
//!   10 (not confirmed on a HubSpot page);
//! - at most 10,000 results per query: "Attempting to page beyond 10,000 will result in a 400
//!   error" (the guide's Limitations, quoted in activepieces/activepieces#10160 and the AWS
//!   Glue HubSpot connector notes); the error body's wording is ours;
//! - a single sort rule (`[{propertyName, direction}]`). That only one rule is accepted is not
//!   stated on a HubSpot page we could read (a published schema of the request has
//!   `"maxItems": 1`), so a second rule is rejected here to keep clients honest.
//!
//! Date properties compare as instants and accept epoch milliseconds or ISO 8601, as the guide
//! describes for date-time filters; `hs_object_id` and numbers compare numerically; other
//! properties compare as case-insensitive strings. Ties in the sort order fall back to the id
//! (HubSpot does not document its tie order). Archived objects are never searched.

use serde_json::Value;

use super::store::{Obj, ObjectType};
use mapping::transform::parse_timestamp;

pub const MAX_LIMIT: usize = 200;
pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_RESULTS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Between,
    In,
    NotIn,
    HasProperty,
    NotHasProperty,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "EQ" => Op::Eq,
            "NEQ" => Op::Neq,
            "LT" => Op::Lt,
            "LTE" => Op::Lte,
            "GT" => Op::Gt,
            "GTE" => Op::Gte,
            "BETWEEN" => Op::Between,
            "IN" => Op::In,
            "NOT_IN" => Op::NotIn,
            "HAS_PROPERTY" => Op::HasProperty,
            "NOT_HAS_PROPERTY" => Op::NotHasProperty,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Filter {
    pub prop: String,
    pub op: Op,
    value: Option<Key>,
    high: Option<Key>,
    values: Vec<Key>,
}

#[derive(Debug, Clone)]
pub struct Search {
    pub groups: Vec<Vec<Filter>>,
    /// (property, ascending)
    pub sort: Option<(String, bool)>,
    /// `None`: the default properties.
    pub properties: Option<Vec<String>>,
    pub limit: usize,
    pub after: usize,
}

/// A value compared by filters and sorts.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Key {
    Num(f64),
    Str(String),
}

fn is_date(prop: &str) -> bool {
    matches!(
        prop,
        "createdate" | "lastmodifieddate" | "hs_lastmodifieddate"
    )
}

fn is_number(prop: &str) -> bool {
    matches!(
        prop,
        "hs_object_id" | "associatedcompanyid" | "numberofemployees"
    )
}

/// A raw value (property or filter operand) as a comparable key for `prop`.
fn key(prop: &str, raw: &str) -> Option<Key> {
    if is_date(prop) {
        let t = parse_timestamp(&Value::String(raw.to_string()))?;
        return Some(Key::Num(t.timestamp_millis() as f64));
    }
    if is_number(prop) {
        return raw.trim().parse::<f64>().ok().map(Key::Num);
    }
    Some(Key::Str(raw.to_lowercase()))
}

fn obj_key(obj: &Obj, t: ObjectType, prop: &str) -> Option<Key> {
    // The computed properties straight from the object (no format and re-parse).
    match prop {
        "hs_object_id" => return Some(Key::Num(obj.id as f64)),
        "createdate" => return Some(Key::Num(obj.created_at.timestamp_millis() as f64)),
        "hs_lastmodifieddate" => return Some(Key::Num(obj.updated_at.timestamp_millis() as f64)),
        "lastmodifieddate" if t == ObjectType::Contacts => {
            return Some(Key::Num(obj.updated_at.timestamp_millis() as f64));
        }
        _ => {}
    }
    obj.prop(t, prop).flatten().and_then(|v| key(prop, &v))
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn bad(msg: impl Into<String>) -> String {
    msg.into()
}

/// Parses and validates a search body; the error is the 400 message.
pub fn parse(body: &Value) -> Result<Search, String> {
    let obj = body
        .as_object()
        .ok_or_else(|| bad("Invalid input JSON: expected an object"))?;
    let limit = match obj.get("limit") {
        None | Some(Value::Null) => DEFAULT_LIMIT,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad("Invalid input JSON: limit must be an integer"))?
            as usize,
    };
    if limit == 0 || limit > MAX_LIMIT {
        return Err(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {limit}"
        ));
    }
    let after = match obj.get("after") {
        None | Some(Value::Null) => 0,
        Some(v) => as_string(v)
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| bad("Invalid input JSON: after must be a paging token"))?,
    };
    let properties = match obj.get("properties") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) if a.is_empty() => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("Invalid input JSON: properties must be strings"))?,
        ),
        Some(_) => return Err(bad("Invalid input JSON: properties must be an array")),
    };
    let sorts = match obj.get("sorts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(bad("Invalid input JSON: sorts must be an array")),
    };
    if sorts.len() > 1 {
        return Err(bad("Only one sort is supported per search request"));
    }
    let sort = match sorts.first() {
        None => None,
        // The spec types a sort as a string (a property name, `-name` descending); the guide's
        // examples send {propertyName, direction}. Both are accepted.
        Some(Value::String(s)) => Some(match s.strip_prefix('-') {
            Some(p) => (p.to_string(), false),
            None => (s.clone(), true),
        }),
        Some(Value::Object(o)) => {
            let p = o
                .get("propertyName")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("Invalid input JSON: sort without propertyName"))?;
            let asc = match o.get("direction").and_then(Value::as_str) {
                None | Some("ASCENDING") => true,
                Some("DESCENDING") => false,
                Some(d) => return Err(format!("Invalid sort direction {d}")),
            };
            Some((p.to_string(), asc))
        }
        Some(_) => return Err(bad("Invalid input JSON: malformed sort")),
    };
    let mut groups = Vec::new();
    let mut total = 0;
    if let Some(g) = obj.get("filterGroups") {
        let g = g
            .as_array()
            .ok_or_else(|| bad("Invalid input JSON: filterGroups must be an array"))?;
        if g.len() > 5 {
            return Err(format!("Too many filter groups: {} (at most 5)", g.len()));
        }
        for group in g {
            let filters = group
                .get("filters")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("Invalid input JSON: a filter group without filters"))?;
            if filters.len() > 10 {
                return Err(format!(
                    "Too many filters in a group: {} (at most 10)",
                    filters.len()
                ));
            }
            total += filters.len();
            let mut out = Vec::new();
            for f in filters {
                let prop = f
                    .get("propertyName")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("Invalid input JSON: filter without propertyName"))?;
                let op_name = f.get("operator").and_then(Value::as_str).unwrap_or("EQ");
                let op = Op::parse(op_name)
                    .ok_or_else(|| format!("Unsupported filter operator {op_name}"))?;
                let value = f.get("value").and_then(as_string);
                let high = f.get("highValue").and_then(as_string);
                let values: Vec<String> = f
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(as_string).collect())
                    .unwrap_or_default();
                let needs_value = !matches!(
                    op,
                    Op::HasProperty | Op::NotHasProperty | Op::In | Op::NotIn
                );
                if needs_value && value.is_none() {
                    return Err(format!("Filter on {prop} with {op_name} needs a value"));
                }
                if op == Op::Between && high.is_none() {
                    return Err(format!("Filter on {prop} with BETWEEN needs a highValue"));
                }
                let as_key = |raw: &str| {
                    key(prop, raw).ok_or_else(|| format!("{raw:?} is not a valid value for {prop}"))
                };
                out.push(Filter {
                    prop: prop.to_string(),
                    op,
                    value: value.as_deref().map(as_key).transpose()?,
                    high: high.as_deref().map(as_key).transpose()?,
                    values: values.iter().map(|v| as_key(v)).collect::<Result<_, _>>()?,
                });
            }
            groups.push(out);
        }
    }
    if total > 25 {
        return Err(format!("Too many filters: {total} (at most 25)"));
    }
    Ok(Search {
        groups,
        sort,
        properties,
        limit,
        after,
    })
}

fn matches_filter(obj: &Obj, t: ObjectType, f: &Filter) -> bool {
    let have = obj_key(obj, t, &f.prop);
    match f.op {
        Op::HasProperty => have.is_some(),
        Op::NotHasProperty => have.is_none(),
        Op::In | Op::NotIn => {
            let hit = have.as_ref().is_some_and(|h| f.values.contains(h));
            (f.op == Op::In) == hit
        }
        Op::Neq => have != f.value,
        _ => {
            let (Some(h), Some(v)) = (have, f.value.as_ref()) else {
                return false;
            };
            match f.op {
                Op::Eq => h == *v,
                Op::Lt => h < *v,
                Op::Lte => h <= *v,
                Op::Gt => h > *v,
                Op::Gte => h >= *v,
                Op::Between => f.high.as_ref().is_some_and(|hi| h >= *v && h <= *hi),
                _ => false,
            }
        }
    }
}

impl Search {
    pub fn matches(&self, obj: &Obj, t: ObjectType) -> bool {
        self.groups.is_empty()
            || self
                .groups
                .iter()
                .any(|g| g.iter().all(|f| matches_filter(obj, t, f)))
    }

    /// Sorts matches by the sort rule (missing values last), then by id; by id alone when
    /// there is no rule.
    pub fn sort(&self, rows: &mut [&Obj], t: ObjectType) {
        match &self.sort {
            None => rows.sort_by_key(|o| o.id),
            Some((prop, asc)) => {
                let mut keyed: Vec<(Option<Key>, &Obj)> =
                    rows.iter().map(|o| (obj_key(o, t, prop), *o)).collect();
                keyed.sort_by(|(ka, a), (kb, b)| {
                    let ord = match (ka, kb) {
                        (Some(x), Some(y)) => {
                            let o = x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal);
                            if *asc { o } else { o.reverse() }
                        }
                        (Some(_), None) => std::cmp::Ordering::Less,
                        (None, Some(_)) => std::cmp::Ordering::Greater,
                        (None, None) => std::cmp::Ordering::Equal,
                    };
                    ord.then(a.id.cmp(&b.id))
                });
                for (slot, (_, o)) in rows.iter_mut().zip(keyed) {
                    *slot = o;
                }
            }
        }
    }
}
