//! An initial sync from the ServiceNow emulator into the Dataverse emulator: sys_ids become the
//! row ids unchanged and every contact lands under its account.

use std::time::Duration;

use crm_emulator::{ServiceNowConfig, ServiceNowEmulator};
use dataverse_emulator::{Emulator, EmulatorConfig};
use mapping::SourceId;
use pipeline::config::Config;
use pipeline::sync::start_sync;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_keeps_sys_ids_as_row_ids() {
    let sn = ServiceNowEmulator::start(ServiceNowConfig {
        accounts: 80,
        contacts_per_account: 3,
        orphan_contacts: 5,
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
    let config = Config::parse(&toml, "test.toml").unwrap();
    let sources = config.sources().unwrap();
    let crms = config.crm_readers(&sources).unwrap();
    let p = crm_sync::emulated::local_pipeline(sources, crms, &dv, 100);
    start_sync(&SourceId::new("sn").unwrap(), &[], &p.sync_ports())
        .await
        .unwrap();
    let (totals, idle) = p.run_until_idle(Duration::from_secs(60)).await;
    assert!(idle, "{totals:?}");
    let accounts = dv.rows("account");
    let contacts = dv.rows("contact");
    assert_eq!(accounts.len(), sn.count("customer_account"));
    assert_eq!(contacts.len(), sn.count("customer_contact"));
    for id in sn.ids("customer_contact") {
        let rec = sn.record(&id).unwrap();
        let guid = |s: &str| uuid_of(s);
        let row = contacts
            .iter()
            .find(|r| r["contactid"] == guid(&id))
            .unwrap_or_else(|| panic!("{id}"));
        let parent = rec
            .get("account")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty());
        match parent {
            Some(acc) => assert_eq!(row["_parentcustomerid_value"], guid(acc)),
            None => assert!(
                row.get("_parentcustomerid_value")
                    .is_none_or(|v| v.is_null())
            ),
        }
    }
    assert!(p.queues.upsert_dlq.is_empty() && p.queues.sync_dlq.is_empty());
}

/// A 32-hex sys_id in GUID form, as Dataverse shows it.
fn uuid_of(sys_id: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &sys_id[..8],
        &sys_id[8..12],
        &sys_id[12..16],
        &sys_id[16..20],
        &sys_id[20..]
    )
}
