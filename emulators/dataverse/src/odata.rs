//! OData query options as "Query data using the Web API" documents them: `$select`, `$filter`
//! (comparison operators, `and`/`or`/`not`, parentheses, `contains`/`startswith`/`endswith`),
//! `$orderby`, `$top`, `$count`, and paging with `Prefer: odata.maxpagesize` and an opaque
//! `$skiptoken` in `@odata.nextLink`. Dataverse compares strings case-insensitively (its SQL
//! collation), so `eq` on text does too.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::keys::{Literal, parse_literal};

/// Rows per page when the client sends no `odata.maxpagesize`: 5,000 ("Page results").
pub const DEFAULT_PAGE_SIZE: usize = 5000;

/// Decoded query options of one request.
#[derive(Debug, Default, Clone)]
pub struct QueryOptions {
    pub select: Option<Vec<String>>,
    pub filter: Option<String>,
    pub orderby: Option<String>,
    pub top: Option<usize>,
    pub count: bool,
    pub skiptoken: Option<String>,
    pub expand: Option<String>,
    /// Every parameter except `$skiptoken`, still encoded, to rebuild the next link.
    pub passthrough: Vec<String>,
}

/// Parses a raw query string. Form-style `+` is a space, as ASP.NET decodes it.
pub fn parse_query(raw: Option<&str>) -> Result<QueryOptions, ApiError> {
    let mut q = QueryOptions::default();
    let Some(raw) = raw else { return Ok(q) };
    for part in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let key = decode_component(k)?;
        let value = decode_component(v)?;
        if key != "$skiptoken" {
            q.passthrough.push(part.to_string());
        }
        match key.as_str() {
            "$select" => {
                q.select = Some(
                    value
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                )
            }
            "$filter" => q.filter = Some(value),
            "$orderby" => q.orderby = Some(value),
            "$top" => {
                q.top = Some(value.trim().parse().map_err(|_| {
                    ApiError::bad_request(format!("Invalid value '{value}' for $top query option."))
                })?)
            }
            "$count" => q.count = value.trim() == "true",
            "$skiptoken" => q.skiptoken = Some(value),
            "$expand" => q.expand = Some(value),
            k if k.starts_with('$') && !matches!(k, "$apply" | "$format") => {
                return Err(ApiError::bad_request(format!(
                    "The query parameter '{k}' is not supported"
                )));
            }
            _ => {}
        }
    }
    Ok(q)
}

fn decode_component(s: &str) -> Result<String, ApiError> {
    crate::keys::decode(&s.replace('+', " "))
}

/// `Prefer: odata.maxpagesize=N` → N (clamped to the 5,000 maximum).
pub fn max_page_size(prefer: &str) -> Option<usize> {
    prefer.split(',').find_map(|p| {
        let p = p.trim();
        p.strip_prefix("odata.maxpagesize=")
            .and_then(|n| n.trim().parse::<usize>().ok())
            .map(|n| n.clamp(1, DEFAULT_PAGE_SIZE))
    })
}

/// The skiptoken carries the offset of the next page inside a paging-cookie-like string so the
/// client treats it as opaque.
pub fn encode_skiptoken(offset: usize) -> String {
    let cookie = format!(
        "<cookie pagenumber=\"{}\" offset=\"{offset}\" />",
        offset.max(1)
    );
    percent_encoding::utf8_percent_encode(&cookie, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub fn decode_skiptoken(token: &str) -> Result<usize, ApiError> {
    let bad = || ApiError::bad_request("The $skiptoken is not valid.");
    let start = token.find("offset=\"").ok_or_else(bad)? + 8;
    let end = token[start..].find('"').ok_or_else(bad)? + start;
    token[start..end].parse().map_err(|_| bad())
}

/// A parsed `$filter` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Cmp(String, CmpOp, Literal),
    Func(String, String, String),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Lit(Literal),
    Open,
    Close,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, ApiError> {
    let err = |at: usize| ApiError::bad_request(format!("Syntax error at position {at} in '{s}'."));
    let mut toks = Vec::new();
    let mut i = 0;
    let b = s.as_bytes();
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            toks.push(Tok::Open);
            i += 1;
        } else if c == ')' {
            toks.push(Tok::Close);
            i += 1;
        } else if c == ',' {
            toks.push(Tok::Comma);
            i += 1;
        } else if c == '\'' || c.is_ascii_digit() || c == '-' {
            let (lit, used) = parse_literal(&s[i..]).ok_or_else(|| err(i))?;
            toks.push(Tok::Lit(lit));
            i += used;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = s[i..]
                .find(|ch: char| {
                    !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '/' || ch == '.')
                })
                .map_or(s.len(), |e| e + i);
            let word = &s[i..end];
            // A GUID starting with a letter, or null/true/false, is a literal.
            if let Some((lit, used)) = parse_literal(&s[i..])
                && used >= word.len()
                && !matches!(lit, Literal::Float(_))
            {
                toks.push(Tok::Lit(lit));
                i += used;
            } else {
                toks.push(Tok::Word(word.to_string()));
                i = end;
            }
        } else {
            return Err(err(i));
        }
    }
    Ok(toks)
}

/// Parses a `$filter` value.
pub fn parse_filter(s: &str) -> Result<Filter, ApiError> {
    let toks = tokenize(s)?;
    let mut p = Parser {
        toks,
        pos: 0,
        src: s,
    };
    let f = p.or()?;
    if p.pos != p.toks.len() {
        return Err(p.err());
    }
    Ok(f)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    src: &'a str,
}

impl Parser<'_> {
    fn err(&self) -> ApiError {
        ApiError::bad_request(format!(
            "Syntax error in $filter '{}' at token {}.",
            self.src, self.pos
        ))
    }
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Word(x)) if x == w)
    }
    fn or(&mut self) -> Result<Filter, ApiError> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn and(&mut self) -> Result<Filter, ApiError> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn unary(&mut self) -> Result<Filter, ApiError> {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Open) => {
                self.pos += 1;
                let f = self.or()?;
                if self.toks.get(self.pos) != Some(&Tok::Close) {
                    return Err(self.err());
                }
                self.pos += 1;
                Ok(f)
            }
            Some(Tok::Word(w)) if matches!(self.toks.get(self.pos + 1), Some(Tok::Open)) => {
                if !matches!(w.as_str(), "contains" | "startswith" | "endswith") {
                    return Err(ApiError::bad_request(format!(
                        "An unknown function with name '{w}' was found."
                    )));
                }
                self.pos += 2;
                let prop = match self.toks.get(self.pos) {
                    Some(Tok::Word(p)) => p.clone(),
                    _ => return Err(self.err()),
                };
                let arg = match (self.toks.get(self.pos + 1), self.toks.get(self.pos + 2)) {
                    (Some(Tok::Comma), Some(Tok::Lit(Literal::Str(a)))) => a.clone(),
                    _ => return Err(self.err()),
                };
                if self.toks.get(self.pos + 3) != Some(&Tok::Close) {
                    return Err(self.err());
                }
                self.pos += 4;
                Ok(Filter::Func(w, prop, arg))
            }
            Some(Tok::Word(prop)) => {
                let op = match self.toks.get(self.pos + 1) {
                    Some(Tok::Word(o)) => match o.as_str() {
                        "eq" => CmpOp::Eq,
                        "ne" => CmpOp::Ne,
                        "gt" => CmpOp::Gt,
                        "ge" => CmpOp::Ge,
                        "lt" => CmpOp::Lt,
                        "le" => CmpOp::Le,
                        _ => return Err(self.err()),
                    },
                    _ => return Err(self.err()),
                };
                let lit = match self.toks.get(self.pos + 2) {
                    Some(Tok::Lit(l)) => l.clone(),
                    _ => return Err(self.err()),
                };
                self.pos += 3;
                Ok(Filter::Cmp(prop, op, lit))
            }
            _ => Err(self.err()),
        }
    }
}

impl Filter {
    /// Every property the filter names, to validate them before evaluating.
    pub fn properties(&self, out: &mut Vec<String>) {
        match self {
            Filter::Cmp(p, _, _) | Filter::Func(_, p, _) => out.push(p.clone()),
            Filter::And(a, b) | Filter::Or(a, b) => {
                a.properties(out);
                b.properties(out);
            }
            Filter::Not(a) => a.properties(out),
        }
    }

    pub fn matches(&self, row: &Map<String, Value>) -> bool {
        match self {
            Filter::And(a, b) => a.matches(row) && b.matches(row),
            Filter::Or(a, b) => a.matches(row) || b.matches(row),
            Filter::Not(a) => !a.matches(row),
            Filter::Func(f, p, arg) => {
                let Some(Value::String(s)) = row.get(p) else {
                    return false;
                };
                let (s, arg) = (s.to_lowercase(), arg.to_lowercase());
                match f.as_str() {
                    "contains" => s.contains(&arg),
                    "startswith" => s.starts_with(&arg),
                    _ => s.ends_with(&arg),
                }
            }
            Filter::Cmp(p, op, lit) => {
                let v = row.get(p).unwrap_or(&Value::Null);
                match compare(v, lit) {
                    Some(ord) => match op {
                        CmpOp::Eq => ord == Ordering::Equal,
                        CmpOp::Ne => ord != Ordering::Equal,
                        CmpOp::Gt => ord == Ordering::Greater,
                        CmpOp::Ge => ord != Ordering::Less,
                        CmpOp::Lt => ord == Ordering::Less,
                        CmpOp::Le => ord != Ordering::Greater,
                    },
                    // Null compared with a value: only `ne` holds (SQL-style three-valued logic
                    // as Dataverse translates eq null to IS NULL).
                    None => *op == CmpOp::Ne,
                }
            }
        }
    }
}

fn compare(v: &Value, lit: &Literal) -> Option<Ordering> {
    match (v, lit) {
        (Value::Null, Literal::Null) => Some(Ordering::Equal),
        (Value::Null, _) | (_, Literal::Null) => None,
        (Value::String(s), Literal::Str(l)) => Some(s.to_lowercase().cmp(&l.to_lowercase())),
        (Value::String(s), Literal::Guid(g)) => Some(s.to_lowercase().cmp(&g.to_string())),
        (Value::Number(n), Literal::Int(i)) => n.as_f64()?.partial_cmp(&(*i as f64)),
        (Value::Number(n), Literal::Float(f)) => n.as_f64()?.partial_cmp(f),
        (Value::Bool(b), Literal::Bool(l)) => Some(b.cmp(l)),
        _ => Some(Ordering::Less),
    }
}

/// Sorts rows by an `$orderby` value (`col [asc|desc], …`).
pub fn sort_rows(rows: &mut [Map<String, Value>], orderby: &[(String, bool)]) {
    rows.sort_by(|a, b| {
        for (col, desc) in orderby {
            let ord = cmp_values(a.get(col), b.get(col));
            let ord = if *desc { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
}

pub fn parse_orderby(s: &str) -> Result<Vec<(String, bool)>, ApiError> {
    s.split(',')
        .map(|item| {
            let mut words = item.split_whitespace();
            let col = words
                .next()
                .ok_or_else(|| ApiError::bad_request("Empty $orderby item."))?;
            let desc = match words.next() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(o) => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid $orderby direction '{o}'."
                    )));
                }
            };
            Ok((col.to_string(), desc))
        })
        .collect()
}

fn cmp_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a.unwrap_or(&Value::Null), b.unwrap_or(&Value::Null)) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn filters_with_escaped_quotes_and_parentheses() {
        let f =
            parse_filter("msdyn_source_crm_id eq 'O''Brien' and (msdyn_source_crm eq 2)").unwrap();
        assert!(f.matches(&row(
            json!({"msdyn_source_crm_id": "o'brien", "msdyn_source_crm": 2})
        )));
        assert!(!f.matches(&row(
            json!({"msdyn_source_crm_id": "O'Brien", "msdyn_source_crm": 3})
        )));
        let f = parse_filter(
            "sdkmessageid/name eq 'CreateMultiple' and primaryobjecttypecode eq 'account'",
        )
        .unwrap();
        assert!(f.matches(&row(
            json!({"sdkmessageid/name": "CreateMultiple", "primaryobjecttypecode": "account"})
        )));
        let f = parse_filter("name eq null or not (x ne 1)").unwrap();
        assert!(f.matches(&row(json!({"x": 1, "name": "a"}))));
        assert!(parse_filter("name eq").is_err());
        assert!(parse_filter("name eq 'x' and").is_err());
        assert!(parse_filter("foo(name,'x')").is_err());
    }

    #[test]
    fn skiptoken_round_trips() {
        let t = encode_skiptoken(40);
        assert_eq!(
            decode_skiptoken(&crate::keys::decode(&t).unwrap()).unwrap(),
            40
        );
    }
}
