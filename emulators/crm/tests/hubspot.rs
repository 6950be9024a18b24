//! Conformance of the HubSpot emulator over HTTP: bearer auth and the error body, list paging
//! (`after`, `paging.next`, limits), properties and associations, search filters / sort / the
//! 10,000-result cap, batch read with missing ids, archived objects, dead cursors, the rate
//! limit, and webhooks verified with the receiver's own verifier (shared/webhook).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode as AxStatus, Uri};
use axum::routing::post;
use crm_emulator::hubspot::ObjectType;
use crm_emulator::{HubSpotConfig, HubSpotEmulator};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Map, Value, json};

const COMPANIES: ObjectType = ObjectType::Companies;
const CONTACTS: ObjectType = ObjectType::Contacts;

async fn start(companies: usize, per: usize, orphans: usize) -> HubSpotEmulator {
    HubSpotEmulator::start(HubSpotConfig {
        companies,
        contacts_per_company: per,
        orphan_contacts: orphans,
        ..HubSpotConfig::default()
    })
    .await
    .expect("emulator")
}

async fn get(emu: &HubSpotEmulator, path_and_query: &str) -> Response {
    Client::new()
        .get(format!("{}{path_and_query}", emu.base_url()))
        .bearer_auth(&emu.config().token)
        .send()
        .await
        .expect("request")
}

async fn get_json(emu: &HubSpotEmulator, path_and_query: &str) -> Value {
    let res = get(emu, path_and_query).await;
    assert_eq!(res.status(), StatusCode::OK, "{path_and_query}");
    res.json().await.expect("json")
}

async fn post_json(emu: &HubSpotEmulator, path: &str, body: &Value) -> (StatusCode, Value) {
    let res = Client::new()
        .post(format!("{}{path}", emu.base_url()))
        .bearer_auth(&emu.config().token)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = res.status();
    (status, res.json().await.expect("json"))
}

fn is_error(body: &Value, category: &str) -> bool {
    body["status"] == "error"
        && body["category"] == category
        && body["message"].is_string()
        && body["correlationId"].is_string()
}

fn ids(page: &Value) -> Vec<u64> {
    page["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id").parse().expect("numeric id"))
        .collect()
}

fn props(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

#[tokio::test]
async fn bearer_token_is_required() {
    let emu = start(3, 1, 0).await;
    let url = format!("{}/crm/v3/objects/companies", emu.base_url());
    for rb in [
        Client::new().get(&url),
        Client::new().get(&url).bearer_auth("pat-na1-wrong"),
        Client::new()
            .get(&url)
            .basic_auth("user", Some(&emu.config().token)),
    ] {
        let res = rb.send().await.expect("request");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let body: Value = res.json().await.expect("json");
        assert!(is_error(&body, "INVALID_AUTHENTICATION"), "{body}");
    }
    assert_eq!(get(&emu, "/crm/v3/objects/companies").await.status(), 200);
    assert_eq!(emu.stats().by_status.get(&401), Some(&3));
}

#[tokio::test]
async fn list_pages_by_after_in_id_order() {
    let emu = start(25, 0, 0).await;
    // Default page size is 10.
    let first = get_json(&emu, "/crm/v3/objects/companies").await;
    assert_eq!(ids(&first).len(), 10);
    let mut seen = Vec::new();
    let mut path = "/crm/v3/objects/companies?limit=10&properties=name".to_string();
    let mut pages = 0;
    loop {
        let page = get_json(&emu, &path).await;
        pages += 1;
        seen.extend(ids(&page));
        match page["paging"]["next"]["after"].as_str() {
            Some(after) => {
                let link = page["paging"]["next"]["link"].as_str().expect("link");
                assert!(link.starts_with(&emu.base_url()), "{link}");
                assert!(link.contains(&format!("after={after}")), "{link}");
                // Following the link reads the same page as asking with `after`.
                let via_link = Client::new()
                    .get(link)
                    .bearer_auth(&emu.config().token)
                    .send()
                    .await
                    .expect("link");
                let via_link: Value = via_link.json().await.expect("json");
                path = format!("/crm/v3/objects/companies?limit=10&properties=name&after={after}");
                assert_eq!(ids(&via_link), ids(&get_json(&emu, &path).await));
            }
            None => {
                assert!(page.get("paging").is_none(), "no paging on the last page");
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "id order");
    let want: Vec<u64> = emu
        .ids(COMPANIES)
        .iter()
        .map(|s| s.parse().expect("id"))
        .collect();
    assert_eq!(seen, want);

    let res = get(&emu, "/crm/v3/objects/companies?limit=101").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(is_error(
        &res.json().await.expect("json"),
        "VALIDATION_ERROR"
    ));
    assert_eq!(
        ids(&get_json(&emu, "/crm/v3/objects/companies?limit=100").await).len(),
        25
    );
    let res = get(&emu, "/crm/v3/objects/deals").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // Object type ids work as path segments.
    assert_eq!(
        ids(&get_json(&emu, "/crm/v3/objects/0-2?limit=100").await).len(),
        25
    );
}

#[tokio::test]
async fn properties_and_associations() {
    let emu = start(30, 2, 4).await;
    let page = get_json(
        &emu,
        "/crm/v3/objects/companies?limit=5&properties=name,phone,no_such_property",
    )
    .await;
    for r in page["results"].as_array().expect("results") {
        let mut keys: Vec<&str> = r["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "createdate",
                "hs_lastmodifieddate",
                "hs_object_id",
                "name",
                "phone"
            ]
        );
        assert_eq!(r["properties"]["hs_object_id"], r["id"]);
        assert_eq!(r["archived"], false);
        assert!(r.get("associations").is_none());
        for k in ["createdAt", "updatedAt"] {
            let s = r[k].as_str().expect("timestamp");
            assert_eq!(s.len(), "2024-01-16T17:43:01.250Z".len(), "{s}");
            assert!(s.ends_with('Z'));
        }
        assert_eq!(r["properties"]["hs_lastmodifieddate"], r["updatedAt"]);
    }
    // Without `properties`, the default set.
    let page = get_json(&emu, "/crm/v3/objects/contacts?limit=3").await;
    let mut keys: Vec<String> = page["results"][0]["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "createdate",
            "email",
            "firstname",
            "hs_object_id",
            "lastmodifieddate",
            "lastname"
        ]
    );
    // Contacts with associations=companies: the primary company twice (labelled and
    // unlabelled), equal to associatedcompanyid; orphans have no associations block.
    let page = get_json(
        &emu,
        "/crm/v3/objects/contacts?limit=100&properties=associatedcompanyid,firstname&associations=companies",
    )
    .await;
    let results = page["results"].as_array().expect("results");
    assert_eq!(results.len(), 64);
    let companies: HashSet<String> = emu.ids(COMPANIES).into_iter().collect();
    let mut orphans = 0;
    for r in results {
        match r["properties"]["associatedcompanyid"].as_str() {
            Some(c) => {
                assert!(companies.contains(c));
                let a = &r["associations"]["companies"]["results"];
                assert_eq!(a[0]["id"], c);
                assert_eq!(a[0]["type"], "contact_to_company");
                assert_eq!(a[1]["type"], "contact_to_company_unlabeled");
            }
            None => {
                assert!(r["properties"]["associatedcompanyid"].is_null());
                assert!(r.get("associations").is_none());
                orphans += 1;
            }
        }
    }
    assert_eq!(orphans, 4);
    // Companies list their contacts when asked.
    let one = get_json(
        &emu,
        "/crm/v3/objects/companies?limit=1&associations=contacts",
    )
    .await;
    assert_eq!(
        one["results"][0]["associations"]["contacts"]["results"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // A single object, and 404 for an unknown one.
    let id = emu.ids(CONTACTS)[0].clone();
    let r = get_json(
        &emu,
        &format!("/crm/v3/objects/contacts/{id}?properties=email"),
    )
    .await;
    assert_eq!(r["id"], id);
    let res = get(&emu, "/crm/v3/objects/contacts/1").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(is_error(
        &res.json().await.expect("json"),
        "OBJECT_NOT_FOUND"
    ));
}

#[tokio::test]
async fn generated_values_are_realistic() {
    let emu = start(200, 2, 0).await;
    let page = get_json(
        &emu,
        "/crm/v3/objects/companies?limit=100&properties=name,domain,city,phone",
    )
    .await;
    let names: Vec<&str> = page["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["properties"]["name"].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.chars().count() > 160),
        "an over-long name"
    );
    let contacts = get_json(
        &emu,
        "/crm/v3/objects/contacts?limit=100&properties=lastname,email",
    )
    .await;
    let text = contacts.to_string();
    assert!(text.contains('\''), "apostrophes");
    assert!(!text.is_ascii(), "accents");
    // Same seed, same portal.
    let again = start(200, 2, 0).await;
    assert_eq!(again.ids(COMPANIES), emu.ids(COMPANIES));
    assert_eq!(
        again.record(CONTACTS, &emu.ids(CONTACTS)[7]),
        emu.record(CONTACTS, &emu.ids(CONTACTS)[7])
    );
}

#[tokio::test]
async fn search_filters_sorts_and_caps() {
    let emu = start(10_050, 0, 0).await;
    let ids_all = emu.ids(COMPANIES);
    let pivot = &ids_all[10_000];
    // Keyset by id: hs_object_id GT, sorted by id.
    let (status, body) = post_json(
        &emu,
        "/crm/v3/objects/companies/search",
        &json!({
            "filterGroups": [{"filters": [{"propertyName": "hs_object_id", "operator": "GT", "value": pivot}]}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "properties": ["name"],
            "limit": 200
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 49);
    assert_eq!(ids(&body).len(), 49);
    assert!(body.get("paging").is_none());
    let keys: Vec<&str> = body["results"][0]["properties"]
        .as_object()
        .expect("props")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["createdate", "hs_lastmodifieddate", "hs_object_id", "name"]
    );
    // EQ on the id.
    let (_, body) = post_json(
        &emu,
        "/crm/v3/objects/companies/search",
        &json!({"filterGroups": [{"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": pivot}]}]}),
    )
    .await;
    assert_eq!(body["total"], 1);
    // hs_lastmodifieddate GTE (epoch ms) sorted by it: every result at or after the bound,
    // in order, and the total is exact.
    let rec = emu.record(COMPANIES, &ids_all[5_000]).expect("record");
    let bound = chrono::DateTime::parse_from_rfc3339(rec["updatedAt"].as_str().expect("t"))
        .expect("rfc3339")
        .timestamp_millis();
    let mut after: Option<String> = None;
    let mut got = Vec::new();
    let mut totals = Vec::new();
    loop {
        let mut q = json!({
            "filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": bound.to_string()}]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "properties": ["hs_lastmodifieddate"],
            "limit": 200
        });
        if let Some(a) = &after {
            q["after"] = json!(a);
        }
        let (status, body) = post_json(&emu, "/crm/v3/objects/companies/search", &q).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        totals.push(body["total"].as_u64());
        for r in body["results"].as_array().expect("results") {
            got.push(r["updatedAt"].as_str().expect("t").to_string());
        }
        match body["paging"]["next"]["after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => break,
        }
    }
    assert!(totals.iter().all(|t| *t == Some(got.len() as u64)));
    assert!(got.windows(2).all(|w| w[0] <= w[1]));
    assert!(got.iter().all(|t| {
        chrono::DateTime::parse_from_rfc3339(t)
            .expect("t")
            .timestamp_millis()
            >= bound
    }));

    // The 10,000 cap: a next page is announced at 10,000, asking for it is a 400.
    let (status, body) = post_json(
        &emu,
        "/crm/v3/objects/companies/search",
        &json!({"limit": 200, "after": "9900"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 10_050);
    assert_eq!(ids(&body).len(), 100);
    assert_eq!(body["paging"]["next"]["after"], "10000");
    let (status, body) = post_json(
        &emu,
        "/crm/v3/objects/companies/search",
        &json!({"limit": 10, "after": "10000"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(is_error(&body, "VALIDATION_ERROR"), "{body}");

    // Limits of the request.
    for bad in [
        json!({"limit": 201}),
        json!({"sorts": [{"propertyName": "name"}, {"propertyName": "hs_object_id"}]}),
        json!({"filterGroups": [{"filters": [{"propertyName": "name", "operator": "LIKE", "value": "x"}]}]}),
        json!({"filterGroups": (0..6).map(|_| json!({"filters": [{"propertyName": "name", "operator": "HAS_PROPERTY"}]})).collect::<Vec<_>>()}),
    ] {
        let (status, body) = post_json(&emu, "/crm/v3/objects/companies/search", &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(is_error(&body, "VALIDATION_ERROR"));
    }
    // Archived objects are not searched.
    assert!(emu.archive(COMPANIES, pivot));
    let (_, body) = post_json(
        &emu,
        "/crm/v3/objects/companies/search",
        &json!({"filterGroups": [{"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": pivot}]}]}),
    )
    .await;
    assert_eq!(body["total"], 0);
    assert!(emu.stats().search_requests > 5);
}

#[tokio::test]
async fn batch_read_reports_missing_ids() {
    let emu = start(10, 1, 0).await;
    let all = emu.ids(COMPANIES);
    assert!(emu.archive(COMPANIES, &all[3]));
    let inputs = |ids: &[&str]| json!({"inputs": ids.iter().map(|i| json!({"id": i})).collect::<Vec<_>>(), "properties": ["name"]});
    let (status, body) = post_json(
        &emu,
        "/crm/v3/objects/companies/batch/read",
        &inputs(&[&all[0], &all[1], &all[3], "999"]),
    )
    .await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{body}");
    assert_eq!(body["status"], "COMPLETE");
    assert_eq!(ids(&body).len(), 2);
    assert_eq!(body["numErrors"], 1);
    let err = &body["errors"][0];
    assert_eq!(err["category"], "OBJECT_NOT_FOUND");
    assert_eq!(err["context"]["ids"], json!([all[3], "999"]));
    let (status, body) = post_json(
        &emu,
        "/crm/v3/objects/companies/batch/read",
        &inputs(&[&all[0], &all[1]]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("errors").is_none());
    assert!(body["results"][0]["properties"]["name"].is_string());
    let (status, body) = post_json(
        &emu,
        "/crm/v3/objects/companies/batch/read",
        &inputs(&["1", "2"]),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(is_error(&body, "OBJECT_NOT_FOUND"));
    // archived=true reads archived ones.
    let (status, body) = post_json(
        &emu,
        "/crm/v3/objects/companies/batch/read?archived=true",
        &inputs(&[&all[3]]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["results"][0]["archived"], true);
    // At most 100 inputs.
    let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let (status, body) =
        post_json(&emu, "/crm/v3/objects/companies/batch/read", &inputs(&refs)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(is_error(&body, "VALIDATION_ERROR"));
}

#[tokio::test]
async fn archived_objects_list_separately() {
    let emu = start(12, 0, 0).await;
    let all = emu.ids(COMPANIES);
    assert!(emu.archive(COMPANIES, &all[2]));
    assert!(emu.archive(COMPANIES, &all[7]));
    assert!(!emu.archive(COMPANIES, &all[7]), "already archived");
    let active = get_json(&emu, "/crm/v3/objects/companies?limit=100").await;
    assert_eq!(ids(&active).len(), 10);
    let archived = get_json(&emu, "/crm/v3/objects/companies?limit=100&archived=true").await;
    let results = archived["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["archived"], true);
        assert!(r["archivedAt"].as_str().is_some_and(|s| s.ends_with('Z')));
    }
    assert_eq!(
        emu.archived_ids(COMPANIES),
        vec![all[2].clone(), all[7].clone()]
    );
    // Mutations: create gets a larger id, update moves updatedAt.
    let id = emu
        .create(
            COMPANIES,
            props(&[("name", "Zoë's Café"), ("city", "Zürich")]),
        )
        .expect("create");
    assert!(id.parse::<u64>().expect("id") > all[11].parse::<u64>().expect("id"));
    let before = emu.record(COMPANIES, &all[0]).expect("record")["updatedAt"].clone();
    emu.update(COMPANIES, &all[0], props(&[("phone", "+41 44 000 00 00")]))
        .expect("update");
    let after = emu.record(COMPANIES, &all[0]).expect("record");
    assert_ne!(after["updatedAt"], before);
    assert_eq!(after["properties"]["phone"], "+41 44 000 00 00");
    assert!(
        emu.update(COMPANIES, &all[0], props(&[("hs_object_id", "1")]))
            .is_err()
    );
    assert!(
        emu.update(COMPANIES, &all[0], props(&[("nope", "1")]))
            .is_err()
    );
}

#[tokio::test]
async fn dead_cursor_is_a_400() {
    let emu = start(30, 0, 0).await;
    let page = get_json(&emu, "/crm/v3/objects/companies?limit=10").await;
    let after = page["paging"]["next"]["after"]
        .as_str()
        .expect("after")
        .to_string();
    assert_eq!(
        get(
            &emu,
            &format!("/crm/v3/objects/companies?limit=10&after={after}")
        )
        .await
        .status(),
        200
    );
    emu.invalidate_cursors();
    let res = get(
        &emu,
        &format!("/crm/v3/objects/companies?limit=10&after={after}"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(is_error(
        &res.json().await.expect("json"),
        "VALIDATION_ERROR"
    ));
    // A foreign link base shows up in paging.next.link.
    emu.set_next_link_base(Some("https://evil.example"));
    let page = get_json(&emu, "/crm/v3/objects/companies?limit=10").await;
    assert!(
        page["paging"]["next"]["link"]
            .as_str()
            .is_some_and(|l| l.starts_with("https://evil.example/crm/v3/objects/companies?"))
    );
}

#[tokio::test]
async fn rate_limit_answers_429_with_hubspot_headers() {
    let emu = start(3, 0, 0).await;
    emu.set_rate_limit(Some((3, Duration::from_millis(400))));
    for i in 0..3 {
        let res = get(&emu, "/crm/v3/objects/companies").await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["X-HubSpot-RateLimit-Max"], "3");
        assert_eq!(
            res.headers()["X-HubSpot-RateLimit-Remaining"],
            (2 - i).to_string().as_str()
        );
    }
    let res = get(&emu, "/crm/v3/objects/companies").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["X-HubSpot-RateLimit-Remaining"], "0");
    assert_eq!(
        res.headers()["X-HubSpot-RateLimit-Interval-Milliseconds"],
        "400"
    );
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["status"], "error");
    assert_eq!(body["errorType"], "RATE_LIMIT");
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(
        body["message"],
        "You have reached your ten_secondly_rolling limit."
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(get(&emu, "/crm/v3/objects/companies").await.status(), 200);
    emu.set_rate_limit(None);
    assert!(
        get(&emu, "/crm/v3/objects/companies")
            .await
            .headers()
            .get("X-HubSpot-RateLimit-Max")
            .is_none()
    );
}

/// What a webhook receiver saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    url: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Receiver {
    seen: Mutex<Vec<Seen>>,
    /// Statuses to answer with, in order; 204 once exhausted.
    answers: Mutex<Vec<u16>>,
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> AxStatus {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    r.seen.lock().expect("lock").push(Seen {
        method: method.to_string(),
        url: format!("http://{host}{uri}"),
        headers,
        body,
    });
    let mut a = r.answers.lock().expect("lock");
    let code = if a.is_empty() { 204 } else { a.remove(0) };
    AxStatus::from_u16(code).unwrap_or(AxStatus::NO_CONTENT)
}

async fn receiver(answers: Vec<u16>) -> (String, Arc<Receiver>) {
    let r = Arc::new(Receiver {
        answers: Mutex::new(answers),
        ..Receiver::default()
    });
    let app = Router::new()
        .route("/hooks/hubspot", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (
        format!("http://127.0.0.1:{port}/hooks/hubspot?source=hubspot"),
        r,
    )
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_batched_and_retried() {
    let emu = start(5, 1, 0).await;
    let secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    // The first POST fails with 500 and is retried; the second answer is 204.
    let (url, rx) = receiver(vec![500]).await;
    emu.subscribe(&url, secret);
    let companies = emu.ids(COMPANIES);
    let contacts = emu.ids(CONTACTS);
    let created = emu
        .create(
            CONTACTS,
            props(&[
                ("firstname", "Siobhán"),
                ("lastname", "O'Brien"),
                ("associatedcompanyid", &companies[0]),
            ]),
        )
        .expect("create");
    emu.update(COMPANIES, &companies[1], props(&[("name", "Renamed GmbH")]))
        .expect("update");
    assert!(emu.archive(CONTACTS, &contacts[2]));
    emu.merge(COMPANIES, &companies[3], &companies[4])
        .expect("merge");
    emu.flush_webhooks().await;

    let seen = rx.seen.lock().expect("lock").clone();
    assert!(seen.len() >= 2, "{seen:?}");
    let deliveries = emu.webhook_deliveries();
    assert_eq!(deliveries[0].status, Some(500));
    assert_eq!(deliveries[1].status, Some(204));
    assert_eq!(deliveries[1].attempt, 1);
    assert_eq!(deliveries.len(), seen.len());

    let mut events = Vec::new();
    for s in &seen {
        assert_eq!(s.method, "POST");
        let h = |k: &str| {
            s.headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("missing {k}"))
                .to_string()
        };
        assert_eq!(h("X-HubSpot-Signature-Version"), "v1");
        webhook::verify::hubspot_v1(secret, &s.body, &h("X-HubSpot-Signature"))
            .expect("v1 signature");
        webhook::verify::hubspot_v3(
            secret,
            &s.method,
            &s.url,
            &s.body,
            &h("X-HubSpot-Request-Timestamp"),
            &h("X-HubSpot-Signature-v3"),
            now_ms(),
        )
        .expect("v3 signature");
        // A wrong secret or a changed body fails.
        assert!(
            webhook::verify::hubspot_v3(
                "other-secret",
                &s.method,
                &s.url,
                &s.body,
                &h("X-HubSpot-Request-Timestamp"),
                &h("X-HubSpot-Signature-v3"),
                now_ms(),
            )
            .is_err()
        );
        let mut tampered = s.body.to_vec();
        tampered.push(b' ');
        assert!(webhook::verify::hubspot_v1(secret, &tampered, &h("X-HubSpot-Signature")).is_err());
        let batch: Vec<Value> = serde_json::from_slice(&s.body).expect("a JSON array");
        events.push(batch);
    }
    // The retry re-sent the same events with attemptNumber 1.
    let (first, retry) = (&events[0], &events[1]);
    assert_eq!(first.len(), retry.len());
    assert!(first.iter().all(|e| e["attemptNumber"] == 0));
    assert!(retry.iter().all(|e| e["attemptNumber"] == 1));
    assert_eq!(first[0]["eventId"], retry[0]["eventId"]);
    let all: Vec<&Value> = events[1..].iter().flatten().collect();
    let of = |t: &str| -> Vec<&Value> {
        all.iter()
            .copied()
            .filter(|e| e["subscriptionType"] == t)
            .collect()
    };
    let c = of("contact.creation");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["objectId"].to_string(), created);
    assert_eq!(c[0]["changeFlag"], "NEW");
    for k in [
        "eventId",
        "subscriptionId",
        "portalId",
        "appId",
        "occurredAt",
        "changeSource",
    ] {
        assert!(c[0].get(k).is_some(), "{k}");
    }
    assert_eq!(c[0]["portalId"], 62515);
    let p = of("company.propertyChange");
    assert!(
        p.iter()
            .any(|e| e["propertyName"] == "name" && e["propertyValue"] == "Renamed GmbH")
    );
    assert_eq!(
        of("contact.deletion")[0]["objectId"].to_string(),
        contacts[2]
    );
    let m = of("company.merge");
    assert_eq!(m[0]["primaryObjectId"].to_string(), companies[3]);
    assert_eq!(
        m[0]["mergedObjectIds"],
        json!([companies[4].parse::<u64>().expect("id")])
    );
    // The merged company's contact moved to the primary.
    assert!(
        of("contact.propertyChange")
            .iter()
            .any(|e| e["propertyName"] == "associatedcompanyid"
                && e["propertyValue"] == companies[3].as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_sent_without_a_flush_and_4xx_is_final() {
    let emu = start(2, 0, 0).await;
    let (url, rx) = receiver(vec![404]).await;
    emu.subscribe(&url, "s3cret");
    let id = emu.ids(COMPANIES)[0].clone();
    emu.update(COMPANIES, &id, props(&[("city", "Osaka")]))
        .expect("update");
    for _ in 0..100 {
        if !emu.webhook_deliveries().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    emu.flush_webhooks().await;
    let d = emu.webhook_deliveries();
    assert_eq!(d.len(), 1, "a 404 is not retried: {d:?}");
    assert_eq!(d[0].status, Some(404));
    assert_eq!(rx.seen.lock().expect("lock").len(), 1);
    // Unsubscribed: nothing more is sent.
    emu.unsubscribe();
    emu.update(COMPANIES, &id, props(&[("city", "Lagos")]))
        .expect("update");
    emu.flush_webhooks().await;
    assert_eq!(emu.webhook_deliveries().len(), 1);
}
