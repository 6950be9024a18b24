//! ServiceNowClient against the ServiceNow emulator, through the CrmReader trait only: a full
//! keyset walk with exact counts, changes during a walk caught by a modified_since pass, rate
//! limits, fetch by id, and credentials that stay secret.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DurationRound, Utc};
use crm::servicenow::{ServiceNowClient, ServiceNowSettings};
use crm::{CrmError, CrmReader, PageRequest};
use crm_emulator::{ServiceNowConfig, ServiceNowEmulator};
use mapping::Entity;
use serde_json::{Map, Value, json};

fn fields() -> HashMap<Entity, Vec<String>> {
    HashMap::from([
        (
            Entity::Account,
            ["name", "phone", "city"].map(String::from).to_vec(),
        ),
        (
            Entity::Contact,
            ["first_name", "last_name", "email", "account"]
                .map(String::from)
                .to_vec(),
        ),
    ])
}

async fn instance(accounts: usize, per: usize, orphans: usize) -> ServiceNowEmulator {
    ServiceNowEmulator::start(ServiceNowConfig {
        accounts,
        contacts_per_account: per,
        orphan_contacts: orphans,
        ..ServiceNowConfig::default()
    })
    .await
    .expect("emulator starts")
}

fn client_with(emu: &ServiceNowEmulator, password: &str) -> ServiceNowClient {
    let s = ServiceNowSettings::new(&emu.base_url(), &emu.config().user, password);
    ServiceNowClient::new(s, fields()).expect("client")
}

fn client(emu: &ServiceNowEmulator) -> ServiceNowClient {
    client_with(emu, &emu.config().password.clone())
}

fn id_of(r: &Value) -> String {
    r["sys_id"].as_str().expect("sys_id").to_string()
}

/// Walks an entity to the end from `start`, calling `during` after each page.
async fn walk(
    c: &ServiceNowClient,
    e: Entity,
    start: PageRequest,
    mut during: impl FnMut(usize),
) -> Vec<Value> {
    let mut req = start;
    let mut out = Vec::new();
    for page_no in 0.. {
        let page = c.list_page(e, &req).await.expect("page");
        assert!(page.cursor.is_none(), "keyset paging hands out no cursor");
        out.extend(page.records);
        if !page.more {
            break;
        }
        req.checkpoint = page.checkpoint;
        during(page_no);
    }
    out
}

fn unique(records: &[Value]) -> HashSet<String> {
    let ids: HashSet<String> = records.iter().map(id_of).collect();
    assert_eq!(ids.len(), records.len(), "duplicates in the walk");
    ids
}

fn req(size: u32) -> PageRequest {
    PageRequest {
        page_size: size,
        ..PageRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_walk_reads_every_record_once() {
    let emu = instance(1300, 3, 40).await;
    let c = client(&emu);
    let first = c
        .list_page(Entity::Contact, &req(500))
        .await
        .expect("first page");
    assert_eq!(first.total, Some(1300 * 3 + 40));
    let accounts = walk(&c, Entity::Account, req(500), |_| {}).await;
    let contacts = walk(&c, Entity::Contact, req(500), |_| {}).await;
    assert_eq!(accounts.len(), 1300);
    assert_eq!(contacts.len(), 1300 * 3 + 40);
    assert!(accounts.len() + contacts.len() > 5_000);
    let ids = unique(&accounts);
    assert_eq!(ids, emu.ids("customer_account").into_iter().collect());
    assert_eq!(
        unique(&contacts),
        emu.ids("customer_contact").into_iter().collect()
    );
    // Walk order is (sys_updated_on, sys_id), and ties on sys_updated_on exist.
    let keys: Vec<(String, String)> = contacts
        .iter()
        .map(|r| {
            (
                r["sys_updated_on"].as_str().unwrap_or("").to_string(),
                id_of(r),
            )
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    assert!(
        keys.windows(2).any(|w| w[0].0 == w[1].0),
        "no ties generated"
    );
    // Requested fields plus the paging ones, references as {link, value}.
    let with_account = contacts
        .iter()
        .find(|r| r["account"].is_object())
        .expect("a contact with an account");
    assert!(ids.contains(with_account["account"]["value"].as_str().unwrap_or("")));
    let mut keys: Vec<&str> = with_account
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "account",
            "email",
            "first_name",
            "last_name",
            "sys_id",
            "sys_updated_on"
        ]
    );
    // Pages of 500 over 1300 accounts: 3 requests (the last page is short).
    let before = emu.stats().list_requests;
    walk(&c, Entity::Account, req(500), |_| {}).await;
    assert_eq!(emu.stats().list_requests - before, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_a_walk_are_caught_by_modified_since() {
    let emu = instance(600, 0, 0).await;
    let c = client(&emu);
    let started = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .expect("trunc");
    let ids = emu.ids("customer_account");
    let mut changed = Vec::new();
    let first = walk(&c, Entity::Account, req(100), |page| {
        // Rename an account the walk already passed, and one it has not reached yet.
        for id in [&ids[page * 7], &ids[ids.len() - 1 - page]] {
            let mut f = Map::new();
            f.insert("name".into(), json!(format!("Changed {page}")));
            emu.update(id, f).expect("update");
            changed.push(id.clone());
        }
    })
    .await;
    // Records moved to the end of the order may be read twice, never skipped.
    let seen: HashSet<String> = first.iter().map(id_of).collect();
    assert_eq!(seen.len(), 600);
    let catch_up = walk(
        &c,
        Entity::Account,
        PageRequest {
            page_size: 100,
            modified_since: Some(started),
            ..PageRequest::default()
        },
        |_| {},
    )
    .await;
    let caught = unique(&catch_up);
    for id in &changed {
        assert!(
            caught.contains(id),
            "{id} changed during the walk but not caught"
        );
    }
    assert_eq!(caught.len(), changed.iter().collect::<HashSet<_>>().len());
    for r in &catch_up {
        assert!(r["name"].as_str().unwrap_or("").starts_with("Changed"));
    }
}

#[tokio::test]
async fn rate_limit_is_a_pause() {
    let emu = instance(20, 1, 0).await;
    emu.set_rate_limit(Some((2, Duration::from_secs(20))));
    let c = client(&emu);
    c.list_page(Entity::Account, &req(5)).await.expect("1");
    c.list_page(Entity::Account, &req(5)).await.expect("2");
    match c.list_page(Entity::Account, &req(5)).await {
        Err(CrmError::RateLimited(d)) => {
            assert!(d > Duration::ZERO && d <= Duration::from_secs(20), "{d:?}");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    let err = c
        .fetch_by_ids(Entity::Account, &emu.ids("customer_account"))
        .await
        .expect_err("limited");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn fetch_by_ids_reports_missing() {
    let emu = instance(150, 1, 0).await;
    let c = client(&emu);
    let mut ids = emu.ids("customer_account");
    let gone = ids[3].clone();
    assert!(emu.delete(&gone));
    ids.push("0".repeat(32));
    ids.push("not-a-sys-id^ORsys_id>0".into());
    let got = c.fetch_by_ids(Entity::Account, &ids).await.expect("fetch");
    assert_eq!(got.records.len(), 149);
    assert_eq!(
        got.missing,
        vec![gone, "0".repeat(32), "not-a-sys-id^ORsys_id>0".to_string()]
    );
    // 150 valid-looking ids → two sys_idIN queries of at most 100.
    assert_eq!(emu.stats().list_requests, 2);
    let contacts = emu.ids("customer_contact");
    let one = c
        .fetch_by_ids(Entity::Contact, &contacts[..1])
        .await
        .expect("contact");
    assert_eq!(one.records.len(), 1);
    assert!(one.records[0]["account"]["value"].is_string());
}

#[tokio::test]
async fn wrong_password_is_access_without_the_password() {
    let emu = instance(3, 1, 0).await;
    let secret = "Sup3r-Secret-Pa55";
    let c = client_with(&emu, secret);
    let err = c
        .list_page(Entity::Account, &req(10))
        .await
        .expect_err("refused");
    assert!(matches!(err, CrmError::Access(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains(secret));
    assert!(!format!("{err:?}").contains(secret));
    assert!(!format!("{c:?}").contains(secret));
    let err = c
        .fetch_by_ids(Entity::Account, &emu.ids("customer_account"))
        .await
        .expect_err("refused");
    assert!(matches!(err, CrmError::Access(_)));
}

#[tokio::test]
async fn unknown_table_is_permanent() {
    let emu = instance(3, 1, 0).await;
    let mut s =
        ServiceNowSettings::new(&emu.base_url(), &emu.config().user, &emu.config().password);
    s.account_table = "u_my_accounts".into();
    let c = ServiceNowClient::new(s, fields()).expect("client");
    let err = c
        .list_page(Entity::Account, &req(10))
        .await
        .expect_err("invalid table");
    assert!(
        matches!(err, CrmError::Permanent(ref m) if m.contains("Invalid table")),
        "{err:?}"
    );
    let mut bad = ServiceNowSettings::new(&emu.base_url(), "u", "p");
    bad.contact_table = "x?y".into();
    assert!(ServiceNowClient::new(bad, fields()).is_err());
}

#[tokio::test]
async fn link_cursors_are_followed_only_on_the_instance() {
    let emu = instance(12, 0, 0).await;
    let c = client(&emu);
    let start = format!(
        "{}/api/now/table/customer_account?sysparm_limit=5&sysparm_offset=0&sysparm_query=ORDERBYsys_id",
        emu.base_url()
    );
    let mut cursor = Some(start);
    let mut seen = Vec::new();
    while let Some(cur) = cursor.take() {
        let page = c
            .list_page(
                Entity::Account,
                &PageRequest {
                    cursor: Some(cur),
                    page_size: 5,
                    ..PageRequest::default()
                },
            )
            .await
            .expect("page");
        seen.extend(page.records.iter().map(id_of));
        assert_eq!(page.more, page.cursor.is_some());
        cursor = page.cursor;
    }
    assert_eq!(seen, emu.ids("customer_account"));

    let before = emu.stats().requests;
    let poisoned = PageRequest {
        cursor: Some("https://evil.example/api/now/table/customer_account".into()),
        page_size: 5,
        ..PageRequest::default()
    };
    let err = c
        .list_page(Entity::Account, &poisoned)
        .await
        .expect_err("refused");
    assert!(matches!(err, CrmError::Permanent(_)), "{err:?}");
    assert_eq!(emu.stats().requests, before, "nothing was sent");
}
