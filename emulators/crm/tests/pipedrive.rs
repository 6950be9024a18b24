//! Conformance of the Pipedrive API v2 emulator over HTTP: token and OAuth auth, the
//! `{success, data, additional_data.next_cursor}` shape, `limit` bounds, sorting,
//! `updated_since`/`updated_until`, the `ids` filter, soft deletes, rate-limit headers and 429,
//! dead cursors and error bodies.

use std::collections::HashSet;
use std::time::Duration;

use chrono::DateTime;
use crm_emulator::{PipedriveConfig, PipedriveEmulator};
use reqwest::{Client, Response, StatusCode, Url};
use serde_json::{Map, Value, json};

async fn start(cfg: PipedriveConfig) -> PipedriveEmulator {
    PipedriveEmulator::start(cfg).await.expect("emulator")
}

fn small() -> PipedriveConfig {
    PipedriveConfig {
        organizations: 40,
        persons_per_organization: 3,
        persons_without_organization: 6,
        ..PipedriveConfig::default()
    }
}

fn url(emu: &PipedriveEmulator, path: &str, params: &[(&str, &str)]) -> Url {
    let mut u = Url::parse(&format!("{}{path}", emu.base_url())).expect("url");
    if !params.is_empty() {
        u.query_pairs_mut().extend_pairs(params);
    }
    u
}

async fn get(emu: &PipedriveEmulator, u: Url) -> Response {
    Client::new()
        .get(u)
        .header("x-api-token", &emu.config().api_token)
        .send()
        .await
        .expect("request")
}

async fn data(emu: &PipedriveEmulator, path: &str, params: &[(&str, &str)]) -> (Vec<Value>, Value) {
    let res = get(emu, url(emu, path, params)).await;
    assert_eq!(res.status(), StatusCode::OK, "{path} {params:?}");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["success"], true);
    let next = body["additional_data"]["next_cursor"].clone();
    (body["data"].as_array().expect("data").clone(), next)
}

fn ids(records: &[Value]) -> Vec<u64> {
    records
        .iter()
        .map(|r| r["id"].as_u64().expect("id"))
        .collect()
}

fn epoch(r: &Value, field: &str) -> i64 {
    DateTime::parse_from_rfc3339(r[field].as_str().expect("time"))
        .expect("rfc3339")
        .timestamp()
}

/// Every page of a listing, following `next_cursor`.
async fn walk(emu: &PipedriveEmulator, path: &str, params: &[(&str, &str)]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut p: Vec<(&str, &str)> = params.to_vec();
        if let Some(c) = &cursor {
            p.push(("cursor", c));
        }
        let (page, next) = data(emu, path, &p).await;
        out.extend(page);
        match next.as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert!(next.is_null());
                return out;
            }
        }
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[tokio::test]
async fn token_header_and_oauth_are_accepted_nothing_else() {
    let emu = start(small()).await;
    let u = url(&emu, "/api/v2/persons", &[]);
    for rb in [
        Client::new().get(u.clone()),
        Client::new().get(u.clone()).header("x-api-token", "wrong"),
        Client::new().get(u.clone()).bearer_auth("wrong"),
    ] {
        let res = rb.send().await.expect("request");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["success"], false);
        assert_eq!(body["error"], "unauthorized access");
    }
    let res = Client::new()
        .get(u)
        .bearer_auth(&emu.config().oauth_token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn default_limit_is_100_and_cursor_walks_by_id() {
    let emu = start(small()).await;
    let (first, next) = data(&emu, "/api/v2/persons", &[]).await;
    assert_eq!(first.len(), 100);
    assert!(next.is_string());
    let all = walk(&emu, "/api/v2/persons", &[("limit", "37")]).await;
    assert_eq!(ids(&all), emu.ids("persons"));
    assert_eq!(all.len(), 40 * 3 + 6);
    let (big, next) = data(&emu, "/api/v2/persons", &[("limit", "500")]).await;
    assert_eq!(big.len(), 126);
    assert!(next.is_null());
    for bad in ["501", "0", "ten"] {
        let res = get(&emu, url(&emu, "/api/v2/persons", &[("limit", bad)])).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "limit={bad}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["success"], false);
        assert!(body["error"].is_string());
    }
}

#[tokio::test]
async fn v2_record_shapes() {
    let emu = start(small()).await;
    let orgs = walk(&emu, "/api/v2/organizations", &[("limit", "500")]).await;
    let org = &orgs[5];
    for k in [
        "id",
        "name",
        "owner_id",
        "add_time",
        "update_time",
        "is_deleted",
        "address",
    ] {
        assert!(org.get(k).is_some(), "organization without {k}");
    }
    assert!(org["address"]["value"].is_string());
    assert!(org["address"]["locality"].is_string());
    assert!(org["update_time"].as_str().expect("time").ends_with('Z'));
    let persons = walk(&emu, "/api/v2/persons", &[("limit", "500")]).await;
    let org_ids: HashSet<u64> = ids(&orgs).into_iter().collect();
    let mut orphans = 0;
    for p in &persons {
        assert!(p["emails"][0]["value"].is_string());
        assert_eq!(p["emails"][0]["primary"], true);
        assert!(p["phones"].is_array());
        assert!(p["job_title"].is_string());
        match &p["org_id"] {
            Value::Null => orphans += 1,
            v => assert!(org_ids.contains(&v.as_u64().expect("integer org_id"))),
        }
    }
    assert_eq!(orphans, 6);
    assert!(
        orgs.iter()
            .any(|o| o["name"].as_str().is_some_and(|n| n.chars().count() > 160))
    );
}

#[tokio::test]
async fn sorting_and_update_time_filters() {
    let emu = start(small()).await;
    let asc = walk(
        &emu,
        "/api/v2/persons",
        &[("sort_by", "update_time"), ("limit", "30")],
    )
    .await;
    let keys: Vec<(i64, u64)> = asc
        .iter()
        .map(|r| (epoch(r, "update_time"), r["id"].as_u64().expect("id")))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    assert!(
        keys.windows(2).any(|w| w[0].0 == w[1].0),
        "no shared update_time generated"
    );
    let desc = walk(
        &emu,
        "/api/v2/persons",
        &[
            ("sort_by", "update_time"),
            ("sort_direction", "desc"),
            ("limit", "30"),
        ],
    )
    .await;
    let mut rev = ids(&desc);
    rev.reverse();
    assert_eq!(rev, ids(&asc));
    let mid = keys[keys.len() / 2].0;
    let since = DateTime::from_timestamp(mid, 0).expect("t").to_rfc3339();
    let later = walk(
        &emu,
        "/api/v2/persons",
        &[("updated_since", &since), ("limit", "500")],
    )
    .await;
    assert_eq!(later.len(), keys.iter().filter(|k| k.0 >= mid).count());
    let earlier = walk(
        &emu,
        "/api/v2/persons",
        &[("updated_until", &since), ("limit", "500")],
    )
    .await;
    assert_eq!(earlier.len() + later.len(), keys.len());
    for (k, v) in [
        ("sort_by", "name"),
        ("sort_direction", "up"),
        ("updated_since", "yesterday"),
        ("filter_id", "1"),
    ] {
        let res = get(&emu, url(&emu, "/api/v2/persons", &[(k, v)])).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{k}={v}");
    }
}

#[tokio::test]
async fn ids_filter_and_soft_deletes() {
    let emu = start(small()).await;
    let persons = emu.ids("persons");
    assert!(emu.delete("persons", persons[2]));
    assert!(!emu.delete("persons", persons[2]), "deleted twice");
    let asked = format!("{},{},{},99999", persons[0], persons[1], persons[2]);
    let (found, _) = data(&emu, "/api/v2/persons", &[("ids", &asked)]).await;
    assert_eq!(ids(&found), vec![persons[0], persons[1]]);
    let all = walk(&emu, "/api/v2/persons", &[("limit", "500")]).await;
    assert!(!ids(&all).contains(&persons[2]));
    let rec = emu.record("persons", persons[2]).expect("kept");
    assert_eq!(rec["is_deleted"], true);
    let many: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
    let res = get(
        &emu,
        url(&emu, "/api/v2/persons", &[("ids", &many.join(","))]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // The first organization's persons include the deleted one; the second's are intact.
    let org = emu.ids("organizations")[1];
    let (of_org, _) = data(
        &emu,
        "/api/v2/persons",
        &[("org_id", &org.to_string()), ("limit", "500")],
    )
    .await;
    assert_eq!(of_org.len(), 3);
}

#[tokio::test]
async fn rate_limit_headers_and_429() {
    let emu = start(small()).await;
    emu.set_rate_limit(Some((2, Duration::from_secs(2))));
    let u = url(&emu, "/api/v2/organizations", &[("limit", "1")]);
    let first = get(&emu, u.clone()).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-ratelimit-limit"], "2");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    assert!(first.headers().contains_key("x-ratelimit-reset"));
    assert_eq!(get(&emu, u.clone()).await.status(), StatusCode::OK);
    let res = get(&emu, u.clone()).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["x-ratelimit-remaining"], "0");
    let reset: u64 = res.headers()["x-ratelimit-reset"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&reset));
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["success"], false);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get(&emu, u).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn dead_cursors_and_unknown_paths() {
    let emu = start(small()).await;
    let (_, next) = data(&emu, "/api/v2/organizations", &[("limit", "5")]).await;
    let cursor = next.as_str().expect("cursor").to_string();
    emu.invalidate_cursors();
    let res = get(
        &emu,
        url(
            &emu,
            "/api/v2/organizations",
            &[("limit", "5"), ("cursor", &cursor)],
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"], "Invalid cursor");
    // A cursor made for one sort is not accepted for another.
    let (_, next) = data(&emu, "/api/v2/organizations", &[("limit", "5")]).await;
    let res = get(
        &emu,
        url(
            &emu,
            "/api/v2/organizations",
            &[
                ("sort_by", "update_time"),
                ("cursor", next.as_str().expect("cursor")),
            ],
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = get(&emu, url(&emu, "/api/v2/deals", &[])).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn mutations_move_records_in_update_time_order() {
    let emu = start(small()).await;
    let org = emu
        .put(
            "organizations",
            obj(json!({ "name": "Müller & Söhne GmbH" })),
        )
        .expect("org");
    let p = emu
        .put(
            "persons",
            obj(json!({ "first_name": "Zoë", "last_name": "D'Angelo", "org_id": org })),
        )
        .expect("person");
    assert_eq!(emu.record("persons", p).expect("p")["name"], "Zoë D'Angelo");
    assert!(
        emu.put("persons", obj(json!({ "org_id": 987654 })))
            .is_err(),
        "org_id naming no organization"
    );
    let oldest = walk(
        &emu,
        "/api/v2/persons",
        &[("sort_by", "update_time"), ("limit", "500")],
    )
    .await[0]["id"]
        .as_u64()
        .expect("id");
    let mut f = Map::new();
    f.insert("job_title".into(), json!("Chief Tester"));
    emu.update("persons", oldest, f).expect("update");
    let after = walk(
        &emu,
        "/api/v2/persons",
        &[("sort_by", "update_time"), ("limit", "500")],
    )
    .await;
    let last_two: HashSet<u64> = ids(&after[after.len() - 2..]).into_iter().collect();
    assert_eq!(last_two, HashSet::from([p, oldest]));
}
