//! Parsing of resource paths and record keys: `accounts(<guid>)` and alternate keys such as
//! `accounts(msdyn_source_crm=2,msdyn_source_crm_id='O''Brien')` ("Use an alternate key to
//! reference a record": integers bare, strings quoted, a quote inside a string doubled).
//! Parsing is quote-aware because a key value may contain `/`, `,` or `)`.

use uuid::Uuid;

use crate::error::ApiError;

/// A literal in a key or `$filter`.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Guid(Uuid),
    Null,
}

/// How a record is addressed.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordKey {
    Id(Uuid),
    /// Alternate key column/value pairs, in URL order.
    Alternate(Vec<(String, Literal)>),
}

/// Splits a decoded path into segments on `/` outside quoted strings.
pub fn split_segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    for c in path.chars() {
        match c {
            '\'' => {
                in_quote = !in_quote;
                cur.push(c);
            }
            '/' if !in_quote => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// `name(inner)` → (`name`, Some(`inner`)); `name` → (`name`, None).
pub fn parse_segment(seg: &str) -> Result<(&str, Option<&str>), ApiError> {
    match seg.find('(') {
        None => Ok((seg, None)),
        Some(open) => {
            if !seg.ends_with(')') || seg.len() < open + 2 {
                return Err(ApiError::bad_request(format!(
                    "Bad Request - Error in query syntax: '{seg}'."
                )));
            }
            Ok((&seg[..open], Some(&seg[open + 1..seg.len() - 1])))
        }
    }
}

/// Parses the inside of `set(...)`.
pub fn parse_key(text: &str) -> Result<RecordKey, ApiError> {
    let text = text.trim();
    if let Ok(id) = Uuid::parse_str(text) {
        return Ok(RecordKey::Id(id));
    }
    let pairs = parse_pairs(text)?;
    if pairs.is_empty() {
        return Err(ApiError::bad_request(format!(
            "The key in the request URI is not valid: '{text}'."
        )));
    }
    Ok(RecordKey::Alternate(pairs))
}

/// `a=1,b='x'` → pairs. A single unnamed value other than a GUID is refused.
pub fn parse_pairs(text: &str) -> Result<Vec<(String, Literal)>, ApiError> {
    let invalid = || {
        ApiError::bad_request(format!(
            "The key in the request URI is not valid: '{text}'."
        ))
    };
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or_else(invalid)?;
        let name = rest[..eq].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid());
        }
        let (lit, used) = parse_literal(&rest[eq + 1..]).ok_or_else(invalid)?;
        pairs.push((name.to_string(), lit));
        rest = rest[eq + 1 + used..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
            if rest.is_empty() {
                return Err(invalid());
            }
        } else if !rest.is_empty() {
            return Err(invalid());
        }
    }
    Ok(pairs)
}

/// Parses one literal at the start of `s`, returning it and the bytes consumed.
/// Strings: `'...'` with `''` as an escaped quote.
pub fn parse_literal(s: &str) -> Option<(Literal, usize)> {
    let lead = s.len() - s.trim_start().len();
    let t = &s[lead..];
    if let Some(body) = t.strip_prefix('\'') {
        let mut out = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if matches!(chars.peek(), Some((_, '\''))) {
                    out.push('\'');
                    chars.next();
                } else {
                    return Some((Literal::Str(out), lead + 1 + i + 1));
                }
            } else {
                out.push(c);
            }
        }
        return None;
    }
    let end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '+'))
        .unwrap_or(t.len());
    let word = &t[..end];
    if word.is_empty() {
        return None;
    }
    let lit = match word {
        "null" => Literal::Null,
        "true" => Literal::Bool(true),
        "false" => Literal::Bool(false),
        _ => {
            if let Ok(i) = word.parse::<i64>() {
                Literal::Int(i)
            } else if word.len() == 36
                && let Ok(g) = Uuid::parse_str(word)
            {
                Literal::Guid(g)
            } else if let Ok(f) = word.parse::<f64>() {
                Literal::Float(f)
            } else {
                return None;
            }
        }
    };
    Some((lit, lead + end))
}

/// Percent-decodes a URL path or query component (`+` is literal in paths).
pub fn decode(s: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::bad_request("The request URI is not valid UTF-8."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_guid_and_alternate_keys() {
        let id = Uuid::new_v4();
        assert_eq!(parse_key(&id.to_string()).unwrap(), RecordKey::Id(id));
        assert_eq!(
            parse_key("msdyn_source_crm=2,msdyn_source_crm_id='O''Brien, /x)'").unwrap(),
            RecordKey::Alternate(vec![
                ("msdyn_source_crm".into(), Literal::Int(2)),
                (
                    "msdyn_source_crm_id".into(),
                    Literal::Str("O'Brien, /x)".into())
                ),
            ])
        );
        assert!(parse_key("msdyn_source_crm=2,").is_err());
        assert!(parse_key("'abc'").is_err());
        assert!(parse_key("a='unterminated").is_err());
    }

    #[test]
    fn splits_outside_quotes() {
        assert_eq!(
            split_segments("accounts(a='x/y')/b"),
            vec!["accounts(a='x/y')".to_string(), "b".to_string()]
        );
    }
}
