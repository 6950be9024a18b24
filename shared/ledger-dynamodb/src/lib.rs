//! The run ledger in a DynamoDB table: one item per sync job (`job_id` is the partition key),
//! written by the initial-sync function (start, every page) and the dataverse-upsert function
//! (write counts), read by `crm-sync sync status --jobs-table`.
//!
//! Why DynamoDB: the functions are stateless and run concurrently, and the status must be
//! readable from outside while the job runs. One small item per job updated with
//! `UpdateItem` needs no coordination: page counts are the running totals the page jobs carry,
//! set only if they are not older than what is stored (`pages <= :pages`, so a redelivered old
//! page cannot move the job backwards); write counts are added atomically (`ADD`). Every update
//! requires the item to exist, so correlation ids that are not jobs (webhook requests) write
//! nothing. Items expire 90 days after their last update (TTL on `expires_at`).
//!
//! Documented behaviour relied on ("UpdateItem", "Condition expressions", "Reserved words" in
//! the DynamoDB developer guide): a failed condition is `ConditionalCheckFailedException` and
//! changes nothing; `ADD` on a missing number attribute starts from 0; `READ`, `TOTAL`, `PHASE`
//! and the like are reserved words, so every attribute is named through `#placeholders`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use mapping::{Entity, SourceId};
use pipeline::ledger::{JobLedger, JobRecord, JobWrites, LedgerError, PageUpdate};
use pipeline::message::{SyncCounts, SyncPageJob};
use pipeline::sync::PageDone;

/// Items that record a record's newest version (see [`DynamoVersions`]) share the table with
/// the jobs under this key prefix, which no job id (a UUID) has.
const VERSION_PREFIX: &str = "version#";

/// The newest version written per record (`pipeline::versions`), in the run ledger's table:
/// one item per record touched by a webhook or a fetch, `job_id` = `version#<source>:<entity>:<id>`,
/// `modified_ms` its newest source timestamp, set only if not older (`UpdateItem` with
/// `attribute_not_exists(#m) OR #m <= :m`; a failed condition is a stale change). Items expire
/// with the jobs' TTL.
pub struct DynamoVersions {
    client: Client,
    table: String,
}

impl DynamoVersions {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoVersions {
            client,
            table: table.into(),
        }
    }

    /// In the table `JOBS_TABLE` names, as [`DynamoLedger::from_env`].
    pub async fn from_env() -> Option<Self> {
        let ledger = DynamoLedger::from_env().await?;
        Some(DynamoVersions::new(ledger.client, ledger.table))
    }
}

#[async_trait]
impl pipeline::versions::Versions for DynamoVersions {
    async fn advance(
        &self,
        key: &mapping::RecordKey,
        modified_at: DateTime<Utc>,
    ) -> Result<bool, String> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", s(format!("{VERSION_PREFIX}{key}")))
            .update_expression("SET #m = :m, #e = :e")
            .condition_expression("attribute_not_exists(#m) OR #m <= :m")
            .expression_attribute_names("#m", "modified_ms")
            .expression_attribute_names("#e", "expires_at")
            .expression_attribute_values(":m", n(modified_at.timestamp_millis()))
            .expression_attribute_values(":e", expires())
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e))
                if e.err().code() == Some("ConditionalCheckFailedException") =>
            {
                Ok(false)
            }
            Err(e) => Err(error(&self.table, e).to_string()),
        }
    }
}

/// How long an item is kept after its last update.
const KEEP: Duration = Duration::from_secs(90 * 24 * 3600);

pub struct DynamoLedger {
    client: Client,
    table: String,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoLedger {
            client,
            table: table.into(),
        }
    }

    /// A client from the environment (Lambda's role, or AWS_* variables), optionally pointed at
    /// another endpoint (moto in tests).
    pub async fn client(endpoint: Option<&str>) -> Client {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(e) = endpoint {
            loader = loader.endpoint_url(e);
        }
        Client::new(&loader.load().await)
    }

    /// The ledger of a deployed function, when `JOBS_TABLE` names its table
    /// (`DYNAMODB_ENDPOINT` points the client elsewhere, e.g. moto in tests). Without it jobs
    /// run unrecorded.
    pub async fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let table = var("JOBS_TABLE")?;
        let client = Self::client(var("DYNAMODB_ENDPOINT").as_deref()).await;
        Some(DynamoLedger::new(client, table))
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// One job, read consistently; `None` if the table has never seen it.
    pub async fn get(&self, job_id: &str) -> Result<Option<JobRecord>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("job_id", s(job_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error(&self.table, e))?;
        Ok(out.item.as_ref().map(record))
    }

    /// Every job in the table, newest first.
    pub async fn list(&self) -> Result<Vec<JobRecord>, LedgerError> {
        let mut jobs = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| error(&self.table, e))?;
            jobs.extend(
                out.items()
                    .iter()
                    .filter(|i| {
                        !matches!(i.get("job_id"), Some(AttributeValue::S(k)) if k.starts_with(VERSION_PREFIX))
                    })
                    .map(record),
            );
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        jobs.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then(a.job_id.cmp(&b.job_id))
        });
        Ok(jobs)
    }

    /// An update of an existing job's item; a job the table does not have is left alone.
    async fn update(
        &self,
        job_id: &str,
        expression: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<(), LedgerError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", s(job_id))
            .update_expression(expression)
            .condition_expression(condition)
            .expression_attribute_names("#id", "job_id");
        for (k, v) in names {
            req = req.expression_attribute_names(*k, *v);
        }
        for (k, v) in values {
            req = req.expression_attribute_values(k, v);
        }
        settled(&self.table, req.send().await)
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn expires() -> AttributeValue {
    n(Utc::now().timestamp() + KEEP.as_secs() as i64)
}

/// A conditional write's outcome: a failed condition (the job is unknown, or the stored page is
/// newer) changed nothing, which is what was wanted.
fn settled<O, E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    table: &str,
    r: Result<O, SdkError<E, R>>,
) -> Result<(), LedgerError> {
    match r {
        Ok(_) => Ok(()),
        Err(SdkError::ServiceError(e))
            if e.err().code() == Some("ConditionalCheckFailedException") =>
        {
            Ok(())
        }
        Err(e) => Err(error(table, e)),
    }
}

fn error<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    table: &str,
    e: SdkError<E, R>,
) -> LedgerError {
    let why = match &e {
        SdkError::ServiceError(s) => format!(
            "{}: {}",
            s.err().code().unwrap_or("unknown"),
            s.err().message().unwrap_or_default()
        ),
        other => format!("{other:?}").chars().take(300).collect(),
    };
    LedgerError(format!("table {table}: {why}"))
}

#[async_trait]
impl JobLedger for DynamoLedger {
    async fn started(
        &self,
        job_id: &str,
        source: &SourceId,
        entities: &[Entity],
    ) -> Result<(), LedgerError> {
        let now = now_ms();
        let entities: Vec<String> = entities.iter().map(|e| e.to_string()).collect();
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("job_id", s(job_id))
            .item("source", s(source.as_str()))
            .item("entities", s(entities.join(",")))
            .item("created_at", n(now))
            .item("updated_at", n(now))
            .item("phase", s("queued"))
            .item("totals", AttributeValue::M(HashMap::new()))
            .item("expires_at", expires())
            .condition_expression("attribute_not_exists(job_id)")
            .send()
            .await;
        settled(&self.table, r)
    }

    async fn page_done(&self, job: &SyncPageJob, done: &PageDone) -> Result<(), LedgerError> {
        let u = PageUpdate::of(job, done);
        let mut set = vec![
            "#updated = :now",
            "#phase = :phase",
            "#entity = :entity",
            "#pages = :pages",
            "#read = :read",
            "#enqueued = :enqueued",
            "#skipped = :skipped",
            "#deleted = :deleted",
            "#done = :done",
            "#exp = :exp",
        ];
        let mut values = vec![
            (":now", n(now_ms())),
            (":phase", s(u.phase)),
            (":entity", s(u.entity)),
            (":pages", n(u.counts.pages)),
            (":read", n(u.counts.read)),
            (":enqueued", n(u.counts.enqueued)),
            (":skipped", n(u.counts.skipped)),
            (":deleted", n(u.counts.deleted)),
            (":done", AttributeValue::Bool(u.pages_done)),
            (":exp", expires()),
        ];
        let mut names = vec![
            ("#updated", "updated_at"),
            ("#phase", "phase"),
            ("#entity", "entity"),
            ("#pages", "pages"),
            ("#read", "read"),
            ("#enqueued", "enqueued"),
            ("#skipped", "skipped"),
            ("#deleted", "deleted"),
            ("#done", "pages_done"),
            ("#exp", "expires_at"),
            ("#err", "last_error"),
        ];
        if let Some(t) = u.total {
            set.push("#total = :total");
            names.push(("#total", "total"));
            values.push((":total", n(t)));
        }
        let entity_total;
        if let Some((entity, t)) = &u.snapshot_total {
            set.push("#totals.#te = :te");
            entity_total = entity.clone();
            names.push(("#totals", "totals"));
            names.push(("#te", entity_total.as_str()));
            values.push((":te", n(t)));
        }
        let expression = format!("SET {} REMOVE #err", set.join(", "));
        self.update(
            &job.job_id,
            &expression,
            "attribute_exists(#id) AND (attribute_not_exists(#pages) OR #pages <= :pages)",
            &names,
            values,
        )
        .await
    }

    async fn page_retry(&self, job_id: &str, reason: &str) -> Result<(), LedgerError> {
        self.update(
            job_id,
            "ADD #retries :one SET #err = :why, #updated = :now",
            "attribute_exists(#id)",
            &[
                ("#retries", "retries"),
                ("#err", "last_error"),
                ("#updated", "updated_at"),
            ],
            vec![
                (":one", n(1)),
                (":why", s(reason.chars().take(1000).collect::<String>())),
                (":now", n(now_ms())),
            ],
        )
        .await
    }

    async fn failed(&self, job_id: &str, reason: &str) -> Result<(), LedgerError> {
        self.update(
            job_id,
            "SET #failed = :why, #updated = :now",
            "attribute_exists(#id)",
            &[("#failed", "failed"), ("#updated", "updated_at")],
            vec![
                (":why", s(reason.chars().take(1000).collect::<String>())),
                (":now", n(now_ms())),
            ],
        )
        .await
    }

    async fn writes(&self, job_id: &str, w: &JobWrites) -> Result<(), LedgerError> {
        if w.written == 0 && w.failed == 0 {
            return Ok(());
        }
        self.update(
            job_id,
            "ADD #written :w, #wfailed :f SET #updated = :now",
            "attribute_exists(#id)",
            &[
                ("#written", "written"),
                ("#wfailed", "write_failed"),
                ("#updated", "updated_at"),
            ],
            vec![
                (":w", n(w.written)),
                (":f", n(w.failed)),
                (":now", n(now_ms())),
            ],
        )
        .await
    }
}

/// An item as a [`JobRecord`]; missing attributes read as their empty value.
fn record(item: &HashMap<String, AttributeValue>) -> JobRecord {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let time = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or_default()
    };
    let totals: BTreeMap<String, u64> = item
        .get("totals")
        .and_then(|v| v.as_m().ok())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_n().ok()?.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default();
    JobRecord {
        job_id: text("job_id").unwrap_or_default(),
        source: text("source").unwrap_or_default(),
        entities: text("entities")
            .unwrap_or_default()
            .split(',')
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect(),
        created_at: time("created_at"),
        updated_at: time("updated_at"),
        phase: text("phase").unwrap_or_else(|| "queued".into()),
        entity: text("entity"),
        counts: SyncCounts {
            pages: num("pages").unwrap_or(0),
            read: num("read").unwrap_or(0),
            enqueued: num("enqueued").unwrap_or(0),
            skipped: num("skipped").unwrap_or(0),
            deleted: num("deleted").unwrap_or(0),
        },
        total: num("total"),
        snapshot_totals: totals,
        pages_done: item
            .get("pages_done")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        retries: num("retries").unwrap_or(0),
        last_error: text("last_error"),
        failed: text("failed"),
        written: num("written").unwrap_or(0),
        write_failed: num("write_failed").unwrap_or(0),
    }
}
