//! ServiceNowClient against the ServiceNow emulator, through the CrmReader trait only: a full
//! keyset walk with exact counts, changes during a walk caught by a modified_since pass, rate
//! limits, fetch by id, credentials that stay secret, OAuth tokens (cached, renewed, refused)
//! and deletions read back from sys_audit_delete.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DurationRound, Utc};
use crm::servicenow::{ServiceNowClient, ServiceNowOAuth, ServiceNowSettings};
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

// OAuth

fn client_credentials(emu: &ServiceNowEmulator, secret: &str) -> ServiceNowOAuth {
    ServiceNowOAuth::ClientCredentials {
        client_id: emu.config().oauth_client_id.clone(),
        client_secret: secret.to_string(),
    }
}

fn password_grant(emu: &ServiceNowEmulator, password: &str) -> ServiceNowOAuth {
    let cfg = emu.config();
    ServiceNowOAuth::Password {
        client_id: cfg.oauth_client_id.clone(),
        client_secret: cfg.oauth_client_secret.clone(),
        user: cfg.user.clone(),
        password: password.to_string(),
    }
}

fn oauth_client(emu: &ServiceNowEmulator, oauth: ServiceNowOAuth) -> ServiceNowClient {
    ServiceNowClient::new(
        ServiceNowSettings::with_oauth(&emu.base_url(), oauth),
        fields(),
    )
    .expect("client")
}

async fn instance_with(cfg: ServiceNowConfig) -> ServiceNowEmulator {
    ServiceNowEmulator::start(cfg)
        .await
        .expect("emulator starts")
}

fn unauthorized(emu: &ServiceNowEmulator) -> u64 {
    emu.stats().by_status.get(&401).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_walk_with_oauth_uses_one_token() {
    let emu = instance(400, 2, 10).await;
    let secret = emu.config().oauth_client_secret.clone();
    let c = oauth_client(&emu, client_credentials(&emu, &secret));
    let accounts = walk(&c, Entity::Account, req(100), |_| {}).await;
    let contacts = walk(&c, Entity::Contact, req(100), |_| {}).await;
    assert_eq!(
        unique(&accounts),
        emu.ids("customer_account").into_iter().collect()
    );
    assert_eq!(
        unique(&contacts),
        emu.ids("customer_contact").into_iter().collect()
    );
    assert_eq!(contacts.len(), 400 * 2 + 10);
    let ids = emu.ids("customer_contact");
    let got = c
        .fetch_by_ids(Entity::Contact, &ids[..5])
        .await
        .expect("fetch");
    assert_eq!(got.records.len(), 5);
    let stats = emu.stats();
    assert!(stats.list_requests > 10);
    assert_eq!(stats.token_requests, 1, "the token is cached");
    assert_eq!(unauthorized(&emu), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_mid_walk_reauthenticates_and_loses_nothing() {
    let emu = instance(600, 0, 0).await;
    let password = emu.config().password.clone();
    let c = oauth_client(&emu, password_grant(&emu, &password));
    let mut expired = 0;
    let accounts = walk(&c, Entity::Account, req(100), |_| {
        emu.expire_tokens();
        expired += 1;
    })
    .await;
    assert!(expired >= 5);
    assert_eq!(
        unique(&accounts),
        emu.ids("customer_account").into_iter().collect()
    );
    // Each expiry: one 401, one new token, the page read again.
    assert_eq!(unauthorized(&emu), expired);
    assert_eq!(emu.stats().token_requests, 1 + expired);
}

#[tokio::test]
async fn short_lived_tokens_are_renewed_before_they_expire() {
    let emu = instance_with(ServiceNowConfig {
        accounts: 20,
        contacts_per_account: 0,
        orphan_contacts: 0,
        oauth_token_lifetime: Duration::from_secs(2),
        ..ServiceNowConfig::default()
    })
    .await;
    let secret = emu.config().oauth_client_secret.clone();
    let c = oauth_client(&emu, client_credentials(&emu, &secret));
    c.list_page(Entity::Account, &req(5)).await.expect("1");
    c.list_page(Entity::Account, &req(5)).await.expect("2");
    assert_eq!(emu.stats().token_requests, 1);
    // Past 90 % of the lifetime, before its end: renewed, not refused.
    tokio::time::sleep(Duration::from_millis(1900)).await;
    c.list_page(Entity::Account, &req(5)).await.expect("3");
    assert_eq!(emu.stats().token_requests, 2);
    assert_eq!(unauthorized(&emu), 0, "a stale token was sent");
}

/// Asserts a refused token request: Access, not retryable, naming `code`, no secret shown, and
/// no Table API call made with it.
async fn assert_refused(
    emu: &ServiceNowEmulator,
    oauth: ServiceNowOAuth,
    code: &str,
    secret: &str,
) {
    let c = oauth_client(emu, oauth);
    let before = emu.stats();
    let err = c
        .list_page(Entity::Account, &req(10))
        .await
        .expect_err("refused");
    assert!(matches!(err, CrmError::Access(_)), "{err:?}");
    assert!(!err.is_retryable());
    let shown = format!("{err} {err:?} {c:?}");
    assert!(shown.contains(code), "{shown}");
    assert!(!shown.contains(secret), "{shown}");
    let err = c
        .list_deleted(Entity::Account, Utc::now())
        .await
        .expect_err("refused");
    assert!(matches!(err, CrmError::Access(_)), "{err:?}");
    assert!(!format!("{err:?}").contains(secret));
    let after = emu.stats();
    assert_eq!(after.token_requests - before.token_requests, 2);
    assert_eq!(after.list_requests, before.list_requests, "no API call");
}

#[tokio::test]
async fn a_refused_token_is_access_without_the_secret() {
    // As instances are reported to answer: 401 server_error / access_denied for everything.
    let observed = instance(3, 1, 0).await;
    let secret = "Sup3r-Secret-Client";
    assert_refused(
        &observed,
        client_credentials(&observed, secret),
        "server_error: access_denied",
        secret,
    )
    .await;
    let wrong = "Wr0ng-Pa55word";
    assert_refused(
        &observed,
        password_grant(&observed, wrong),
        "access_denied",
        wrong,
    )
    .await;

    // RFC 6749 codes.
    let rfc = instance_with(ServiceNowConfig {
        accounts: 3,
        oauth_rfc_errors: true,
        ..ServiceNowConfig::default()
    })
    .await;
    assert_refused(
        &rfc,
        client_credentials(&rfc, secret),
        "invalid_client",
        secret,
    )
    .await;
    assert_refused(&rfc, password_grant(&rfc, wrong), "invalid_grant", wrong).await;
    let closed = instance_with(ServiceNowConfig {
        accounts: 3,
        oauth_rfc_errors: true,
        client_credentials_enabled: false,
        ..ServiceNowConfig::default()
    })
    .await;
    let right = closed.config().oauth_client_secret.clone();
    assert_refused(
        &closed,
        client_credentials(&closed, &right),
        "unauthorized_client",
        &right,
    )
    .await;
}

// Deletions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_deleted_returns_exactly_the_deletions_since() {
    let emu = instance(300, 1, 0).await;
    let password = emu.config().password.clone();
    let mut settings =
        ServiceNowSettings::with_oauth(&emu.base_url(), password_grant(&emu, &password));
    settings.deleted_page_size = 4;
    let c = ServiceNowClient::new(settings, fields()).expect("client");
    let accounts = emu.ids("customer_account");
    let contacts = emu.ids("customer_contact");
    let since = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .expect("trunc");
    // Deleted before the window: not asked for.
    assert!(emu.delete_at(&accounts[0], since - chrono::Duration::days(2)));
    assert!(emu.delete_at(&accounts[1], since - chrono::Duration::seconds(1)));
    assert!(emu.delete_at(&contacts[0], since - chrono::Duration::seconds(1)));

    // The walk order, to pick records the walk has passed and records it has not reached.
    let order: Vec<String> = walk(&c, Entity::Account, req(50), |_| {})
        .await
        .iter()
        .map(id_of)
        .collect();
    let mut gone_accounts = Vec::new();
    let mut gone_contacts = Vec::new();
    let seen = walk(&c, Entity::Account, req(50), |page| {
        for id in [&order[page * 50 + 7], &order[order.len() - 1 - page]] {
            assert!(emu.delete(id));
            gone_accounts.push(id.clone());
        }
        assert!(emu.delete(&contacts[10 + page]));
        gone_contacts.push(contacts[10 + page].clone());
    })
    .await;
    assert!(gone_accounts.len() >= 10);
    // The walk read half of them before they went, and missed the other half.
    let walked = unique(&seen);
    let read_then_deleted = gone_accounts.iter().filter(|id| walked.contains(*id));
    assert_eq!(read_then_deleted.count(), gone_accounts.len() / 2);

    let before = emu.stats().list_requests;
    let deleted = c
        .list_deleted(Entity::Account, since)
        .await
        .expect("list_deleted")
        .expect("ServiceNow lists deletions");
    let pages = emu.stats().list_requests - before;
    let mut got = deleted.clone();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), deleted.len(), "duplicates: {deleted:?}");
    let mut want = gone_accounts.clone();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        pages,
        (want.len() as u64).div_ceil(4),
        "every page followed"
    );

    let deleted = c
        .list_deleted(Entity::Contact, since)
        .await
        .expect("list_deleted")
        .expect("list");
    let got: HashSet<String> = deleted.into_iter().collect();
    assert_eq!(got, gone_contacts.into_iter().collect());

    // Nothing since a later time.
    let later = Utc::now() + chrono::Duration::seconds(2);
    let none = c
        .list_deleted(Entity::Account, later)
        .await
        .expect("list_deleted")
        .expect("list");
    assert!(none.is_empty(), "{none:?}");
}

#[tokio::test]
async fn unreadable_sys_audit_delete_is_access_naming_the_table() {
    let emu = instance_with(ServiceNowConfig {
        accounts: 5,
        contacts_per_account: 0,
        orphan_contacts: 0,
        audit_delete_readable: false,
        ..ServiceNowConfig::default()
    })
    .await;
    assert!(emu.delete(&emu.ids("customer_account")[0]));
    let c = client(&emu);
    // The CSM tables stay readable: only the audit is closed.
    c.list_page(Entity::Account, &req(10)).await.expect("page");
    let err = c
        .list_deleted(Entity::Account, Utc::now() - chrono::Duration::hours(1))
        .await
        .expect_err("must not be an empty list");
    match &err {
        CrmError::Access(m) => {
            assert!(m.contains("sys_audit_delete"), "{m}");
            assert!(m.contains("customer_account"), "{m}");
        }
        other => panic!("expected Access, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains(&emu.config().password));

    // Opting out: no list, no request.
    let mut s =
        ServiceNowSettings::new(&emu.base_url(), &emu.config().user, &emu.config().password);
    s.read_deletion_audit = false;
    let quiet = ServiceNowClient::new(s, fields()).expect("client");
    let before = emu.stats().requests;
    assert_eq!(
        quiet.list_deleted(Entity::Account, Utc::now()).await,
        Ok(None)
    );
    assert_eq!(emu.stats().requests, before);
}
