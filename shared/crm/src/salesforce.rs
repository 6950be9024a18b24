//! Salesforce REST API reader: a [`CrmReader`] over reqwest.
//!
//! Why it looks the way it does:
//! - Auth is the OAuth 2.0 client credentials flow (`POST {token_url}` with
//!   `grant_type=client_credentials`, Salesforce Help "OAuth 2.0 Client Credentials Flow for
//!   Server-to-Server Integration"). The token is cached; a 401 `INVALID_SESSION_ID` ("Status
//!   Codes and Error Responses": the session ID or OAuth token expired or is invalid) drops it and
//!   re-authenticates once. Every API call goes to the returned `instance_url`, never the login
//!   host.
//! - Listing runs SOQL `... ORDER BY SystemModstamp, Id` and follows `nextRecordsUrl` ("Query
//!   More Results") as the page cursor. Cursors die (`INVALID_QUERY_LOCATOR`, Salesforce Help
//!   "'INVALID_QUERY_LOCATOR' Salesforce Error"), so every page also carries a keyset checkpoint
//!   `(SystemModstamp, Id)` and a walk resumes with
//!   `WHERE (SystemModstamp > :t OR (SystemModstamp = :t AND Id > :id))`.
//! - A `nextRecordsUrl` is a path on the instance; an absolute one on another host is refused,
//!   because following it would send our bearer token there.
//! - The daily allocation shows in `Sforce-Limit-Info: api-usage=N/M` ("Limit Info Header"); above
//!   90 % the client logs and slows down; 403 `REQUEST_LIMIT_EXCEEDED` is a pause, not a failure.
//! - Secrets (client secret, access token) never appear in errors, logs or `Debug` output.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use mapping::Entity;
use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::http::{check_origin, check_returned_origin, checkpoint_of, follow_link, http_client};
use crate::reader::{CrmError, CrmReader, Fetched, FieldCheck, Page, PageRequest};

/// Where a token response may send us besides the configured login host's own domain: My Domain
/// URLs are `https://MyDomainName.my.salesforce.com` (sandboxes
/// `MyDomainName--SandboxName.sandbox.my.salesforce.com`), older instance URLs
/// `https://InstanceName.salesforce.com` (Salesforce Help, "My Domain URL Formats").
const SALESFORCE_DOMAINS: &[&str] = &["salesforce.com"];

/// Default REST API version (Winter '25).
pub const DEFAULT_API_VERSION: &str = "62.0";

/// Ids per `Id IN (...)` query: keeps the URL far below the ~16 KB request-line limits.
const IDS_PER_QUERY: usize = 200;

/// Pause after a daily-allocation 403: the allocation is a rolling 24 hours, so retrying
/// within minutes rarely helps.
const DAILY_LIMIT_PAUSE: Duration = Duration::from_secs(15 * 60);
/// Pause after a concurrent-request 403 (`ConcurrentPerOrgLongTxn Limit exceeded`).
const CONCURRENCY_PAUSE: Duration = Duration::from_secs(30);

/// How the integration user's session is obtained.
#[derive(Clone)]
pub enum SalesforceAuth {
    /// OAuth 2.0 client credentials: the connected app's consumer secret; the session runs as
    /// the app's "Run As" user.
    ClientCredentials { client_secret: String },
    /// OAuth 2.0 JWT bearer: an RS256 assertion signed with the private key whose certificate is
    /// uploaded to the connected app; no secret crosses the wire. `audience` is
    /// `https://login.salesforce.com` (production) or `https://test.salesforce.com` (sandbox).
    JwtBearer {
        username: String,
        private_key_pem: String,
        audience: String,
    },
}

/// Where and how to authenticate.
#[derive(Clone)]
pub struct SalesforceSettings {
    /// `https://<MyDomain>.my.salesforce.com/services/oauth2/token`.
    pub token_url: String,
    /// Consumer key of the connected app (the JWT's `iss`).
    pub client_id: String,
    pub auth: SalesforceAuth,
    /// REST API version without the `v`, e.g. `62.0`.
    pub api_version: String,
    /// How long to pause before a request when the org has used more than 90 % of its daily
    /// allocation.
    pub high_usage_pause: Duration,
}

impl SalesforceSettings {
    /// Client credentials flow.
    pub fn new(token_url: &str, client_id: &str, client_secret: &str) -> Self {
        Self::with_auth(
            token_url,
            client_id,
            SalesforceAuth::ClientCredentials {
                client_secret: client_secret.to_string(),
            },
        )
    }

    pub fn with_auth(token_url: &str, client_id: &str, auth: SalesforceAuth) -> Self {
        SalesforceSettings {
            token_url: token_url.to_string(),
            client_id: client_id.to_string(),
            auth,
            api_version: DEFAULT_API_VERSION.to_string(),
            high_usage_pause: Duration::from_secs(1),
        }
    }
}

impl fmt::Debug for SalesforceSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SalesforceSettings")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field(
                "auth",
                &match &self.auth {
                    SalesforceAuth::ClientCredentials { .. } => "client credentials (redacted)",
                    SalesforceAuth::JwtBearer { .. } => "JWT bearer (redacted)",
                },
            )
            .field("api_version", &self.api_version)
            .finish()
    }
}

/// A live session: the token and the instance it is valid on.
struct Session {
    token: String,
    instance: Url,
}

pub struct SalesforceClient {
    http: reqwest::Client,
    settings: SalesforceSettings,
    token_url: Url,
    /// The JWT bearer flow's signing key, parsed once.
    jwt_key: Option<jsonwebtoken::EncodingKey>,
    fields: HashMap<Entity, Vec<String>>,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    usage_used: AtomicU64,
    usage_limit: AtomicU64,
}

impl fmt::Debug for SalesforceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SalesforceClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Names the mapping reads that are not SOQL columns: the Change Data Capture envelope, and
/// compound address fields whose components (`BillingStreet`, ...) are selected instead.
const NOT_COLUMNS: &[&str] = &[
    "ChangeEventHeader",
    "BillingAddress",
    "ShippingAddress",
    "MailingAddress",
    "OtherAddress",
];

fn object_name(entity: Entity) -> &'static str {
    match entity {
        Entity::Account => "Account",
        Entity::Contact => "Contact",
    }
}

impl SalesforceClient {
    /// `fields`: per entity, the Salesforce fields the caller needs (the pipeline passes
    /// `Mapper::source_fields`). Id, SystemModstamp (and AccountId for contacts) are always read.
    pub fn new(
        settings: SalesforceSettings,
        fields: HashMap<Entity, Vec<String>>,
    ) -> Result<Self, CrmError> {
        let token_url = Url::parse(&settings.token_url)
            .map_err(|e| CrmError::Permanent(format!("invalid Salesforce token URL: {e}")))?;
        check_origin(&token_url, "Salesforce")?;
        let jwt_key = match &settings.auth {
            SalesforceAuth::ClientCredentials { .. } => None,
            SalesforceAuth::JwtBearer {
                private_key_pem, ..
            } => Some(
                jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.as_bytes()).map_err(
                    |_| {
                        CrmError::Permanent(
                            "the Salesforce JWT bearer private key is not an RSA key in PEM".into(),
                        )
                    },
                )?,
            ),
        };
        let http = http_client(Duration::from_secs(120))?;
        Ok(SalesforceClient {
            http,
            settings,
            token_url,
            jwt_key,
            fields,
            session: tokio::sync::Mutex::new(None),
            usage_used: AtomicU64::new(0),
            usage_limit: AtomicU64::new(0),
        })
    }

    /// The last `Sforce-Limit-Info` reading: (calls used, daily limit); (0, 0) before any call.
    pub fn api_usage(&self) -> (u64, u64) {
        (
            self.usage_used.load(Ordering::Relaxed),
            self.usage_limit.load(Ordering::Relaxed),
        )
    }

    /// The SOQL select list of an entity: requested fields that are columns, plus the ones
    /// paging and parent binding need, each once (field names are case-insensitive).
    fn select_list(&self, entity: Entity) -> Vec<String> {
        let mut out: Vec<String> = vec!["Id".into(), "SystemModstamp".into()];
        if entity == Entity::Contact {
            out.push("AccountId".into());
        }
        for f in self.fields.get(&entity).into_iter().flatten() {
            let is_identifier = !f.is_empty()
                && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && f.starts_with(|c: char| c.is_ascii_alphabetic());
            if !is_identifier {
                // Anything else would be SOQL syntax, not a field name.
                tracing::warn!(field = %f, "skipping a Salesforce field name that is not an identifier");
                continue;
            }
            if NOT_COLUMNS.iter().any(|n| n.eq_ignore_ascii_case(f)) {
                continue;
            }
            if !out.iter().any(|o| o.eq_ignore_ascii_case(f)) {
                out.push(f.clone());
            }
        }
        out
    }

    fn soql(&self, entity: Entity, req: &PageRequest) -> String {
        let mut filters = Vec::new();
        if let Some(cp) = &req.checkpoint {
            let t = soql_datetime(cp.modified_at);
            filters.push(format!(
                "(SystemModstamp > {t} OR (SystemModstamp = {t} AND Id > {}))",
                quote(&cp.id)
            ));
        }
        if let Some(since) = req.modified_since {
            filters.push(format!("SystemModstamp >= {}", soql_datetime(since)));
        }
        let mut q = format!(
            "SELECT {} FROM {}",
            self.select_list(entity).join(", "),
            object_name(entity)
        );
        if !filters.is_empty() {
            q.push_str(" WHERE ");
            q.push_str(&filters.join(" AND "));
        }
        q.push_str(" ORDER BY SystemModstamp, Id");
        q
    }

    /// The cached session, or a new one from the token endpoint.
    async fn session(&self) -> Result<Arc<Session>, CrmError> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref() {
            return Ok(s.clone());
        }
        let s = Arc::new(self.authenticate().await?);
        *guard = Some(s.clone());
        Ok(s)
    }

    /// Forgets `stale` (only if no other task already replaced it).
    async fn invalidate(&self, stale: &Arc<Session>) {
        let mut guard = self.session.lock().await;
        if guard.as_ref().is_some_and(|s| Arc::ptr_eq(s, stale)) {
            *guard = None;
        }
    }

    /// The token request's form for the configured flow.
    fn token_form(&self) -> Result<Vec<(&'static str, String)>, CrmError> {
        Ok(match (&self.settings.auth, &self.jwt_key) {
            (SalesforceAuth::ClientCredentials { client_secret }, _) => vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", self.settings.client_id.clone()),
                ("client_secret", client_secret.clone()),
            ],
            (
                SalesforceAuth::JwtBearer {
                    username, audience, ..
                },
                Some(key),
            ) => {
                // Salesforce wants `exp` within three minutes; two leaves room for clock skew.
                let claims = serde_json::json!({
                    "iss": self.settings.client_id,
                    "sub": username,
                    "aud": audience,
                    "exp": chrono::Utc::now().timestamp() + 120,
                });
                let jwt = jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
                    &claims,
                    key,
                )
                .map_err(|_| CrmError::Permanent("cannot sign the Salesforce JWT".into()))?;
                vec![
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                    ),
                    ("assertion", jwt),
                ]
            }
            (SalesforceAuth::JwtBearer { .. }, None) => {
                return Err(CrmError::Permanent("no JWT signing key".into()));
            }
        })
    }

    async fn authenticate(&self) -> Result<Session, CrmError> {
        let form = self.token_form()?;
        let resp = self
            .http
            .post(self.token_url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| CrmError::Unavailable(format!("Salesforce token endpoint: {e}")))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            // RFC 6749 error fields; Salesforce never echoes the secret in them.
            let err = body.get("error").and_then(Value::as_str).unwrap_or("");
            let desc = body
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(if status.is_server_error() {
                CrmError::Unavailable(format!("Salesforce token endpoint answered {status}"))
            } else {
                CrmError::Access(format!(
                    "Salesforce refused the {} ({status} {err}: {desc})",
                    match self.settings.auth {
                        SalesforceAuth::ClientCredentials { .. } => "client credentials",
                        SalesforceAuth::JwtBearer { .. } => "JWT bearer assertion",
                    }
                ))
            });
        }
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| CrmError::Permanent("token response without access_token".into()))?;
        let instance = body
            .get("instance_url")
            .and_then(Value::as_str)
            .ok_or_else(|| CrmError::Permanent("token response without instance_url".into()))?;
        let instance = Url::parse(instance)
            .map_err(|e| CrmError::Permanent(format!("token response instance_url: {e}")))?;
        // Every later call, bearer token included, goes to this URL: it must be Salesforce's
        // (or the configured login host's domain), not whatever a token response says.
        check_returned_origin(
            &self.token_url,
            &instance,
            SALESFORCE_DOMAINS,
            "token response instance_url",
            "Salesforce",
        )?;
        tracing::info!(instance = %instance, "authenticated to Salesforce");
        Ok(Session {
            token: token.to_string(),
            instance,
        })
    }

    /// GETs a URL built on the session's instance. Re-authenticates once on 401.
    async fn get(
        &self,
        target: impl Fn(&Session) -> Result<Url, CrmError>,
        batch: Option<u32>,
    ) -> Result<Value, CrmError> {
        self.get_coded(target, batch).await.map_err(|(e, _)| e)
    }

    /// A read of `entity` (query, query more): a refusal because the integration user may not
    /// read a field or the object (`INVALID_FIELD`, `INVALID_TYPE`, `INSUFFICIENT_ACCESS`:
    /// field-level security hides a field exactly as if it did not exist) names every mapped
    /// field it cannot read, found through describe, and says how to grant them.
    async fn read(
        &self,
        entity: Entity,
        target: impl Fn(&Session) -> Result<Url, CrmError>,
        batch: Option<u32>,
    ) -> Result<Value, CrmError> {
        match self.get_coded(target, batch).await {
            Ok(v) => Ok(v),
            Err((e, code)) if ACCESS_CODES.contains(&code.as_str()) => {
                let wanted: Vec<String> = self.select_list(entity);
                let hidden = match self.check(entity, &wanted).await {
                    Ok(fc) if !fc.unreadable.is_empty() => fc.unreadable,
                    _ => Vec::new(),
                };
                Err(unreadable_error(object_name(entity), &hidden, &code, &e))
            }
            Err((e, _)) => Err(e),
        }
    }

    /// As [`SalesforceClient::get`], with the error code Salesforce gave.
    async fn get_coded(
        &self,
        target: impl Fn(&Session) -> Result<Url, CrmError>,
        batch: Option<u32>,
    ) -> Result<Value, (CrmError, String)> {
        let plain = |e: CrmError| (e, String::new());
        for attempt in 0..2 {
            let s = self.session().await.map_err(plain)?;
            let url = target(&s).map_err(plain)?;
            self.pace().await;
            let mut rb = self.http.get(url).bearer_auth(&s.token);
            if let Some(n) = batch {
                rb = rb.header("Sforce-Query-Options", format!("batchSize={n}"));
            }
            let resp = rb.send().await.map_err(|e| {
                plain(CrmError::Unavailable(format!(
                    "Salesforce: {}",
                    e.without_url()
                )))
            })?;
            self.observe_usage(resp.headers());
            let status = resp.status();
            let text = resp.text().await.map_err(|e| {
                plain(CrmError::Unavailable(format!(
                    "Salesforce: {}",
                    e.without_url()
                )))
            })?;
            if status.is_success() {
                return serde_json::from_str(&text).map_err(|e| {
                    plain(CrmError::Permanent(format!(
                        "unreadable Salesforce response: {e}"
                    )))
                });
            }
            let (code, message) = api_error(&text);
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                tracing::info!(code = %code, "Salesforce session rejected; re-authenticating");
                self.invalidate(&s).await;
                continue;
            }
            return Err((classify(status, &code, &message), code));
        }
        Err(plain(CrmError::Access(
            "Salesforce rejected a fresh session (INVALID_SESSION_ID)".into(),
        )))
    }

    /// Slows down while the org is above 90 % of its daily allocation.
    async fn pace(&self) {
        let (used, limit) = self.api_usage();
        if limit > 0 && used.saturating_mul(10) > limit.saturating_mul(9) {
            tracing::warn!(
                used,
                limit,
                "Salesforce API usage above 90% of the daily allocation; slowing down"
            );
            tokio::time::sleep(self.settings.high_usage_pause).await;
        }
    }

    fn observe_usage(&self, headers: &HeaderMap) {
        if let Some((used, limit)) = headers
            .get("Sforce-Limit-Info")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_usage)
        {
            self.usage_used.store(used, Ordering::Relaxed);
            self.usage_limit.store(limit, Ordering::Relaxed);
        }
    }

    fn query_url(&self, s: &Session, soql: &str) -> Result<Url, CrmError> {
        let mut url = s
            .instance
            .join(&format!(
                "/services/data/v{}/query",
                self.settings.api_version
            ))
            .map_err(|e| CrmError::Permanent(format!("query URL: {e}")))?;
        url.query_pairs_mut().append_pair("q", soql);
        Ok(url)
    }

    /// Runs a query over `entity` and follows it to the end (for bounded queries such as
    /// `Id IN (...)`).
    async fn query_all_pages(&self, entity: Entity, soql: &str) -> Result<Vec<Value>, CrmError> {
        let mut body = self.read(entity, |s| self.query_url(s, soql), None).await?;
        let mut out = Vec::new();
        loop {
            let (records, next, _, _) = parse_page(&mut body)?;
            out.extend(records);
            match next {
                Some(n) => body = self.read(entity, |s| next_url(s, &n), None).await?,
                None => return Ok(out),
            }
        }
    }
}

#[async_trait]
impl CrmReader for SalesforceClient {
    async fn list_page(&self, entity: Entity, req: &PageRequest) -> Result<Page, CrmError> {
        // 200..2,000 is what Salesforce accepts ("Query Options Header"); it may send fewer.
        let batch = req.page_size.clamp(200, 2000);
        let mut body = match &req.cursor {
            Some(c) => self.read(entity, |s| next_url(s, c), Some(batch)).await?,
            None => {
                let soql = self.soql(entity, req);
                self.read(entity, |s| self.query_url(s, &soql), Some(batch))
                    .await?
            }
        };
        let (records, next, done, total) = parse_page(&mut body)?;
        if let Some(n) = &next {
            // Refuse a poisoned cursor now, before it is queued for the next invocation.
            let s = self.session().await?;
            next_url(&s, n)?;
        }
        if !done && next.is_none() {
            return Err(CrmError::Permanent(
                "Salesforce page has done=false but no nextRecordsUrl".into(),
            ));
        }
        let checkpoint = match records.last() {
            Some(r) => Some(checkpoint_of(r, "Id", "SystemModstamp", "Salesforce")?),
            None => req.checkpoint.clone(),
        };
        Ok(Page {
            records,
            cursor: next,
            checkpoint,
            more: !done,
            total,
        })
    }

    /// "sObject Describe": `GET /services/data/vXX.X/sobjects/Account/describe` lists the fields
    /// this user can see (field-level security hides the others), without reading a record.
    async fn check(&self, entity: Entity, fields: &[String]) -> Result<FieldCheck, CrmError> {
        let object = object_name(entity);
        let body = self
            .get(
                |s| {
                    s.instance
                        .join(&format!(
                            "/services/data/v{}/sobjects/{object}/describe",
                            self.settings.api_version
                        ))
                        .map_err(|e| CrmError::Permanent(format!("describe URL: {e}")))
                },
                None,
            )
            .await?;
        let known: Vec<&str> = body["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["name"].as_str())
            .collect();
        let unreadable = fields
            .iter()
            .filter(|f| !NOT_COLUMNS.iter().any(|n| n.eq_ignore_ascii_case(f)))
            .filter(|f| !known.iter().any(|k| k.eq_ignore_ascii_case(f)))
            .cloned()
            .collect();
        Ok(FieldCheck {
            unreadable,
            authoritative: true,
            sampled: false,
        })
    }

    async fn fetch_by_ids(&self, entity: Entity, ids: &[String]) -> Result<Fetched, CrmError> {
        // Ids that are not ids are missing by definition (and never reach SOQL); 15-character
        // ids are asked for in their 18-character form, the one records carry.
        let canonical: Vec<Option<String>> = ids
            .iter()
            .map(|id| mapping::identity::salesforce_id18(id).ok())
            .collect();
        let valid: Vec<&String> = canonical.iter().flatten().collect();
        let mut found: HashMap<String, Value> = HashMap::new();
        let select = self.select_list(entity).join(", ");
        for chunk in valid.chunks(IDS_PER_QUERY) {
            let list: Vec<String> = chunk.iter().map(|c| quote(c)).collect();
            let soql = format!(
                "SELECT {select} FROM {} WHERE Id IN ({})",
                object_name(entity),
                list.join(", ")
            );
            for r in self.query_all_pages(entity, &soql).await? {
                if let Some(id) = r.get("Id").and_then(Value::as_str) {
                    found.insert(id.to_string(), r);
                }
            }
        }
        let mut out = Fetched::default();
        for (orig, canon) in ids.iter().zip(&canonical) {
            match canon.as_ref().and_then(|c| found.get(c)) {
                Some(r) => out.records.push(r.clone()),
                None => out.missing.push(orig.clone()),
            }
        }
        Ok(out)
    }

    /// "sObject Get Deleted" (`/sobjects/{object}/deleted/?start=&end=`): the org's delete log,
    /// which Salesforce keeps 15 days; an older `since` is `INVALID_REPLICATION_DATE`, a
    /// permanent error, so a catch-up pass that started too long ago says so instead of missing
    /// deletions.
    async fn list_deleted(
        &self,
        entity: Entity,
        since: DateTime<Utc>,
    ) -> Result<Option<Vec<String>>, CrmError> {
        // The window is in whole minutes and must end after it starts; ending a minute ahead
        // covers deletions made this minute.
        let start = replication_date(since);
        let end = replication_date(Utc::now() + chrono::Duration::minutes(1));
        let body = self
            .get(
                |s| {
                    let mut url = s
                        .instance
                        .join(&format!(
                            "/services/data/v{}/sobjects/{}/deleted/",
                            self.settings.api_version,
                            object_name(entity)
                        ))
                        .map_err(|e| CrmError::Permanent(format!("getDeleted URL: {e}")))?;
                    url.query_pairs_mut()
                        .append_pair("start", &start)
                        .append_pair("end", &end);
                    Ok(url)
                },
                None,
            )
            .await?;
        let records = body
            .get("deletedRecords")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                CrmError::Permanent("getDeleted response without deletedRecords".into())
            })?;
        records
            .iter()
            .map(|r| {
                r.get("id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| CrmError::Permanent("getDeleted record without id".into()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// `start`/`end` as getDeleted wants them: whole minutes in UTC.
fn replication_date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:00+00:00").to_string()
}

/// A `nextRecordsUrl` joined to the instance. Salesforce sends a path; an absolute URL is
/// accepted only on the instance's own origin, since following it sends our bearer token.
fn next_url(s: &Session, next: &str) -> Result<Url, CrmError> {
    follow_link(&s.instance, next, "/services/data/", "Salesforce")
}

type ParsedPage = (Vec<Value>, Option<String>, bool, Option<u64>);

/// `{totalSize, done, nextRecordsUrl?, records}` ("Execute a SOQL Query").
fn parse_page(body: &mut Value) -> Result<ParsedPage, CrmError> {
    let records = match body.get_mut("records").map(Value::take) {
        Some(Value::Array(a)) => a,
        _ => {
            return Err(CrmError::Permanent(
                "Salesforce query response without records".into(),
            ));
        }
    };
    let done = body.get("done").and_then(Value::as_bool).unwrap_or(true);
    let next = body
        .get("nextRecordsUrl")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let total = body.get("totalSize").and_then(Value::as_u64);
    Ok((records, next, done, total))
}

/// A SOQL dateTime literal, unquoted, UTC, with milliseconds: `2024-01-16T17:43:01.250Z`
/// ("Date Formats and Date Literals in WHERE"; REST "Valid Date and DateTime Formats" allows the
/// optional `.SSS`). Milliseconds matter: SystemModstamp has them, and a keyset bound rounded to
/// the second would skip or repeat rows.
fn soql_datetime(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A quoted SOQL string literal. Backslash and single quote are reserved and take a backslash
/// ("Reserved Characters"); control characters use the escapes of "Quoted String Escape
/// Sequences".
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `api-usage=10018/100000; api-bursts=1/750` → (10018, 100000).
fn parse_usage(v: &str) -> Option<(u64, u64)> {
    let part = v
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("api-usage="))?;
    let (used, limit) = part.split_once('/')?;
    Some((used.trim().parse().ok()?, limit.trim().parse().ok()?))
}

/// Refusals that mean the integration user may not read a field or an object the mapping needs
/// ("Status Codes and Error Responses"; SOAP API `ExceptionCode`).
const ACCESS_CODES: &[&str] = &["INVALID_FIELD", "INVALID_TYPE", "INSUFFICIENT_ACCESS"];

/// The error for a read refused for want of access: it names the fields (`Contact.Title`, or
/// the object when describe could not tell) and how to grant them. Not retryable: the same
/// read fails until the permission set changes.
fn unreadable_error(object: &str, hidden: &[String], code: &str, cause: &CrmError) -> CrmError {
    let what = if hidden.is_empty() {
        format!("{object} or a field of it the mapping reads")
    } else {
        hidden
            .iter()
            .map(|f| format!("{object}.{f}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let detail = match cause {
        CrmError::Permanent(m) | CrmError::Access(m) => m.lines().last().unwrap_or(m).to_string(),
        other => other.to_string(),
    };
    CrmError::Access(format!(
        "the Salesforce integration user cannot read {what} ({code}: {detail}); run `crm-sync connect salesforce --reconnect --config FILE` to grant the fields the mapping reads"
    ))
}

/// The first `{errorCode, message}` of an error body (a JSON array, "Status Codes and Error
/// Responses").
fn api_error(text: &str) -> (String, String) {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let first = v.get(0).unwrap_or(&v);
    let field = |k: &str| {
        first
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (field("errorCode"), field("message"))
}

fn classify(status: StatusCode, code: &str, message: &str) -> CrmError {
    match (status.as_u16(), code) {
        (400, "INVALID_QUERY_LOCATOR") => CrmError::CursorExpired,
        (403, "REQUEST_LIMIT_EXCEEDED") => {
            let pause = if message.contains("TotalRequests") {
                DAILY_LIMIT_PAUSE
            } else {
                CONCURRENCY_PAUSE
            };
            tracing::warn!(code, message, "Salesforce request limit reached; pausing");
            CrmError::RateLimited(pause)
        }
        (429, _) => CrmError::RateLimited(CONCURRENCY_PAUSE),
        // "The query has timed out" (API `ExceptionCode` QUERY_TIMEOUT): the org was busy or
        // the query slow this time; the same page asked again later can succeed.
        (400, "QUERY_TIMEOUT") => CrmError::Unavailable(format!("Salesforce {status} {code}")),
        (401 | 403, _) => CrmError::Access(format!("Salesforce {status} {code}: {message}")),
        (s, _) if s >= 500 => CrmError::Unavailable(format!("Salesforce {status} {code}")),
        _ => CrmError::Permanent(format!("Salesforce {status} {code}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::reader::Checkpoint;

    #[test]
    fn a_query_timeout_is_retried_and_a_bad_query_is_not() {
        let timeout = classify(StatusCode::BAD_REQUEST, "QUERY_TIMEOUT", "running too long");
        assert!(timeout.is_retryable(), "{timeout}");
        let malformed = classify(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "unexpected token",
        );
        assert!(!malformed.is_retryable(), "{malformed}");
        let busy = classify(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "ConcurrentPerOrgLongTxn Limit exceeded.",
        );
        assert!(matches!(busy, CrmError::RateLimited(d) if d == CONCURRENCY_PAUSE));
    }

    fn ts(s: &str) -> Option<DateTime<Utc>> {
        mapping::transform::parse_timestamp(&Value::String(s.to_string()))
    }

    #[test]
    fn an_unreadable_field_names_itself_and_the_fix() {
        let cause = classify(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            "\nSELECT Id, Title FROM Contact\n           ^\nERROR at Row:1:Column:12\nNo such column 'Title' on entity 'Contact'.",
        );
        let e = unreadable_error(
            "Contact",
            &["Title".into(), "Department".into()],
            "INVALID_FIELD",
            &cause,
        );
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(text.contains("Contact.Title, Contact.Department"), "{text}");
        assert!(
            text.contains("crm-sync connect salesforce --reconnect"),
            "{text}"
        );
        assert!(text.contains("No such column 'Title'"), "{text}");
    }

    #[test]
    fn quotes_reserved_characters() {
        assert_eq!(quote("O'Brien"), r"'O\'Brien'");
        assert_eq!(quote(r"a\b"), r"'a\\b'");
        assert_eq!(quote("x' OR Name != '"), r"'x\' OR Name != \''");
        assert_eq!(quote("l1\nl2"), r"'l1\nl2'");
    }

    #[test]
    fn reads_usage_header() {
        assert_eq!(
            parse_usage("api-usage=10018/100000; api-bursts=1/750"),
            Some((10018, 100000))
        );
        assert_eq!(parse_usage("api-usage=18/5000"), Some((18, 5000)));
        assert_eq!(parse_usage("nonsense"), None);
    }

    #[test]
    fn keyset_query_shape() {
        let c = SalesforceClient::new(
            SalesforceSettings::new(
                "https://x.my.salesforce.com/services/oauth2/token",
                "id",
                "s",
            ),
            HashMap::from([(
                Entity::Contact,
                vec![
                    "LastName".into(),
                    "ChangeEventHeader".into(),
                    "id".into(),
                    "x; DROP".into(),
                ],
            )]),
        )
        .unwrap();
        let t = ts("2024-01-16T17:43:01.250+0000").unwrap();
        let q = c.soql(
            Entity::Contact,
            &PageRequest {
                checkpoint: Some(Checkpoint {
                    modified_at: t,
                    id: "003Dn0000000001AAA".into(),
                }),
                ..PageRequest::default()
            },
        );
        assert_eq!(
            q,
            "SELECT Id, SystemModstamp, AccountId, LastName FROM Contact WHERE (SystemModstamp > 2024-01-16T17:43:01.250Z OR (SystemModstamp = 2024-01-16T17:43:01.250Z AND Id > '003Dn0000000001AAA')) ORDER BY SystemModstamp, Id"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let s = SalesforceSettings::new("https://x/services/oauth2/token", "id", "hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn http_only_on_loopback() {
        assert!(check_origin(&Url::parse("http://127.0.0.1:1/x").unwrap(), "Salesforce").is_ok());
        assert!(
            check_origin(
                &Url::parse("http://acme.my.salesforce.com/x").unwrap(),
                "Salesforce"
            )
            .is_err()
        );
    }
}
