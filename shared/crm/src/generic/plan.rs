//! The configuration checked (every error names the key at fault) and compiled into the form
//! the client runs: parsed URLs, templates and headers, defaults filled in.

use std::time::Duration;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, SecondsFormat, Utc};
use mapping::{ConfigError, Entity};
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::config::{
    Credentials, CredentialsKind, EntityConfig, ErrorMatch, GenericConfig, Paging, PagingStyle,
};
use super::template::{Piece, Template, Var, value_pieces};
use crate::http::{check_origin, same_origin};

/// How `{modified_since}` is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    Rfc3339,
    Rfc3339Millis,
    EpochSeconds,
    EpochMillis,
    Strftime(String),
}

impl TimeFormat {
    fn parse(s: &str) -> Result<TimeFormat, String> {
        Ok(match s {
            "rfc3339" => TimeFormat::Rfc3339,
            "rfc3339_millis" => TimeFormat::Rfc3339Millis,
            "epoch_seconds" => TimeFormat::EpochSeconds,
            "epoch_millis" => TimeFormat::EpochMillis,
            p if p.contains('%') => {
                if StrftimeItems::new(p).any(|i| matches!(i, Item::Error)) {
                    return Err(format!("`{p}` is not a valid strftime pattern"));
                }
                TimeFormat::Strftime(p.to_string())
            }
            other => {
                return Err(format!(
                    "`{other}`: expected rfc3339, rfc3339_millis, epoch_seconds, epoch_millis or a strftime pattern"
                ));
            }
        })
    }

    pub fn format(&self, t: DateTime<Utc>) -> String {
        match self {
            TimeFormat::Rfc3339 => t.to_rfc3339_opts(SecondsFormat::Secs, true),
            TimeFormat::Rfc3339Millis => t.to_rfc3339_opts(SecondsFormat::Millis, true),
            TimeFormat::EpochSeconds => t.timestamp().to_string(),
            TimeFormat::EpochMillis => t.timestamp_millis().to_string(),
            TimeFormat::Strftime(p) => t.format(p).to_string(),
        }
    }
}

/// Credentials ready to use.
#[derive(Clone)]
pub enum Auth {
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
    Header(HeaderName, HeaderValue),
    ClientCredentials {
        token_url: Url,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
        basic: bool,
    },
}

#[derive(Debug, Clone)]
pub struct PagingPlan {
    pub style: PagingStyle,
    pub next: Option<String>,
    pub done: Option<String>,
    pub has_more: Option<String>,
    pub total: Option<String>,
    pub cursor_expired: Option<ErrorMatch>,
}

#[derive(Debug, Clone)]
pub struct FetchPlan {
    pub url: Template,
    pub records: String,
    pub batch: usize,
    /// `{id}`: one request per id.
    pub single: bool,
}

#[derive(Debug, Clone)]
pub struct EntityPlan {
    pub list: Template,
    pub since: Option<Template>,
    pub records: String,
    pub id: String,
    pub modified: String,
    pub fetch: Option<FetchPlan>,
    pub extra_query: Vec<(String, Vec<Piece>)>,
    pub skip_fields: Vec<String>,
    pub id_chars: Option<String>,
}

/// A validated configuration.
#[derive(Clone)]
pub struct Plan {
    pub base: Url,
    pub auth: Auth,
    pub paging: PagingPlan,
    pub time: TimeFormat,
    pub sorted_by_modified: bool,
    pub max_page_size: Option<u32>,
    pub timeout: Duration,
    pub headers: HeaderMap,
    pub account: EntityPlan,
    pub contact: EntityPlan,
}

impl Plan {
    pub fn entity(&self, e: Entity) -> &EntityPlan {
        match e {
            Entity::Account => &self.account,
            Entity::Contact => &self.contact,
        }
    }
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(key, message)
}

/// A JSON pointer (RFC 6901): empty, or `/`-separated tokens where `~` is `~0` or `~1`.
fn pointer(key: &str, p: &str, may_be_root: bool) -> Result<String, ConfigError> {
    if p.is_empty() {
        return if may_be_root {
            Ok(String::new())
        } else {
            Err(err(
                key,
                "an empty JSON pointer names the whole document, not a field",
            ))
        };
    }
    if !p.starts_with('/') {
        return Err(err(
            key,
            format!("`{p}` is not a JSON pointer (it starts with `/`, e.g. `/{p}`)"),
        ));
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(err(
                key,
                format!("`{p}` is not a JSON pointer (`~` must be `~0` or `~1`)"),
            ));
        }
    }
    Ok(p.to_string())
}

fn required<'a>(key: &str, v: &'a Option<String>, why: &str) -> Result<&'a str, ConfigError> {
    match v.as_deref() {
        Some(s) => Ok(s),
        None => Err(err(key, format!("required{why}"))),
    }
}

/// Which template a placeholder rule is checked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    List,
    Since,
    Fetch,
}

fn template(
    key: &str,
    text: &str,
    use_: Use,
    base: &Url,
    style: PagingStyle,
) -> Result<Template, ConfigError> {
    let t = Template::parse(text).map_err(|m| err(key, m))?;
    if let Some(prefix) = t.absolute_prefix() {
        let u = Url::parse(prefix).map_err(|e| err(key, format!("not a URL: {e}")))?;
        if !same_origin(&u, base) {
            return Err(err(key, "an absolute URL must be on base_url's origin"));
        }
    }
    let allowed: &[Var] = match use_ {
        Use::List | Use::Since => &[
            Var::PageSize,
            Var::Offset,
            Var::Cursor,
            Var::ModifiedSince,
            Var::Fields,
        ],
        Use::Fetch => &[
            Var::Ids,
            Var::Id,
            Var::Count,
            Var::Fields,
            Var::Offset,
            Var::Cursor,
        ],
    };
    for v in t.vars() {
        if !allowed.contains(&v) {
            return Err(err(key, format!("{v} has no value here")));
        }
    }
    if t.uses(Var::Cursor) && !t.only_whole_values(Var::Cursor) {
        return Err(err(
            key,
            "{cursor} must be the whole value of a query parameter (it is left out on the first page)",
        ));
    }
    let link = matches!(style, PagingStyle::LinkHeader | PagingStyle::NextLinkBody);
    for v in [Var::Cursor, Var::Offset] {
        if t.uses(v) && (link || (v == Var::Cursor) != (style == PagingStyle::Cursor)) {
            return Err(err(
                key,
                format!(
                    "{v} has no value with paging.style = \"{}\"",
                    style.as_str()
                ),
            ));
        }
    }
    match use_ {
        Use::List => {
            if t.uses(Var::ModifiedSince) && !t.only_whole_values(Var::ModifiedSince) {
                return Err(err(
                    key,
                    "{modified_since} in list_url must be the whole value of a query parameter (left out on full walks); put a filter written around it in since_url",
                ));
            }
        }
        Use::Since => {
            if !t.uses(Var::ModifiedSince) {
                return Err(err(key, "must use {modified_since}"));
            }
        }
        Use::Fetch => {
            if t.uses(Var::Ids) == t.uses(Var::Id) {
                return Err(err(key, "must use exactly one of {ids} and {id}"));
            }
        }
    }
    if use_ != Use::Fetch {
        let needed = match style {
            PagingStyle::Offset => Some(Var::Offset),
            PagingStyle::Cursor => Some(Var::Cursor),
            _ => None,
        };
        if let Some(v) = needed
            && !t.uses(v)
        {
            return Err(err(
                key,
                format!(
                    "must use {v}: paging.style = \"{}\" continues through it",
                    style.as_str()
                ),
            ));
        }
    }
    Ok(t)
}

impl Credentials {
    fn compile(&self) -> Result<Auth, ConfigError> {
        let kind = self.kind.ok_or_else(|| {
            err(
                "credentials.type",
                "required: basic, bearer, header or oauth_client_credentials",
            )
        })?;
        let uses: &[&str] = match kind {
            CredentialsKind::Basic => &["user", "password"],
            CredentialsKind::Bearer => &["token"],
            CredentialsKind::Header => &["name", "value"],
            CredentialsKind::OauthClientCredentials => &[
                "token_url",
                "client_id",
                "client_secret",
                "scope",
                "client_auth",
            ],
        };
        let present = [
            ("user", &self.user),
            ("password", &self.password),
            ("token", &self.token),
            ("name", &self.name),
            ("value", &self.value),
            ("token_url", &self.token_url),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
            ("scope", &self.scope),
            ("client_auth", &self.client_auth),
        ];
        for (k, v) in present {
            if v.is_some() && !uses.contains(&k) {
                return Err(err(
                    &format!("credentials.{k}"),
                    format!("not used by type = \"{}\"", kind.as_str()),
                ));
            }
        }
        let why = format!(" for type = \"{}\"", kind.as_str());
        let req = |k: &str, v: &Option<String>| -> Result<String, ConfigError> {
            let key = format!("credentials.{k}");
            let s = required(&key, v, &why)?;
            if s.is_empty() {
                return Err(err(&key, "is empty"));
            }
            Ok(s.to_string())
        };
        Ok(match kind {
            CredentialsKind::Basic => {
                let user = req("user", &self.user)?;
                if user.contains(':') {
                    return Err(err(
                        "credentials.user",
                        "a Basic user name cannot contain `:`",
                    ));
                }
                Auth::Basic {
                    user,
                    password: req("password", &self.password)?,
                }
            }
            CredentialsKind::Bearer => Auth::Bearer(req("token", &self.token)?),
            CredentialsKind::Header => {
                let name = HeaderName::from_bytes(req("name", &self.name)?.as_bytes())
                    .map_err(|_| err("credentials.name", "not a valid HTTP header name"))?;
                let mut value = HeaderValue::from_str(&req("value", &self.value)?)
                    .map_err(|_| err("credentials.value", "not a valid HTTP header value"))?;
                value.set_sensitive(true);
                Auth::Header(name, value)
            }
            CredentialsKind::OauthClientCredentials => {
                let raw = req("token_url", &self.token_url)?;
                let token_url = Url::parse(&raw)
                    .map_err(|e| err("credentials.token_url", format!("not a URL: {e}")))?;
                check_origin(&token_url, "token")
                    .map_err(|e| err("credentials.token_url", e.to_string()))?;
                let basic = match self.client_auth.as_deref() {
                    None | Some("body") => false,
                    Some("basic") => true,
                    Some(other) => {
                        return Err(err(
                            "credentials.client_auth",
                            format!("`{other}`: expected body or basic"),
                        ));
                    }
                };
                Auth::ClientCredentials {
                    token_url,
                    client_id: req("client_id", &self.client_id)?,
                    client_secret: req("client_secret", &self.client_secret)?,
                    scope: self.scope.clone().filter(|s| !s.is_empty()),
                    basic,
                }
            }
        })
    }
}

impl Paging {
    fn compile(&self) -> Result<PagingPlan, ConfigError> {
        let style = self.style.ok_or_else(|| {
            err(
                "paging.style",
                "required: next_link_body, link_header, cursor or offset",
            )
        })?;
        let body = matches!(style, PagingStyle::NextLinkBody | PagingStyle::Cursor);
        let next = if body {
            let why = format!(" for style = \"{}\"", style.as_str());
            Some(pointer(
                "paging.next",
                required("paging.next", &self.next, &why)?,
                false,
            )?)
        } else {
            None
        };
        for (k, v) in [
            ("next", &self.next),
            ("done", &self.done),
            ("has_more", &self.has_more),
        ] {
            if v.is_some() && !body {
                return Err(err(
                    &format!("paging.{k}"),
                    format!("not used by style = \"{}\"", style.as_str()),
                ));
            }
        }
        let opt = |k: &str, v: &Option<String>| -> Result<Option<String>, ConfigError> {
            v.as_deref()
                .map(|p| pointer(&format!("paging.{k}"), p, false))
                .transpose()
        };
        if let Some(m) = &self.cursor_expired
            && !(400..=599).contains(&m.status)
        {
            return Err(err(
                "paging.cursor_expired.status",
                "must be an HTTP error status (400-599)",
            ));
        }
        Ok(PagingPlan {
            style,
            next,
            done: opt("done", &self.done)?,
            has_more: opt("has_more", &self.has_more)?,
            total: opt("total", &self.total)?,
            cursor_expired: self.cursor_expired.clone(),
        })
    }
}

impl EntityConfig {
    fn compile(
        &self,
        name: &str,
        base: &Url,
        style: PagingStyle,
    ) -> Result<EntityPlan, ConfigError> {
        let key = |k: &str| format!("{name}.{k}");
        let list_text = required(&key("list_url"), &self.list_url, "")?;
        let list = template(&key("list_url"), list_text, Use::List, base, style)?;
        let since = self
            .since_url
            .as_deref()
            .map(|s| template(&key("since_url"), s, Use::Since, base, style))
            .transpose()?;
        let records = pointer(
            &key("records"),
            required(&key("records"), &self.records, "")?,
            true,
        )?;
        let id = pointer(&key("id"), required(&key("id"), &self.id, "")?, false)?;
        let modified = pointer(
            &key("modified"),
            required(&key("modified"), &self.modified, "")?,
            false,
        )?;
        let fetch = match &self.fetch_url {
            None => {
                for (k, set) in [
                    ("fetch_records", self.fetch_records.is_some()),
                    ("fetch_batch", self.fetch_batch.is_some()),
                ] {
                    if set {
                        return Err(err(&key(k), "needs fetch_url"));
                    }
                }
                None
            }
            Some(text) => {
                let url = template(&key("fetch_url"), text, Use::Fetch, base, style)?;
                let single = url.uses(Var::Id);
                let batch = match self.fetch_batch {
                    Some(0) => return Err(err(&key("fetch_batch"), "must be at least 1")),
                    Some(n) if single && n != 1 => {
                        return Err(err(
                            &key("fetch_batch"),
                            "fetch_url uses {id}: one id per request",
                        ));
                    }
                    Some(n) => n,
                    None if single => 1,
                    None => 50,
                };
                let records = match &self.fetch_records {
                    Some(p) => pointer(&key("fetch_records"), p, true)?,
                    None if single => String::new(),
                    None => records.clone(),
                };
                Some(FetchPlan {
                    url,
                    records,
                    batch,
                    single,
                })
            }
        };
        let mut extra_query = Vec::new();
        for (k, v) in &self.extra_query {
            let ekey = key(&format!("extra_query.{k}"));
            if k.is_empty() {
                return Err(err(&ekey, "a parameter needs a name"));
            }
            let pieces = value_pieces(v).map_err(|m| err(&ekey, m))?;
            if let Some(Piece::Var(v)) = pieces
                .iter()
                .find(|p| matches!(p, Piece::Var(v) if *v != Var::Fields))
            {
                return Err(err(
                    &ekey,
                    format!("{v} has no value here; only {{fields}}"),
                ));
            }
            let templates = std::iter::once(&list)
                .chain(&since)
                .chain(fetch.as_ref().map(|f| &f.url));
            for t in templates {
                if t.query_names().any(|n| n == k) {
                    return Err(err(&ekey, "is already a parameter of the URL templates"));
                }
            }
            extra_query.push((k.clone(), pieces));
        }
        if let Some(chars) = &self.id_chars
            && chars.chars().any(|c| !c.is_ascii_graphic() || c == ',')
        {
            return Err(err(
                &key("id_chars"),
                "only printable ASCII characters other than `,`",
            ));
        }
        Ok(EntityPlan {
            list,
            since,
            records,
            id,
            modified,
            fetch,
            extra_query,
            skip_fields: self.skip_fields.clone(),
            id_chars: self.id_chars.clone(),
        })
    }
}

impl GenericConfig {
    pub(crate) fn compile(&self) -> Result<Plan, ConfigError> {
        let base =
            Url::parse(&self.base_url).map_err(|e| err("base_url", format!("not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(err("base_url", "must be an http(s) URL"));
        }
        check_origin(&base, "CRM").map_err(|e| err("base_url", e.to_string()))?;
        if base.query().is_some() || base.fragment().is_some() {
            return Err(err(
                "base_url",
                "no query or fragment here; put parameters in the URL templates or extra_query",
            ));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(err(
                "base_url",
                "credentials go in [credentials], not the URL",
            ));
        }
        let auth = self.credentials.compile()?;
        let paging = self.paging.compile()?;
        let time = match &self.modified_since_format {
            None => TimeFormat::Rfc3339,
            Some(s) => TimeFormat::parse(s).map_err(|m| err("modified_since_format", m))?,
        };
        if self.max_page_size == Some(0) {
            return Err(err("max_page_size", "must be at least 1"));
        }
        if self.timeout_secs == Some(0) {
            return Err(err("timeout_secs", "must be at least 1"));
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            let key = format!("headers.{k}");
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| err(&key, "not a valid HTTP header name"))?;
            if name == reqwest::header::AUTHORIZATION {
                return Err(err(&key, "put credentials in [credentials]"));
            }
            let value =
                HeaderValue::from_str(v).map_err(|_| err(&key, "not a valid HTTP header value"))?;
            headers.insert(name, value);
        }
        let account = self.account.compile("account", &base, paging.style)?;
        let contact = self.contact.compile("contact", &base, paging.style)?;
        Ok(Plan {
            base,
            auth,
            paging,
            time,
            sorted_by_modified: self.sorted_by_modified,
            max_page_size: self.max_page_size,
            timeout: Duration::from_secs(self.timeout_secs.unwrap_or(60)),
            headers,
            account,
            contact,
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// A valid configuration (cursor paging, bearer token); tests break one key at a time.
    const GOOD: &str = r#"
base_url = "https://api.example.com/v2"
modified_since_format = "epoch_millis"

[credentials]
type = "bearer"
token = "tok-123"

[paging]
style = "cursor"
next = "/paging/next/after"

[account]
list_url = "/companies?limit={page_size}&after={cursor}&properties={fields}"
since_url = "/companies/search?limit={page_size}&after={cursor}&since={modified_since}"
records = "/results"
id = "/id"
modified = "/updatedAt"
fetch_url = "/companies/batch?ids={ids}"
fetch_batch = 100

[contact]
list_url = "/contacts?limit={page_size}&after={cursor}&updated_after={modified_since}"
records = "/results"
id = "/id"
modified = "/properties/lastmodifieddate"
fetch_url = "/contacts/{id}"
"#;

    fn parse(text: &str) -> Result<GenericConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// GOOD with `from` replaced by `to`; the error of validating it.
    fn broken(from: &str, to: &str) -> ConfigError {
        assert!(GOOD.contains(from), "{from}");
        let text = GOOD.replacen(from, to, 1);
        parse(&text)
            .expect("parses")
            .validate()
            .expect_err("invalid")
    }

    fn key_of(from: &str, to: &str) -> String {
        broken(from, to).key
    }

    #[test]
    fn good_config_compiles() {
        let cfg = parse(GOOD).unwrap();
        let plan = cfg.compile().unwrap();
        assert_eq!(plan.paging.style, PagingStyle::Cursor);
        assert_eq!(plan.account.fetch.as_ref().unwrap().batch, 100);
        let single = plan.contact.fetch.as_ref().unwrap();
        assert!(single.single);
        assert_eq!(single.batch, 1);
        assert_eq!(single.records, "");
        assert_eq!(plan.account.fetch.as_ref().unwrap().records, "/results");
        assert_eq!(plan.time, TimeFormat::EpochMillis);
        assert_eq!(plan.timeout, Duration::from_secs(60));
    }

    #[test]
    fn secrets_are_listed_and_hidden() {
        let mut cfg = parse(GOOD).unwrap();
        {
            let secrets = cfg.secrets_mut();
            assert_eq!(secrets.len(), 1);
            assert_eq!(secrets[0].0, "credentials.token");
            *secrets.into_iter().next().unwrap().1 = "resolved-secret".into();
        }
        assert_eq!(cfg.credentials.token.as_deref(), Some("resolved-secret"));
        assert!(!format!("{cfg:?}").contains("resolved-secret"));
        let oauth = GOOD.replace(
            "type = \"bearer\"\ntoken = \"tok-123\"",
            "type = \"oauth_client_credentials\"\ntoken_url = \"https://login.example.com/token\"\nclient_id = \"id\"\nclient_secret = \"env:CS\"",
        );
        let mut cfg = parse(&oauth).unwrap();
        cfg.validate().unwrap();
        let names: Vec<&str> = cfg.secrets_mut().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["credentials.client_secret"]);
        assert!(!format!("{cfg:?}").contains("env:CS"));
    }

    #[test]
    fn every_error_names_its_key() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "\"/results\"\nid",
                "\"results\"\nid",
                "account.records",
                "not a JSON pointer",
            ),
            ("id = \"/id\"", "id = \"\"", "account.id", "whole document"),
            (
                "modified = \"/updatedAt\"",
                "modified = \"/a~2\"",
                "account.modified",
                "~0",
            ),
            (
                "next = \"/paging/next/after\"\n",
                "",
                "paging.next",
                "required",
            ),
            (
                "style = \"cursor\"",
                "style = \"cursor\"\ndone = \"x\"",
                "paging.done",
                "JSON pointer",
            ),
            (
                "style = \"cursor\"\nnext = \"/paging/next/after\"",
                "style = \"link_header\"",
                "account.list_url",
                "{cursor} has no value",
            ),
            (
                "style = \"cursor\"\nnext = \"/paging/next/after\"",
                "style = \"offset\"",
                "account.list_url",
                "{cursor} has no value",
            ),
            (
                "&properties={fields}",
                "&properties={colour}",
                "account.list_url",
                "unknown placeholder {colour}",
            ),
            (
                "limit={page_size}&after={cursor}&properties",
                "limit={page_size}&properties",
                "account.list_url",
                "must use {cursor}",
            ),
            (
                "&since={modified_since}",
                "",
                "account.since_url",
                "must use {modified_since}",
            ),
            (
                "updated_after={modified_since}",
                "q=x>{modified_since}",
                "contact.list_url",
                "whole value",
            ),
            (
                "after={cursor}&properties",
                "after=x{cursor}&properties",
                "account.list_url",
                "whole value",
            ),
            (
                "/companies/batch?ids={ids}",
                "/companies/batch",
                "account.fetch_url",
                "exactly one of {ids} and {id}",
            ),
            (
                "/companies/batch?ids={ids}",
                "/companies/batch?ids={ids}&one={id}",
                "account.fetch_url",
                "exactly one",
            ),
            (
                "/companies/batch?ids={ids}",
                "/companies/batch?ids={ids}&s={modified_since}",
                "account.fetch_url",
                "has no value here",
            ),
            (
                "fetch_url = \"/contacts/{id}\"",
                "fetch_url = \"/contacts/{id}\"\nfetch_batch = 5",
                "contact.fetch_batch",
                "one id per request",
            ),
            (
                "fetch_batch = 100",
                "fetch_batch = 0",
                "account.fetch_batch",
                "at least 1",
            ),
            (
                "fetch_url = \"/contacts/{id}\"",
                "fetch_records = \"/x\"",
                "contact.fetch_records",
                "needs fetch_url",
            ),
            (
                "https://api.example.com/v2",
                "ftp://api.example.com/v2",
                "base_url",
                "http(s)",
            ),
            (
                "https://api.example.com/v2",
                "http://api.example.com/v2",
                "base_url",
                "https is required",
            ),
            (
                "https://api.example.com/v2",
                "https://api.example.com/v2?key=1",
                "base_url",
                "no query",
            ),
            (
                "https://api.example.com/v2",
                "https://u:p@api.example.com/v2",
                "base_url",
                "credentials",
            ),
            (
                "https://api.example.com/v2",
                "not a url",
                "base_url",
                "not a URL",
            ),
            (
                "token = \"tok-123\"",
                "",
                "credentials.token",
                "required for type = \"bearer\"",
            ),
            (
                "token = \"tok-123\"",
                "token = \"\"",
                "credentials.token",
                "empty",
            ),
            (
                "token = \"tok-123\"",
                "token = \"t\"\npassword = \"p\"",
                "credentials.password",
                "not used by type = \"bearer\"",
            ),
            (
                "type = \"bearer\"",
                "type = \"basic\"\nuser = \"a:b\"\npassword = \"p\"",
                "credentials.token",
                "not used",
            ),
            (
                "type = \"bearer\"\ntoken = \"tok-123\"",
                "type = \"header\"\nname = \"bad name\"\nvalue = \"v\"",
                "credentials.name",
                "header name",
            ),
            (
                "type = \"bearer\"\ntoken = \"tok-123\"",
                "type = \"oauth_client_credentials\"\ntoken_url = \"http://login.example.com/t\"\nclient_id = \"i\"\nclient_secret = \"s\"",
                "credentials.token_url",
                "https",
            ),
            (
                "type = \"bearer\"\ntoken = \"tok-123\"",
                "type = \"oauth_client_credentials\"\ntoken_url = \"https://l/t\"\nclient_id = \"i\"\nclient_secret = \"s\"\nclient_auth = \"jwt\"",
                "credentials.client_auth",
                "body or basic",
            ),
            (
                "type = \"bearer\"\ntoken = \"tok-123\"",
                "token = \"tok-123\"",
                "credentials.type",
                "required",
            ),
            ("style = \"cursor\"\n", "", "paging.style", "required"),
            (
                "\"epoch_millis\"",
                "\"julian\"",
                "modified_since_format",
                "strftime",
            ),
            (
                "\"epoch_millis\"",
                "\"%Y-%Q\"",
                "modified_since_format",
                "not a valid strftime",
            ),
            (
                "\"epoch_millis\"",
                "\"epoch_millis\"\nmax_page_size = 0",
                "max_page_size",
                "at least 1",
            ),
            (
                "\"epoch_millis\"",
                "\"epoch_millis\"\nheaders = { Authorization = \"x\" }",
                "headers.Authorization",
                "[credentials]",
            ),
            (
                "\"epoch_millis\"",
                "\"epoch_millis\"\nheaders = { \"a b\" = \"x\" }",
                "headers.a b",
                "header name",
            ),
            (
                "fetch_batch = 100",
                "extra_query = { \"limit\" = \"{page_size}\" }",
                "account.extra_query.limit",
                "only {fields}",
            ),
            (
                "fetch_batch = 100",
                "extra_query = { \"after\" = \"1\" }",
                "account.extra_query.after",
                "already a parameter",
            ),
            (
                "fetch_batch = 100",
                "id_chars = \"-,\"",
                "account.id_chars",
                "printable",
            ),
            (
                "/companies/batch?ids={ids}",
                "https://evil.example.com/batch?ids={ids}",
                "account.fetch_url",
                "origin",
            ),
            (
                "next = \"/paging/next/after\"",
                "next = \"/n\"\ncursor_expired = { status = 200 }",
                "paging.cursor_expired.status",
                "400-599",
            ),
        ];
        for (from, to, key, says) in cases {
            let e = broken(from, to);
            assert_eq!(&e.key, key, "{from} → {to}: {e}");
            assert!(e.message.contains(says), "{from} → {to}: {e}");
        }
    }

    #[test]
    fn missing_required_keys_are_named() {
        assert_eq!(
            key_of("list_url = \"/contacts", "since_url = \"/contacts"),
            "contact.list_url"
        );
        for (from, key) in [
            (
                "records = \"/results\"\nid = \"/id\"\nmodified = \"/updatedAt\"",
                "account.records",
            ),
            (
                "list_url = \"/companies?limit={page_size}&after={cursor}&properties={fields}\"",
                "account.list_url",
            ),
        ] {
            let e = broken(from, "");
            assert_eq!(e.key, key, "{e}");
            assert!(e.message.contains("required"), "{e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_serde() {
        let e = parse(&GOOD.replace("records = \"/results\"\nid", "recods = \"/results\"\nid"))
            .unwrap_err();
        assert!(e.contains("recods"), "{e}");
        let e = parse(&GOOD.replace("type = \"bearer\"", "type = \"digest\"")).unwrap_err();
        assert!(e.contains("digest"), "{e}");
    }

    #[test]
    fn link_styles_take_no_body_pointers() {
        let link = GOOD
            .replace(
                "style = \"cursor\"\nnext = \"/paging/next/after\"",
                "style = \"link_header\"\nnext = \"/n\"",
            )
            .replace("&after={cursor}", "");
        let e = parse(&link).unwrap().validate().unwrap_err();
        assert_eq!(e.key, "paging.next");
        let ok = link.replace("next = \"/n\"", "total = \"/total\"");
        parse(&ok).unwrap().validate().unwrap();
    }

    #[test]
    fn time_formats() {
        let t = DateTime::parse_from_rfc3339("2024-01-16T17:43:01.250Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(TimeFormat::Rfc3339.format(t), "2024-01-16T17:43:01Z");
        assert_eq!(
            TimeFormat::Rfc3339Millis.format(t),
            "2024-01-16T17:43:01.250Z"
        );
        assert_eq!(TimeFormat::EpochSeconds.format(t), "1705426981");
        assert_eq!(TimeFormat::EpochMillis.format(t), "1705426981250");
        assert_eq!(
            TimeFormat::parse("%Y-%m-%d %H:%M:%S").unwrap().format(t),
            "2024-01-16 17:43:01"
        );
    }
}
