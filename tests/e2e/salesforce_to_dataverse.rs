//! An initial sync from the Salesforce emulator through the real clients, the three steps and the
//! in-process queues into the Dataverse emulator: every account and contact ends in Dataverse,
//! each contact under the right account.

use std::time::Duration;

use crm_emulator::{SalesforceConfig, SalesforceEmulator};
use dataverse_emulator::{Emulator, EmulatorConfig};
use mapping::identity::record_guid;
use mapping::{Entity, SourceId};
use pipeline::config::Config;
use pipeline::sync::start_sync;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_lands_every_record_with_its_parent() {
    let sf = SalesforceEmulator::start(SalesforceConfig {
        accounts: 150,
        contacts_per_account: 4,
        orphan_contacts: 10,
        ..SalesforceConfig::default()
    })
    .await
    .unwrap();
    let dv = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let toml = format!(
        r#"
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
        sf.token_url(),
        sf.config().client_id,
        sf.config().client_secret
    );
    let config = Config::parse(&toml, "test.toml").unwrap();
    let sources = config.sources().unwrap();
    let crms = config.crm_readers(&sources).unwrap();
    let p = crm_sync::emulated::local_pipeline(sources, crms, &dv, 200);
    start_sync(&SourceId::new("sf").unwrap(), &[], &p.sync_ports())
        .await
        .unwrap();
    let (totals, idle) = p.run_until_idle(Duration::from_secs(60)).await;
    assert!(idle, "{totals:?}");

    let accounts = dv.rows("account");
    let contacts = dv.rows("contact");
    assert_eq!(accounts.len(), sf.count("Account"), "{totals:?}");
    assert_eq!(contacts.len(), sf.count("Contact"), "{totals:?}");
    let src = SourceId::new("sf").unwrap();
    // Each contact's parent is the account Salesforce says it belongs to.
    let mut checked = 0;
    for id in sf.ids("Contact") {
        let rec = sf.record(&id).unwrap();
        let row = contacts
            .iter()
            .find(|r| r["msdyn_source_crm_id"] == id.as_str())
            .unwrap_or_else(|| panic!("contact {id} missing"));
        assert_eq!(
            row["contactid"],
            record_guid(&src, Entity::Contact, &id, false).to_string()
        );
        match rec.get("AccountId").and_then(|v| v.as_str()) {
            Some(acc) => assert_eq!(
                row["_parentcustomerid_value"],
                record_guid(&src, Entity::Account, acc, false).to_string(),
                "contact {id}"
            ),
            None => assert!(
                row.get("_parentcustomerid_value")
                    .is_none_or(|v| v.is_null())
            ),
        }
        checked += 1;
    }
    assert_eq!(checked, 610);
    assert!(p.queues.upsert_dlq.is_empty() && p.queues.sync_dlq.is_empty());
}
