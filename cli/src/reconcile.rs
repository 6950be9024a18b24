//! `crm-sync reconcile`: read a source's CRM and its Dataverse rows, report per entity what is
//! missing in Dataverse, orphaned there (deleted in the CRM) or different, and with `--repair`
//! queue the changes that fix it on the upsert queue, where the normal pipeline applies them.
//! The comparison itself is `pipeline::reconcile` (pure); this module does the reading, the
//! bookkeeping and the sending.
//!
//! Memory stays bounded whatever the table sizes: the CRM side is walked first (the initial
//! sync's walk, one page at a time, mapped by the pipeline's mapper) and spilled as
//! `(key, mapped change)` into a temporary on-disk SQLite database; then Dataverse is read a
//! page at a time and each row is looked up there by key, marking the CRM rows it matched. What
//! is left unmarked is missing; findings go to the same database, so reporting and repair stream
//! from it too. Only one page of either side is ever in memory (plus SQLite's page cache).
//!
//! Why a spill rather than a sorted streaming merge of the two sides: the CRM walk is ordered by
//! (last modified, id), because that is the only order every CRM can page through restartably,
//! while Dataverse can only be paged cheaply in primary-key order (any other `$orderby` on a
//! large table is a sort on its side, and under `deterministic-id` the key is a hash of the CRM
//! id, unrelated to either CRM order). A merge would need one side sorted externally first,
//! which is what the SQLite B-tree does for us, with random lookups for free and no sort code of
//! our own. The database is SQLite's private temporary file (an empty path), deleted when the
//! connection closes, so nothing is left behind, even after a crash.
//!
//! The spill keeps the mapped change itself rather than only a digest of its columns: a
//! difference is reported column by column, and a repair sends exactly the change the pipeline
//! would have sent, without reading the CRM a second time.

use std::fmt;

use anyhow::{Context, bail};
use chrono::Utc;
use crm::{CrmError, CrmReader, PageRequest};
use dataverse::WebApiClient;
use dataverse::read::TablePages;
use mapping::payload::map_records;
use mapping::{Change, DeletePolicy, Entity, Mapper, Notice, Operation, Outcome, Parent};
use mapping::{IdentityStrategy, RowContext};
use pipeline::queue::Queue;
use pipeline::reconcile::{self as compare, Finding};
use pipeline::sync::send_per_record;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use tracing::{info, warn};

/// What to reconcile and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Empty: both, accounts first.
    pub entities: Vec<Entity>,
    /// Ids listed per kind of finding.
    pub show: usize,
    /// Records per CRM page.
    pub crm_page_size: u32,
    /// Rows per Dataverse page (`odata.maxpagesize`).
    pub dataverse_page_size: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            entities: Vec::new(),
            show: 10,
            crm_page_size: 500,
            dataverse_page_size: 5000,
        }
    }
}

/// How many of one kind, and the first few CRM ids (sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub count: u64,
    pub ids: Vec<String>,
}

/// A record whose row holds other values, and which columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Different {
    pub id: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EntityReport {
    pub entity: String,
    /// Records the CRM listed (live ones).
    pub crm_records: u64,
    /// Rows of this source in Dataverse.
    pub dataverse_rows: u64,
    /// Records in both, equal in every compared column.
    pub in_sync: u64,
    pub missing: Listed,
    pub orphaned: Listed,
    pub different: u64,
    /// The first `show` different records, with their columns.
    pub different_ids: Vec<Different>,
    /// CRM records that could not be mapped (not compared, and their rows not called orphans).
    pub unmappable: u64,
}

impl EntityReport {
    pub fn drift(&self) -> u64 {
        self.missing.count + self.orphaned.count + self.different
    }
}

/// What `--repair` queued.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    pub upserts: u64,
    pub deletes: u64,
    /// Orphans left alone: the source's `delete_policy` is `ignore`, or the row is not where its
    /// source id leads (not created by crm-sync), so a delete through the pipeline cannot reach
    /// it.
    pub left: u64,
    pub correlation_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub source: String,
    pub entities: Vec<EntityReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairReport>,
}

impl Report {
    pub fn drift(&self) -> u64 {
        self.entities.iter().map(EntityReport::drift).sum()
    }

    /// Whether anything found is still not on its way to being fixed.
    pub fn unresolved(&self) -> bool {
        match &self.repair {
            None => self.drift() > 0,
            Some(r) => r.left > 0,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "crm-sync reconcile: source {}", self.source)?;
        for e in &self.entities {
            writeln!(
                f,
                "  {:<8} {} in the CRM, {} in Dataverse: {} in sync, {} missing, {} orphaned, {} different{}",
                e.entity,
                e.crm_records,
                e.dataverse_rows,
                e.in_sync,
                e.missing.count,
                e.orphaned.count,
                e.different,
                if e.unmappable > 0 {
                    format!(" ({} unmappable, not compared)", e.unmappable)
                } else {
                    String::new()
                }
            )?;
            let list = |ids: &[String], count: u64| match (ids.len() as u64, count) {
                (0, n) => format!("{n} not listed (--show N lists them)"),
                (shown, n) if shown < n => format!("{} … and {} more", ids.join(", "), n - shown),
                _ => ids.join(", "),
            };
            if e.missing.count > 0 {
                writeln!(
                    f,
                    "    missing    {}",
                    list(&e.missing.ids, e.missing.count)
                )?;
            }
            if e.orphaned.count > 0 {
                writeln!(
                    f,
                    "    orphaned   {}",
                    list(&e.orphaned.ids, e.orphaned.count)
                )?;
            }
            for d in &e.different_ids {
                writeln!(f, "    different  {} ({})", d.id, d.columns.join(", "))?;
            }
            let shown = e.different_ids.len() as u64;
            if shown < e.different {
                writeln!(
                    f,
                    "    different  {}",
                    if shown == 0 {
                        format!("{} not listed (--show N lists them)", e.different)
                    } else {
                        format!("… and {} more", e.different - shown)
                    }
                )?;
            }
        }
        match &self.repair {
            Some(r) => {
                write!(
                    f,
                    "  repair   {} upserts and {} deletes queued (correlation id {})",
                    r.upserts, r.deletes, r.correlation_id
                )?;
                if r.left > 0 {
                    write!(
                        f,
                        "; {} orphans left as they are (delete_policy = ignore, or rows crm-sync did not create)",
                        r.left
                    )?;
                }
                writeln!(f)
            }
            None if self.drift() > 0 => {
                writeln!(f, "  repair   run again with --repair to queue the fixes")
            }
            None => writeln!(f, "  Dataverse matches the CRM"),
        }
    }
}

/// Reconciles one source; with `repair`, queues the fixes there (the upsert queue).
pub async fn reconcile(
    mapper: &Mapper,
    identity: IdentityStrategy,
    crm: &dyn CrmReader,
    dataverse: &WebApiClient,
    opts: &Options,
    repair: Option<&dyn Queue>,
) -> anyhow::Result<Report> {
    let ctx = mapper.row_context(identity);
    let spill = Spill::open()?;
    let mut entities = if opts.entities.is_empty() {
        Entity::ALL.to_vec()
    } else {
        opts.entities.clone()
    };
    entities.sort();
    entities.dedup();
    if identity == IdentityStrategy::AlternateKey && entities.contains(&Entity::Contact) {
        load_parents(&spill, &ctx, dataverse, opts).await?;
    }
    let mut report = Report {
        source: mapper.source.to_string(),
        ..Report::default()
    };
    for &entity in &entities {
        let mut e = EntityReport {
            entity: entity.to_string(),
            ..EntityReport::default()
        };
        read_crm(&spill, mapper, &ctx, crm, entity, opts, &mut e).await?;
        read_dataverse(&spill, mapper, &ctx, dataverse, entity, opts, &mut e).await?;
        spill.summarise(entity, opts.show, &mut e)?;
        info!(source = %mapper.source, %entity, crm = e.crm_records, dataverse = e.dataverse_rows,
            missing = e.missing.count, orphaned = e.orphaned.count, different = e.different, "reconciled");
        report.entities.push(e);
    }
    if let Some(queue) = repair {
        report.repair = Some(queue_repairs(&spill, mapper, &ctx, &entities, queue).await?);
    }
    Ok(report)
}

/// The temporary database: the CRM side, the Dataverse accounts' keys (alternate-key parents),
/// and the findings.
struct Spill {
    conn: Connection,
}

impl Spill {
    fn open() -> anyhow::Result<Spill> {
        // An empty path is SQLite's private temporary database: on disk, deleted on close.
        let conn = Connection::open("").context("creating the temporary reconcile database")?;
        conn.execute_batch(
            "PRAGMA journal_mode = OFF;
             PRAGMA synchronous = OFF;
             PRAGMA cache_size = -16000;
             CREATE TABLE crm (
                entity TEXT NOT NULL, key TEXT NOT NULL, source_id TEXT NOT NULL,
                change TEXT /* null: unmappable */, seen INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (entity, key)) WITHOUT ROWID;
             CREATE TABLE parents (guid TEXT PRIMARY KEY, key TEXT NOT NULL) WITHOUT ROWID;
             CREATE TABLE findings (
                n INTEGER PRIMARY KEY, entity TEXT NOT NULL, kind TEXT NOT NULL,
                source_id TEXT NOT NULL, key TEXT NOT NULL,
                columns TEXT /* different: JSON list */, deletable INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX findings_by_kind ON findings (entity, kind, source_id);",
        )?;
        Ok(Spill { conn })
    }

    fn finding(
        &self,
        entity: Entity,
        finding: &Finding,
        source_id: &str,
        key: &str,
        deletable: bool,
    ) -> rusqlite::Result<()> {
        let columns = match finding {
            Finding::Different { columns } => {
                Some(serde_json::to_string(columns).unwrap_or_default())
            }
            _ => None,
        };
        self.conn
            .prepare_cached(
                "INSERT INTO findings (entity, kind, source_id, key, columns, deletable)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                entity.as_str(),
                finding.name(),
                source_id,
                key,
                columns,
                deletable
            ])?;
        Ok(())
    }

    /// Counts and first ids per kind; records what was never matched as missing first.
    fn summarise(&self, entity: Entity, show: usize, e: &mut EntityReport) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO findings (entity, kind, source_id, key)
             SELECT entity, 'missing', source_id, key FROM crm
             WHERE entity = ?1 AND seen = 0 AND change IS NOT NULL",
            params![entity.as_str()],
        )?;
        let count = |kind: &str| -> rusqlite::Result<u64> {
            self.conn.query_row(
                "SELECT count(*) FROM findings WHERE entity = ?1 AND kind = ?2",
                params![entity.as_str(), kind],
                |r| r.get::<_, i64>(0).map(|n| n as u64),
            )
        };
        let first = |kind: &str| -> rusqlite::Result<Vec<(String, Option<String>)>> {
            let mut st = self.conn.prepare(
                "SELECT source_id, columns FROM findings WHERE entity = ?1 AND kind = ?2
                 ORDER BY source_id LIMIT ?3",
            )?;
            st.query_map(params![entity.as_str(), kind, show as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        };
        e.missing = Listed {
            count: count("missing")?,
            ids: first("missing")?.into_iter().map(|(id, _)| id).collect(),
        };
        e.orphaned = Listed {
            count: count("orphaned")?,
            ids: first("orphaned")?.into_iter().map(|(id, _)| id).collect(),
        };
        e.different = count("different")?;
        e.different_ids = first("different")?
            .into_iter()
            .map(|(id, cols)| Different {
                id,
                columns: cols
                    .and_then(|c| serde_json::from_str(&c).ok())
                    .unwrap_or_default(),
            })
            .collect();
        Ok(())
    }
}

/// Walks the CRM as the initial sync does (a page at a time, from the cursor or, when it
/// expired, the checkpoint) and spills every mapped record.
async fn read_crm(
    spill: &Spill,
    mapper: &Mapper,
    ctx: &RowContext,
    crm: &dyn CrmReader,
    entity: Entity,
    opts: &Options,
    e: &mut EntityReport,
) -> anyhow::Result<()> {
    let mut req = PageRequest {
        page_size: opts.crm_page_size,
        ..PageRequest::default()
    };
    loop {
        let page = match crm.list_page(entity, &req).await {
            Err(CrmError::CursorExpired) if req.cursor.is_some() => {
                warn!(%entity, "cursor expired; resuming from the checkpoint");
                req.cursor = None;
                crm.list_page(entity, &req).await
            }
            r => r,
        }
        .with_context(|| format!("reading the CRM's {entity}s"))?;
        let tx = spill.conn.unchecked_transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO crm (entity, key, source_id, change) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut gone = tx.prepare_cached("DELETE FROM crm WHERE entity = ?1 AND key = ?2")?;
            for (item, record) in map_records(mapper, entity, &page.records)
                .into_iter()
                .zip(&page.records)
            {
                match item.outcome {
                    Outcome::Notice {
                        notice: Notice::Change(c),
                        ..
                    } => {
                        let key = match compare::key_of(ctx, entity, &c.source_id) {
                            Ok(k) => k,
                            Err(err) => {
                                // The pipeline could not write it either: reported, not fatal.
                                e.unmappable += 1;
                                warn!(%entity, error = %err, "CRM record has no usable key; not compared");
                                continue;
                            }
                        };
                        if c.is_delete() {
                            // Listed as deleted (a soft-delete flag): not expected in Dataverse.
                            gone.execute(params![entity.as_str(), key])?;
                        } else {
                            let json = serde_json::to_string(&c)?;
                            put.execute(params![entity.as_str(), key, c.source_id, json])?;
                        }
                    }
                    Outcome::Notice { .. } | Outcome::Skipped(_) => {}
                    Outcome::Failed(err) => {
                        e.unmappable += 1;
                        warn!(%entity, error = %err, "CRM record could not be mapped; not compared");
                        // Known by id, its row is not an orphan.
                        if let Some(id) = mapper
                            .record_id(entity, record, None)
                            .ok()
                            .and_then(|id| compare::key_of(ctx, entity, &id).ok().map(|k| (id, k)))
                        {
                            put.execute(params![entity.as_str(), id.1, id.0, None::<String>])?;
                        }
                    }
                }
            }
        }
        tx.commit()?;
        if !page.more {
            break;
        }
        req.cursor = page.cursor;
        req.checkpoint = page.checkpoint;
    }
    e.crm_records = spill.conn.query_row(
        "SELECT count(*) FROM crm WHERE entity = ?1",
        params![entity.as_str()],
        |r| r.get::<_, i64>(0).map(|n| n as u64),
    )?;
    Ok(())
}

/// Reads the source's rows of `entity` a page at a time and classifies each against the spill.
async fn read_dataverse(
    spill: &Spill,
    mapper: &Mapper,
    ctx: &RowContext,
    dataverse: &WebApiClient,
    entity: Entity,
    opts: &Options,
    e: &mut EntityReport,
) -> anyhow::Result<()> {
    let select = compare::select(entity, mapper.column_names(entity));
    // Only this source's rows: another source's are not orphans of this one.
    let filter = format!("msdyn_source_crm eq {}", ctx.crm_choice);
    let mut pages = TablePages::new(
        dataverse,
        entity.entity_set(),
        &select,
        Some(&filter),
        opts.dataverse_page_size,
    );
    let identity = ctx.identity;
    while let Some(rows) = pages
        .next_page()
        .await
        .with_context(|| format!("reading Dataverse's {}", entity.entity_set()))?
    {
        let tx = spill.conn.unchecked_transaction()?;
        {
            let mut find =
                tx.prepare_cached("SELECT change FROM crm WHERE entity = ?1 AND key = ?2")?;
            let mut seen =
                tx.prepare_cached("UPDATE crm SET seen = 1 WHERE entity = ?1 AND key = ?2")?;
            for row in &rows {
                let resolve = |target: Entity, guid: &str| -> Option<String> {
                    match identity {
                        IdentityStrategy::DeterministicId => {
                            Some(format!("{}({guid})", target.entity_set()))
                        }
                        IdentityStrategy::AlternateKey => tx
                            .prepare_cached("SELECT key FROM parents WHERE guid = ?1")
                            .and_then(|mut st| st.query_row(params![guid], |r| r.get(0)).optional())
                            .ok()
                            .flatten(),
                    }
                };
                let Some(actual) = compare::actual(row, entity, ctx, &resolve) else {
                    continue;
                };
                e.dataverse_rows += 1;
                let stored: Option<Option<String>> = find
                    .query_row(params![entity.as_str(), actual.key], |r| r.get(0))
                    .optional()?;
                let expected = match &stored {
                    None => None,
                    Some(None) => {
                        // An unmappable CRM record: it exists, but there is nothing to compare.
                        seen.execute(params![entity.as_str(), actual.key])?;
                        continue;
                    }
                    Some(Some(json)) => {
                        seen.execute(params![entity.as_str(), actual.key])?;
                        let change: Change = serde_json::from_str(json)?;
                        compare::expected(&change, ctx)?
                    }
                };
                let Some(finding) =
                    compare::classify(expected.as_ref(), Some(&actual), ctx.delete_policy)
                else {
                    e.in_sync += u64::from(expected.is_some());
                    continue;
                };
                let deletable = compare::deletable(&actual, entity, ctx);
                let id = match (&expected, &actual.source_id) {
                    (Some(x), _) => x.source_id.clone(),
                    (None, Some(id)) => id.clone(),
                    (None, None) => actual.key.clone(),
                };
                spill.finding(entity, &finding, &id, &actual.key, deletable.is_some())?;
            }
        }
        tx.commit()?;
    }
    Ok(())
}

/// Under `alternate-key` a contact's `_parentcustomerid_value` is a GUID while the mapper names
/// the parent by its source id: the source's accounts' GUIDs are read first (two columns, a page
/// at a time) so each lookup can be turned into the key path the mapper would bind.
async fn load_parents(
    spill: &Spill,
    ctx: &RowContext,
    dataverse: &WebApiClient,
    opts: &Options,
) -> anyhow::Result<()> {
    let select = vec!["accountid".to_string(), "msdyn_source_crm_id".to_string()];
    let filter = format!("msdyn_source_crm eq {}", ctx.crm_choice);
    let mut pages = TablePages::new(
        dataverse,
        "accounts",
        &select,
        Some(&filter),
        opts.dataverse_page_size,
    );
    while let Some(rows) = pages
        .next_page()
        .await
        .context("reading Dataverse's accounts")?
    {
        let tx = spill.conn.unchecked_transaction()?;
        {
            let mut put =
                tx.prepare_cached("INSERT OR REPLACE INTO parents (guid, key) VALUES (?1, ?2)")?;
            for row in &rows {
                let (Some(guid), Some(id)) = (
                    row.get("accountid").and_then(|v| v.as_str()),
                    row.get("msdyn_source_crm_id").and_then(|v| v.as_str()),
                ) else {
                    continue;
                };
                if let Ok(key) = compare::key_of(ctx, Entity::Account, id) {
                    put.execute(params![guid, key])?;
                }
            }
        }
        tx.commit()?;
    }
    Ok(())
}

/// Changes per send: bounded memory, and few enough round trips.
const REPAIR_CHUNK: usize = 100;

/// Queues the fixes, accounts before contacts: the mapped change of every missing or different
/// record (exactly what the sync would have sent), and a delete for every orphan, which the
/// upsert step applies by the source's delete policy.
async fn queue_repairs(
    spill: &Spill,
    mapper: &Mapper,
    ctx: &RowContext,
    entities: &[Entity],
    queue: &dyn Queue,
) -> anyhow::Result<RepairReport> {
    let mut out = RepairReport {
        correlation_id: format!("reconcile-{}", uuid::Uuid::new_v4()),
        ..RepairReport::default()
    };
    for &entity in entities {
        let mut last = 0i64;
        loop {
            // Keyset pages over the findings: nothing is held but one chunk.
            let chunk: Vec<(i64, String, String, Option<String>, bool)> = {
                let mut st = spill.conn.prepare_cached(
                    "SELECT f.n, f.kind, f.source_id, c.change, f.deletable
                     FROM findings f LEFT JOIN crm c ON c.entity = f.entity AND c.key = f.key
                     WHERE f.entity = ?1 AND f.n > ?2 ORDER BY f.n LIMIT ?3",
                )?;
                st.query_map(params![entity.as_str(), last, REPAIR_CHUNK as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<rusqlite::Result<_>>()?
            };
            let Some(n) = chunk.last().map(|c| c.0) else {
                break;
            };
            last = n;
            let mut changes = Vec::with_capacity(chunk.len());
            for (_, kind, source_id, change, deletable) in chunk {
                if kind == "orphaned" {
                    if ctx.delete_policy == DeletePolicy::Ignore || !deletable {
                        out.left += 1;
                        continue;
                    }
                    changes.push(Change {
                        source: mapper.source.clone(),
                        entity,
                        source_id,
                        op: Operation::Delete,
                        modified_at: Some(Utc::now()),
                        parent: Parent::Unchanged,
                        record_url: None,
                    });
                    out.deletes += 1;
                } else {
                    let Some(json) = change else { continue };
                    changes.push(serde_json::from_str(&json)?);
                    out.upserts += 1;
                }
            }
            send_per_record(queue, &out.correlation_id, &changes)
                .await
                .map_err(|e| anyhow::anyhow!("queueing the repairs on {}: {e}", queue.name()))?;
        }
    }
    if out.upserts + out.deletes > 0 {
        info!(upserts = out.upserts, deletes = out.deletes, left = out.left,
            correlation_id = %out.correlation_id, "repairs queued");
    }
    Ok(out)
}

/// Where `--repair` sends the fixes.
#[derive(Debug, Clone)]
pub enum RepairTarget {
    /// The upsert queue in a `crm-sync serve` state file.
    State(std::path::PathBuf),
    /// A deployed stack's upsert queue.
    Sqs(crate::sync_cmd::SqsTarget),
}

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Args {
    pub config: std::path::PathBuf,
    pub source: String,
    pub opts: Options,
    pub repair: Option<RepairTarget>,
}

/// `crm-sync reconcile`: loads the configuration, builds the source's CRM client and the
/// Dataverse client, reconciles, and queues the repairs where asked.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    if args.opts.crm_page_size == 0 || args.opts.dataverse_page_size == 0 {
        bail!("--page-size must be at least 1");
    }
    let config = pipeline::config::Config::load(&args.config)?;
    let shown = args.config.display().to_string();
    let named = |e: mapping::ConfigError| anyhow::anyhow!("{shown}: {e}");
    let sources = config.mappers().map_err(named)?;
    let Some(mapper) = sources.by_name(&args.source) else {
        let known: Vec<String> = sources.ids().map(|s| s.to_string()).collect();
        bail!(
            "{shown}: no source `{}` is configured (sources: {})",
            args.source,
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        );
    };
    let crms = config.crm_readers(&sources).map_err(named)?;
    let Some(crm) = crms.get(&mapper.source) else {
        bail!(
            "{shown}: source `{}` has no [sources.connection]: reconcile reads the CRM's API",
            args.source
        );
    };
    let dataverse = config.dataverse_writer().map_err(named)?;
    let sqs;
    let state;
    let queue: Option<&dyn Queue> = match &args.repair {
        None => None,
        Some(RepairTarget::Sqs(t)) => {
            let client = sqs::SqsQueue::client(t.endpoint.as_deref()).await;
            sqs = sqs::SqsQueue::new(client, t.queue_url.clone());
            Some(&sqs)
        }
        Some(RepairTarget::State(path)) => {
            state = crate::jobs::LocalState::open(path)?;
            Some(state.upsert.as_ref())
        }
    };
    reconcile(
        mapper,
        sources.identity,
        crm.as_ref(),
        &dataverse,
        &args.opts,
        queue,
    )
    .await
}
