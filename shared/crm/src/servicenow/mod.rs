//! ServiceNow Table API reader: a [`CrmReader`] over reqwest for the CSM tables
//! (`customer_account`, `customer_contact` by default).
//!
//! Module map: this file (settings, listing, fetching, deletions, errors), `auth` (Basic and
//! OAuth 2.0 tokens from `/oauth_token.do`).
//!
//! Why it looks the way it does:
//! - Auth is HTTP Basic on every call (the Table API reference's cURL examples use
//!   `--user 'username':'password'`), or an OAuth 2.0 bearer token (password or client
//!   credentials grant; see `auth` for what ServiceNow documents). A 401 to a bearer call drops
//!   the token and retries once with a new one. Secrets and tokens never appear in errors, logs
//!   or `Debug`.
//! - Listing is keyset paging, not `sysparm_offset`: offsets shift when records change during a
//!   walk, and the Table API documents no stable cursor. Each page asks for records after the
//!   checkpoint `(t, id)` with the encoded query
//!   `sys_updated_on>t^NQsys_updated_on=t^sys_id>id^ORDERBYsys_updated_on^ORDERBYsys_id`
//!   (`^NQ` starts a new query OR-ed with the previous one, "Encoded Queries" in ServiceNow's
//!   SDK guide; `ORDERBY` keeps the order stable, as the community answer on `sysparm_limit`
//!   paging recommends). `sys_updated_on` has 1-second resolution, so ties are common and the
//!   sys_id tie-break is what makes the walk exact.
//! - `sysparm_limit` is the page size; a full page means more may follow. `X-Total-Count` is the
//!   count of the query, i.e. the records from this page on.
//! - A `Link` rel="next" URL given back as a cursor is followed only on the configured
//!   instance's origin, since following it sends our Basic credentials.
//! - 429 from an inbound rate limit rule carries `Retry-After` / `X-RateLimit-Reset` ("Inbound
//!   REST API rate limiting"); it becomes [`CrmError::RateLimited`]. Errors use the body
//!   `{"error":{"message","detail"},"status":"failure"}`.
//! - Deletions ([`CrmReader::list_deleted`]) come from `sys_audit_delete`, the "Deleted Records"
//!   table, queried through the Table API like any table:
//!   `tablename=<table>^sys_created_on>=<since>^ORDERBYsys_created_on^ORDERBYsys_id`, fields
//!   `documentkey` (the deleted record's sys_id) and `sys_created_on` (when it was deleted).
//!   The field names are those of deletion audits in ServiceNow KB0634666
//!   (https://hi.service-now.com/kb_view.do?sysparm_article=KB0634666: "Table name = Table name
//!   affected", "Document Key = sys_id of the deleted record"); that sys_audit_delete carries
//!   them too is what public scripts querying it rely on (`GlideRecord("sys_audit_delete")`
//!   with `documentkey` / `tablename`), not something its own doc page states.
//!   Pages follow `Link` rel="next" to the end ("Table API" reference: `sysparm_limit` applies
//!   before ACL evaluation, so a short page is not the end while a next link remains); without
//!   a `Link` header, a full page moves `sysparm_offset` on. Assumptions, documented rather than
//!   checked:
//!   - The table is audited for deletes. An instance records deletions "in audited tables" but
//!     not on tables with the `no_audit_delete=true` dictionary attribute, and not on `sys_`
//!     tables unless listed in `glide.ui.audit_deleted_tables` ("Restore a deleted record",
//!     https://docs.servicenow.com/bundle/orlando-platform-administration/page/administer/table-administration/task/t_RestoreADeletedRecordAndRef.html;
//!     "Enable auditing for a system table",
//!     https://www.servicenow.com/docs/r/zurich/platform-security/servicenow-ai-platform-security/t_ConSysTablDelAud.html).
//!     Records removed by Table Cleaner leave no audit (KB0634666).
//!   - `tablename` is the record's own class. Deletions from a table extending the configured
//!     one are filed under the child's name and not returned (reported by a public client's
//!     tests, not confirmed in ServiceNow's docs).
//!   - The audit is kept long enough: its retention is the instance's, and an older `since`
//!     silently finds fewer rows. Not checked.
//!   - The integration user may read sys_audit_delete. A 403 there (the Table API's answer to
//!     tables a user's roles do not open, "Table API security",
//!     https://docs.servicenow.com/bundle/geneva-servicenow-platform/page/integrate/inbound_rest/concept/c_TableAPISecurity.html)
//!     is an [`CrmError::Access`] naming the table, never an empty list. Row-level ACLs that
//!     hide rows without a 403 cannot be told from "nothing was deleted". Where the audit is
//!     closed on purpose, `read_deletion_audit = false` makes `list_deleted` answer `None`.

mod auth;

pub use auth::{ServiceNowAuth, ServiceNowOAuth};

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mapping::Entity;
use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::http::{check_origin, checkpoint_of, follow_link, http_client};
use crate::reader::{CrmError, CrmReader, Fetched, FieldCheck, Page, PageRequest};
use auth::Authenticator;

/// sys_ids per `sys_idIN...` query: 100 × 33 characters keeps the URL short.
const IDS_PER_QUERY: usize = 100;
/// The Table API's default and our ceiling for `sysparm_limit`.
const MAX_LIMIT: u32 = 10_000;
/// Page size when the request names none.
const DEFAULT_PAGE: u32 = 1_000;
/// Pause after a 429 that names no reset time.
const DEFAULT_RATE_PAUSE: Duration = Duration::from_secs(60);
/// Where ServiceNow records deleted records.
const AUDIT_DELETE_TABLE: &str = "sys_audit_delete";

/// Where, as whom and what to read.
#[derive(Clone)]
pub struct ServiceNowSettings {
    /// `https://<instance>.service-now.com`.
    pub instance_url: String,
    pub auth: ServiceNowAuth,
    /// Table read for [`Entity::Account`].
    pub account_table: String,
    /// Table read for [`Entity::Contact`].
    pub contact_table: String,
    /// Whether [`CrmReader::list_deleted`] reads `sys_audit_delete` (default). False: it
    /// answers `None` without a request, for instances whose integration user may not read the
    /// audit, where deletions then arrive through the delete business rule alone.
    pub read_deletion_audit: bool,
    /// Rows per `sys_audit_delete` page in [`CrmReader::list_deleted`].
    pub deleted_page_size: u32,
}

impl ServiceNowSettings {
    /// HTTP Basic as `user`.
    pub fn new(instance_url: &str, user: &str, password: &str) -> Self {
        Self::with_auth(
            instance_url,
            ServiceNowAuth::Basic {
                user: user.to_string(),
                password: password.to_string(),
            },
        )
    }

    /// OAuth 2.0 bearer tokens from `<instance_url>/oauth_token.do`.
    pub fn with_oauth(instance_url: &str, oauth: ServiceNowOAuth) -> Self {
        Self::with_auth(instance_url, ServiceNowAuth::OAuth(oauth))
    }

    pub fn with_auth(instance_url: &str, auth: ServiceNowAuth) -> Self {
        ServiceNowSettings {
            instance_url: instance_url.to_string(),
            auth,
            account_table: "customer_account".into(),
            contact_table: "customer_contact".into(),
            read_deletion_audit: true,
            deleted_page_size: DEFAULT_PAGE,
        }
    }
}

impl fmt::Debug for ServiceNowSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceNowSettings")
            .field("instance_url", &self.instance_url)
            .field("auth", &self.auth)
            .field("account_table", &self.account_table)
            .field("contact_table", &self.contact_table)
            .field("read_deletion_audit", &self.read_deletion_audit)
            .field("deleted_page_size", &self.deleted_page_size)
            .finish()
    }
}

pub struct ServiceNowClient {
    http: reqwest::Client,
    settings: ServiceNowSettings,
    instance: Url,
    auth: Authenticator,
    fields: HashMap<Entity, Vec<String>>,
}

impl fmt::Debug for ServiceNowClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceNowClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Column and table names: lowercase identifiers (dot-walked names such as `account.name`
/// allowed for fields). Anything else would be encoded-query or URL syntax.
fn is_name(s: &str, dots: bool) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || (dots && c == '.'))
}

/// 32 hex characters: what a sys_id is; also keeps `^` and `,` out of queries.
fn is_sys_id(s: &str) -> bool {
    s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit())
}

impl ServiceNowClient {
    /// `fields`: per entity, the columns the caller needs (the pipeline passes
    /// `Mapper::source_fields`). sys_id, sys_updated_on (and account for contacts) are always
    /// read.
    pub fn new(
        settings: ServiceNowSettings,
        fields: HashMap<Entity, Vec<String>>,
    ) -> Result<Self, CrmError> {
        let instance = Url::parse(&settings.instance_url)
            .map_err(|e| CrmError::Permanent(format!("invalid ServiceNow instance URL: {e}")))?;
        check_origin(&instance, "ServiceNow")?;
        for t in [&settings.account_table, &settings.contact_table] {
            if !is_name(t, false) {
                return Err(CrmError::Permanent(format!(
                    "invalid ServiceNow table name {t:?}"
                )));
            }
        }
        let http = http_client(Duration::from_secs(120))?;
        let auth = Authenticator::new(settings.auth.clone(), &instance)?;
        Ok(ServiceNowClient {
            http,
            settings,
            instance,
            auth,
            fields,
        })
    }

    fn table(&self, entity: Entity) -> &str {
        match entity {
            Entity::Account => &self.settings.account_table,
            Entity::Contact => &self.settings.contact_table,
        }
    }

    /// `sysparm_fields`: the caller's columns plus the ones paging and parent binding need,
    /// each once.
    fn field_list(&self, entity: Entity) -> String {
        let mut out: Vec<&str> = vec!["sys_id", "sys_updated_on"];
        if entity == Entity::Contact {
            out.push("account");
        }
        for f in self.fields.get(&entity).into_iter().flatten() {
            if !is_name(f, true) {
                tracing::warn!(field = %f, "skipping a ServiceNow field name that is not a column name");
                continue;
            }
            if !out.contains(&f.as_str()) {
                out.push(f);
            }
        }
        out.join(",")
    }

    /// The keyset query after `req.checkpoint`, limited to `req.modified_since`, in
    /// (sys_updated_on, sys_id) order. `^NQ` groups are independent, so the time floor goes
    /// into each.
    fn encoded_query(req: &PageRequest) -> Result<String, CrmError> {
        let since = req
            .modified_since
            .map(|t| format!("sys_updated_on>={}", sn_datetime(t)));
        let mut groups: Vec<String> = match &req.checkpoint {
            Some(cp) => {
                if !is_sys_id(&cp.id) {
                    return Err(CrmError::Permanent(format!(
                        "checkpoint id {:?} is not a sys_id",
                        cp.id
                    )));
                }
                let t = sn_datetime(cp.modified_at);
                vec![
                    format!("sys_updated_on>{t}"),
                    format!("sys_updated_on={t}^sys_id>{}", cp.id),
                ]
            }
            None => vec![String::new()],
        };
        if let Some(s) = &since {
            for g in &mut groups {
                if !g.is_empty() {
                    g.push('^');
                }
                g.push_str(s);
            }
        }
        let mut q = groups.join("^NQ");
        if !q.is_empty() {
            q.push('^');
        }
        q.push_str("ORDERBYsys_updated_on^ORDERBYsys_id");
        Ok(q)
    }

    fn table_url(&self, entity: Entity, params: &[(&str, &str)]) -> Result<Url, CrmError> {
        self.named_table_url(self.table(entity), params)
    }

    fn named_table_url(&self, table: &str, params: &[(&str, &str)]) -> Result<Url, CrmError> {
        let mut url = self
            .instance
            .join(&format!("/api/now/table/{table}"))
            .map_err(|e| CrmError::Permanent(format!("table URL: {e}")))?;
        url.query_pairs_mut().extend_pairs(params);
        Ok(url)
    }

    /// GETs a Table API URL; returns the `result` array and the response headers. A 401 to a
    /// bearer token drops it and retries once with a new one.
    async fn get(&self, url: Url) -> Result<(Vec<Value>, HeaderMap), CrmError> {
        let mut attempt = 0;
        let (status, headers, text) = loop {
            let cred = self.auth.credential(&self.http).await?;
            let resp = self
                .auth
                .apply(self.http.get(url.clone()), &cred)
                .header("Accept", "application/json")
                .send()
                .await
                .map_err(|e| CrmError::Unavailable(format!("ServiceNow: {}", e.without_url())))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = resp
                .text()
                .await
                .map_err(|e| CrmError::Unavailable(format!("ServiceNow: {}", e.without_url())))?;
            if status == StatusCode::UNAUTHORIZED && cred.is_bearer() && attempt == 0 {
                tracing::info!("ServiceNow refused the OAuth token; requesting a new one");
                self.auth.invalidate(&cred).await;
                attempt += 1;
                continue;
            }
            break (status, headers, text);
        };
        if !status.is_success() {
            return Err(self.classify(status, &headers, &text));
        }
        let mut body: Value = serde_json::from_str(&text)
            .map_err(|e| CrmError::Permanent(format!("unreadable ServiceNow response: {e}")))?;
        match body.get_mut("result").map(Value::take) {
            Some(Value::Array(a)) => Ok((a, headers)),
            _ => Err(CrmError::Permanent(
                "ServiceNow response without a result array".into(),
            )),
        }
    }

    fn classify(&self, status: StatusCode, headers: &HeaderMap, text: &str) -> CrmError {
        let (message, detail) = api_error(text);
        match status.as_u16() {
            429 => {
                let pause = retry_after(headers);
                tracing::warn!(?pause, message = %message, "ServiceNow rate limit reached");
                CrmError::RateLimited(pause)
            }
            401 | 403 => CrmError::Access(format!(
                "ServiceNow refused {} ({status}: {message} {detail})",
                self.auth.auth().describe()
            )),
            s if s >= 500 => CrmError::Unavailable(format!("ServiceNow {status}: {message}")),
            _ => CrmError::Permanent(format!("ServiceNow {status}: {message} {detail}")),
        }
    }

    /// An error reading `sys_audit_delete`, saying which table and what the deletions were
    /// for: a refusal there must not pass for "nothing was deleted".
    fn audit_error(&self, e: CrmError, table: &str) -> CrmError {
        match e {
            CrmError::Access(m) => CrmError::Access(format!(
                "cannot read table {AUDIT_DELETE_TABLE}, where ServiceNow records deletions \
                 from {table}: {m}; {} needs read access to {AUDIT_DELETE_TABLE}",
                self.auth.auth().describe()
            )),
            CrmError::Permanent(m) => CrmError::Permanent(format!(
                "reading {AUDIT_DELETE_TABLE} for deletions from {table}: {m}"
            )),
            other => other,
        }
    }

    /// A `Link` rel="next" URL, accepted only on the instance's origin and under `/api/now/`.
    fn next_url(&self, next: &str) -> Result<Url, CrmError> {
        follow_link(&self.instance, next, "/api/now/", "ServiceNow")
    }
}

/// The `sys_audit_delete` query for one table's deletions since a time, oldest first; sys_id
/// breaks ties so offset pages stay in one order.
fn deleted_query(table: &str, since: DateTime<Utc>) -> String {
    format!(
        "tablename={table}^sys_created_on>={}^ORDERBYsys_created_on^ORDERBYsys_id",
        sn_datetime(since)
    )
}

/// A row's `documentkey`: a string, or `{value}` should an instance show it as a reference.
fn documentkey(row: &Value) -> Option<&str> {
    let v = row.get("documentkey")?;
    v.as_str()
        .or_else(|| v.get("value").and_then(Value::as_str))
        .filter(|k| !k.is_empty())
}

#[async_trait]
impl CrmReader for ServiceNowClient {
    async fn list_page(&self, entity: Entity, req: &PageRequest) -> Result<Page, CrmError> {
        let limit = match req.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_LIMIT),
        };
        let (records, headers) = match &req.cursor {
            // A Link URL handed back by a caller that pages that way.
            Some(c) => self.get(self.next_url(c)?).await?,
            None => {
                let q = Self::encoded_query(req)?;
                let fields = self.field_list(entity);
                let limit = limit.to_string();
                let url = self.table_url(
                    entity,
                    &[
                        ("sysparm_query", q.as_str()),
                        ("sysparm_fields", fields.as_str()),
                        ("sysparm_limit", limit.as_str()),
                    ],
                )?;
                self.get(url).await?
            }
        };
        let total = headers
            .get("X-Total-Count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let checkpoint = match records.last() {
            Some(r) => Some(checkpoint_of(r, "sys_id", "sys_updated_on", "ServiceNow")?),
            None => req.checkpoint.clone(),
        };
        let (cursor, more) = match &req.cursor {
            Some(_) => {
                let next = link_next(&headers);
                if let Some(n) = &next {
                    self.next_url(n)?;
                }
                let more = next.is_some();
                (next, more)
            }
            None => (None, records.len() as u64 >= u64::from(limit)),
        };
        Ok(Page {
            records,
            cursor,
            checkpoint,
            more,
            total,
        })
    }

    /// One record with `sysparm_fields` ("Table API"): every named field the user may read comes
    /// back, an empty one as `""`; a field left out does not exist or an ACL hides it.
    async fn check(&self, entity: Entity, fields: &[String]) -> Result<FieldCheck, CrmError> {
        let mut found = crate::reader::sample_check(self, entity, fields).await?;
        found.authoritative = found.sampled;
        Ok(found)
    }

    async fn fetch_by_ids(&self, entity: Entity, ids: &[String]) -> Result<Fetched, CrmError> {
        // Strings that are not sys_ids are missing by definition and never reach a query.
        let valid: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| is_sys_id(id))
            .collect();
        let fields = self.field_list(entity);
        let mut found: HashMap<String, Value> = HashMap::new();
        for chunk in valid.chunks(IDS_PER_QUERY) {
            let q = format!("sys_idIN{}", chunk.join(","));
            let limit = chunk.len().to_string();
            let url = self.table_url(
                entity,
                &[
                    ("sysparm_query", q.as_str()),
                    ("sysparm_fields", fields.as_str()),
                    ("sysparm_limit", limit.as_str()),
                ],
            )?;
            let (records, _) = self.get(url).await?;
            for r in records {
                if let Some(id) = r.get("sys_id").and_then(Value::as_str) {
                    found.insert(id.to_string(), r);
                }
            }
        }
        Ok(Fetched::in_order(ids, &found))
    }

    /// Deletions recorded in `sys_audit_delete` for the entity's table at or after `since` (to
    /// the second, rounded down): the deleted sys_ids, oldest deletion first, each once. See the
    /// module doc for what this assumes of the instance.
    async fn list_deleted(
        &self,
        entity: Entity,
        since: DateTime<Utc>,
    ) -> Result<Option<Vec<String>>, CrmError> {
        if !self.settings.read_deletion_audit {
            return Ok(None);
        }
        let table = self.table(entity);
        let limit = self.settings.deleted_page_size.clamp(1, MAX_LIMIT);
        let query = deleted_query(table, since);
        let limit_s = limit.to_string();
        let base = [
            ("sysparm_query", query.as_str()),
            ("sysparm_fields", "documentkey,sys_created_on"),
            ("sysparm_limit", limit_s.as_str()),
        ];
        let mut url = self.named_table_url(AUDIT_DELETE_TABLE, &base)?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for page in 1u64.. {
            let (records, headers) = self
                .get(url.clone())
                .await
                .map_err(|e| self.audit_error(e, table))?;
            let full = records.len() as u64 >= u64::from(limit);
            for r in &records {
                let key = documentkey(r).ok_or_else(|| {
                    CrmError::Permanent(format!(
                        "{AUDIT_DELETE_TABLE} row without a documentkey (deletions from {table})"
                    ))
                })?;
                if seen.insert(key.to_string()) {
                    out.push(key.to_string());
                }
            }
            let next = match link_next(&headers) {
                Some(n) => Some(self.next_url(&n)?),
                // No Link header at all (an instance may suppress it): a full page may have more.
                None if !headers.contains_key("Link") && full => {
                    let offset = (page * u64::from(limit)).to_string();
                    let mut params = base.to_vec();
                    params.push(("sysparm_offset", offset.as_str()));
                    Some(self.named_table_url(AUDIT_DELETE_TABLE, &params)?)
                }
                None => None,
            };
            match next {
                Some(n) if n == url => {
                    return Err(CrmError::Permanent(format!(
                        "{AUDIT_DELETE_TABLE}: the next-page link repeats the page just read"
                    )));
                }
                Some(n) => url = n,
                None => break,
            }
        }
        Ok(Some(out))
    }
}

/// The rel="next" target of a `Link` header (`<url>;rel="next",<url>;rel="last"`).
fn link_next(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("Link")?.to_str().ok()?;
    v.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        is_next.then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// How long the CRM asked us to wait (see [`crate::http::retry_after`]).
fn retry_after(headers: &HeaderMap) -> Duration {
    crate::http::retry_after(headers, SystemTime::now(), DEFAULT_RATE_PAUSE)
}

/// `{"error":{"message","detail"},"status":"failure"}` → (message, detail).
fn api_error(text: &str) -> (String, String) {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let field = |k: &str| {
        v.get("error")
            .and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (field("message"), field("detail"))
}

/// A datetime in the form queries compare against; sub-seconds are dropped (floor), so a
/// `>=` bound stays inclusive.
fn sn_datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::reader::Checkpoint;

    fn ts(s: &str) -> Option<DateTime<Utc>> {
        mapping::transform::parse_timestamp(&Value::String(s.to_string()))
    }

    fn client() -> ServiceNowClient {
        ServiceNowClient::new(
            ServiceNowSettings::new("https://acme.service-now.com", "u", "hunter2"),
            HashMap::from([(
                Entity::Contact,
                vec!["first_name".into(), "sys_id".into(), "x^y".into()],
            )]),
        )
        .unwrap()
    }

    #[test]
    fn keyset_query_shape() {
        let t = ts("2024-01-16 17:43:01").unwrap();
        let req = PageRequest {
            checkpoint: Some(Checkpoint {
                modified_at: t,
                id: "0123456789abcdef0123456789abcdef".into(),
            }),
            modified_since: ts("2024-01-01 00:00:00"),
            ..PageRequest::default()
        };
        assert_eq!(
            ServiceNowClient::encoded_query(&req).unwrap(),
            "sys_updated_on>2024-01-16 17:43:01^sys_updated_on>=2024-01-01 00:00:00\
             ^NQsys_updated_on=2024-01-16 17:43:01^sys_id>0123456789abcdef0123456789abcdef\
             ^sys_updated_on>=2024-01-01 00:00:00^ORDERBYsys_updated_on^ORDERBYsys_id"
        );
        assert_eq!(
            ServiceNowClient::encoded_query(&PageRequest::default()).unwrap(),
            "ORDERBYsys_updated_on^ORDERBYsys_id"
        );
        let bad = PageRequest {
            checkpoint: Some(Checkpoint {
                modified_at: t,
                id: "x^ORsys_id>0".into(),
            }),
            ..PageRequest::default()
        };
        assert!(ServiceNowClient::encoded_query(&bad).is_err());
    }

    #[test]
    fn field_list_adds_paging_columns_once() {
        assert_eq!(
            client().field_list(Entity::Contact),
            "sys_id,sys_updated_on,account,first_name"
        );
        assert_eq!(
            client().field_list(Entity::Account),
            "sys_id,sys_updated_on"
        );
    }

    #[test]
    fn password_stays_out_of_debug() {
        assert!(!format!("{:?}", client()).contains("hunter2"));
        let oauth = ServiceNowSettings::with_oauth(
            "https://acme.service-now.com",
            ServiceNowOAuth::ClientCredentials {
                client_id: "cid-1".into(),
                client_secret: "very-secret".into(),
            },
        );
        let shown = format!("{oauth:?}");
        assert!(
            shown.contains("cid-1") && !shown.contains("very-secret"),
            "{shown}"
        );
    }

    #[test]
    fn deleted_query_shape() {
        let t = ts("2024-01-16 17:43:01.750").unwrap();
        assert_eq!(
            deleted_query("customer_account", t),
            "tablename=customer_account^sys_created_on>=2024-01-16 17:43:01\
             ^ORDERBYsys_created_on^ORDERBYsys_id"
        );
        let key = |v: Value| documentkey(&v).map(str::to_string);
        assert_eq!(
            key(serde_json::json!({"documentkey": "abc"})).as_deref(),
            Some("abc")
        );
        assert_eq!(
            key(serde_json::json!({"documentkey": {"value": "abc", "link": "x"}})).as_deref(),
            Some("abc")
        );
        assert_eq!(key(serde_json::json!({"documentkey": ""})), None);
        assert_eq!(key(serde_json::json!({})), None);
    }

    #[test]
    fn next_url_stays_on_the_instance() {
        let c = client();
        assert!(
            c.next_url("https://acme.service-now.com/api/now/table/x?sysparm_offset=5")
                .is_ok()
        );
        assert!(c.next_url("https://evil.example/api/now/table/x").is_err());
        assert!(
            c.next_url("http://acme.service-now.com/api/now/table/x")
                .is_err()
        );
        assert!(c.next_url("/other/path").is_err());
    }

    #[test]
    fn reads_link_and_rate_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "Link",
            "<https://a/api/now/table/t?sysparm_offset=0>;rel=\"first\",<https://a/api/now/table/t?sysparm_offset=2>;rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            link_next(&h).as_deref(),
            Some("https://a/api/now/table/t?sysparm_offset=2")
        );
        h.insert("Retry-After", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(7));
        assert_eq!(retry_after(&HeaderMap::new()), DEFAULT_RATE_PAUSE);
    }

    #[test]
    fn http_only_on_loopback() {
        assert!(check_origin(&Url::parse("http://127.0.0.1:1/").unwrap(), "ServiceNow").is_ok());
        assert!(
            check_origin(
                &Url::parse("http://acme.service-now.com/").unwrap(),
                "ServiceNow"
            )
            .is_err()
        );
    }
}
