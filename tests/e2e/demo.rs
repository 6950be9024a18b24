//! `crm-sync demo` end to end, for each emulated CRM: the initial sync and the webhook burst land
//! in the Dataverse emulator exactly as the CRM holds its records, and the summary says so.

use crm_sync::demo::{DemoCrm, Options, run};

async fn demo(crm: DemoCrm) {
    let out =
        std::env::temp_dir().join(format!("crm-sync-demo-test-{crm:?}-{}", std::process::id()));
    let s = run(&Options {
        crm,
        records: 600,
        seed: 7,
        out_dir: out.clone(),
        progress: false,
    })
    .await
    .expect("demo runs");
    assert!(s.comparison.is_exact(), "{}", s.comparison);
    assert!(s.sync.drained && s.webhooks.drained);
    // Every generated record was written by the initial sync; the burst created, changed and
    // deleted records, and the final row counts are the CRM's.
    let sync = &s.sync.totals.upsert;
    assert_eq!(
        (sync.created + sync.updated + sync.upserted) as usize,
        s.crm_accounts + s.crm_contacts
    );
    assert!(s.burst.created > 0 && s.burst.updated > 0 && s.burst.deleted > 0);
    assert_eq!(s.notifications_failed, 0);
    assert_eq!(
        s.rows.0 + s.rows.1,
        s.crm_accounts + s.crm_contacts + s.burst.created - s.burst.deleted
    );
    assert_eq!(s.comparison.matched, s.rows.0 + s.rows.1);
    let w = &s.webhooks.totals.upsert;
    // HubSpot's id-only events are fetched: one that arrives after its record was archived
    // learns it is gone and deletes it too, so there may be more deletes than archives.
    assert!(w.deleted as usize >= s.burst.deleted);
    assert_eq!(w.dead_lettered + sync.dead_lettered, 0);
    // The rows are written out for people to look at.
    let contacts = std::fs::read_to_string(out.join("contact.jsonl")).expect("contact.jsonl");
    assert_eq!(contacts.lines().count(), s.rows.1);
    let text = s.to_string();
    assert!(text.contains("matches the CRM record for record"), "{text}");
    let _ = std::fs::remove_dir_all(out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_demo_ends_exact() {
    demo(DemoCrm::Salesforce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_demo_ends_exact() {
    demo(DemoCrm::Servicenow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_demo_ends_exact() {
    demo(DemoCrm::Hubspot).await;
}
