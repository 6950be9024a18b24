//! What a user writes under `[sources.connection]` for a CRM read through its REST API alone.
//! Checked and compiled into what the client runs by the `plan` module.
//!
//! Optional keys of nested tables are `Option`s checked there rather than by serde, so a
//! missing or misplaced key is reported with its full path (`paging.next: required for style =
//! "cursor"`), not as a bare "missing field".

use std::collections::BTreeMap;
use std::fmt;

use mapping::ConfigError;
use serde::Deserialize;

/// A generic REST CRM: where it is, how to authenticate, how it pages, and per entity where
/// the records are.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct GenericConfig {
    /// The API root, e.g. `https://api.example.com/v2`. Relative templates extend its path;
    /// every request, and every next-page link followed, stays on its origin.
    pub base_url: String,
    pub credentials: Credentials,
    pub paging: Paging,
    /// How `{modified_since}` is written: `rfc3339` (default, `2024-01-16T17:43:01Z`),
    /// `rfc3339_millis`, `epoch_seconds`, `epoch_millis`, or a chrono strftime pattern such as
    /// `%Y-%m-%d %H:%M:%S` (UTC). Times are truncated, never rounded up, so a `>=` filter
    /// keeps every record at or after the time.
    #[serde(default)]
    pub modified_since_format: Option<String>,
    /// Whether the list (and `since_url`) returns records in ascending last-modified order. If
    /// so, a walk whose cursor died resumes at its checkpoint's time; if not, it restarts.
    #[serde(default)]
    pub sorted_by_modified: bool,
    /// The largest page the CRM serves; `{page_size}` never exceeds it.
    #[serde(default)]
    pub max_page_size: Option<u32>,
    /// Per-request timeout in seconds (default 60).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Headers sent with every API request, e.g. `Accept` or an API version header. Secrets
    /// belong in `credentials`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub account: EntityConfig,
    pub contact: EntityConfig,
}

/// `[credentials]`: `type` and the keys that type uses.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Credentials {
    #[serde(rename = "type")]
    pub kind: Option<CredentialsKind>,
    /// `basic`.
    pub user: Option<String>,
    /// `basic` (secret).
    pub password: Option<String>,
    /// `bearer` (secret).
    pub token: Option<String>,
    /// `header`: the header name, e.g. `X-Api-Key`.
    pub name: Option<String>,
    /// `header` (secret).
    pub value: Option<String>,
    /// `oauth_client_credentials`: the token endpoint.
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    /// `oauth_client_credentials` (secret).
    pub client_secret: Option<String>,
    pub scope: Option<String>,
    /// `oauth_client_credentials`: `body` (default: client_id and client_secret in the form) or
    /// `basic` (HTTP Basic, RFC 6749 section 2.3.1).
    pub client_auth: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialsKind {
    Basic,
    Bearer,
    Header,
    OauthClientCredentials,
}

impl CredentialsKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CredentialsKind::Basic => "basic",
            CredentialsKind::Bearer => "bearer",
            CredentialsKind::Header => "header",
            CredentialsKind::OauthClientCredentials => "oauth_client_credentials",
        }
    }
}

/// `[paging]`: `style` and the pointers that style reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Paging {
    pub style: Option<PagingStyle>,
    /// `next_link_body`: pointer to the next page's URL or path; `cursor`: pointer to the next
    /// cursor. Absent, null or empty: the last page.
    pub next: Option<String>,
    /// Optional pointer to a boolean that is true on the last page (`next_link_body`, `cursor`).
    pub done: Option<String>,
    /// Optional pointer to a boolean that is false on the last page (`next_link_body`,
    /// `cursor`).
    pub has_more: Option<String>,
    /// Optional pointer to the number of records in the walk; without it the `X-Total-Count`
    /// header is read. `offset` paging ends when the offset reaches it.
    pub total: Option<String>,
    /// An error that means "this cursor or next link expired": the pipeline then resumes from
    /// the checkpoint. E.g. `{ status = 400, body_contains = "INVALID_QUERY_LOCATOR" }`.
    pub cursor_expired: Option<ErrorMatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PagingStyle {
    /// The next URL is in the body (Salesforce `nextRecordsUrl`, HubSpot `paging.next.link`).
    NextLinkBody,
    /// The next URL is the RFC 8288 `Link` header's `rel="next"` (ServiceNow, GitHub).
    LinkHeader,
    /// An opaque cursor in the body goes into `{cursor}` of the next request.
    Cursor,
    /// `{offset}` grows by the records received.
    Offset,
}

impl PagingStyle {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PagingStyle::NextLinkBody => "next_link_body",
            PagingStyle::LinkHeader => "link_header",
            PagingStyle::Cursor => "cursor",
            PagingStyle::Offset => "offset",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ErrorMatch {
    pub status: u16,
    #[serde(default)]
    pub body_contains: Option<String>,
}

/// `[account]` / `[contact]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct EntityConfig {
    /// The list request: `{page_size}`, `{offset}`, `{cursor}`, `{modified_since}`, `{fields}`.
    pub list_url: Option<String>,
    /// The list request for a catch-up pass (records modified at or after `{modified_since}`).
    /// Without it, `{modified_since}` in `list_url` is used (left out on full walks); with
    /// neither, a catch-up pass is a full walk.
    pub since_url: Option<String>,
    /// Pointer to the array of records in a list response (`""`: the body is the array).
    pub records: Option<String>,
    /// Pointer to a record's id inside the record (a string or a number).
    pub id: Option<String>,
    /// Pointer to a record's last-modified timestamp inside the record.
    pub modified: Option<String>,
    /// Fetch by id: `{ids}` (comma-joined, in batches of `fetch_batch`) or `{id}` (one request
    /// per id; 404 means missing); `{fields}`, `{count}` too.
    pub fetch_url: Option<String>,
    /// Pointer to the records of a fetch response: default `records` for `{ids}`, `""` (the
    /// body) for `{id}`. An object there is one record; nulls in an array are skipped.
    pub fetch_records: Option<String>,
    /// Ids per `{ids}` request (default 50).
    pub fetch_batch: Option<usize>,
    /// Query parameters added to every list and fetch request (not to next links the CRM
    /// gives); values may use `{fields}`.
    #[serde(default)]
    pub extra_query: BTreeMap<String, String>,
    /// Field names the mapping reads that are not fields of this API (left out of `{fields}`).
    #[serde(default)]
    pub skip_fields: Vec<String>,
    /// If set, ids may hold only ASCII letters, digits and these characters; any other id is
    /// missing by definition and never sent (keeps query syntax out of `{ids}` filters).
    pub id_chars: Option<String>,
}

impl fmt::Debug for GenericConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenericConfig")
            .field("base_url", &self.base_url)
            .field("credentials", &self.credentials)
            .field("paging", &self.paging)
            .field("account", &self.account)
            .field("contact", &self.contact)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("Credentials")
            .field("type", &self.kind)
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("token", &hidden(&self.token))
            .field("name", &self.name)
            .field("value", &hidden(&self.value))
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &hidden(&self.client_secret))
            .field("scope", &self.scope)
            .finish()
    }
}

impl GenericConfig {
    /// Checks everything that can be checked without a network; every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.compile().map(|_| ())
    }

    /// The secret values, named by key, so the configuration layer can replace `env:NAME` /
    /// `file:PATH` references with what they resolve to before the client is built.
    pub fn secrets_mut(&mut self) -> Vec<(&'static str, &mut String)> {
        let c = &mut self.credentials;
        [
            ("credentials.password", c.password.as_mut()),
            ("credentials.token", c.token.as_mut()),
            ("credentials.value", c.value.as_mut()),
            ("credentials.client_secret", c.client_secret.as_mut()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}
