//! The subset of encoded query strings ("Encoded query strings", ServiceNow docs; operators as
//! listed in "Supported query operations") the emulator evaluates: `field=value`, `!=`, `>`,
//! `>=`, `<`, `<=`, `fieldINa,b,c`; `^` AND, `^OR` (binds to the condition before it), `^NQ`
//! (a new query OR-ed with the previous ones: "a record matches if it satisfies any of the ^NQ
//! groups", ServiceNow SDK "Encoded Queries" guide), `ORDERBYfield` and `ORDERBYDESCfield`.
//! As the Table API documents, parts it cannot read are silently ignored rather than refused.

use std::cmp::Ordering;

use super::store::{Rec, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Cond {
    field: String,
    op: Op,
    value: String,
}

/// OR of NQ groups; each group an AND of clauses; each clause an OR of conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    groups: Vec<Vec<Vec<Cond>>>,
    /// (field, descending)
    order: Vec<(String, bool)>,
}

pub fn parse(q: &str, table: Table) -> Query {
    let mut out = Query::default();
    for group_text in q.split("^NQ") {
        let mut group: Vec<Vec<Cond>> = Vec::new();
        for part in group_text.split('^') {
            if let Some(f) = part.strip_prefix("ORDERBYDESC") {
                if table.fields().contains(&f) {
                    out.order.push((f.to_string(), true));
                }
            } else if let Some(f) = part.strip_prefix("ORDERBY") {
                if table.fields().contains(&f) {
                    out.order.push((f.to_string(), false));
                }
            } else if let Some(rest) = part.strip_prefix("OR") {
                match (cond(rest, table), group.last_mut()) {
                    (Some(c), Some(clause)) => clause.push(c),
                    (Some(c), None) => group.push(vec![c]),
                    _ => {}
                }
            } else if let Some(c) = cond(part, table) {
                group.push(vec![c]);
            }
        }
        if !group.is_empty() {
            out.groups.push(group);
        }
    }
    out
}

fn cond(text: &str, table: Table) -> Option<Cond> {
    // Column names are lowercase; operators are symbols or uppercase words.
    let end = text
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    let (field, rest) = text.split_at(end);
    if !table.fields().contains(&field) {
        return None;
    }
    let ops = [
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("!=", Op::Ne),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("=", Op::Eq),
        ("IN", Op::In),
    ];
    let (value, op) = ops
        .iter()
        .find_map(|(sym, op)| rest.strip_prefix(sym).map(|v| (v, *op)))?;
    Some(Cond {
        field: field.to_string(),
        op,
        value: value.to_string(),
    })
}

/// Numbers compare as numbers, everything else as strings (datetimes and sys_ids sort
/// correctly that way).
fn compare(a: &str, b: &str) -> Ordering {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

impl Cond {
    fn matches(&self, rec: &Rec) -> bool {
        let v = rec.get(&self.field);
        let ord = compare(v, &self.value);
        match self.op {
            Op::Eq => v == self.value,
            Op::Ne => v != self.value,
            Op::Gt => ord == Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::In => self.value.split(',').any(|x| x == v),
        }
    }
}

impl Query {
    pub fn matches(&self, rec: &Rec) -> bool {
        self.groups.is_empty()
            || self
                .groups
                .iter()
                .any(|g| g.iter().all(|clause| clause.iter().any(|c| c.matches(rec))))
    }

    /// The ORDERBY keys, then sys_id so equal keys still come back in one stable order.
    pub fn sort(&self, rows: &mut [&Rec]) {
        rows.sort_by(|a, b| {
            self.order
                .iter()
                .map(|(f, desc)| {
                    let o = compare(a.get(f), b.get(f));
                    if *desc { o.reverse() } else { o }
                })
                .find(|o| *o != Ordering::Equal)
                .unwrap_or_else(|| a.get("sys_id").cmp(b.get("sys_id")))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    fn rec(t: &str, id: &str) -> Rec {
        let mut f = Map::new();
        f.insert("sys_updated_on".into(), Value::String(t.into()));
        f.insert("sys_id".into(), Value::String(id.into()));
        Rec {
            table: Table::Account,
            fields: f,
        }
    }

    #[test]
    fn keyset_with_new_query() {
        let q = parse(
            "sys_updated_on>2024-01-01 00:00:05^NQsys_updated_on=2024-01-01 00:00:05^sys_id>b^ORDERBYsys_updated_on^ORDERBYsys_id",
            Table::Account,
        );
        assert!(q.matches(&rec("2024-01-01 00:00:06", "a")));
        assert!(q.matches(&rec("2024-01-01 00:00:05", "c")));
        assert!(!q.matches(&rec("2024-01-01 00:00:05", "b")));
        assert!(!q.matches(&rec("2024-01-01 00:00:04", "z")));
        assert_eq!(q.order.len(), 2);
    }

    #[test]
    fn or_in_and_ignored_parts() {
        let q = parse("sys_id=a^ORsys_id=b^bogus=1^sys_idINa,c", Table::Account);
        assert!(q.matches(&rec("t", "a")));
        assert!(!q.matches(&rec("t", "b")));
        assert!(!q.matches(&rec("t", "c")));
    }
}
