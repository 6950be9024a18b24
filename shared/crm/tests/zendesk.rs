//! ZendeskClient against the Zendesk emulator, through the CrmReader trait only: a full walk
//! of 10,000+ records with exact counts and parents, a dead cursor resumed from the checkpoint,
//! changes during a walk converging after a catch-up pass (incremental exports plus deleted
//! users), rate limits that slow a walk without losing records, fetch by id, a poisoned next
//! link, secrets kept out of errors, and malformed answers.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crm::zendesk::{ZendeskAuth, ZendeskClient, ZendeskSettings};
use crm::{CrmError, CrmReader, Page, PageRequest};
use crm_emulator::{ZendeskConfig, ZendeskEmulator};
use mapping::Entity;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fields() -> HashMap<Entity, Vec<String>> {
    HashMap::from([
        (
            Entity::Account,
            ["name", "details", "notes"].map(String::from).to_vec(),
        ),
        (
            Entity::Contact,
            [
                "name",
                "email",
                "phone",
                "user_fields",
                "notes",
                "organization_id",
            ]
            .map(String::from)
            .to_vec(),
        ),
    ])
}

/// Exports show changes after one second instead of a minute, and are not limited to 10 a
/// minute, so tests run in seconds.
fn config(orgs: usize, per: usize, orphans: usize) -> ZendeskConfig {
    ZendeskConfig {
        organizations: orgs,
        users_per_organization: per,
        users_without_organization: orphans,
        agents: 5,
        export_lag: Duration::from_secs(1),
        export_rate_limit: None,
        ..ZendeskConfig::default()
    }
}

async fn account(orgs: usize, per: usize, orphans: usize) -> ZendeskEmulator {
    ZendeskEmulator::start(config(orgs, per, orphans))
        .await
        .expect("emulator starts")
}

fn settings(emu: &ZendeskEmulator, auth: ZendeskAuth) -> ZendeskSettings {
    let mut s = ZendeskSettings::new(&emu.base_url(), auth);
    s.export_lag = emu.config().export_lag;
    s
}

fn client(emu: &ZendeskEmulator) -> ZendeskClient {
    let cfg = emu.config();
    let auth = ZendeskAuth::api_token(&cfg.email, &cfg.api_token);
    ZendeskClient::new(settings(emu, auth), fields()).expect("client")
}

fn id_of(r: &Value) -> u64 {
    r["id"].as_u64().expect("id")
}

fn req(size: u32) -> PageRequest {
    PageRequest {
        page_size: size,
        ..PageRequest::default()
    }
}

/// Walks an entity to the end as the pipeline does: follows the cursor, resumes from the
/// checkpoint when the cursor died, waits out rate limits; `during` runs after each page.
async fn walk(
    c: &ZendeskClient,
    e: Entity,
    start: PageRequest,
    mut during: impl FnMut(usize),
) -> (Vec<Value>, usize, usize) {
    let mut req = start;
    let mut out = Vec::new();
    let (mut restarts, mut pauses) = (0, 0);
    for page_no in 0.. {
        let page: Page = match c.list_page(e, &req).await {
            Ok(p) => p,
            Err(CrmError::CursorExpired) => {
                restarts += 1;
                req.cursor = None;
                continue;
            }
            Err(CrmError::RateLimited(wait)) => {
                pauses += 1;
                assert!(wait <= Duration::from_secs(60), "{wait:?}");
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(other) => panic!("walk failed: {other}"),
        };
        out.extend(page.records);
        if !page.more {
            break;
        }
        assert!(page.cursor.is_some(), "more without a cursor");
        req.cursor = page.cursor;
        req.checkpoint = page.checkpoint;
        during(page_no);
    }
    (out, restarts, pauses)
}

fn unique(records: &[Value]) -> HashSet<u64> {
    let ids: HashSet<u64> = records.iter().map(id_of).collect();
    assert_eq!(ids.len(), records.len(), "duplicates in the walk");
    ids
}

/// End users (the contacts) as the emulator holds them, by id.
fn contacts(emu: &ZendeskEmulator) -> HashMap<u64, Value> {
    emu.records("users")
        .into_iter()
        .filter(|u| u["role"] == "end-user")
        .map(|u| (id_of(&u), u))
        .collect()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_walk_reads_every_record_once_with_its_parent() {
    let emu = account(2000, 4, 120).await;
    let c = client(&emu);
    let (accounts, _, _) = walk(&c, Entity::Account, req(100), |_| {}).await;
    let (users, _, _) = walk(&c, Entity::Contact, req(100), |_| {}).await;
    assert_eq!(accounts.len(), 2000);
    assert_eq!(users.len(), 2000 * 4 + 120);
    assert!(accounts.len() + users.len() > 10_000);
    assert_eq!(
        unique(&accounts),
        emu.ids("organizations").into_iter().collect()
    );
    let expected = contacts(&emu);
    assert_eq!(unique(&users), expected.keys().copied().collect());
    // Every contact's parent is the one Zendesk holds (null for the 120 without one).
    let org_ids: HashSet<u64> = emu.ids("organizations").into_iter().collect();
    let mut orphans = 0;
    for u in &users {
        let want = &expected[&id_of(u)]["organization_id"];
        assert_eq!(&u["organization_id"], want, "user {}", id_of(u));
        match want.as_u64() {
            Some(org) => assert!(org_ids.contains(&org)),
            None => orphans += 1,
        }
    }
    assert_eq!(orphans, 120);
    // Agents are not contacts; records are trimmed to the requested fields.
    assert!(users.iter().all(|u| u["role"] == "end-user"));
    let mut keys: Vec<&str> = users[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "active",
            "email",
            "id",
            "name",
            "notes",
            "organization_id",
            "phone",
            "role",
            "updated_at",
            "user_fields"
        ]
    );
    // 2000 organizations at 100 a page: 20 list requests.
    let before = emu.stats().list_requests;
    walk(&c, Entity::Account, req(100), |_| {}).await;
    assert_eq!(emu.stats().list_requests - before, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_cursor_resumes_from_the_checkpoint_without_loss() {
    let emu = account(300, 3, 10).await;
    let c = client(&emu);
    // Snapshot: cursors die after the fifth page, and a user already read is deleted, so the
    // resumed walk's pages no longer line up with the old ones.
    let mut first: Vec<u64> = contacts(&emu).keys().copied().collect();
    first.sort();
    let (users, restarts, _) = walk(&c, Entity::Contact, req(50), |page| {
        if page == 4 {
            assert!(emu.delete("users", first[3]));
            emu.invalidate_cursors();
        }
    })
    .await;
    assert_eq!(restarts, 1);
    let mut want: HashSet<u64> = contacts(&emu).keys().copied().collect();
    want.insert(first[3]);
    assert_eq!(
        unique(&users),
        want,
        "records lost or repeated across the resume"
    );
    // Catch-up: the cursor-based user export dies mid-way too.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let since = DateTime::<Utc>::from_timestamp(0, 0).expect("epoch");
    let (exported, restarts, _) = walk(
        &c,
        Entity::Contact,
        PageRequest {
            page_size: 200,
            modified_since: Some(since),
            ..PageRequest::default()
        },
        |page| {
            if page == 1 {
                emu.invalidate_cursors();
            }
        },
    )
    .await;
    assert_eq!(restarts, 1);
    let seen: HashSet<u64> = exported.iter().map(id_of).collect();
    // The export lists deleted users too (`active: false`); they are not contacts.
    assert_eq!(seen, contacts(&emu).keys().copied().collect());
    // Resuming rereads at most the records of the checkpoint's second.
    assert!(exported.len() - seen.len() < 10, "{}", exported.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_a_walk_converge_after_the_catch_up_pass() {
    let emu = account(400, 3, 20).await;
    let c = client(&emu);
    let started = Utc::now() - chrono::Duration::seconds(1);
    let orgs = emu.ids("organizations");
    let user_ids: Vec<u64> = {
        let mut v: Vec<u64> = contacts(&emu).keys().copied().collect();
        v.sort();
        v
    };
    let mut created_orgs = Vec::new();
    let mut deleted = Vec::new();
    let (snap_accounts, _, _) = walk(&c, Entity::Account, req(100), |page| {
        let mut f = Map::new();
        f.insert("notes".into(), json!(format!("renamed during page {page}")));
        emu.update("organizations", orgs[page * 3], f.clone())
            .expect("update passed org");
        emu.update("organizations", orgs[orgs.len() - 1 - page], f)
            .expect("update org ahead");
        created_orgs.push(
            emu.put(
                "organizations",
                obj(json!({ "name": format!("Nouvelle Société {page}") })),
            )
            .expect("create org"),
        );
    })
    .await;
    let (snap_users, _, _) = walk(&c, Entity::Contact, req(100), |page| {
        // Rename a user already read and one not reached yet, move one to a new
        // organization, add one, delete one already read.
        let mut f = Map::new();
        f.insert("name".into(), json!(format!("Renamed {page}")));
        emu.update("users", user_ids[page * 5], f.clone())
            .expect("rename passed");
        emu.update("users", user_ids[user_ids.len() - 1 - page], f)
            .expect("rename ahead");
        let mut m = Map::new();
        m.insert("organization_id".into(), json!(created_orgs[0]));
        emu.update("users", user_ids[page * 5 + 1], m).expect("move");
        emu.put(
            "users",
            obj(json!({ "name": format!("New D'Arcy {page}"), "organization_id": created_orgs[page % created_orgs.len()] })),
        )
        .expect("create user");
        let victim = user_ids[page * 5 + 2];
        assert!(emu.delete("users", victim));
        deleted.push(victim);
    })
    .await;
    assert!(!deleted.is_empty());

    // Catch-up, as the pipeline runs it after the last snapshot page (past the export lag).
    tokio::time::sleep(emu.config().export_lag + Duration::from_millis(1100)).await;
    let catch_up = |e| {
        walk(
            &c,
            e,
            PageRequest {
                page_size: 100,
                modified_since: Some(started),
                ..PageRequest::default()
            },
            |_| {},
        )
    };
    let (cu_accounts, _, _) = catch_up(Entity::Account).await;
    let (cu_users, _, _) = catch_up(Entity::Contact).await;
    let gone = c
        .list_deleted(Entity::Contact, started)
        .await
        .expect("deleted users")
        .expect("Zendesk lists deleted users");
    assert_eq!(
        gone.iter().collect::<HashSet<_>>(),
        deleted
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .iter()
            .collect()
    );
    assert_eq!(
        c.list_deleted(Entity::Account, started).await.expect("ok"),
        None,
        "Zendesk documents no list of deleted organizations"
    );

    // Apply snapshot, then catch-up (newer wins), then deletions: the result is Zendesk's state.
    let mut accounts: HashMap<u64, Value> = HashMap::new();
    for r in snap_accounts.into_iter().chain(cu_accounts) {
        accounts.insert(id_of(&r), r);
    }
    let mut users: HashMap<u64, Value> = HashMap::new();
    for r in snap_users.into_iter().chain(cu_users) {
        users.insert(id_of(&r), r);
    }
    for id in &gone {
        users.remove(&id.parse::<u64>().expect("id"));
    }
    let want_accounts: HashMap<u64, Value> = emu
        .records("organizations")
        .into_iter()
        .map(|o| (id_of(&o), o))
        .collect();
    assert_eq!(
        accounts.keys().collect::<HashSet<_>>(),
        want_accounts.keys().collect::<HashSet<_>>()
    );
    for (id, o) in &want_accounts {
        assert_eq!(accounts[id]["notes"], o["notes"], "organization {id}");
        assert_eq!(accounts[id]["name"], o["name"], "organization {id}");
    }
    let want_users = contacts(&emu);
    assert_eq!(
        users.keys().collect::<HashSet<_>>(),
        want_users.keys().collect::<HashSet<_>>()
    );
    for (id, u) in &want_users {
        assert_eq!(users[id]["name"], u["name"], "user {id}");
        assert_eq!(
            users[id]["organization_id"], u["organization_id"],
            "user {id}'s parent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_slow_the_walk_but_lose_nothing() {
    let emu = account(1200, 0, 0).await;
    emu.set_rate_limit(Some((4, Duration::from_secs(1))));
    let c = client(&emu);
    let (accounts, _, pauses) = walk(&c, Entity::Account, req(100), |_| {}).await;
    assert!(pauses > 0, "the limit was never hit");
    assert_eq!(
        unique(&accounts),
        emu.ids("organizations").into_iter().collect()
    );
    assert_eq!(
        emu.stats().by_status.get(&429).copied(),
        Some(pauses as u64)
    );
    // The incremental exports' own limit (10 a minute) is a pause too, with Retry-After.
    emu.set_rate_limit(None);
    emu.set_export_rate_limit(Some((1, Duration::from_secs(30))));
    let since = Some(DateTime::<Utc>::from_timestamp(0, 0).expect("epoch"));
    let r = PageRequest {
        page_size: 100,
        modified_since: since,
        ..PageRequest::default()
    };
    c.list_page(Entity::Account, &r)
        .await
        .expect("first export");
    match c.list_page(Entity::Account, &r).await {
        Err(CrmError::RateLimited(d)) => {
            assert!(d > Duration::ZERO && d <= Duration::from_secs(30), "{d:?}")
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn fetch_by_ids_reports_missing() {
    let emu = account(60, 3, 0).await;
    let c = client(&emu);
    let mut ids: Vec<String> = contacts(&emu).keys().map(u64::to_string).collect();
    ids.sort();
    assert_eq!(ids.len(), 180);
    let gone = ids[7].clone();
    assert!(emu.delete("users", gone.parse().expect("id")));
    let agent = emu
        .records("users")
        .into_iter()
        .find(|u| u["role"] == "agent")
        .map(|u| id_of(&u).to_string())
        .expect("an agent");
    ids.push("999".into());
    ids.push("12,13".into());
    ids.push(agent.clone());
    let got = c.fetch_by_ids(Entity::Contact, &ids).await.expect("fetch");
    assert_eq!(got.records.len(), 179);
    assert_eq!(got.missing, vec![gone, "999".into(), "12,13".into(), agent]);
    // 182 numeric ids → two show_many requests of at most 100; "12,13" never reaches a URL.
    assert_eq!(emu.stats().show_many_requests, 2);
    let org = emu.ids("organizations")[0].to_string();
    let one = c
        .fetch_by_ids(Entity::Account, std::slice::from_ref(&org))
        .await
        .expect("org");
    assert_eq!(one.records.len(), 1);
    assert_eq!(one.records[0]["id"].to_string(), org);
}

#[tokio::test]
async fn next_links_must_stay_on_the_account() {
    let emu = account(30, 1, 0).await;
    let c = client(&emu);
    // A page whose links.next points elsewhere is refused before the link is handed out.
    emu.set_link_base(Some("http://evil.example:9"));
    match c.list_page(Entity::Account, &req(10)).await {
        Err(CrmError::Permanent(m)) => assert!(m.contains("another host"), "{m}"),
        other => panic!("expected Permanent, got {other:?}"),
    }
    emu.set_link_base(None);
    // A poisoned cursor is never requested.
    let before = emu.stats().requests;
    for cursor in [
        "https://evil.example/api/v2/users.json?page%5Bsize%5D=10",
        "http://127.0.0.1:1/api/v2/users.json",
        "/not-the-api/users",
    ] {
        let r = PageRequest {
            cursor: Some(cursor.into()),
            ..req(10)
        };
        let err = c.list_page(Entity::Contact, &r).await.expect_err("refused");
        assert!(matches!(err, CrmError::Permanent(_)), "{err:?}");
    }
    assert_eq!(emu.stats().requests, before, "nothing was sent");
}

#[tokio::test]
async fn wrong_credentials_are_access_errors_without_the_secret() {
    let emu = account(3, 1, 0).await;
    let secret = "Sup3r-Secret-T0ken";
    for auth in [
        ZendeskAuth::api_token(&emu.config().email, secret),
        ZendeskAuth::bearer(secret),
    ] {
        let c = ZendeskClient::new(settings(&emu, auth), fields()).expect("client");
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
            .fetch_by_ids(Entity::Contact, &["1".into()])
            .await
            .expect_err("refused");
        assert!(matches!(err, CrmError::Access(_)));
        assert!(!err.to_string().contains(secret));
    }
    // The OAuth token of the account works.
    let c = ZendeskClient::new(
        settings(&emu, ZendeskAuth::bearer(&emu.config().oauth_token)),
        fields(),
    )
    .expect("client");
    let page = c.list_page(Entity::Account, &req(10)).await.expect("page");
    assert_eq!(page.records.len(), 3);
}

/// A one-shot HTTP server answering every request with `status` and `body`.
async fn stub(status: &'static str, body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0_u8; 8192];
            let _ = sock.read(&mut buf).await;
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn malformed_answers_and_server_errors_are_classified() {
    let auth = ZendeskAuth::api_token("ops@example.com", "tok");
    let cases: [(&str, &str, &str); 4] = [
        ("200 OK", "<html>maintenance</html>", "unreadable"),
        (
            "200 OK",
            r#"{"organizations": 5}"#,
            "`organizations` is a number",
        ),
        ("200 OK", r#"{"organizations": []}"#, "meta.has_more"),
        (
            "200 OK",
            r#"{"users": []}"#,
            "without a `organizations` array",
        ),
    ];
    for (status, body, says) in cases {
        let base = stub(status, body).await;
        let c = ZendeskClient::new(ZendeskSettings::new(&base, auth.clone()), fields())
            .expect("client");
        match c.list_page(Entity::Account, &req(10)).await {
            Err(CrmError::Permanent(m)) => assert!(m.contains(says), "{m} lacks {says}"),
            other => panic!("{body}: expected Permanent, got {other:?}"),
        }
    }
    let base = stub("503 Service Unavailable", r#"{"error":"Down"}"#).await;
    let c =
        ZendeskClient::new(ZendeskSettings::new(&base, auth.clone()), fields()).expect("client");
    let err = c
        .list_page(Entity::Account, &req(10))
        .await
        .expect_err("503");
    assert!(matches!(err, CrmError::Unavailable(_)), "{err:?}");
    // Nothing listening: unavailable, retryable.
    let c = ZendeskClient::new(ZendeskSettings::new("http://127.0.0.1:1", auth), fields())
        .expect("client");
    let err = c
        .list_page(Entity::Account, &req(10))
        .await
        .expect_err("refused");
    assert!(matches!(err, CrmError::Unavailable(_)) && err.is_retryable());
    // Plain http is only allowed on loopback.
    assert!(
        ZendeskClient::new(
            ZendeskSettings::new("http://acme.zendesk.com", ZendeskAuth::bearer("t")),
            fields()
        )
        .is_err()
    );
}

/// The records the client hands out map through the built-in Zendesk profile, with the fields
/// the pipeline asks for (`Mapper::source_fields`): ids, parents, names, emails, phones.
#[tokio::test]
async fn records_map_through_the_zendesk_profile() {
    use mapping::model::{Operation, Parent};
    use mapping::payload::{Outcome, map_records};
    use mapping::{Mapper, Notice};

    let emu = account(40, 3, 5).await;
    let source: mapping::SourceConfig = serde_json::from_value(json!({
        "id": "zendesk-test", "kind": "zendesk", "base_url": emu.base_url()
    }))
    .expect("source config");
    let mapper = Mapper::new(&source).expect("mapper");
    let wanted: HashMap<Entity, Vec<String>> = [Entity::Account, Entity::Contact]
        .into_iter()
        .map(|e| (e, mapper.source_fields(e)))
        .collect();
    let cfg = emu.config();
    let c = ZendeskClient::new(
        settings(&emu, ZendeskAuth::api_token(&cfg.email, &cfg.api_token)),
        wanted,
    )
    .expect("client");
    let (orgs, _, _) = walk(&c, Entity::Account, req(100), |_| {}).await;
    let (users, _, _) = walk(&c, Entity::Contact, req(100), |_| {}).await;
    let expected = contacts(&emu);
    let mut with_parent = 0;
    for (entity, records) in [(Entity::Account, &orgs), (Entity::Contact, &users)] {
        let items = map_records(&mapper, entity, records);
        assert_eq!(items.len(), records.len());
        for (item, r) in items.iter().zip(records.iter()) {
            let Outcome::Notice {
                notice: Notice::Change(ch),
                ..
            } = &item.outcome
            else {
                panic!("{entity:?} {} did not map: {:?}", r["id"], item.outcome);
            };
            assert_eq!(ch.source_id, r["id"].to_string());
            assert!(ch.modified_at.is_some());
            let Operation::Upsert { fields } = &ch.op else {
                panic!("not an upsert");
            };
            match entity {
                Entity::Account => assert!(fields["name"].is_string()),
                Entity::Contact => {
                    assert!(fields["lastname"].is_string());
                    let want = &expected[&id_of(r)]["organization_id"];
                    match (&ch.parent, want.as_u64()) {
                        (Parent::Account(p), Some(o)) => {
                            assert_eq!(p, &o.to_string());
                            with_parent += 1;
                        }
                        (Parent::None, None) => {}
                        (p, w) => panic!("user {}: parent {p:?}, Zendesk says {w:?}", r["id"]),
                    }
                }
            }
        }
    }
    assert_eq!(with_parent, 120);
}
