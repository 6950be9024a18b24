//! `crm-sync reconcile` against the emulators over HTTP, for Salesforce and ServiceNow: from a
//! fully synced state, drift is made the ways it happens in production (a missed webhook for a
//! create and an update, a delete nobody was told of, a row changed in Dataverse behind our
//! back), next to a row of another source that is none of this source's business. Reconcile must
//! find exactly those records in the right categories; its repair, run through the pipeline,
//! must leave nothing for a second reconcile and Dataverse equal to the CRM record for record.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crm_emulator::{SalesforceConfig, SalesforceEmulator, ServiceNowConfig, ServiceNowEmulator};
use crm_sync::emulated::{self, Expected, compare, dataverse_client};
use crm_sync::reconcile::{Options, Report, reconcile};
use dataverse::DataverseWriter;
use dataverse_emulator::{Emulator, EmulatorConfig, KeyStatus};
use mapping::{DataverseOp, Entity, IdentityStrategy, Method, SourceId};
use pipeline::config::Config;
use pipeline::queue::Queue;
use pipeline::runner::LocalPipeline;
use pipeline::sync::start_sync;
use serde_json::{Map, Value, json};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// The initial sync of `source`, run through the local pipeline until idle.
async fn synced(toml: &str, source: &str, dv: &Emulator) -> LocalPipeline {
    let config = Config::parse(toml, "test.toml").unwrap();
    let sources = config.sources().unwrap();
    let crms = config.crm_readers(&sources).unwrap();
    let p = emulated::local_pipeline(sources, crms, dv, 50);
    start_sync(&SourceId::new(source).unwrap(), &[], &p.sync_ports())
        .await
        .unwrap();
    let (totals, idle) = p.run_until_idle(Duration::from_secs(120)).await;
    assert!(idle, "{totals:?}");
    p
}

/// Reconciles with small pages on both sides (so paging and next links are exercised); with
/// `repair`, onto the pipeline's upsert queue.
async fn run(p: &LocalPipeline, dv: &Emulator, source: &str, repair: bool) -> Report {
    let id = SourceId::new(source).unwrap();
    let queue: Option<&dyn Queue> = repair.then_some(p.queues.upsert.as_ref() as &dyn Queue);
    reconcile(
        p.sources.get(&id).unwrap(),
        p.sources.identity,
        p.crms[&id].as_ref(),
        &dataverse_client(dv),
        &Options {
            show: 1000,
            crm_page_size: 40,
            dataverse_page_size: 35,
            ..Options::default()
        },
        queue,
    )
    .await
    .unwrap()
}

/// What a report found for one entity: missing, orphaned, and different with their columns.
type Found = (
    BTreeSet<String>,
    BTreeSet<String>,
    BTreeMap<String, Vec<String>>,
);

fn found(r: &Report, entity: Entity) -> Found {
    let e = r
        .entities
        .iter()
        .find(|e| e.entity == entity.as_str())
        .unwrap();
    assert_eq!(e.missing.count as usize, e.missing.ids.len());
    assert_eq!(e.orphaned.count as usize, e.orphaned.ids.len());
    assert_eq!(e.different as usize, e.different_ids.len());
    (
        e.missing.ids.iter().cloned().collect(),
        e.orphaned.ids.iter().cloned().collect(),
        e.different_ids
            .iter()
            .map(|d| (d.id.clone(), d.columns.clone()))
            .collect(),
    )
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Writes a row straight through the Dataverse Web API, as another tool or a user would.
async fn patch(dv: &Emulator, path: String, body: Value) {
    let op = DataverseOp {
        method: Method::Patch,
        path,
        if_match_any: false,
        body: Some(obj(body)),
    };
    let r = dataverse_client(dv).apply(&[op], None).await;
    assert!(r[0].is_ok(), "{r:?}");
}

/// Another CRM's `msdyn_source_crm` (the emulator's choice column takes 1, 2 and 3; the tests'
/// sources are 1 and 2).
const OTHER_CHOICE: i32 = 3;

/// A row of another CRM (another `msdyn_source_crm`), in both tables.
async fn other_source_rows(dv: &Emulator) {
    patch(
        dv,
        format!("accounts({})", uuid::Uuid::new_v4()),
        json!({"name": "Other CRM's account", "msdyn_source_crm": OTHER_CHOICE, "msdyn_source_crm_id": "OTHER-1"}),
    )
    .await;
    patch(
        dv,
        format!("contacts({})", uuid::Uuid::new_v4()),
        json!({"lastname": "Other CRM's contact", "msdyn_source_crm": OTHER_CHOICE, "msdyn_source_crm_id": "OTHER-2"}),
    )
    .await;
}

/// Repairs, runs the pipeline until idle, then checks a second reconcile finds nothing and the
/// emulators compare equal record for record.
async fn repair_and_check(
    p: &LocalPipeline,
    dv: &Emulator,
    source: &str,
    drift: u64,
    expected: impl Fn() -> Vec<Expected>,
) {
    let r = run(p, dv, source, true).await;
    let repair = r.repair.clone().unwrap();
    assert_eq!(repair.upserts + repair.deletes, drift, "{r}");
    assert_eq!(repair.left, 0);
    assert!(!r.unresolved());
    let (totals, idle) = p.run_until_idle(Duration::from_secs(120)).await;
    assert!(idle, "{totals:?}");
    assert!(
        p.queues.upsert_dlq.is_empty() && p.queues.sync_dlq.is_empty(),
        "{totals:?}"
    );
    let again = run(p, dv, source, false).await;
    assert_eq!(again.drift(), 0, "{again}");
    let id = SourceId::new(source).unwrap();
    if p.sources.identity == IdentityStrategy::DeterministicId {
        // (The comparison finds rows at their deterministic ids.)
        let cmp = compare(&expected(), dv, p.sources.get(&id).unwrap());
        assert!(cmp.is_exact(), "{cmp}");
    }
    let crm = expected();
    for (table, entity) in [("account", Entity::Account), ("contact", Entity::Contact)] {
        let ours = dv
            .rows(table)
            .iter()
            .filter(|r| r["msdyn_source_crm"] != OTHER_CHOICE)
            .count();
        assert_eq!(ours, crm.iter().filter(|e| e.entity == entity).count());
    }
    // The other source's rows are still there, untouched.
    for table in ["account", "contact"] {
        assert_eq!(
            dv.rows(table)
                .iter()
                .filter(|r| r["msdyn_source_crm"] == OTHER_CHOICE)
                .count(),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_drift_is_found_and_repaired() {
    salesforce_drift(IdentityStrategy::DeterministicId).await;
}

/// Under `alternate-key` rows sit at GUIDs Dataverse chose and a contact's parent comes back as
/// one of those: reconcile resolves it to the account's source id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_drift_is_found_and_repaired_under_alternate_keys() {
    salesforce_drift(IdentityStrategy::AlternateKey).await;
}

async fn salesforce_drift(identity: IdentityStrategy) {
    let sf = SalesforceEmulator::start(SalesforceConfig {
        accounts: 40,
        contacts_per_account: 3,
        orphan_contacts: 4,
        ..SalesforceConfig::default()
    })
    .await
    .unwrap();
    let alternate = identity == IdentityStrategy::AlternateKey;
    let dv = Emulator::start(EmulatorConfig {
        alternate_key: alternate.then_some(KeyStatus::Active),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let toml = format!(
        r#"
[dataverse]
identity = "{}"

[[sources]]
id = "sf"
kind = "salesforce"
crm_choice = 1
base_url = "https://acme.my.salesforce.com"
[sources.connection]
auth = "salesforce-client-credentials"
token_url = "{}"
client_id = "{}"
client_secret = "{}"
"#,
        if alternate {
            "alternate-key"
        } else {
            "deterministic-id"
        },
        sf.token_url(),
        sf.config().client_id,
        sf.config().client_secret
    );
    let p = synced(&toml, "sf", &dv).await;
    other_source_rows(&dv).await;
    let clean = run(&p, &dv, "sf", false).await;
    assert_eq!(clean.drift(), 0, "{clean}");
    assert_eq!(clean.entities[0].crm_records as usize, sf.count("Account"));
    assert_eq!(clean.entities[1].in_sync as usize, sf.count("Contact"));

    let src = SourceId::new("sf").unwrap();
    let accounts = sf.ids("Account");
    let contacts = sf.ids("Contact");
    // Missed webhooks: a create of each kind and an update, made without notifying anyone.
    let new_account = sf
        .put_account(obj(
            json!({"Name": "Missed Webhook Ltd", "Phone": "+1 415 555 0100"}),
        ))
        .unwrap();
    let new_contact = sf
        .put_contact(obj(
            json!({"LastName": "Late", "FirstName": "Lou", "AccountId": new_account}),
        ))
        .unwrap();
    sf.update(
        &accounts[0],
        obj(json!({"Name": "Renamed Behind The Webhook"})),
    )
    .unwrap();
    // A delete nobody was told of.
    assert!(sf.delete(&contacts[1]));
    // Rows changed in Dataverse behind our back.
    let ctx = p.sources.row_context(&src).unwrap();
    let path = |e: Entity, id: &str| ctx.path(e, id).unwrap();
    patch(
        &dv,
        path(Entity::Contact, &contacts[2]),
        json!({"lastname": "Changed In Dataverse"}),
    )
    .await;
    patch(
        &dv,
        path(Entity::Account, &accounts[3]),
        json!({"name": "Hijacked", "telephone1": "+44 20 7946 0000"}),
    )
    .await;

    let r = run(&p, &dv, "sf", false).await;
    assert!(r.unresolved());
    let (missing, orphaned, different) = found(&r, Entity::Account);
    assert_eq!(missing, set(&[&new_account]), "{r}");
    assert_eq!(orphaned, set(&[]), "{r}");
    assert_eq!(
        different,
        BTreeMap::from([
            (accounts[0].clone(), vec!["name".to_string()]),
            (
                accounts[3].clone(),
                vec!["name".to_string(), "telephone1".to_string()]
            ),
        ]),
        "{r}"
    );
    let (missing, orphaned, different) = found(&r, Entity::Contact);
    assert_eq!(missing, set(&[&new_contact]), "{r}");
    assert_eq!(orphaned, set(&[&contacts[1]]), "{r}");
    assert_eq!(
        different,
        BTreeMap::from([(contacts[2].clone(), vec!["lastname".to_string()])]),
        "{r}"
    );

    repair_and_check(&p, &dv, "sf", 6, || {
        let mut out = Vec::new();
        for (object, entity) in [("Account", Entity::Account), ("Contact", Entity::Contact)] {
            for id in sf.ids(object) {
                let parent = (entity == Entity::Contact)
                    .then(|| {
                        sf.record(&id)
                            .and_then(|r| r["AccountId"].as_str().map(String::from))
                    })
                    .flatten();
                out.push(Expected {
                    entity,
                    source_id: id,
                    parent,
                });
            }
        }
        out
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_drift_is_found_and_repaired() {
    let sn = ServiceNowEmulator::start(ServiceNowConfig {
        accounts: 30,
        contacts_per_account: 3,
        orphan_contacts: 3,
        ..ServiceNowConfig::default()
    })
    .await
    .unwrap();
    let dv = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let toml = format!(
        r#"
[[sources]]
id = "sn"
kind = "servicenow"
base_url = "{}"
connection = {{ auth = "servicenow-basic", user = "{}", password = "{}" }}
"#,
        sn.base_url(),
        sn.config().user,
        sn.config().password
    );
    let p = synced(&toml, "sn", &dv).await;
    other_source_rows(&dv).await;
    let clean = run(&p, &dv, "sn", false).await;
    assert_eq!(clean.drift(), 0, "{clean}");

    let accounts = sn.ids("customer_account");
    let contacts = sn.ids("customer_contact");
    let new_account = sn
        .put(
            "customer_account",
            obj(json!({"name": "Missed Webhook Ltd", "phone": "+1 415 555 0100"})),
        )
        .unwrap();
    let new_contact = sn
        .put(
            "customer_contact",
            obj(json!({"first_name": "Lou", "last_name": "Late", "account": new_account})),
        )
        .unwrap();
    sn.update(
        &accounts[0],
        obj(json!({"name": "Renamed Behind The Webhook"})),
    )
    .unwrap();
    assert!(sn.delete(&contacts[1]));
    // sys_ids are the row ids (guid passthrough).
    let row = |id: &str| uuid::Uuid::try_parse(id).unwrap();
    patch(
        &dv,
        format!("contacts({})", row(&contacts[2])),
        json!({"lastname": "Changed In Dataverse"}),
    )
    .await;

    let r = run(&p, &dv, "sn", false).await;
    let (missing, orphaned, different) = found(&r, Entity::Account);
    assert_eq!(missing, set(&[&new_account]), "{r}");
    assert_eq!(orphaned, set(&[]), "{r}");
    assert_eq!(
        different,
        BTreeMap::from([(accounts[0].clone(), vec!["name".to_string()])]),
        "{r}"
    );
    let (missing, orphaned, different) = found(&r, Entity::Contact);
    assert_eq!(missing, set(&[&new_contact]), "{r}");
    assert_eq!(orphaned, set(&[&contacts[1]]), "{r}");
    assert_eq!(
        different,
        BTreeMap::from([(contacts[2].clone(), vec!["lastname".to_string()])]),
        "{r}"
    );

    repair_and_check(&p, &dv, "sn", 5, || {
        let mut out = Vec::new();
        for (table, entity) in [
            ("customer_account", Entity::Account),
            ("customer_contact", Entity::Contact),
        ] {
            for id in sn.ids(table) {
                let parent = (entity == Entity::Contact)
                    .then(|| {
                        sn.record(&id)
                            .and_then(|r| r["account"].as_str().map(String::from))
                            .filter(|s| !s.is_empty())
                    })
                    .flatten();
                out.push(Expected {
                    entity,
                    source_id: id,
                    parent,
                });
            }
        }
        out
    })
    .await;
}
