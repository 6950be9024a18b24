//! URL templates: a path (relative to `base_url`, or absolute on its origin) and an optional
//! query, with `{placeholder}`s filled per request.
//!
//! Encoding rules, so that any value arrives at the CRM exactly as it was given:
//! - In the path, a placeholder's value is percent-encoded as one path segment (everything but
//!   `A-Z a-z 0-9 - . _ ~`; a `/` in an id cannot split the path).
//! - In the query, the template's literal text is percent-decoded once (`%2C` is a comma, `+`
//!   stays a plus), placeholder values are inserted raw, and each name and value is then
//!   form-encoded as a whole (`application/x-www-form-urlencoded`, what servers decode).
//! - `{{` and `}}` are literal braces.
//! - A query parameter whose value is exactly one optional placeholder (`{cursor}`,
//!   `{modified_since}`) is left out when that value is absent (first page, full walk).

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use reqwest::Url;

/// What may not appear raw in a path segment: everything but RFC 3986 unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The placeholders a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Var {
    PageSize,
    Offset,
    Cursor,
    ModifiedSince,
    Fields,
    Ids,
    Id,
    Count,
}

impl Var {
    pub const ALL: [Var; 8] = [
        Var::PageSize,
        Var::Offset,
        Var::Cursor,
        Var::ModifiedSince,
        Var::Fields,
        Var::Ids,
        Var::Id,
        Var::Count,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Var::PageSize => "page_size",
            Var::Offset => "offset",
            Var::Cursor => "cursor",
            Var::ModifiedSince => "modified_since",
            Var::Fields => "fields",
            Var::Ids => "ids",
            Var::Id => "id",
            Var::Count => "count",
        }
    }

    fn parse(s: &str) -> Option<Var> {
        Var::ALL.into_iter().find(|v| v.name() == s)
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Lit(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Path (or whole URL up to `?`), literals as written.
    path: Vec<Piece>,
    /// Query parameters in order: literal name, value pieces (literals already decoded).
    query: Vec<(String, Vec<Piece>)>,
    absolute: bool,
}

/// Placeholder values for one request; `None` is absent.
#[derive(Debug, Clone, Default)]
pub struct Vars<'a> {
    pub page_size: Option<u32>,
    pub offset: Option<u64>,
    pub cursor: Option<&'a str>,
    pub modified_since: Option<&'a str>,
    pub fields: Option<&'a str>,
    pub ids: Option<&'a str>,
    pub id: Option<&'a str>,
    pub count: Option<usize>,
}

impl Vars<'_> {
    fn get(&self, v: Var) -> Option<String> {
        match v {
            Var::PageSize => self.page_size.map(|n| n.to_string()),
            Var::Offset => self.offset.map(|n| n.to_string()),
            Var::Cursor => self.cursor.map(str::to_string),
            Var::ModifiedSince => self.modified_since.map(str::to_string),
            Var::Fields => self.fields.map(str::to_string),
            Var::Ids => self.ids.map(str::to_string),
            Var::Id => self.id.map(str::to_string),
            Var::Count => self.count.map(|n| n.to_string()),
        }
    }
}

/// Splits text into literals and placeholders (`{{`/`}}` escape braces).
fn pieces(text: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("unclosed placeholder {{{name}")),
                    }
                }
                let var = Var::parse(name.trim()).ok_or_else(|| {
                    let known: Vec<String> = Var::ALL.iter().map(|v| v.to_string()).collect();
                    format!(
                        "unknown placeholder {{{name}}} (known: {})",
                        known.join(", ")
                    )
                })?;
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(Piece::Var(var));
            }
            '}' => return Err("a lone `}`: write `}}` for a literal brace".into()),
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

fn decode(lit: &str) -> Result<String, String> {
    percent_decode_str(lit)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("`{lit}` percent-decodes to invalid UTF-8"))
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("is empty".into());
        }
        let mut path: Vec<Piece> = Vec::new();
        let mut query: Vec<(String, Vec<Piece>)> = Vec::new();
        // Where we are: the path, a query name (text so far), or a query value.
        enum At {
            Path,
            Name(String),
            Value,
        }
        let mut at = At::Path;
        for piece in pieces(text)? {
            match piece {
                Piece::Var(v) => match &mut at {
                    At::Path => path.push(Piece::Var(v)),
                    At::Name(_) => {
                        return Err(format!(
                            "{v} in a query parameter name: placeholders go in values"
                        ));
                    }
                    At::Value => {
                        if let Some((_, value)) = query.last_mut() {
                            value.push(Piece::Var(v));
                        }
                    }
                },
                Piece::Lit(s) => {
                    let mut buf = String::new();
                    for c in s.chars() {
                        if c == '#' {
                            return Err("a URL fragment (`#`) has no place in a template".into());
                        }
                        match &mut at {
                            At::Path if c == '?' => {
                                if !buf.is_empty() {
                                    path.push(Piece::Lit(std::mem::take(&mut buf)));
                                }
                                at = At::Name(String::new());
                            }
                            At::Path => buf.push(c),
                            At::Name(name) => match c {
                                '=' => {
                                    let name = decode(name)?;
                                    if name.is_empty() {
                                        return Err("a query parameter without a name".into());
                                    }
                                    query.push((name, Vec::new()));
                                    at = At::Value;
                                }
                                '&' => {
                                    // `?a&b`: a parameter without a value.
                                    if !name.is_empty() {
                                        query.push((decode(name)?, Vec::new()));
                                    }
                                    at = At::Name(String::new());
                                }
                                c => name.push(c),
                            },
                            At::Value => {
                                if c == '&' {
                                    if !buf.is_empty() {
                                        push_value(&mut query, decode(&buf)?);
                                        buf.clear();
                                    }
                                    at = At::Name(String::new());
                                } else {
                                    buf.push(c);
                                }
                            }
                        }
                    }
                    if !buf.is_empty() {
                        match at {
                            At::Path => path.push(Piece::Lit(buf)),
                            At::Value => push_value(&mut query, decode(&buf)?),
                            At::Name(_) => {}
                        }
                    }
                }
            }
        }
        if let At::Name(name) = at
            && !name.is_empty()
        {
            query.push((decode(&name)?, Vec::new()));
        }
        let first = match path.first() {
            Some(Piece::Lit(s)) => s.as_str(),
            _ => "",
        };
        let lower = first.to_ascii_lowercase();
        let absolute = lower.starts_with("http://") || lower.starts_with("https://");
        if absolute {
            // The authority must be literal: a placeholder cannot pick the host.
            let after = &first[first.find("://").map_or(0, |i| i + 3)..];
            if !after.contains('/') {
                return Err("an absolute template must spell out its host and path".into());
            }
        } else if lower.contains("://") {
            return Err("only http:// and https:// URLs".into());
        }
        Ok(Template {
            path,
            query,
            absolute,
        })
    }

    /// Every placeholder the template uses.
    pub fn vars(&self) -> impl Iterator<Item = Var> + '_ {
        self.path
            .iter()
            .chain(self.query.iter().flat_map(|(_, v)| v))
            .filter_map(|p| match p {
                Piece::Var(v) => Some(*v),
                Piece::Lit(_) => None,
            })
    }

    pub fn uses(&self, v: Var) -> bool {
        self.vars().any(|x| x == v)
    }

    /// Whether `v` appears only as the whole value of query parameters (so it can be left out).
    pub fn only_whole_values(&self, v: Var) -> bool {
        let in_path = self.path.contains(&Piece::Var(v));
        let partial = self
            .query
            .iter()
            .any(|(_, val)| val.len() > 1 && val.contains(&Piece::Var(v)));
        !in_path && !partial
    }

    /// The literal URL prefix of an absolute template (for origin checks).
    pub fn absolute_prefix(&self) -> Option<&str> {
        match (self.absolute, self.path.first()) {
            (true, Some(Piece::Lit(s))) => Some(s),
            _ => None,
        }
    }

    pub fn query_names(&self) -> impl Iterator<Item = &str> {
        self.query.iter().map(|(n, _)| n.as_str())
    }

    /// The URL for `vars`, relative to `base` (its path is a prefix), with `extra` query pairs
    /// appended. A placeholder without a value is an error, unless it is the whole value of a
    /// query parameter, which is then left out.
    pub fn expand(
        &self,
        base: &Url,
        vars: &Vars<'_>,
        extra: &[(String, Vec<Piece>)],
    ) -> Result<Url, String> {
        let mut path = String::new();
        for p in &self.path {
            match p {
                Piece::Lit(s) => path.push_str(s),
                Piece::Var(v) => {
                    let value = vars.get(*v).ok_or_else(|| format!("{v} has no value"))?;
                    path.extend(utf8_percent_encode(&value, SEGMENT));
                }
            }
        }
        let text = if self.absolute {
            path
        } else {
            let prefix = base.as_str();
            let prefix = prefix.split(['?', '#']).next().unwrap_or(prefix);
            let prefix = prefix.trim_end_matches('/');
            if path.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}/{}", path.trim_start_matches('/'))
            }
        };
        let mut url = Url::parse(&text).map_err(|e| format!("not a URL: {e}"))?;
        url.set_query(None);
        url.set_fragment(None);
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for (name, value) in self.query.iter().chain(extra) {
            if let Some(v) = expand_value(value, vars)? {
                pairs.push((name, v));
            }
        }
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        Ok(url)
    }
}

fn push_value(query: &mut [(String, Vec<Piece>)], lit: String) {
    if let Some((_, value)) = query.last_mut() {
        value.push(Piece::Lit(lit));
    }
}

/// Parses a query parameter value of its own (`extra_query`): literal text, not decoded.
pub fn value_pieces(text: &str) -> Result<Vec<Piece>, String> {
    pieces(text)
}

/// `None`: the parameter is left out (its whole value is an absent placeholder).
fn expand_value(value: &[Piece], vars: &Vars<'_>) -> Result<Option<String>, String> {
    if let [Piece::Var(v)] = value {
        return Ok(vars.get(*v));
    }
    let mut out = String::new();
    for p in value {
        match p {
            Piece::Lit(s) => out.push_str(s),
            Piece::Var(v) => {
                out.push_str(&vars.get(*v).ok_or_else(|| format!("{v} has no value"))?)
            }
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base() -> Url {
        Url::parse("https://crm.example.com/api/v2/").unwrap()
    }

    fn expand(t: &str, vars: &Vars<'_>) -> String {
        Template::parse(t)
            .unwrap()
            .expand(&base(), vars, &[])
            .unwrap()
            .to_string()
    }

    #[test]
    fn relative_paths_extend_the_base_path() {
        assert_eq!(
            expand("/contacts", &Vars::default()),
            "https://crm.example.com/api/v2/contacts"
        );
        assert_eq!(
            expand(
                "contacts?limit={page_size}",
                &Vars {
                    page_size: Some(50),
                    ..Vars::default()
                }
            ),
            "https://crm.example.com/api/v2/contacts?limit=50"
        );
        let no_slash = Url::parse("https://crm.example.com/api").unwrap();
        let t = Template::parse("/x").unwrap();
        assert_eq!(
            t.expand(&no_slash, &Vars::default(), &[]).unwrap().as_str(),
            "https://crm.example.com/api/x"
        );
    }

    #[test]
    fn absolute_templates_are_kept() {
        let t = Template::parse("https://crm.example.com/other/{id}").unwrap();
        assert!(t.absolute);
        assert_eq!(t.absolute_prefix(), Some("https://crm.example.com/other/"));
        let u = t
            .expand(
                &base(),
                &Vars {
                    id: Some("a b"),
                    ..Vars::default()
                },
                &[],
            )
            .unwrap();
        assert_eq!(u.as_str(), "https://crm.example.com/other/a%20b");
        assert!(Template::parse("https://{id}/x").is_err());
        assert!(Template::parse("https://host").is_err());
        assert!(Template::parse("ftp://host/x").is_err());
    }

    #[test]
    fn query_literals_are_decoded_once_and_encoded_once() {
        let u = expand(
            "/query?q=SELECT Id, Name FROM Account WHERE Name = 'A%2CB' ORDER BY Id",
            &Vars::default(),
        );
        let url = Url::parse(&u).unwrap();
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            q,
            [(
                "q".to_string(),
                "SELECT Id, Name FROM Account WHERE Name = 'A,B' ORDER BY Id".to_string()
            )]
        );
        // A plus in the template stays a plus.
        let url = Url::parse(&expand("/x?q=a+b", &Vars::default())).unwrap();
        assert_eq!(url.query_pairs().next().unwrap().1, "a+b");
    }

    #[test]
    fn placeholders_fill_values() {
        let vars = Vars {
            page_size: Some(200),
            offset: Some(400),
            modified_since: Some("2024-01-01 00:00:00"),
            fields: Some("sys_id,name"),
            ..Vars::default()
        };
        let url = Url::parse(&expand(
            "/t?sysparm_query=sys_updated_on>={modified_since}^ORDERBYsys_id&sysparm_fields={fields}&sysparm_limit={page_size}&sysparm_offset={offset}",
            &vars,
        ))
        .unwrap();
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            q,
            [
                (
                    "sysparm_query",
                    "sys_updated_on>=2024-01-01 00:00:00^ORDERBYsys_id"
                ),
                ("sysparm_fields", "sys_id,name"),
                ("sysparm_limit", "200"),
                ("sysparm_offset", "400"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn absent_optional_parameters_are_left_out() {
        let t =
            Template::parse("/c?limit={page_size}&after={cursor}&since={modified_since}").unwrap();
        assert!(t.only_whole_values(Var::Cursor));
        let u = t
            .expand(
                &base(),
                &Vars {
                    page_size: Some(5),
                    ..Vars::default()
                },
                &[],
            )
            .unwrap();
        assert_eq!(u.as_str(), "https://crm.example.com/api/v2/c?limit=5");
        let u = t
            .expand(
                &base(),
                &Vars {
                    page_size: Some(5),
                    cursor: Some("a&b=c"),
                    ..Vars::default()
                },
                &[],
            )
            .unwrap();
        assert_eq!(
            u.as_str(),
            "https://crm.example.com/api/v2/c?limit=5&after=a%26b%3Dc"
        );
        // Inside a larger value or the path it cannot be left out.
        let t = Template::parse("/c?q=x>{modified_since}").unwrap();
        assert!(!t.only_whole_values(Var::ModifiedSince));
        assert!(t.expand(&base(), &Vars::default(), &[]).is_err());
        let t = Template::parse("/c/{cursor}").unwrap();
        assert!(!t.only_whole_values(Var::Cursor));
        assert!(t.expand(&base(), &Vars::default(), &[]).is_err());
    }

    #[test]
    fn extra_pairs_are_appended() {
        let t = Template::parse("/c?a=1").unwrap();
        let extra = vec![
            ("fields".to_string(), value_pieces("{fields}").unwrap()),
            ("x".to_string(), value_pieces("y z").unwrap()),
        ];
        let u = t
            .expand(
                &base(),
                &Vars {
                    fields: Some("a,b"),
                    ..Vars::default()
                },
                &extra,
            )
            .unwrap();
        assert_eq!(
            u.as_str(),
            "https://crm.example.com/api/v2/c?a=1&fields=a%2Cb&x=y+z"
        );
    }

    #[test]
    fn syntax_errors_say_what_is_wrong() {
        assert!(
            Template::parse("/c?x={nope}")
                .unwrap_err()
                .contains("unknown placeholder {nope}")
        );
        assert!(
            Template::parse("/c?x={cursor")
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(Template::parse("/c?x=}").unwrap_err().contains("lone"));
        assert!(
            Template::parse("/c?{id}=1")
                .unwrap_err()
                .contains("query parameter name")
        );
        assert!(Template::parse("/c#frag").unwrap_err().contains("fragment"));
        assert!(Template::parse("  ").unwrap_err().contains("empty"));
        assert!(Template::parse("/c?=1").is_err());
        assert!(Template::parse("/c?x=%FF").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn braces_escape_and_flag_parameters() {
        let url = Url::parse(&expand("/c?filter={{\"a\":1}}&flag&b=2", &Vars::default())).unwrap();
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            q,
            [("filter", "{\"a\":1}"), ("flag", ""), ("b", "2")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let t = Template::parse("/c?a={ids}&b={count}").unwrap();
        assert_eq!(t.vars().collect::<Vec<_>>(), [Var::Ids, Var::Count]);
        assert_eq!(t.query_names().collect::<Vec<_>>(), ["a", "b"]);
    }

    proptest! {
        /// Any id, as a path segment, parses back to itself (dot segments aside, which no URL
        /// can carry).
        #[test]
        fn any_id_round_trips_in_the_path(id in "\\PC{1,40}|[ -~]{1,40}") {
            prop_assume!(id != "." && id != "..");
            let t = Template::parse("/contacts/{id}?fields=a").unwrap();
            let url = t.expand(&base(), &Vars { id: Some(&id), ..Vars::default() }, &[]).unwrap();
            let again = Url::parse(url.as_str()).unwrap();
            let seg = again.path_segments().unwrap().next_back().unwrap().to_string();
            prop_assert_eq!(percent_decode_str(&seg).decode_utf8().unwrap(), id.as_str());
            prop_assert_eq!(again.path().matches('/').count(), 4);
            prop_assert_eq!(again.host_str(), Some("crm.example.com"));
        }

        /// Any ids, joined into a query value, parse back to the same string, and the other
        /// parameters are untouched.
        #[test]
        fn any_ids_round_trip_in_the_query(ids in proptest::collection::vec("\\PC{1,20}|[ -~]{1,20}", 1..5)) {
            let joined = ids.join(",");
            let t = Template::parse("/c?q=sys_idIN{ids}&n={count}&z=1").unwrap();
            let vars = Vars { ids: Some(&joined), count: Some(ids.len()), ..Vars::default() };
            let url = t.expand(&base(), &vars, &[]).unwrap();
            let again = Url::parse(url.as_str()).unwrap();
            let q: Vec<(String, String)> = again.query_pairs().into_owned().collect();
            prop_assert_eq!(q.len(), 3);
            prop_assert_eq!(&q[0].1, &format!("sys_idIN{joined}"));
            prop_assert_eq!(&q[1].1, &ids.len().to_string());
            prop_assert_eq!(&q[2], &("z".to_string(), "1".to_string()));
            prop_assert_eq!(again.host_str(), Some("crm.example.com"));
        }
    }
}
