//! SalesforceClient against the Salesforce emulator, through the CrmReader trait only: full
//! walks with exact counts, cursors dying mid-walk, changes during a walk, limits, a poisoned
//! next URL, fetch by id, credentials.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use crm::salesforce::{SalesforceAuth, SalesforceClient, SalesforceSettings};
use crm::{CrmError, CrmReader, Page, PageRequest};
use crm_emulator::{SalesforceConfig, SalesforceEmulator};
use mapping::Entity;
use serde_json::{Map, Value, json};

fn fields() -> HashMap<Entity, Vec<String>> {
    HashMap::from([
        (
            Entity::Account,
            [
                "Name",
                "Phone",
                "BillingCity",
                "BillingAddress",
                "ChangeEventHeader",
                "IsDeleted",
            ]
            .map(String::from)
            .to_vec(),
        ),
        (
            Entity::Contact,
            ["FirstName", "LastName", "Email", "AccountId", "Name"]
                .map(String::from)
                .to_vec(),
        ),
    ])
}

async fn org(accounts: usize, per: usize, orphans: usize) -> SalesforceEmulator {
    SalesforceEmulator::start(SalesforceConfig {
        accounts,
        contacts_per_account: per,
        orphan_contacts: orphans,
        ..SalesforceConfig::default()
    })
    .await
    .expect("emulator starts")
}

fn client(emu: &SalesforceEmulator) -> SalesforceClient {
    let cfg = emu.config();
    let mut s = SalesforceSettings::new(&emu.token_url(), &cfg.client_id, &cfg.client_secret);
    s.high_usage_pause = std::time::Duration::from_millis(10);
    SalesforceClient::new(s, fields()).expect("client")
}

fn id_of(r: &Value) -> String {
    r["Id"].as_str().expect("Id").to_string()
}

/// Walks an entity to the end, restarting from the checkpoint whenever the cursor dies, and
/// calling `during` after each page. Returns every record in walk order.
async fn walk(
    c: &SalesforceClient,
    e: Entity,
    size: u32,
    mut during: impl FnMut(usize),
) -> (Vec<Value>, usize) {
    let mut req = PageRequest {
        page_size: size,
        ..PageRequest::default()
    };
    let mut out = Vec::new();
    let mut restarts = 0;
    for page_no in 0.. {
        let page: Page = match c.list_page(e, &req).await {
            Ok(p) => p,
            Err(CrmError::CursorExpired) => {
                restarts += 1;
                req.cursor = None;
                continue;
            }
            Err(other) => panic!("walk failed: {other}"),
        };
        out.extend(page.records);
        if !page.more {
            break;
        }
        req.cursor = page.cursor;
        req.checkpoint = page.checkpoint;
        during(page_no);
    }
    (out, restarts)
}

fn assert_unique(records: &[Value]) -> HashSet<String> {
    let ids: HashSet<String> = records.iter().map(id_of).collect();
    assert_eq!(ids.len(), records.len(), "duplicates in the walk");
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_walk_reads_every_record_once() {
    let emu = org(2600, 3, 50).await;
    let c = client(&emu);
    let (accounts, _) = walk(&c, Entity::Account, 2000, |_| {}).await;
    let (contacts, _) = walk(&c, Entity::Contact, 2000, |_| {}).await;
    assert_eq!(accounts.len(), 2600);
    assert_eq!(contacts.len(), 2600 * 3 + 50);
    assert!(accounts.len() + contacts.len() > 10_000);
    assert_eq!(
        assert_unique(&accounts),
        emu.ids("Account").into_iter().collect()
    );
    assert_eq!(
        assert_unique(&contacts),
        emu.ids("Contact").into_iter().collect()
    );
    // Requested fields come back; non-columns were dropped; paging fields were added.
    let a = &accounts[0];
    assert!(a.get("Name").is_some() && a.get("SystemModstamp").is_some());
    assert!(a.get("ChangeEventHeader").is_none());
    assert!(contacts.iter().filter(|c| c["AccountId"].is_null()).count() == 50);
    // Ordered by (SystemModstamp, Id).
    let keys: Vec<(String, String)> = accounts
        .iter()
        .map(|r| {
            (
                r["SystemModstamp"].as_str().unwrap_or("").to_string(),
                id_of(r),
            )
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    // One session for the whole walk, 2 + 4 pages.
    let st = emu.stats();
    assert_eq!(st.sessions, 1);
    assert_eq!(st.queries, 2);
    assert_eq!(st.query_more, 1 + 3);
    let (used, limit) = c.api_usage();
    assert_eq!((used, limit), (6, 100_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_cursor_resumes_from_checkpoint_without_loss_or_duplicates() {
    let emu = org(1500, 0, 0).await;
    let c = client(&emu);
    // Sessions die after page 1 (token and cursor), cursors alone after page 4.
    let (records, restarts) = walk(&c, Entity::Account, 200, |page| match page {
        1 => emu.expire_sessions(),
        4 => emu.expire_cursors(),
        _ => {}
    })
    .await;
    assert_eq!(restarts, 2);
    assert_eq!(records.len(), 1500);
    assert_eq!(
        assert_unique(&records),
        emu.ids("Account").into_iter().collect()
    );
    assert_eq!(
        emu.stats().sessions,
        2,
        "re-authenticated once after the 401"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_a_walk_are_caught_by_the_catch_up_pass() {
    let emu = org(1000, 0, 0).await;
    let c = client(&emu);
    let started = Utc::now() - chrono::Duration::seconds(1);
    let all_before = emu.ids("Account");
    let (first_seen, last_unseen) = (all_before[0].clone(), all_before[999].clone());
    let mut new_id = String::new();
    let (records, restarts) = walk(&c, Entity::Account, 200, |page| {
        if page == 1 {
            let mut m = Map::new();
            m.insert("Name".into(), json!("Brand New Ltd."));
            new_id = emu.put_account(m).expect("insert");
            for id in [&first_seen, &last_unseen] {
                let mut m = Map::new();
                m.insert("Phone".into(), json!("+1 555 0100"));
                emu.update(id, m).expect("update");
            }
            // The snapshot cursor dies too: the keyset restart must see the moved record once.
            emu.expire_cursors();
        }
    })
    .await;
    assert_eq!(restarts, 1);
    // Keyset resumption sees rows changed after the checkpoint, including the new one. A row
    // read before it changed is read again in its new version (idempotent upserts absorb it);
    // every other row is read exactly once.
    let mut times: HashMap<String, usize> = HashMap::new();
    for r in &records {
        *times.entry(id_of(r)).or_default() += 1;
    }
    assert_eq!(times.get(&new_id), Some(&1));
    assert_eq!(times.get(&first_seen), Some(&2));
    assert_eq!(times.get(&last_unseen), Some(&1));
    assert!(times.values().all(|n| *n <= 2));
    assert_eq!(times.len(), 1001);
    assert_eq!(records.len(), 1002);
    let latest = records
        .iter()
        .rev()
        .find(|r| id_of(r) == first_seen)
        .expect("re-read");
    assert_eq!(latest["Phone"], json!("+1 555 0100"));
    // The catch-up pass returns exactly what changed since the walk began.
    let page = c
        .list_page(
            Entity::Account,
            &PageRequest {
                modified_since: Some(started),
                page_size: 2000,
                ..PageRequest::default()
            },
        )
        .await
        .expect("catch-up");
    let changed: HashSet<String> = page.records.iter().map(id_of).collect();
    assert_eq!(
        changed,
        HashSet::from([new_id.clone(), first_seen.clone(), last_unseen.clone()])
    );
    assert!(
        page.records
            .iter()
            .all(|r| r["Phone"] == json!("+1 555 0100") || r["Name"] == json!("Brand New Ltd."))
    );
    assert!(!page.more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_limit_is_a_pause_not_a_crash() {
    let emu = org(10, 1, 0).await;
    let c = client(&emu);
    let req = PageRequest {
        page_size: 200,
        ..PageRequest::default()
    };
    c.list_page(Entity::Account, &req)
        .await
        .expect("first call");
    emu.set_daily_limit(1);
    match c.list_page(Entity::Account, &req).await {
        Err(e @ CrmError::RateLimited(_)) => assert!(e.is_retryable()),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // Raised again, the same request works.
    emu.set_daily_limit(1000);
    assert_eq!(
        c.list_page(Entity::Account, &req)
            .await
            .expect("after")
            .records
            .len(),
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_url_on_another_host_is_refused() {
    let emu = org(500, 0, 0).await;
    let c = client(&emu);
    emu.set_next_records_origin(Some("http://evil.example:8080".into()));
    let req = PageRequest {
        page_size: 200,
        ..PageRequest::default()
    };
    match c.list_page(Entity::Account, &req).await {
        Err(CrmError::Permanent(m)) => assert!(m.contains("another host"), "{m}"),
        other => panic!("expected Permanent, got {other:?}"),
    }
    emu.set_next_records_origin(None);
    let before = emu.stats().requests;
    let poisoned = PageRequest {
        cursor: Some("https://evil.example/services/data/v62.0/query/01gX-200".into()),
        page_size: 200,
        ..PageRequest::default()
    };
    assert!(matches!(
        c.list_page(Entity::Account, &poisoned).await,
        Err(CrmError::Permanent(_))
    ));
    assert_eq!(emu.stats().requests, before, "nothing was sent anywhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_by_ids_reports_missing_ids() {
    let emu = org(300, 1, 0).await;
    let c = client(&emu);
    let ids = emu.ids("Contact");
    let gone = ids[2].clone();
    assert!(emu.delete(&gone));
    let mut wanted: Vec<String> = ids[..250].iter().filter(|i| **i != gone).cloned().collect();
    wanted.push(ids[0][..15].to_string()); // 15-character form of a live id
    wanted.push(gone.clone());
    wanted.push("003Dn0000000zzzAAA".into()); // well-formed, never existed
    wanted.push("x' OR Id != '".into()); // not an id at all
    let got = c
        .fetch_by_ids(Entity::Contact, &wanted)
        .await
        .expect("fetch");
    assert_eq!(got.records.len(), 250);
    assert_eq!(
        got.missing,
        vec![
            gone,
            "003Dn0000000zzzAAA".to_string(),
            "x' OR Id != '".to_string()
        ]
    );
    assert!(got.records.iter().all(|r| r.get("LastName").is_some()));
    // 250 valid ids: two Id IN queries.
    assert_eq!(emu.stats().queries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_an_access_error_without_the_secret() {
    let emu = org(1, 0, 0).await;
    let s = SalesforceSettings::new(
        &emu.token_url(),
        &emu.config().client_id,
        "wrong-secret-xyz",
    );
    let c = SalesforceClient::new(s, fields()).expect("client");
    match c.list_page(Entity::Account, &PageRequest::default()).await {
        Err(CrmError::Access(m)) => {
            assert!(m.contains("invalid_client"), "{m}");
            assert!(!m.contains("wrong-secret-xyz"));
        }
        other => panic!("expected Access, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_during_a_walk_are_listed_for_the_catch_up_pass() {
    let emu = org(300, 0, 0).await;
    let c = client(&emu);
    let started = Utc::now() - chrono::Duration::seconds(1);
    // In walk order (SystemModstamp, Id): the first is read before the deletions, the last after.
    let mut ids = emu.ids("Account");
    ids.sort_by_key(|id| {
        let r = emu.record(id).expect("record");
        (
            r["SystemModstamp"].as_str().unwrap_or("").to_string(),
            id.clone(),
        )
    });
    let (behind, ahead) = (ids[0].clone(), ids[299].clone());
    let mut deleted_during = false;
    let (records, _) = walk(&c, Entity::Account, 200, |page| {
        if page == 0 {
            deleted_during = emu.delete(&behind) && emu.delete(&ahead);
        }
    })
    .await;
    assert!(deleted_during);
    // A query cursor holds its result rows as of the query: both deleted records were still
    // returned by the walk, so only the delete log can tell the catch-up pass about them.
    let seen: HashSet<String> = records.iter().map(id_of).collect();
    assert!(seen.contains(&behind) && seen.contains(&ahead));
    let deleted = c
        .list_deleted(Entity::Account, started)
        .await
        .expect("getDeleted")
        .expect("Salesforce lists deletions");
    assert_eq!(
        deleted.into_iter().collect::<HashSet<_>>(),
        HashSet::from([behind.clone(), ahead.clone()])
    );
    // Contacts had none; a window older than the 15 days Salesforce keeps is an error, not a
    // silently empty list.
    assert_eq!(
        c.list_deleted(Entity::Contact, started).await.unwrap(),
        Some(vec![])
    );
    let old = Utc::now() - chrono::Duration::days(16);
    match c.list_deleted(Entity::Account, old).await {
        Err(e @ CrmError::Permanent(_)) => {
            assert!(e.to_string().contains("INVALID_REPLICATION_DATE"), "{e}")
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

const JWT_KEY: &str = include_str!("../../../emulators/crm/tests/data/salesforce-jwt.key.pem");
const JWT_CERT: &str = include_str!("../../../emulators/crm/tests/data/salesforce-jwt.cert.pem");
/// Another key pair: its signatures must not pass for the connected app's certificate.
const OTHER_KEY: &str = include_str!("../../../emulators/dataverse/tests/data/test-client.key.pem");

async fn jwt_org() -> SalesforceEmulator {
    SalesforceEmulator::start(SalesforceConfig {
        accounts: 3,
        contacts_per_account: 0,
        orphan_contacts: 0,
        jwt_certificate_pem: Some(JWT_CERT.into()),
        ..SalesforceConfig::default()
    })
    .await
    .expect("emulator starts")
}

fn jwt_client(emu: &SalesforceEmulator, username: &str, key: &str, aud: &str) -> SalesforceClient {
    let s = SalesforceSettings::with_auth(
        &emu.token_url(),
        &emu.config().client_id,
        SalesforceAuth::JwtBearer {
            username: username.into(),
            private_key_pem: key.into(),
            audience: aud.into(),
        },
    );
    SalesforceClient::new(s, fields()).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_flow_reads_the_org() {
    let emu = jwt_org().await;
    let user = emu.config().username.clone();
    let c = jwt_client(&emu, &user, JWT_KEY, "https://login.salesforce.com");
    let page = c
        .list_page(Entity::Account, &PageRequest::default())
        .await
        .expect("JWT session");
    assert_eq!(page.records.len(), 3);
    // A session that dies is re-established with a fresh assertion.
    emu.expire_sessions();
    c.fetch_by_ids(Entity::Account, &[id_of(&page.records[0])])
        .await
        .expect("re-authenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_refusals_are_access_errors_that_name_the_cause() {
    let emu = jwt_org().await;
    let user = emu.config().username.clone();
    let cases = [
        (
            jwt_client(&emu, &user, OTHER_KEY, "https://login.salesforce.com"),
            "invalid assertion",
        ),
        (
            jwt_client(&emu, &user, JWT_KEY, "https://evil.example"),
            "audience is invalid",
        ),
        (
            jwt_client(
                &emu,
                "someone@else.example",
                JWT_KEY,
                "https://test.salesforce.com",
            ),
            "user hasn't approved this consumer",
        ),
    ];
    for (c, want) in cases {
        match c.list_page(Entity::Account, &PageRequest::default()).await {
            Err(CrmError::Access(m)) => {
                assert!(m.contains(want), "{m}");
                assert!(m.contains("JWT bearer"), "{m}");
                assert!(!m.contains("PRIVATE KEY"), "{m}");
            }
            other => panic!("expected Access ({want}), got {other:?}"),
        }
    }
    let s = SalesforceSettings::with_auth(
        &emu.token_url(),
        "x",
        SalesforceAuth::JwtBearer {
            username: user,
            private_key_pem: "not a key".into(),
            audience: "https://login.salesforce.com".into(),
        },
    );
    let e = SalesforceClient::new(s, fields()).expect_err("bad key");
    assert!(e.to_string().contains("not an RSA key"), "{e}");
}
