//! HubSpotClient against the HubSpot emulator, through the CrmReader trait only: a full walk of
//! 10,000+ records with every contact's parent, a cursor that dies mid-walk, changes during a
//! walk caught by a catch-up pass (modified records and deletions), a catch-up past the search
//! API's 10,000-result cap, rate limits, fetch by id, foreign next-page links, and a token that
//! stays secret.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use crm::hubspot::{HubSpotClient, HubSpotSettings};
use crm::{CrmError, CrmReader, Page, PageRequest};
use crm_emulator::hubspot::ObjectType;
use crm_emulator::{HubSpotConfig, HubSpotEmulator};
use mapping::Entity;
use serde_json::{Map, Value, json};

const COMPANIES: ObjectType = ObjectType::Companies;
const CONTACTS: ObjectType = ObjectType::Contacts;

/// What the pipeline passes: the mapped property names (here as the profile's paths, plus
/// envelope names the client must skip).
fn fields() -> HashMap<Entity, Vec<String>> {
    HashMap::from([
        (
            Entity::Account,
            [
                "/properties/name",
                "/properties/phone",
                "city",
                "id",
                "updatedAt",
            ]
            .map(String::from)
            .to_vec(),
        ),
        (
            Entity::Contact,
            ["firstname", "lastname", "/properties/email", "associations"]
                .map(String::from)
                .to_vec(),
        ),
    ])
}

async fn portal(companies: usize, per: usize, orphans: usize) -> HubSpotEmulator {
    HubSpotEmulator::start(HubSpotConfig {
        companies,
        contacts_per_company: per,
        orphan_contacts: orphans,
        ..HubSpotConfig::default()
    })
    .await
    .expect("emulator starts")
}

fn client_with(emu: &HubSpotEmulator, token: &str) -> HubSpotClient {
    HubSpotClient::new(HubSpotSettings::new(&emu.base_url(), token), fields()).expect("client")
}

fn client(emu: &HubSpotEmulator) -> HubSpotClient {
    client_with(emu, &emu.config().token.clone())
}

fn id_of(r: &Value) -> String {
    r["id"].as_str().expect("id").to_string()
}

fn req(size: u32) -> PageRequest {
    PageRequest {
        page_size: size,
        ..PageRequest::default()
    }
}

/// One page, retried as the pipeline would: on RateLimited, wait and send the same request.
/// Returns the page and how many 429s it took.
async fn page_with_retries(
    c: &HubSpotClient,
    e: Entity,
    r: &PageRequest,
) -> Result<(Page, u32), CrmError> {
    let mut limited = 0;
    loop {
        match c.list_page(e, r).await {
            Err(CrmError::RateLimited(d)) => {
                assert!(d <= Duration::from_secs(10), "{d:?}");
                limited += 1;
                tokio::time::sleep(d).await;
            }
            other => return other.map(|p| (p, limited)),
        }
    }
}

/// Walks an entity to the end from `start`, following cursors (or checkpoints when the page
/// hands out none), calling `during` after each page. Returns the records and the 429 count.
async fn walk(
    c: &HubSpotClient,
    e: Entity,
    start: PageRequest,
    mut during: impl FnMut(usize),
) -> (Vec<Value>, u32) {
    let mut r = start;
    let mut out = Vec::new();
    let mut limited = 0;
    for page_no in 0.. {
        assert!(page_no < 10_000, "the walk does not end");
        let (page, l) = page_with_retries(c, e, &r).await.expect("page");
        limited += l;
        if page.cursor.is_some() {
            assert!(page.more, "a cursor means more");
        }
        out.extend(page.records);
        if !page.more {
            break;
        }
        r.cursor = page.cursor;
        r.checkpoint = page.checkpoint;
        during(page_no);
    }
    (out, limited)
}

fn unique(records: &[Value]) -> HashSet<String> {
    let ids: HashSet<String> = records.iter().map(id_of).collect();
    assert_eq!(ids.len(), records.len(), "duplicates in the walk");
    ids
}

/// The contact's parent as the mapping profile reads it: `associatedcompanyid`, else the
/// first associated company.
fn parent(r: &Value) -> Option<String> {
    r.pointer("/properties/associatedcompanyid")
        .and_then(Value::as_str)
        .or_else(|| {
            r.pointer("/associations/companies/results/0/id")
                .and_then(Value::as_str)
        })
        .map(str::to_string)
}

fn props(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

fn set(ids: Vec<String>) -> HashSet<String> {
    ids.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_walk_reads_every_record_and_every_parent() {
    let emu = portal(2_100, 4, 150).await;
    let c = client(&emu);
    let (companies, _) = walk(&c, Entity::Account, req(100), |_| {}).await;
    let (contacts, _) = walk(&c, Entity::Contact, req(100), |_| {}).await;
    assert_eq!(companies.len(), 2_100);
    assert_eq!(contacts.len(), 2_100 * 4 + 150);
    assert!(companies.len() + contacts.len() > 10_000);
    let company_ids = unique(&companies);
    assert_eq!(company_ids, set(emu.ids(COMPANIES)));
    assert_eq!(unique(&contacts), set(emu.ids(CONTACTS)));
    // 100 per page, cursor-driven: 21 list requests for 2,100 companies, no search.
    assert_eq!(emu.stats().list_requests, 21 + 86);
    assert_eq!(emu.stats().search_requests, 0);

    // Every contact's parent is its company, from the property and the associations block.
    let mut orphans = 0;
    for r in &contacts {
        let truth =
            emu.record(CONTACTS, &id_of(r)).expect("record")["properties"]["associatedcompanyid"]
                .as_str()
                .map(str::to_string);
        assert_eq!(parent(r), truth, "{r}");
        match &truth {
            Some(p) => {
                assert!(company_ids.contains(p));
                assert_eq!(
                    r.pointer("/associations/companies/results/0/id")
                        .and_then(Value::as_str),
                    Some(p.as_str())
                );
            }
            None => orphans += 1,
        }
    }
    assert_eq!(orphans, 150);
    // Exactly the mapped properties (plus what HubSpot always returns) came back.
    let mut keys: Vec<&str> = contacts[0]["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "associatedcompanyid",
            "createdate",
            "email",
            "firstname",
            "hs_object_id",
            "lastmodifieddate",
            "lastname"
        ]
    );
    let mut keys: Vec<&str> = companies[0]["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "city",
            "createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
            "name",
            "phone"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_cursor_resumes_from_the_checkpoint() {
    let emu = portal(1_000, 0, 0).await;
    let c = client(&emu);
    let mut r = req(100);
    let mut seen = Vec::new();
    let mut died = 0;
    for page_no in 0.. {
        if page_no == 3 {
            emu.invalidate_cursors();
        }
        let page = match c.list_page(Entity::Account, &r).await {
            Err(CrmError::CursorExpired) => {
                assert!(CrmError::CursorExpired.is_retryable());
                died += 1;
                // What the pipeline does: drop the cursor, keep the checkpoint.
                r.cursor = None;
                continue;
            }
            other => other.expect("page"),
        };
        seen.extend(page.records.iter().map(id_of));
        if !page.more {
            break;
        }
        r.cursor = page.cursor;
        r.checkpoint = page.checkpoint;
    }
    assert_eq!(died, 1);
    assert_eq!(seen, emu.ids(COMPANIES), "no record lost or repeated");
    assert!(emu.stats().search_requests >= 6, "resumed by keyset search");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_a_walk_are_caught_by_the_catch_up_pass() {
    let emu = portal(300, 2, 10).await;
    let c = client(&emu);
    let started: DateTime<Utc> = Utc::now().trunc_subsecs(3);
    let companies0 = emu.ids(COMPANIES);
    let contacts0 = emu.ids(CONTACTS);

    let (snap_companies, _) = walk(&c, Entity::Account, req(50), |p| {
        let behind = &companies0[p * 50 + 3];
        let ahead = &companies0[companies0.len() - 1 - p];
        emu.update(
            COMPANIES,
            behind,
            props(&[("name", &format!("Renamed {p}"))]),
        )
        .expect("update");
        emu.update(COMPANIES, ahead, props(&[("city", "Zürich")]))
            .expect("update");
        if p == 1 {
            assert!(emu.archive(COMPANIES, &companies0[10]));
            emu.merge(COMPANIES, &companies0[20], &companies0[21])
                .expect("merge");
        }
        emu.create(COMPANIES, props(&[("name", &format!("Newco {p} S.A."))]))
            .expect("create");
    })
    .await;
    let (snap_contacts, _) = walk(&c, Entity::Contact, req(50), |p| {
        let behind = &contacts0[p * 50 + 1];
        let ahead = &contacts0[contacts0.len() - 15 - p];
        emu.update(CONTACTS, behind, props(&[("lastname", "D'Angelo")]))
            .expect("update");
        emu.update(CONTACTS, ahead, props(&[("email", "moved@example.org")]))
            .expect("update");
        assert!(emu.archive(CONTACTS, &contacts0[p * 50 + 2]));
        assert!(emu.archive(CONTACTS, &contacts0[contacts0.len() - 1 - p]));
        emu.create(
            CONTACTS,
            props(&[
                ("firstname", "Chloé"),
                ("associatedcompanyid", &companies0[100 + p]),
            ]),
        )
        .expect("create");
    })
    .await;

    // The catch-up pass, then deletions since the start.
    for (e, t, snapshot) in [
        (Entity::Account, COMPANIES, snap_companies),
        (Entity::Contact, CONTACTS, snap_contacts),
    ] {
        let mut state: BTreeMap<String, Value> =
            snapshot.into_iter().map(|r| (id_of(&r), r)).collect();
        let (caught, _) = walk(
            &c,
            e,
            PageRequest {
                page_size: 10,
                modified_since: Some(started),
                ..PageRequest::default()
            },
            |_| {},
        )
        .await;
        // Exactly the records modified since the start, nothing else.
        let modified: HashSet<String> = emu
            .ids(t)
            .into_iter()
            .filter(|id| {
                let r = emu.record(t, id).expect("record");
                let at = DateTime::parse_from_rfc3339(r["updatedAt"].as_str().expect("t"))
                    .expect("rfc3339");
                at >= started
            })
            .collect();
        assert!(modified.len() > 10, "{e:?}: {}", modified.len());
        assert_eq!(unique(&caught), modified, "{e:?}");
        for r in caught {
            state.insert(id_of(&r), r);
        }
        let deleted = c
            .list_deleted(e, started)
            .await
            .expect("deleted")
            .expect("HubSpot lists deletions");
        assert_eq!(set(deleted.clone()), set(emu.archived_ids(t)));
        for id in deleted {
            state.remove(&id);
        }
        // Converged: the same records, each in its current state.
        assert_eq!(
            state.keys().cloned().collect::<HashSet<_>>(),
            set(emu.ids(t)),
            "{e:?}"
        );
        for (id, r) in &state {
            let now = emu.record(t, id).expect("record");
            assert_eq!(r["updatedAt"], now["updatedAt"], "{e:?} {id}");
            for p in ["name", "city", "lastname", "email", "associatedcompanyid"] {
                if let Some(v) = r["properties"].get(p) {
                    assert_eq!(v, &now["properties"][p], "{e:?} {id} {p}");
                }
            }
        }
    }
    // A catch-up since the start reads nothing that did not change.
    let quiet = c
        .list_page(
            Entity::Account,
            &PageRequest {
                page_size: 100,
                modified_since: Some(Utc::now() + chrono::Duration::seconds(1)),
                ..PageRequest::default()
            },
        )
        .await
        .expect("page");
    assert!(quiet.records.is_empty() && !quiet.more);
    assert_eq!(quiet.total, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_slices_past_the_search_cap() {
    let emu = portal(10_400, 0, 0).await;
    let c = client(&emu);
    let since = emu.config().history_start;
    let first = c
        .list_page(
            Entity::Account,
            &PageRequest {
                page_size: 200,
                modified_since: Some(since),
                ..PageRequest::default()
            },
        )
        .await
        .expect("first page");
    assert_eq!(first.total, Some(10_400));
    assert_eq!(first.records.len(), 200);
    assert!(
        first.cursor.is_none(),
        "search pages are resumed by checkpoint"
    );
    let (all, _) = walk(
        &c,
        Entity::Account,
        PageRequest {
            page_size: 200,
            modified_since: Some(since),
            ..PageRequest::default()
        },
        |_| {},
    )
    .await;
    assert_eq!(all.len(), 10_400);
    let ids: Vec<String> = all.iter().map(id_of).collect();
    assert_eq!(ids, emu.ids(COMPANIES), "every record once, in id order");
    // 52 pages and never a 400 from the 10,000-result cap.
    assert_eq!(emu.stats().by_status.get(&400), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_slow_the_walk_but_lose_nothing() {
    let emu = portal(600, 1, 0).await;
    emu.set_rate_limit(Some((4, Duration::from_millis(150))));
    let c = client(&emu);
    let t0 = std::time::Instant::now();
    let (companies, limited) = walk(&c, Entity::Account, req(100), |_| {}).await;
    assert_eq!(companies.len(), 600);
    assert_eq!(unique(&companies), set(emu.ids(COMPANIES)));
    assert!(limited > 0, "the limit was hit");
    assert!(t0.elapsed() >= Duration::from_millis(150));
    // Each RateLimited waits the window the headers announce.
    for _ in 0..5 {
        if let Err(e) = c.list_page(Entity::Account, &req(10)).await {
            assert_eq!(e, CrmError::RateLimited(Duration::from_millis(150)));
            assert!(e.is_retryable());
        }
    }
    // Fetch by id under the same limit, retried the same way.
    let ids = emu.ids(CONTACTS)[..300].to_vec();
    let got = loop {
        match c.fetch_by_ids(Entity::Contact, &ids).await {
            Err(CrmError::RateLimited(d)) => tokio::time::sleep(d).await,
            other => break other.expect("fetch"),
        }
    };
    assert_eq!(got.records.len(), 300);
    assert!(got.missing.is_empty());
    assert!(emu.stats().by_status.get(&429).copied().unwrap_or(0) > 0);
}

#[tokio::test]
async fn fetch_by_ids_reports_missing() {
    let emu = portal(250, 1, 0).await;
    let c = client(&emu);
    let mut ids = emu.ids(COMPANIES);
    let gone = ids[3].clone();
    assert!(emu.archive(COMPANIES, &gone));
    ids.push("999".into());
    ids.push("12 OR 1=1".into());
    let got = c.fetch_by_ids(Entity::Account, &ids).await.expect("fetch");
    assert_eq!(got.records.len(), 249);
    assert_eq!(
        got.missing,
        vec![gone, "999".to_string(), "12 OR 1=1".to_string()]
    );
    // 251 well-formed ids: three batch reads of at most 100.
    assert_eq!(emu.stats().batch_read_requests, 3);
    assert!(got.records[0]["properties"]["name"].is_string());
    // A contact's parent comes with it.
    let contacts = emu.ids(CONTACTS);
    let one = c
        .fetch_by_ids(Entity::Contact, &contacts[..1])
        .await
        .expect("contact");
    assert_eq!(one.records.len(), 1);
    assert_eq!(
        parent(&one.records[0]),
        emu.record(CONTACTS, &contacts[0]).expect("record")["properties"]["associatedcompanyid"]
            .as_str()
            .map(str::to_string)
    );
    // None found (HubSpot's 404 OBJECT_NOT_FOUND) is all missing, not an error.
    let none = c
        .fetch_by_ids(Entity::Account, &["1".to_string(), "2".to_string()])
        .await
        .expect("fetch");
    assert!(none.records.is_empty());
    assert_eq!(none.missing, ["1", "2"]);
    assert!(
        c.fetch_by_ids(Entity::Account, &[])
            .await
            .expect("empty")
            .records
            .is_empty()
    );
}

#[tokio::test]
async fn list_deleted_walks_archived_objects_since_a_time() {
    let emu = portal(260, 0, 0).await;
    let c = client(&emu);
    let ids = emu.ids(COMPANIES);
    let t0 = Utc::now().trunc_subsecs(3);
    for id in &ids[..150] {
        assert!(emu.archive(COMPANIES, id));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t1 = Utc::now().trunc_subsecs(3);
    for id in &ids[200..202] {
        assert!(emu.archive(COMPANIES, id));
    }
    let all = c
        .list_deleted(Entity::Account, t0)
        .await
        .expect("deleted")
        .expect("some");
    assert_eq!(all.len(), 152, "two pages of archived objects");
    let late = c
        .list_deleted(Entity::Account, t1)
        .await
        .expect("deleted")
        .expect("some");
    assert_eq!(late, ids[200..202].to_vec());
    assert_eq!(
        c.list_deleted(Entity::Contact, t0).await.expect("contacts"),
        Some(Vec::new())
    );
}

#[tokio::test]
async fn next_page_links_on_another_host_are_refused() {
    let emu = portal(30, 0, 0).await;
    let c = client(&emu);
    emu.set_next_link_base(Some("https://evil.example"));
    let err = c
        .list_page(Entity::Account, &req(10))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, CrmError::Permanent(m) if m.contains("evil.example")),
        "{err:?}"
    );
    emu.set_next_link_base(None);
    // A cursor that is a URL is followed only on the API's origin; nothing is sent otherwise.
    let before = emu.stats().requests;
    let poisoned = PageRequest {
        cursor: Some("https://evil.example/crm/v3/objects/companies?after=x".into()),
        page_size: 10,
        ..PageRequest::default()
    };
    let err = c
        .list_page(Entity::Account, &poisoned)
        .await
        .expect_err("refused");
    assert!(matches!(err, CrmError::Permanent(_)), "{err:?}");
    assert_eq!(emu.stats().requests, before, "nothing was sent");
    // A link on the API's own origin is fine.
    let own = PageRequest {
        cursor: Some(format!(
            "{}/crm/v3/objects/companies?limit=10&properties=name",
            emu.base_url()
        )),
        page_size: 10,
        ..PageRequest::default()
    };
    let page = c.list_page(Entity::Account, &own).await.expect("page");
    assert_eq!(page.records.len(), 10);
    assert!(page.more);
}

#[tokio::test]
async fn the_token_never_appears_in_errors() {
    let emu = portal(5, 1, 0).await;
    let secret = "pat-na1-Sup3r-Secret-Token-0000";
    let c = client_with(&emu, secret);
    let mut errors = vec![
        c.list_page(Entity::Account, &req(10))
            .await
            .expect_err("refused"),
        c.list_page(
            Entity::Contact,
            &PageRequest {
                modified_since: Some(Utc::now()),
                ..req(10)
            },
        )
        .await
        .expect_err("refused"),
        c.fetch_by_ids(Entity::Account, &emu.ids(COMPANIES))
            .await
            .expect_err("refused"),
        c.list_deleted(Entity::Account, Utc::now())
            .await
            .expect_err("refused"),
    ];
    for e in &errors {
        assert!(matches!(e, CrmError::Access(_)), "{e:?}");
        assert!(!e.is_retryable());
    }
    // Other failures, with the right token: a forged cursor, a bad checkpoint, no server.
    let good = client(&emu);
    errors.push(
        good.list_page(
            Entity::Account,
            &PageRequest {
                cursor: Some("forged".into()),
                ..req(10)
            },
        )
        .await
        .expect_err("dead cursor"),
    );
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let nowhere = HubSpotClient::new(
        HubSpotSettings::new(&format!("http://127.0.0.1:{port}"), secret),
        fields(),
    )
    .expect("client");
    let down = nowhere
        .list_page(Entity::Account, &req(10))
        .await
        .expect_err("down");
    assert!(matches!(down, CrmError::Unavailable(_)), "{down:?}");
    assert!(down.is_retryable());
    errors.push(down);
    assert_eq!(errors[4], CrmError::CursorExpired);
    for e in &errors {
        assert!(!e.to_string().contains(secret), "{e}");
        assert!(!format!("{e:?}").contains(secret), "{e:?}");
    }
    assert!(!format!("{c:?}").contains(secret));
    assert!(
        !format!(
            "{:?}",
            HubSpotSettings::new("https://api.hubapi.com", secret)
        )
        .contains(secret)
    );
}

/// A canned answer: status, headers, body.
type Canned = (u16, Vec<(&'static str, &'static str)>, &'static str);

/// A one-shot-per-response HTTP server answering canned responses in order (for shapes the
/// emulator never produces).
async fn stub(responses: Vec<Canned>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        for (status, headers, body) in responses {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 65536];
            let mut got = Vec::new();
            // Read the request head and a body of Content-Length bytes.
            loop {
                let n = sock.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn odd_answers_are_classified() {
    let base = stub(vec![
        // An empty page that still has a cursor is not the end.
        (200, vec![], r#"{"results":[],"paging":{"next":{"after":"MTIz"}}}"#),
        // Not JSON.
        (200, vec![], "<html>gateway</html>"),
        // JSON without results.
        (200, vec![], r#"{"status":"COMPLETE"}"#),
        // Server trouble.
        (502, vec![], r#"{"status":"error","message":"Bad gateway","category":"UNKNOWN"}"#),
        // A 429 with Retry-After.
        (
            429,
            vec![("Retry-After", "2")],
            r#"{"status":"error","message":"You have reached your secondly limit.","errorType":"RATE_LIMIT","policyName":"SECONDLY"}"#,
        ),
        // The daily limit.
        (
            429,
            vec![],
            r#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","policyName":"DAILY"}"#,
        ),
        // A 404 that is not OBJECT_NOT_FOUND on a batch read (a wrong base URL, say).
        (404, vec![], "Not Found"),
    ])
    .await;
    let c = HubSpotClient::new(HubSpotSettings::new(&base, "pat-x"), fields()).expect("client");
    let page = c.list_page(Entity::Account, &req(10)).await.expect("page");
    assert!(page.records.is_empty());
    assert!(page.more, "an empty page with paging.next is not the end");
    assert_eq!(page.cursor.as_deref(), Some("MTIz"));
    let e = c
        .list_page(Entity::Account, &req(10))
        .await
        .expect_err("html");
    assert!(
        matches!(&e, CrmError::Permanent(m) if m.contains("not JSON")),
        "{e:?}"
    );
    let e = c
        .list_page(Entity::Account, &req(10))
        .await
        .expect_err("shape");
    assert!(
        matches!(&e, CrmError::Permanent(m) if m.contains("results")),
        "{e:?}"
    );
    let e = c
        .list_page(Entity::Account, &req(10))
        .await
        .expect_err("502");
    assert!(matches!(e, CrmError::Unavailable(_)), "{e:?}");
    let e = c
        .list_page(Entity::Account, &req(10))
        .await
        .expect_err("429");
    assert_eq!(e, CrmError::RateLimited(Duration::from_secs(2)));
    let e = c
        .list_page(Entity::Account, &req(10))
        .await
        .expect_err("daily");
    assert!(
        matches!(e, CrmError::RateLimited(d) if d >= Duration::from_secs(60)),
        "{e:?}"
    );
    let e = c
        .fetch_by_ids(Entity::Account, &["1".to_string()])
        .await
        .expect_err("a bare 404 is not 'all missing'");
    assert!(matches!(e, CrmError::Permanent(_)), "{e:?}");
}
