//! A SOQL subset parser: `SELECT f, ... FROM Account|Contact [WHERE cond] [ORDER BY f [ASC|DESC],
//! ...] [LIMIT n]`, where `cond` combines `field op literal`, `field [NOT] IN (...)`, `NOT`,
//! `AND`, `OR` and parentheses. Field names are checked against the schema here so errors come
//! back as Salesforce words them (SOQL and SOSL Reference: "Comparison Operators", "Logical
//! Operators", "Date Formats and Date Literals in WHERE", "Quoted String Escape Sequences").

use chrono::{DateTime, NaiveDate, Utc};
use thiserror::Error;

use super::schema::{Object, Ty, canonical_id, parse_soql_date, parse_soql_datetime};

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Str(String),
    DateTime(DateTime<Utc>),
    Date(NaiveDate),
    Num(f64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Cmp {
        field: &'static str,
        ty: Ty,
        op: Op,
        lit: Lit,
    },
    In {
        field: &'static str,
        ty: Ty,
        negate: bool,
        lits: Vec<Lit>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub object: Object,
    pub fields: Vec<(&'static str, Ty)>,
    pub filter: Option<Cond>,
    /// (field, type, descending)
    pub order: Vec<(&'static str, Ty, bool)>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SoqlError {
    /// MALFORMED_QUERY
    #[error("{0}")]
    Malformed(String),
    /// INVALID_FIELD
    #[error("{0}")]
    InvalidField(String),
    /// INVALID_TYPE: the object is not one we serve.
    #[error("{0}")]
    InvalidType(String),
    /// INVALID_QUERY_FILTER_OPERATOR: e.g. a malformed id literal.
    #[error("{0}")]
    BadFilter(String),
}

impl SoqlError {
    pub fn code(&self) -> &'static str {
        match self {
            SoqlError::Malformed(_) => "MALFORMED_QUERY",
            SoqlError::InvalidField(_) => "INVALID_FIELD",
            SoqlError::InvalidType(_) => "INVALID_TYPE",
            SoqlError::BadFilter(_) => "INVALID_QUERY_FILTER_OPERATOR",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    /// An unquoted literal starting with a digit: number, date or dateTime.
    Raw(String),
    Sym(&'static str),
}

/// Whether the session may read an object (`None`) or one of its fields.
pub type CanRead<'a> = &'a dyn Fn(Object, Option<&str>) -> bool;

struct Parser<'a> {
    text: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
    can_read: CanRead<'a>,
}

#[cfg(test)]
pub fn parse(text: &str) -> Result<Query, SoqlError> {
    parse_visible(text, &|_, _| true)
}

/// Parses as the session sees the schema: an object it may not read is not supported and a
/// field hidden by field-level security does not exist, in the very words Salesforce uses for
/// an unknown object or column ("Field-Level Security", Salesforce Help: a field hidden from a
/// user is absent from its API results and refused in queries as `INVALID_FIELD`).
pub fn parse_visible(text: &str, can_read: CanRead<'_>) -> Result<Query, SoqlError> {
    let toks = lex(text)?;
    let mut p = Parser {
        text,
        toks,
        pos: 0,
        can_read,
    };
    p.query()
}

fn lex(s: &str) -> Result<Vec<(Tok, usize)>, SoqlError> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'\'' {
            // Backslash escapes per "Quoted String Escape Sequences"; any other use of a
            // backslash is an error there too.
            let mut val = String::new();
            i += 1;
            let mut closed = false;
            let mut chars = s[i..].char_indices();
            while let Some((off, ch)) = chars.next() {
                match ch {
                    '\'' => {
                        i += off + 1;
                        closed = true;
                        break;
                    }
                    '\\' => {
                        let esc = chars.next().map(|(_, e)| e);
                        val.push(match esc {
                            Some('n' | 'N') => '\n',
                            Some('r' | 'R') => '\r',
                            Some('t' | 'T') => '\t',
                            Some('b' | 'B') => '\u{8}',
                            Some('f' | 'F') => '\u{c}',
                            Some(e @ ('"' | '\'' | '\\')) => e,
                            _ => {
                                return Err(SoqlError::Malformed(format!(
                                    "Invalid string literal at position {start}: illegal escape sequence"
                                )));
                            }
                        });
                    }
                    ch => val.push(ch),
                }
            }
            if !closed {
                return Err(SoqlError::Malformed(
                    "unexpected end of query: unterminated string literal".into(),
                ));
            }
            out.push((Tok::Str(val), start));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            out.push((Tok::Word(s[start..i].to_string()), start));
        } else if c.is_ascii_digit() || (c == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            i += 1;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || matches!(b[i], b':' | b'.' | b'+' | b'-'))
            {
                i += 1;
            }
            out.push((Tok::Raw(s[start..i].to_string()), start));
        } else {
            let two = s.get(i..i + 2).unwrap_or("");
            let sym = match two {
                "!=" => Some("!="),
                "<>" => Some("!="),
                "<=" => Some("<="),
                ">=" => Some(">="),
                _ => None,
            };
            if let Some(sym) = sym {
                i += 2;
                out.push((Tok::Sym(sym), start));
                continue;
            }
            let sym = match c {
                b'(' => "(",
                b')' => ")",
                b',' => ",",
                b'=' => "=",
                b'<' => "<",
                b'>' => ">",
                _ => {
                    let ch = s[i..].chars().next().unwrap_or('?');
                    return Err(SoqlError::Malformed(format!("unexpected token: '{ch}'")));
                }
            };
            i += 1;
            out.push((Tok::Sym(sym), start));
        }
    }
    Ok(out)
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.text.len(), |(_, o)| *o)
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(s)) if *s == sym) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn unexpected(&self) -> SoqlError {
        match self.peek() {
            None => SoqlError::Malformed("unexpected token: <EOF>".into()),
            Some(t) => {
                let shown = match t {
                    Tok::Word(w) | Tok::Raw(w) => w.clone(),
                    Tok::Str(s) => format!("'{s}'"),
                    Tok::Sym(s) => s.to_string(),
                };
                SoqlError::Malformed(format!(
                    "{}unexpected token: '{shown}'",
                    self.locate(self.offset())
                ))
            }
        }
    }

    /// Salesforce's "ERROR at Row:r:Column:c" preamble, pointing at a byte offset.
    fn locate(&self, off: usize) -> String {
        let before = &self.text[..off.min(self.text.len())];
        let row = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("\n{}\nERROR at Row:{row}:Column:{col}\n", self.text)
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), SoqlError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn word(&mut self) -> Result<(String, usize), SoqlError> {
        match self.toks.get(self.pos) {
            Some((Tok::Word(w), off)) => {
                self.pos += 1;
                Ok((w.clone(), *off))
            }
            _ => Err(self.unexpected()),
        }
    }

    fn query(&mut self) -> Result<Query, SoqlError> {
        self.expect_kw("SELECT")?;
        let mut raw_fields = vec![self.word()?];
        while self.eat_sym(",") {
            raw_fields.push(self.word()?);
        }
        self.expect_kw("FROM")?;
        let (obj_name, _) = self.word()?;
        let object = Object::parse(&obj_name)
            .filter(|o| (self.can_read)(*o, None))
            .ok_or_else(|| {
            SoqlError::InvalidType(format!(
                "\n{}\nsObject type '{obj_name}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.",
                self.text
            ))
        })?;
        let mut fields = Vec::new();
        for (f, off) in raw_fields {
            let resolved = self.resolve(object, &f, off)?;
            if !fields.contains(&resolved) {
                fields.push(resolved);
            }
        }
        let filter = if self.eat_kw("WHERE") {
            Some(self.cond(object)?)
        } else {
            None
        };
        let mut order = Vec::new();
        if self.eat_kw("ORDER") {
            self.expect_kw("BY")?;
            loop {
                let (f, off) = self.word()?;
                let (name, ty) = self.resolve(object, &f, off)?;
                let desc = if self.eat_kw("DESC") {
                    true
                } else {
                    self.eat_kw("ASC");
                    false
                };
                order.push((name, ty, desc));
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        let limit = if self.eat_kw("LIMIT") {
            match self.toks.get(self.pos) {
                Some((Tok::Raw(n), _)) => {
                    let n = n.parse::<usize>().map_err(|_| self.unexpected())?;
                    self.pos += 1;
                    Some(n)
                }
                _ => return Err(self.unexpected()),
            }
        } else {
            None
        };
        if self.peek().is_some() {
            return Err(self.unexpected());
        }
        Ok(Query {
            object,
            fields,
            filter,
            order,
            limit,
        })
    }

    fn resolve(
        &self,
        object: Object,
        name: &str,
        off: usize,
    ) -> Result<(&'static str, Ty), SoqlError> {
        object
            .field(name)
            .filter(|(n, _)| (self.can_read)(object, Some(n)))
            .ok_or_else(|| {
            SoqlError::InvalidField(format!(
                "{}No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                self.locate(off),
                object.name()
            ))
        })
    }

    /// `a AND b AND c` or `a OR b OR c`; mixing both at one level needs parentheses, as SOQL
    /// requires ("Logical Operators").
    fn cond(&mut self, object: Object) -> Result<Cond, SoqlError> {
        let first = self.unary(object)?;
        let mut parts = vec![first];
        let mut joiner: Option<&str> = None;
        loop {
            let kw = if self.is_kw("AND") {
                "AND"
            } else if self.is_kw("OR") {
                "OR"
            } else {
                break;
            };
            if joiner.is_some_and(|j| j != kw) {
                return Err(self.unexpected());
            }
            joiner = Some(kw);
            self.pos += 1;
            parts.push(self.unary(object)?);
        }
        Ok(match (joiner, parts.len()) {
            (_, 1) => parts.remove(0),
            (Some("OR"), _) => Cond::Or(parts),
            _ => Cond::And(parts),
        })
    }

    fn unary(&mut self, object: Object) -> Result<Cond, SoqlError> {
        if self.eat_kw("NOT") {
            return Ok(Cond::Not(Box::new(self.unary(object)?)));
        }
        if self.eat_sym("(") {
            let c = self.cond(object)?;
            if !self.eat_sym(")") {
                return Err(self.unexpected());
            }
            return Ok(c);
        }
        let (f, off) = self.word()?;
        let (field, ty) = self.resolve(object, &f, off)?;
        if matches!(ty, Ty::Address(_)) {
            return Err(SoqlError::InvalidField(format!(
                "{}field '{field}' can not be filtered in a query call",
                self.locate(off)
            )));
        }
        let negate = self.is_kw("NOT");
        if negate {
            self.pos += 1;
        }
        if self.eat_kw("IN") {
            if !self.eat_sym("(") {
                return Err(self.unexpected());
            }
            let mut lits = vec![self.literal(field, ty)?];
            while self.eat_sym(",") {
                lits.push(self.literal(field, ty)?);
            }
            if !self.eat_sym(")") {
                return Err(self.unexpected());
            }
            return Ok(Cond::In {
                field,
                ty,
                negate,
                lits,
            });
        }
        if negate {
            return Err(self.unexpected());
        }
        let op = match self.peek() {
            Some(Tok::Sym("=")) => Op::Eq,
            Some(Tok::Sym("!=")) => Op::Ne,
            Some(Tok::Sym("<")) => Op::Lt,
            Some(Tok::Sym("<=")) => Op::Le,
            Some(Tok::Sym(">")) => Op::Gt,
            Some(Tok::Sym(">=")) => Op::Ge,
            _ => return Err(self.unexpected()),
        };
        self.pos += 1;
        let lit = self.literal(field, ty)?;
        Ok(Cond::Cmp { field, ty, op, lit })
    }

    /// A literal, type-checked against the field as Salesforce does before running anything.
    fn literal(&mut self, field: &str, ty: Ty) -> Result<Lit, SoqlError> {
        let tok = self.peek().cloned().ok_or_else(|| self.unexpected())?;
        let lit = match tok {
            Tok::Str(s) => Lit::Str(s),
            Tok::Word(w) if w.eq_ignore_ascii_case("null") => Lit::Null,
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => Lit::Bool(true),
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => Lit::Bool(false),
            Tok::Raw(r) => {
                if let Some(t) = parse_soql_datetime(&r) {
                    Lit::DateTime(t)
                } else if let Some(d) = parse_soql_date(&r) {
                    Lit::Date(d)
                } else if let Ok(n) = r.parse::<f64>() {
                    Lit::Num(n)
                } else {
                    return Err(SoqlError::Malformed(format!(
                        "{}line 1:{} no viable alternative at character '{r}'",
                        self.locate(self.offset()),
                        self.offset()
                    )));
                }
            }
            _ => return Err(self.unexpected()),
        };
        let want = match ty {
            Ty::Id | Ty::Str => "string",
            Ty::Bool => "boolean",
            Ty::Int => "number",
            Ty::Date => "date",
            Ty::DateTime => "dateTime",
            Ty::Address(_) => "address",
        };
        let ok = matches!(
            (&lit, ty),
            (Lit::Null, _)
                | (Lit::Str(_), Ty::Id | Ty::Str)
                | (Lit::Bool(_), Ty::Bool)
                | (Lit::Num(_), Ty::Int)
                | (Lit::Date(_), Ty::Date)
                | (Lit::DateTime(_), Ty::DateTime)
        );
        if !ok {
            let quoted = if matches!(lit, Lit::Str(_)) {
                " and should not be enclosed in quotes"
            } else {
                ""
            };
            return Err(SoqlError::InvalidField(format!(
                "{}value of filter criterion for field '{field}' must be of type {want}{quoted}",
                self.locate(self.offset())
            )));
        }
        self.pos += 1;
        // Id literals must be ids; a 15-character id means the same record as its 18-character form.
        if let (Lit::Str(s), Ty::Id) = (&lit, ty) {
            return match canonical_id(s) {
                Some(id) => Ok(Lit::Str(id)),
                None => Err(SoqlError::BadFilter(format!("invalid ID field: {s}"))),
            };
        }
        Ok(lit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_keyset_query() {
        let q = parse(
            "SELECT Id, name, SystemModstamp FROM Account WHERE (SystemModstamp > 2024-01-01T00:00:00.000Z OR (SystemModstamp = 2024-01-01T00:00:00Z AND Id > '001Dn0000000001AAA')) ORDER BY SystemModstamp, Id LIMIT 10",
        )
        .unwrap();
        assert_eq!(q.object, Object::Account);
        assert_eq!(q.fields[1].0, "Name");
        assert_eq!(q.order.len(), 2);
        assert_eq!(q.limit, Some(10));
        assert!(matches!(q.filter, Some(Cond::Or(_))));
    }

    #[test]
    fn errors_come_with_salesforce_codes() {
        let e = parse("SELECT Id, Foo FROM Account").unwrap_err();
        assert_eq!(e.code(), "INVALID_FIELD");
        assert!(
            e.to_string()
                .contains("No such column 'Foo' on entity 'Account'")
        );
        assert_eq!(
            parse("SELECT FROM Account").unwrap_err().code(),
            "MALFORMED_QUERY"
        );
        assert_eq!(
            parse("SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'")
                .unwrap_err()
                .code(),
            "MALFORMED_QUERY"
        );
        assert_eq!(
            parse("SELECT Id FROM Lead").unwrap_err().code(),
            "INVALID_TYPE"
        );
        assert_eq!(
            parse("SELECT Id FROM Account WHERE SystemModstamp > '2024-01-01'")
                .unwrap_err()
                .code(),
            "INVALID_FIELD"
        );
        assert_eq!(
            parse("SELECT Id FROM Account WHERE Id = 'nope'")
                .unwrap_err()
                .code(),
            "INVALID_QUERY_FILTER_OPERATOR"
        );
    }

    #[test]
    fn strings_unescape() {
        let q = parse(r"SELECT Id FROM Contact WHERE LastName IN ('O\'Brien', 'a\\b')").unwrap();
        let Some(Cond::In { lits, .. }) = q.filter else {
            panic!("not an IN")
        };
        assert_eq!(
            lits,
            vec![Lit::Str("O'Brien".into()), Lit::Str("a\\b".into())]
        );
    }
}
