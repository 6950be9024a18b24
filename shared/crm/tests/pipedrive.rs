//! PipedriveClient against the Pipedrive emulator, through the CrmReader trait only: a full
//! walk of 10,000+ records with exact counts and parents, a dead cursor resumed from the
//! checkpoint, changes during a walk converging after a catch-up pass (deletions found by
//! fetch_by_ids, since Pipedrive lists none), rate limits that slow a walk without losing
//! records, the ids filter, cursors that are not tokens, secrets kept out of errors, and
//! malformed answers.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use crm::pipedrive::{PipedriveAuth, PipedriveClient, PipedriveSettings};
use crm::{CrmError, CrmReader, Page, PageRequest};
use crm_emulator::{PipedriveConfig, PipedriveEmulator};
use mapping::Entity;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fields() -> HashMap<Entity, Vec<String>> {
    HashMap::from([
        (
            Entity::Account,
            ["name", "address"].map(String::from).to_vec(),
        ),
        (
            Entity::Contact,
            [
                "first_name",
                "last_name",
                "name",
                "emails",
                "phones",
                "job_title",
                "org_id",
            ]
            .map(String::from)
            .to_vec(),
        ),
    ])
}

async fn company(orgs: usize, per: usize, orphans: usize) -> PipedriveEmulator {
    PipedriveEmulator::start(PipedriveConfig {
        organizations: orgs,
        persons_per_organization: per,
        persons_without_organization: orphans,
        ..PipedriveConfig::default()
    })
    .await
    .expect("emulator starts")
}

fn client_with(emu: &PipedriveEmulator, auth: PipedriveAuth) -> PipedriveClient {
    PipedriveClient::new(PipedriveSettings::new(&emu.base_url(), auth), fields()).expect("client")
}

fn client(emu: &PipedriveEmulator) -> PipedriveClient {
    client_with(emu, PipedriveAuth::api_token(&emu.config().api_token))
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
    c: &PipedriveClient,
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
                assert!(wait <= Duration::from_secs(2), "{wait:?}");
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(other) => panic!("walk failed: {other}"),
        };
        out.extend(page.records);
        if !page.more {
            assert!(page.cursor.is_none());
            break;
        }
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

fn by_id(records: Vec<Value>) -> HashMap<u64, Value> {
    records.into_iter().map(|r| (id_of(&r), r)).collect()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_walk_reads_every_record_once_with_its_parent() {
    let emu = company(2500, 3, 100).await;
    let c = client(&emu);
    let (orgs, _, _) = walk(&c, Entity::Account, req(500), |_| {}).await;
    let (persons, _, _) = walk(&c, Entity::Contact, req(500), |_| {}).await;
    assert_eq!(orgs.len(), 2500);
    assert_eq!(persons.len(), 2500 * 3 + 100);
    assert!(orgs.len() + persons.len() > 10_000);
    assert_eq!(
        unique(&orgs),
        emu.ids("organizations").into_iter().collect()
    );
    let expected = by_id(emu.records("persons"));
    assert_eq!(unique(&persons), expected.keys().copied().collect());
    let org_ids: HashSet<u64> = emu.ids("organizations").into_iter().collect();
    let mut orphans = 0;
    for p in &persons {
        let want = &expected[&id_of(p)]["org_id"];
        assert_eq!(&p["org_id"], want, "person {}", id_of(p));
        match want.as_u64() {
            Some(o) => assert!(org_ids.contains(&o)),
            None => orphans += 1,
        }
    }
    assert_eq!(orphans, 100);
    // Walk order is (update_time, id); records are trimmed to the requested fields.
    let keys: Vec<(String, u64)> = persons
        .iter()
        .map(|p| (p["update_time"].as_str().expect("t").to_string(), id_of(p)))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    let mut names: Vec<&str> = persons[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "emails",
            "first_name",
            "id",
            "job_title",
            "last_name",
            "name",
            "org_id",
            "phones",
            "update_time"
        ]
    );
    // 2500 organizations at 500 a page: 5 requests.
    let before = emu.stats().list_requests;
    walk(&c, Entity::Account, req(500), |_| {}).await;
    assert_eq!(emu.stats().list_requests - before, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_cursor_resumes_from_the_checkpoint_without_loss() {
    let emu = company(400, 3, 20).await;
    let c = client(&emu);
    let before = emu.stats().list_requests;
    let (persons, restarts, _) = walk(&c, Entity::Contact, req(100), |page| {
        if page == 6 {
            emu.invalidate_cursors();
        }
    })
    .await;
    assert_eq!(restarts, 1);
    let seen: HashSet<u64> = persons.iter().map(id_of).collect();
    assert_eq!(
        seen,
        emu.ids("persons").into_iter().collect(),
        "records lost across the resume"
    );
    // The resume starts at the checkpoint's second, not from the start: at most that second's
    // records are read twice, and the walk costs one request more than an unbroken one.
    assert!(persons.len() - seen.len() < 10, "{}", persons.len());
    let requests = emu.stats().list_requests - before;
    assert!(
        requests <= 1220_u64.div_ceil(100) + 2,
        "{requests} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_a_walk_converge_after_the_catch_up_pass() {
    let emu = company(300, 3, 15).await;
    let c = client(&emu);
    let started = Utc::now() - chrono::Duration::seconds(1);
    let orgs = emu.ids("organizations");
    let persons = emu.ids("persons");
    let mut created_orgs = Vec::new();
    let mut deleted = Vec::new();
    let (snap_orgs, _, _) = walk(&c, Entity::Account, req(50), |page| {
        let mut f = Map::new();
        f.insert("name".into(), json!(format!("Renamed Société {page}")));
        emu.update("organizations", orgs[page * 7], f.clone())
            .expect("rename");
        emu.update("organizations", orgs[orgs.len() - 1 - page], f)
            .expect("rename ahead");
        created_orgs.push(
            emu.put(
                "organizations",
                obj(json!({ "name": format!("Nueva Compañía {page}") })),
            )
            .expect("create"),
        );
    })
    .await;
    let (snap_persons, _, _) = walk(&c, Entity::Contact, req(100), |page| {
        let mut f = Map::new();
        f.insert("last_name".into(), json!(format!("O'Renamed {page}")));
        emu.update("persons", persons[page * 9], f.clone())
            .expect("rename");
        emu.update("persons", persons[persons.len() - 1 - page], f)
            .expect("rename ahead");
        let mut m = Map::new();
        m.insert("org_id".into(), json!(created_orgs[0]));
        emu.update("persons", persons[page * 9 + 1], m).expect("move");
        emu.put(
            "persons",
            obj(json!({ "first_name": "Zoë", "last_name": format!("New {page}"), "org_id": created_orgs[page % created_orgs.len()] })),
        )
        .expect("create");
        let victim = persons[page * 9 + 2];
        assert!(emu.delete("persons", victim));
        deleted.push(victim.to_string());
    })
    .await;
    assert!(!deleted.is_empty());

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
    let (cu_orgs, _, _) = catch_up(Entity::Account).await;
    let (cu_persons, _, _) = catch_up(Entity::Contact).await;
    // Pipedrive lists no deletions; the walk's ids fetched again tell which are gone.
    assert_eq!(
        c.list_deleted(Entity::Contact, started).await.expect("ok"),
        None
    );
    let mut accounts = by_id(snap_orgs);
    accounts.extend(by_id(cu_orgs));
    let mut contacts = by_id(snap_persons);
    contacts.extend(by_id(cu_persons));
    let known: Vec<String> = contacts.keys().map(u64::to_string).collect();
    let fetched = c
        .fetch_by_ids(Entity::Contact, &known)
        .await
        .expect("fetch");
    // The walk is in update_time order, so some victims were deleted before it reached them
    // and never read: those need no deletion downstream.
    let read_then_deleted: HashSet<&String> =
        deleted.iter().filter(|d| known.contains(d)).collect();
    assert!(!read_then_deleted.is_empty());
    assert_eq!(
        fetched.missing.iter().collect::<HashSet<_>>(),
        read_then_deleted
    );
    for id in &fetched.missing {
        contacts.remove(&id.parse::<u64>().expect("id"));
    }
    let want_orgs = by_id(emu.records("organizations"));
    assert_eq!(
        accounts.keys().collect::<HashSet<_>>(),
        want_orgs.keys().collect::<HashSet<_>>()
    );
    for (id, o) in &want_orgs {
        assert_eq!(accounts[id]["name"], o["name"], "organization {id}");
    }
    let want_persons = by_id(emu.records("persons"));
    assert_eq!(
        contacts.keys().collect::<HashSet<_>>(),
        want_persons.keys().collect::<HashSet<_>>()
    );
    for (id, p) in &want_persons {
        assert_eq!(contacts[id]["name"], p["name"], "person {id}");
        assert_eq!(contacts[id]["org_id"], p["org_id"], "person {id}'s parent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_slow_the_walk_but_lose_nothing() {
    let emu = company(0, 0, 2600).await;
    emu.set_rate_limit(Some((2, Duration::from_secs(1))));
    let c = client(&emu);
    let (persons, _, pauses) = walk(&c, Entity::Contact, req(500), |_| {}).await;
    assert!(pauses > 0, "the limit was never hit");
    assert_eq!(unique(&persons), emu.ids("persons").into_iter().collect());
    assert_eq!(
        emu.stats().by_status.get(&429).copied(),
        Some(pauses as u64)
    );
}

#[tokio::test]
async fn fetch_by_ids_reports_missing() {
    let emu = company(50, 3, 0).await;
    let c = client(&emu);
    let mut ids: Vec<String> = emu.ids("persons").iter().map(u64::to_string).collect();
    assert_eq!(ids.len(), 150);
    let gone = ids[10].clone();
    assert!(emu.delete("persons", gone.parse().expect("id")));
    ids.push("999999".into());
    ids.push("1&limit=1".into());
    let got = c.fetch_by_ids(Entity::Contact, &ids).await.expect("fetch");
    assert_eq!(got.records.len(), 149);
    assert_eq!(
        got.missing,
        vec![gone, "999999".to_string(), "1&limit=1".to_string()]
    );
    // 151 numeric ids: two requests of at most 100.
    assert_eq!(emu.stats().list_requests, 2);
    let org = emu.ids("organizations")[3].to_string();
    let one = c
        .fetch_by_ids(Entity::Account, std::slice::from_ref(&org))
        .await
        .expect("org");
    assert_eq!(one.records.len(), 1);
    assert!(one.records[0]["address"]["value"].is_string());
}

#[tokio::test]
async fn cursors_that_are_not_tokens_are_never_sent() {
    let emu = company(10, 1, 0).await;
    let c = client(&emu);
    let before = emu.stats().requests;
    for cursor in [
        "https://evil.example/api/v2/persons?cursor=abc",
        "abc&api_token=x",
        "",
    ] {
        let r = PageRequest {
            cursor: Some(cursor.into()),
            ..req(10)
        };
        let err = c.list_page(Entity::Contact, &r).await.expect_err("refused");
        assert!(matches!(err, CrmError::Permanent(_)), "{err:?}");
    }
    assert_eq!(emu.stats().requests, before, "nothing was sent");
    // A page whose next_cursor is a URL is refused instead of being handed on.
    let base = stub(
        "200 OK",
        r#"{"success":true,"data":[],"additional_data":{"next_cursor":"https://evil.example/x"}}"#,
    )
    .await;
    let c = PipedriveClient::new(
        PipedriveSettings::new(&base, PipedriveAuth::api_token("t")),
        fields(),
    )
    .expect("client");
    match c.list_page(Entity::Account, &req(10)).await {
        Err(CrmError::Permanent(m)) => assert!(m.contains("next_cursor"), "{m}"),
        other => panic!("expected Permanent, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_credentials_are_access_errors_without_the_secret() {
    let emu = company(3, 1, 0).await;
    let secret = "Sup3r-Secret-T0ken";
    for auth in [
        PipedriveAuth::api_token(secret),
        PipedriveAuth::bearer(secret),
    ] {
        let c = client_with(&emu, auth);
        let err = c
            .list_page(Entity::Account, &req(10))
            .await
            .expect_err("refused");
        assert!(matches!(err, CrmError::Access(_)), "{err:?}");
        assert!(!err.is_retryable());
        assert!(!err.to_string().contains(secret));
        assert!(!format!("{err:?}").contains(secret));
        assert!(!format!("{c:?}").contains(secret));
    }
    let c = client_with(&emu, PipedriveAuth::bearer(&emu.config().oauth_token));
    let page = c.list_page(Entity::Account, &req(10)).await.expect("page");
    assert_eq!(page.records.len(), 3);
    assert!(!page.more);
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
    let cases: [(&str, &str, &str); 5] = [
        ("200 OK", "not json at all", "unreadable"),
        ("200 OK", r#"{"success":true}"#, "without `data`"),
        (
            "200 OK",
            r#"{"success":true,"data":{"id":1}}"#,
            "not an array",
        ),
        (
            "200 OK",
            r#"{"success":false,"error":"Something odd"}"#,
            "Something odd",
        ),
        (
            "400 Bad Request",
            r#"{"success":false,"error":"Parameter 'limit' must be an integer"}"#,
            "limit",
        ),
    ];
    for (status, body, says) in cases {
        let base = stub(status, body).await;
        let c = PipedriveClient::new(
            PipedriveSettings::new(&base, PipedriveAuth::api_token("t")),
            fields(),
        )
        .expect("client");
        match c.list_page(Entity::Contact, &req(10)).await {
            Err(CrmError::Permanent(m)) => assert!(m.contains(says), "{m} lacks {says}"),
            other => panic!("{body}: expected Permanent, got {other:?}"),
        }
    }
    let base = stub("502 Bad Gateway", "<html>bad gateway</html>").await;
    let c = PipedriveClient::new(
        PipedriveSettings::new(&base, PipedriveAuth::api_token("t")),
        fields(),
    )
    .expect("client");
    let err = c
        .list_page(Entity::Contact, &req(10))
        .await
        .expect_err("502");
    assert!(matches!(err, CrmError::Unavailable(_)) && err.is_retryable());
    assert!(
        PipedriveClient::new(
            PipedriveSettings::new("http://acme.pipedrive.com", PipedriveAuth::api_token("t")),
            fields()
        )
        .is_err(),
        "plain http off loopback"
    );
}

/// The records the client hands out map through the built-in Pipedrive profile, with the
/// fields the pipeline asks for (`Mapper::source_fields`): ids, parents, names, emails, phones,
/// addresses.
#[tokio::test]
async fn records_map_through_the_pipedrive_profile() {
    use mapping::model::{Operation, Parent};
    use mapping::payload::{Outcome, map_records};
    use mapping::{Mapper, Notice};

    let emu = company(40, 3, 5).await;
    let source: mapping::SourceConfig = serde_json::from_value(json!({
        "id": "pipedrive-test", "kind": "pipedrive", "crm_choice": 5, "base_url": emu.base_url()
    }))
    .expect("source config");
    let mapper = Mapper::new(&source).expect("mapper");
    let wanted: HashMap<Entity, Vec<String>> = [Entity::Account, Entity::Contact]
        .into_iter()
        .map(|e| (e, mapper.source_fields(e)))
        .collect();
    let c = PipedriveClient::new(
        PipedriveSettings::new(
            &emu.base_url(),
            PipedriveAuth::api_token(&emu.config().api_token),
        ),
        wanted,
    )
    .expect("client");
    let (orgs, _, _) = walk(&c, Entity::Account, req(100), |_| {}).await;
    let (persons, _, _) = walk(&c, Entity::Contact, req(100), |_| {}).await;
    let expected = by_id(emu.records("persons"));
    let mut with_parent = 0;
    for (entity, records) in [(Entity::Account, &orgs), (Entity::Contact, &persons)] {
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
                Entity::Account => {
                    assert!(fields["name"].is_string());
                    assert!(fields["address1_city"].is_string(), "{fields:?}");
                }
                Entity::Contact => {
                    assert!(fields["firstname"].is_string());
                    assert!(fields["emailaddress1"].is_string());
                    let want = &expected[&id_of(r)]["org_id"];
                    match (&ch.parent, want.as_u64()) {
                        (Parent::Account(p), Some(o)) => {
                            assert_eq!(p, &o.to_string());
                            with_parent += 1;
                        }
                        (Parent::None, None) => {}
                        (p, w) => panic!("person {}: parent {p:?}, Pipedrive says {w:?}", r["id"]),
                    }
                }
            }
        }
    }
    assert_eq!(with_parent, 120);
}
