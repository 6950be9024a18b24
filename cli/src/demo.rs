//! `crm-sync demo`: the whole pipeline on one machine with nothing configured. It starts the
//! Dataverse emulator and a CRM emulator with generated data, runs the initial sync through the
//! real CRM client, the three steps and in-process queues, then has the CRM emulator post a
//! burst of signed webhooks (creates, updates, deletes) to the local webhook endpoint, and
//! finally compares Dataverse with the CRM record for record.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use crm_emulator::hubspot::ObjectType;
use crm_emulator::notify::ContractNotifier;
use crm_emulator::{
    HubSpotConfig, HubSpotEmulator, SalesforceConfig, SalesforceEmulator, ServiceNowConfig,
    ServiceNowEmulator,
};
use dataverse_emulator::{Emulator, EmulatorConfig};
use mapping::{Entity, SourceId};
use pipeline::config::Config;
use pipeline::runner::{LocalPipeline, RunTotals};
use pipeline::sync::start_sync;
use serde_json::{Map, Value, json};

use crate::emulated::{
    Comparison, Expected, compare, local_pipeline, parent_id, salesforce_expected,
};
use crate::progress::Progress;
use crate::webhook_server::WebhookServer;

/// Contacts per generated account; a few contacts more have no account at all.
const CONTACTS_PER_ACCOUNT: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoCrm {
    Salesforce,
    Servicenow,
    Hubspot,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub crm: DemoCrm,
    /// Accounts and contacts generated in the CRM, roughly.
    pub records: usize,
    pub seed: u64,
    /// Where the final Dataverse rows are written.
    pub out_dir: PathBuf,
    pub progress: bool,
}

/// What a run did, for the summary.
#[derive(Debug, Clone)]
pub struct Summary {
    pub crm: &'static str,
    pub crm_accounts: usize,
    pub crm_contacts: usize,
    pub sync: Phase,
    pub burst: Burst,
    pub webhooks: Phase,
    /// Webhook POSTs the endpoint did not accept (each is retried by the CRM).
    pub notifications_failed: usize,
    pub comparison: Comparison,
    pub rows: (usize, usize),
    pub elapsed: Duration,
    pub files: Vec<PathBuf>,
}

/// One phase's pipeline totals and duration.
#[derive(Debug, Clone)]
pub struct Phase {
    pub totals: RunTotals,
    pub elapsed: Duration,
    pub drained: bool,
}

/// The changes made in the CRM while webhooks were on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Burst {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
}

impl Burst {
    pub fn total(&self) -> usize {
        self.created + self.updated + self.deleted
    }
}

/// The CRM emulator the demo runs.
enum Crm {
    Salesforce(SalesforceEmulator),
    Servicenow(ServiceNowEmulator),
    Hubspot(HubSpotEmulator),
}

impl Crm {
    async fn start(kind: DemoCrm, records: usize, seed: u64) -> anyhow::Result<Crm> {
        let accounts = (records / (CONTACTS_PER_ACCOUNT + 1)).max(1);
        let orphans = records.saturating_sub(accounts * (CONTACTS_PER_ACCOUNT + 1));
        Ok(match kind {
            DemoCrm::Salesforce => Crm::Salesforce(
                SalesforceEmulator::start(SalesforceConfig {
                    seed,
                    accounts,
                    contacts_per_account: CONTACTS_PER_ACCOUNT,
                    orphan_contacts: orphans,
                    daily_limit: 10_000_000,
                    ..SalesforceConfig::default()
                })
                .await
                .context("starting the Salesforce emulator")?,
            ),
            DemoCrm::Servicenow => Crm::Servicenow(
                ServiceNowEmulator::start(ServiceNowConfig {
                    seed,
                    accounts,
                    contacts_per_account: CONTACTS_PER_ACCOUNT,
                    orphan_contacts: orphans,
                    ..ServiceNowConfig::default()
                })
                .await
                .context("starting the ServiceNow emulator")?,
            ),
            DemoCrm::Hubspot => Crm::Hubspot(
                HubSpotEmulator::start(HubSpotConfig {
                    seed,
                    companies: accounts,
                    contacts_per_company: CONTACTS_PER_ACCOUNT,
                    orphan_contacts: orphans,
                    ..HubSpotConfig::default()
                })
                .await
                .context("starting the HubSpot emulator")?,
            ),
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Crm::Salesforce(_) => "Salesforce",
            Crm::Servicenow(_) => "ServiceNow",
            Crm::Hubspot(_) => "HubSpot",
        }
    }

    fn source(&self) -> &'static str {
        match self {
            Crm::Salesforce(_) => "salesforce",
            Crm::Servicenow(_) => "servicenow",
            Crm::Hubspot(_) => "hubspot",
        }
    }

    /// The configuration a user would write for this CRM, pointed at the emulator and at the
    /// local webhook endpoint `webhook_url`.
    fn config_toml(&self, webhook_secret: &str, webhook_url: &str) -> String {
        match self {
            Crm::Salesforce(sf) => format!(
                r#"
[[sources]]
id = "salesforce"
kind = "salesforce"
crm_choice = 1
base_url = "{base}"
[sources.connection]
auth = "salesforce-client-credentials"
token_url = "{token}"
client_id = "{id}"
client_secret = "{secret}"
[sources.webhook]
auth = "contract"
secret = "{webhook_secret}"
"#,
                base = sf.instance_url(),
                token = sf.token_url(),
                id = sf.config().client_id,
                secret = sf.config().client_secret,
            ),
            Crm::Servicenow(sn) => format!(
                r#"
[[sources]]
id = "servicenow"
kind = "servicenow"
base_url = "{base}"
[sources.connection]
auth = "servicenow-basic"
user = "{user}"
password = "{password}"
[sources.webhook]
auth = "contract"
secret = "{webhook_secret}"
"#,
                base = sn.base_url(),
                user = sn.config().user,
                password = sn.config().password,
            ),
            Crm::Hubspot(hs) => format!(
                r#"
[[sources]]
id = "hubspot"
kind = "hubspot"
crm_choice = 4
base_url = "https://app.hubspot.com"
[sources.vars]
portal_id = "{portal}"
[sources.connection]
auth = "hubspot-private-app"
token = "{token}"
api_url = "{api}"
[sources.webhook]
auth = "hubspot"
secret = "{webhook_secret}"
public_url = "{webhook_url}"
"#,
                portal = hs.config().portal_id,
                token = hs.config().token,
                api = hs.base_url(),
            ),
        }
    }

    fn counts(&self) -> (usize, usize) {
        match self {
            Crm::Salesforce(sf) => (sf.count("Account"), sf.count("Contact")),
            Crm::Servicenow(sn) => (sn.count("customer_account"), sn.count("customer_contact")),
            Crm::Hubspot(hs) => (
                hs.count(ObjectType::Companies),
                hs.count(ObjectType::Contacts),
            ),
        }
    }

    /// Turns the CRM's change notifications on, towards `url`: the contract scripts for
    /// Salesforce and ServiceNow, an app webhook subscription for HubSpot.
    fn subscribe(&self, url: &str, secret: &str) -> Option<Arc<ContractNotifier>> {
        match self {
            Crm::Salesforce(sf) => Some(sf.notify_to(url, secret)),
            Crm::Servicenow(sn) => Some(sn.notify_to(url, secret)),
            Crm::Hubspot(hs) => {
                hs.subscribe(url, secret);
                None
            }
        }
    }

    /// Waits until every notification was delivered (or given up); returns the POSTs that
    /// failed.
    async fn delivered(&self, notifier: Option<&ContractNotifier>) -> anyhow::Result<usize> {
        let ok = |s: Option<u16>| s.is_some_and(|s| (200..300).contains(&s));
        match (self, notifier) {
            (Crm::Hubspot(hs), _) => {
                hs.flush_webhooks().await;
                Ok(hs
                    .webhook_deliveries()
                    .iter()
                    .filter(|d| !ok(d.status))
                    .count())
            }
            (_, Some(n)) => {
                if !n.idle(Duration::from_secs(120)).await {
                    bail!("the CRM emulator could not deliver its webhooks within 2 minutes");
                }
                Ok(n.deliveries().iter().filter(|d| !ok(d.status)).count())
            }
            (_, None) => Ok(0),
        }
    }

    /// Changes about 5 % of the records: new accounts with contacts, updated contacts and
    /// accounts, deleted contacts. Each change is announced by the emulator's notifier.
    fn burst(&self, records: usize, seed: u64) -> anyhow::Result<Burst> {
        let n = (records / 20).clamp(5, 2_000);
        let mut b = Burst::default();
        let obj = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        match self {
            Crm::Salesforce(sf) => {
                let contacts = sf.ids("Contact");
                let accounts = sf.ids("Account");
                for i in 0..n / 5 {
                    let acc = sf
                        .put_account(obj(json!({"Name": format!("Demo Account {seed}-{i}"),
                        "Phone": format!("+1 415 555 {:04}", i % 10_000)})))?;
                    b.created += 1;
                    for j in 0..2 {
                        sf.put_contact(obj(json!({"LastName": format!("Demo-{i}-{j}"),
                            "FirstName": "Webhook", "Email": format!("demo{i}.{j}@example.com"),
                            "AccountId": acc})))?;
                        b.created += 1;
                    }
                }
                for id in contacts.iter().step_by(7).take(n / 2) {
                    sf.update(id, obj(json!({"Email": format!("moved.{id}@example.org")})))?;
                    b.updated += 1;
                }
                for id in accounts.iter().step_by(5).take(n / 5) {
                    sf.update(id, obj(json!({"Phone": "+1 650 555 0199"})))?;
                    b.updated += 1;
                }
                for id in contacts.iter().skip(3).step_by(11).take(n / 5) {
                    if sf.delete(id) {
                        b.deleted += 1;
                    }
                }
            }
            Crm::Servicenow(sn) => {
                let contacts = sn.ids("customer_contact");
                let accounts = sn.ids("customer_account");
                for i in 0..n / 5 {
                    let acc = sn.put(
                        "customer_account",
                        obj(json!({"name": format!("Demo Account {seed}-{i}"),
                            "phone": format!("+1 415 555 {:04}", i % 10_000)})),
                    )?;
                    b.created += 1;
                    for j in 0..2 {
                        sn.put(
                            "customer_contact",
                            obj(json!({"last_name": format!("Demo-{i}-{j}"), "first_name": "Webhook",
                                "email": format!("demo{i}.{j}@example.com"), "account": acc})),
                        )?;
                        b.created += 1;
                    }
                }
                for id in contacts.iter().step_by(7).take(n / 2) {
                    sn.update(id, obj(json!({"email": format!("moved.{id}@example.org")})))?;
                    b.updated += 1;
                }
                for id in accounts.iter().step_by(5).take(n / 5) {
                    sn.update(id, obj(json!({"phone": "+1 650 555 0199"})))?;
                    b.updated += 1;
                }
                for id in contacts.iter().skip(3).step_by(11).take(n / 5) {
                    if sn.delete(id) {
                        b.deleted += 1;
                    }
                }
            }
            Crm::Hubspot(hs) => {
                let contacts = hs.ids(ObjectType::Contacts);
                let companies = hs.ids(ObjectType::Companies);
                for i in 0..n / 5 {
                    let acc = hs.create(
                        ObjectType::Companies,
                        obj(json!({"name": format!("Demo Account {seed}-{i}"),
                            "phone": format!("+1 415 555 {:04}", i % 10_000)})),
                    )?;
                    b.created += 1;
                    for j in 0..2 {
                        hs.create(
                            ObjectType::Contacts,
                            obj(json!({"lastname": format!("Demo-{i}-{j}"), "firstname": "Webhook",
                                "email": format!("demo{i}.{j}@example.com"), "associatedcompanyid": acc})),
                        )?;
                        b.created += 1;
                    }
                }
                for id in contacts.iter().step_by(7).take(n / 2) {
                    hs.update(
                        ObjectType::Contacts,
                        id,
                        obj(json!({"email": format!("moved.{id}@example.org")})),
                    )?;
                    b.updated += 1;
                }
                for id in companies.iter().step_by(5).take(n / 5) {
                    hs.update(
                        ObjectType::Companies,
                        id,
                        obj(json!({"phone": "+1 650 555 0199"})),
                    )?;
                    b.updated += 1;
                }
                for id in contacts.iter().skip(3).step_by(11).take(n / 5) {
                    if hs.archive(ObjectType::Contacts, id) {
                        b.deleted += 1;
                    }
                }
            }
        }
        Ok(b)
    }

    /// Every live record and, for contacts, its account.
    fn expected(&self) -> Vec<Expected> {
        let mut out = Vec::new();
        match self {
            Crm::Salesforce(sf) => out = salesforce_expected(sf),
            Crm::Servicenow(sn) => {
                for (table, entity) in [
                    ("customer_account", Entity::Account),
                    ("customer_contact", Entity::Contact),
                ] {
                    for id in sn.ids(table) {
                        let parent = match entity {
                            Entity::Contact => {
                                sn.record(&id).and_then(|r| parent_id(r.get("account")))
                            }
                            Entity::Account => None,
                        };
                        out.push(Expected {
                            entity,
                            source_id: id,
                            parent,
                        });
                    }
                }
            }
            Crm::Hubspot(hs) => {
                for (t, entity) in [
                    (ObjectType::Companies, Entity::Account),
                    (ObjectType::Contacts, Entity::Contact),
                ] {
                    for id in hs.ids(t) {
                        let parent = match entity {
                            Entity::Contact => hs.record(t, &id).and_then(|r| {
                                parent_id(r.pointer("/properties/associatedcompanyid"))
                            }),
                            Entity::Account => None,
                        };
                        out.push(Expected {
                            entity,
                            source_id: id,
                            parent,
                        });
                    }
                }
            }
        }
        out
    }
}

/// Runs the demo to its summary.
pub async fn run(opts: &Options) -> anyhow::Result<Summary> {
    if opts.records == 0 {
        bail!("--records must be at least 1");
    }
    let started = Instant::now();
    // Option 4 of msdyn_source_crm stands for HubSpot, as an admin adds it for a CRM Microsoft
    // did not number (1-3 come with the connector solution).
    let dv = Emulator::start(EmulatorConfig {
        choice_values: vec![1, 2, 3, 4],
        ..EmulatorConfig::default()
    })
    .await
    .context("starting the Dataverse emulator")?;
    let crm = Crm::start(opts.crm, opts.records, opts.seed).await?;
    let (crm_accounts, crm_contacts) = crm.counts();
    let webhook_secret = uuid::Uuid::new_v4().simple().to_string();
    // The endpoint's address is part of the configuration (HubSpot signs the URL it calls), so
    // the port is taken first and the server started on it once the pipeline exists.
    let addr = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .context("finding a free port for the webhook endpoint")?;
    let webhook_url = format!("http://{addr}/webhooks/{}", crm.source());
    let config = Config::parse(
        &crm.config_toml(&webhook_secret, &webhook_url),
        "demo configuration",
    )?;
    let sources = config.sources()?;
    let crms = config.crm_readers(&sources)?;
    let p = Arc::new(local_pipeline(sources, crms, &dv, 2000));
    let server = WebhookServer::start(p.clone(), addr)
        .await
        .context("starting the local webhook endpoint")?;
    let source = SourceId::new(crm.source())?;

    // 1. The initial sync, started as `crm-sync sync start` would.
    start_sync(&source, &[], &p.sync_ports())
        .await
        .map_err(|e| anyhow::anyhow!("starting the sync: {e}"))?;
    let sync = drive(
        &p,
        "initial sync",
        crm_accounts + crm_contacts,
        opts.progress,
    )
    .await;

    // 2. Changes in the CRM, announced by its webhooks.
    let notifier = crm.subscribe(&webhook_url, &webhook_secret);
    let burst = crm.burst(opts.records, opts.seed)?;
    let notifications_failed = crm.delivered(notifier.as_deref()).await?;
    let webhooks = drive(&p, "webhooks", burst.total(), opts.progress).await;
    server.shutdown().await;

    // 3. Dataverse against the CRM, record for record.
    let mapper = p
        .sources
        .get(&source)
        .context("the demo source is configured")?;
    let comparison = compare(&crm.expected(), &dv, mapper);
    let files = write_rows(&dv, &opts.out_dir)?;
    let rows = (dv.rows("account").len(), dv.rows("contact").len());
    Ok(Summary {
        crm: crm.name(),
        crm_accounts,
        crm_contacts,
        sync,
        burst,
        webhooks,
        notifications_failed,
        comparison,
        rows,
        elapsed: started.elapsed(),
        files,
    })
}

/// Works the queues until they drain, with a progress bar of rows written against `expected`.
async fn drive(p: &LocalPipeline, label: &str, expected: usize, show: bool) -> Phase {
    let started = Instant::now();
    let mut bar = Progress::new(label, expected as u64, show);
    let (totals, drained) = p
        .run_until_idle_with(Duration::from_secs(30 * 60), |t| {
            let u = &t.upsert;
            bar.set(u.created + u.updated + u.upserted + u.deleted + u.absent + u.dead_lettered);
        })
        .await;
    bar.finish();
    Phase {
        totals,
        elapsed: started.elapsed(),
        drained,
    }
}

/// Writes each table's rows as JSON lines, sorted by id, so the result can be read or diffed.
fn write_rows(dv: &Emulator, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    for (table, key) in [("account", "accountid"), ("contact", "contactid")] {
        let mut rows = dv.rows(table);
        rows.sort_by(|a, b| a[key].as_str().cmp(&b[key].as_str()));
        let mut text = String::new();
        for r in rows {
            text.push_str(&serde_json::to_string(&r)?);
            text.push('\n');
        }
        let path = dir.join(format!("{table}.jsonl"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }
    Ok(files)
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.sync.totals;
        let w = &self.webhooks.totals;
        let written = |t: &RunTotals| t.upsert.created + t.upsert.updated + t.upsert.upserted;
        let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "crm-sync demo: {} emulator → Dataverse emulator",
            self.crm
        )?;
        writeln!(
            f,
            "  CRM            {} accounts, {} contacts (generated)",
            self.crm_accounts, self.crm_contacts
        )?;
        writeln!(
            f,
            "  initial sync   {} rows upserted from {} page jobs in {:.1} s: {:.0} records/s",
            written(s),
            s.sync_messages,
            self.sync.elapsed.as_secs_f64(),
            rate(written(s), self.sync.elapsed),
        )?;
        writeln!(
            f,
            "  webhooks       {} signed notifications ({} creates, {} updates, {} deletes): {} rows upserted, {} deleted, in {:.1} s",
            self.burst.total(),
            self.burst.created,
            self.burst.updated,
            self.burst.deleted,
            written(w),
            w.upsert.deleted + w.upsert.absent,
            self.webhooks.elapsed.as_secs_f64(),
        )?;
        let retried = s.sync_retries
            + w.sync_retries
            + s.upsert.retrying
            + w.upsert.retrying
            + s.upsert.parked
            + w.upsert.parked;
        let failed = s.upsert.dead_lettered + w.upsert.dead_lettered;
        writeln!(
            f,
            "  retried        {retried} (contacts waiting for their account, throttling, transient errors)"
        )?;
        writeln!(
            f,
            "  failed         {failed} dead-lettered, {} webhook deliveries refused",
            self.notifications_failed
        )?;
        let c = &self.comparison;
        if c.is_exact() {
            writeln!(
                f,
                "  result         Dataverse matches the CRM record for record: {} accounts, {} contacts, every contact under its account",
                self.rows.0, self.rows.1
            )?;
        } else {
            writeln!(f, "  result         MISMATCH: {c}")?;
        }
        writeln!(f, "  total time     {:.1} s", self.elapsed.as_secs_f64())?;
        write!(f, "  look at it     ")?;
        for (i, p) in self.files.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}", p.display())?;
        }
        writeln!(f, " (one Dataverse row per line)")
    }
}
