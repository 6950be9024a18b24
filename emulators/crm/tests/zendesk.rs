//! Conformance of the Zendesk Support emulator over HTTP: API token and OAuth auth, cursor and
//! offset pagination shapes and limits, role filters, show_many, the incremental exports (shape,
//! order, the excluded last minute, their own rate limit), deleted users, account rate limits,
//! dead cursors and error bodies.

use std::collections::HashSet;
use std::time::Duration;

use crm_emulator::{ZendeskConfig, ZendeskEmulator};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url};
use serde_json::{Map, Value, json};

async fn start(cfg: ZendeskConfig) -> ZendeskEmulator {
    ZendeskEmulator::start(cfg).await.expect("emulator")
}

fn small() -> ZendeskConfig {
    ZendeskConfig {
        organizations: 30,
        users_per_organization: 2,
        users_without_organization: 4,
        agents: 2,
        export_rate_limit: None,
        export_lag: Duration::ZERO,
        ..ZendeskConfig::default()
    }
}

fn authed(emu: &ZendeskEmulator, rb: RequestBuilder) -> RequestBuilder {
    let cfg = emu.config();
    rb.basic_auth(format!("{}/token", cfg.email), Some(&cfg.api_token))
}

fn url(emu: &ZendeskEmulator, path: &str, params: &[(&str, &str)]) -> Url {
    let mut u = Url::parse(&format!("{}{path}", emu.base_url())).expect("url");
    if !params.is_empty() {
        u.query_pairs_mut().extend_pairs(params);
    }
    u
}

async fn get(emu: &ZendeskEmulator, u: Url) -> Response {
    authed(emu, Client::new().get(u))
        .send()
        .await
        .expect("request")
}

async fn get_json(emu: &ZendeskEmulator, u: Url) -> Value {
    let res = get(emu, u).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.expect("json")
}

fn ids(records: &Value) -> Vec<u64> {
    records
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_u64().expect("id"))
        .collect()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[tokio::test]
async fn api_token_and_oauth_are_accepted_nothing_else() {
    let emu = start(small()).await;
    let cfg = emu.config().clone();
    let u = url(&emu, "/api/v2/organizations.json", &[("page[size]", "5")]);
    for rb in [
        Client::new().get(u.clone()),
        Client::new()
            .get(u.clone())
            .basic_auth(format!("{}/token", cfg.email), Some("wrong")),
        // The email without `/token` is password auth, not the API token.
        Client::new()
            .get(u.clone())
            .basic_auth(&cfg.email, Some(&cfg.api_token)),
        Client::new().get(u.clone()).bearer_auth("not-the-token"),
    ] {
        let res = rb.send().await.expect("request");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let body: Value = res.json().await.expect("json");
        assert_eq!(body, json!({ "error": "Couldn't authenticate you" }));
    }
    assert_eq!(get(&emu, u.clone()).await.status(), StatusCode::OK);
    let res = Client::new()
        .get(u)
        .bearer_auth(&cfg.oauth_token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn cursor_pagination_walks_every_record_in_id_order() {
    let emu = start(small()).await;
    let mut next = Some(url(
        &emu,
        "/api/v2/organizations.json",
        &[("page[size]", "7")],
    ));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(u) = next.take() {
        let body = get_json(&emu, u).await;
        pages += 1;
        let page = ids(&body["organizations"]);
        assert!(page.len() <= 7);
        seen.extend(page);
        let more = body["meta"]["has_more"].as_bool().expect("has_more");
        assert!(body["meta"]["after_cursor"].is_string());
        assert!(body["meta"]["before_cursor"].is_string());
        if more {
            let link = body["links"]["next"].as_str().expect("links.next");
            assert!(link.starts_with(&emu.base_url()), "{link}");
            next = Some(Url::parse(link).expect("link"));
        } else {
            assert!(body["links"]["next"].is_null());
        }
    }
    assert_eq!(pages, 30_usize.div_ceil(7));
    assert_eq!(seen, emu.ids("organizations"));
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    // Organizations carry the documented fields.
    let first = get_json(
        &emu,
        url(&emu, "/api/v2/organizations.json", &[("page[size]", "1")]),
    )
    .await;
    let org = &first["organizations"][0];
    for k in [
        "id",
        "url",
        "name",
        "details",
        "notes",
        "created_at",
        "updated_at",
    ] {
        assert!(org.get(k).is_some(), "organization without {k}: {org}");
    }
    assert!(
        org["updated_at"]
            .as_str()
            .expect("updated_at")
            .ends_with('Z')
    );
}

#[tokio::test]
async fn page_size_above_100_and_unknown_cursors_are_refused() {
    let emu = start(small()).await;
    for params in [
        vec![("page[size]", "101")],
        vec![("page[size]", "0")],
        vec![("page[size]", "10"), ("page[after]", "bm90LWEtY3Vyc29y")],
    ] {
        let res = get(&emu, url(&emu, "/api/v2/users.json", &params)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{params:?}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"], "InvalidPaginationParameter");
    }
    let ok = get_json(
        &emu,
        url(&emu, "/api/v2/users.json", &[("page[size]", "100")]),
    )
    .await;
    assert_eq!(ok["users"].as_array().map(Vec::len), Some(30 * 2 + 4 + 2));
}

#[tokio::test]
async fn role_filters_and_user_shape() {
    let emu = start(small()).await;
    let end_users = get_json(
        &emu,
        url(
            &emu,
            "/api/v2/users.json",
            &[("page[size]", "100"), ("role", "end-user")],
        ),
    )
    .await;
    let users = end_users["users"].as_array().expect("users");
    assert_eq!(users.len(), 30 * 2 + 4);
    assert!(users.iter().all(|u| u["role"] == "end-user"));
    assert_eq!(
        users
            .iter()
            .filter(|u| u["organization_id"].is_null())
            .count(),
        4
    );
    let org_ids: HashSet<u64> = emu.ids("organizations").into_iter().collect();
    for u in users.iter().filter(|u| !u["organization_id"].is_null()) {
        assert!(org_ids.contains(&u["organization_id"].as_u64().expect("org id")));
    }
    assert!(users.iter().any(|u| u["phone"].is_string()));
    assert!(
        users
            .iter()
            .all(|u| u["user_fields"]["job_title"].is_string())
    );
    let agents = get_json(
        &emu,
        url(
            &emu,
            "/api/v2/users.json",
            &[
                ("page[size]", "100"),
                ("role[]", "agent"),
                ("role[]", "admin"),
            ],
        ),
    )
    .await;
    assert_eq!(agents["users"].as_array().map(Vec::len), Some(2));
    // Over-long and accented values are generated.
    let long = emu
        .records("organizations")
        .iter()
        .filter(|o| o["name"].as_str().is_some_and(|n| n.chars().count() > 160))
        .count();
    assert_eq!(long, 2);
}

#[tokio::test]
async fn offset_pagination_stops_after_100_pages() {
    let emu = start(small()).await;
    let body = get_json(
        &emu,
        url(&emu, "/api/v2/organizations.json", &[("per_page", "10")]),
    )
    .await;
    assert_eq!(body["count"], 30);
    assert_eq!(body["organizations"].as_array().map(Vec::len), Some(10));
    assert!(
        body["next_page"]
            .as_str()
            .expect("next_page")
            .contains("page=2")
    );
    let res = get(
        &emu,
        url(&emu, "/api/v2/organizations.json", &[("page", "101")]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn show_many_returns_what_exists_up_to_100_ids() {
    let emu = start(small()).await;
    let users = emu.ids("users");
    assert!(emu.delete("users", users[1]));
    let asked = format!("{},{},{},999", users[0], users[1], users[2]);
    let body = get_json(
        &emu,
        url(&emu, "/api/v2/users/show_many.json", &[("ids", &asked)]),
    )
    .await;
    assert_eq!(ids(&body["users"]), vec![users[0], users[2]]);
    let orgs = emu.ids("organizations");
    let body = get_json(
        &emu,
        url(
            &emu,
            "/api/v2/organizations/show_many.json",
            &[("ids", &orgs[0].to_string())],
        ),
    )
    .await;
    assert_eq!(ids(&body["organizations"]), vec![orgs[0]]);
    let many: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
    let res = get(
        &emu,
        url(
            &emu,
            "/api/v2/users/show_many.json",
            &[("ids", &many.join(","))],
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn time_based_export_pages_by_updated_at() {
    let emu = start(small()).await;
    let mut start_time = 0_i64;
    let mut seen: HashSet<u64> = HashSet::new();
    let mut last_time = 0_i64;
    let mut pages = 0;
    loop {
        let body = get_json(
            &emu,
            url(
                &emu,
                "/api/v2/incremental/organizations.json",
                &[("start_time", &start_time.to_string()), ("per_page", "8")],
            ),
        )
        .await;
        pages += 1;
        let orgs = body["organizations"].as_array().expect("organizations");
        assert_eq!(body["count"].as_u64(), Some(orgs.len() as u64));
        for o in orgs {
            let t = chrono::DateTime::parse_from_rfc3339(o["updated_at"].as_str().expect("t"))
                .expect("rfc3339")
                .timestamp();
            assert!(t >= start_time && t >= last_time, "out of order");
            last_time = t;
            seen.insert(o["id"].as_u64().expect("id"));
        }
        let next = body["next_page"].as_str().expect("next_page");
        assert!(next.contains("start_time="));
        if body["end_of_stream"] == true {
            break;
        }
        // The next page starts at end_time, inclusive.
        start_time = body["end_time"].as_i64().expect("end_time");
        last_time = start_time;
        assert!(pages < 20, "export does not advance");
    }
    assert_eq!(seen, emu.ids("organizations").into_iter().collect());
}

#[tokio::test]
async fn cursor_export_includes_deleted_users_and_ends() {
    let emu = start(small()).await;
    let victim = emu.ids("users")[3];
    assert!(emu.delete("users", victim));
    let mut u = url(
        &emu,
        "/api/v2/incremental/users/cursor.json",
        &[("start_time", "0"), ("per_page", "25")],
    );
    let mut all = Vec::new();
    loop {
        let body = get_json(&emu, u.clone()).await;
        all.extend(body["users"].as_array().expect("users").iter().cloned());
        assert!(body["after_cursor"].is_string());
        let after = body["after_url"].as_str().expect("after_url");
        assert!(after.contains("cursor="));
        if body["end_of_stream"] == true {
            break;
        }
        u = Url::parse(after).expect("after_url");
    }
    assert_eq!(all.len(), 30 * 2 + 4 + 2);
    let deleted = all
        .iter()
        .find(|r| r["id"].as_u64() == Some(victim))
        .expect("deleted user exported");
    assert_eq!(deleted["active"], false);
    let listed = get_json(
        &emu,
        url(&emu, "/api/v2/deleted_users.json", &[("page[size]", "10")]),
    )
    .await;
    assert_eq!(ids(&listed["deleted_users"]), vec![victim]);
    assert_eq!(listed["deleted_users"][0]["active"], false);
    assert!(!emu.ids("users").contains(&victim));
}

#[tokio::test]
async fn exports_leave_out_the_last_minute_and_have_their_own_limit() {
    let emu = start(ZendeskConfig {
        export_lag: Duration::from_secs(60),
        export_rate_limit: Some((3, Duration::from_secs(60))),
        ..small()
    })
    .await;
    let changed = emu.ids("organizations")[0];
    let mut f = Map::new();
    f.insert("notes".into(), json!("changed just now"));
    emu.update("organizations", changed, f).expect("update");
    let recent = (chrono::Utc::now().timestamp() - 10).to_string();
    let res = get(
        &emu,
        url(
            &emu,
            "/api/v2/incremental/organizations.json",
            &[("start_time", &recent)],
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"], "InvalidValue");
    assert!(
        body["description"]
            .as_str()
            .unwrap_or("")
            .starts_with("Too recent start_time")
    );
    let body = get_json(
        &emu,
        url(
            &emu,
            "/api/v2/incremental/organizations.json",
            &[("start_time", "0")],
        ),
    )
    .await;
    assert!(
        !ids(&body["organizations"]).contains(&changed),
        "a change from the last minute was exported"
    );
    let _ = get(
        &emu,
        url(
            &emu,
            "/api/v2/incremental/users/cursor.json",
            &[("start_time", "0")],
        ),
    )
    .await;
    let res = get(
        &emu,
        url(
            &emu,
            "/api/v2/incremental/organizations.json",
            &[("start_time", "0")],
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = res.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait));
    // Lists are not affected by the export limit.
    let res = get(
        &emu,
        url(&emu, "/api/v2/users.json", &[("page[size]", "1")]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn account_rate_limit_answers_429_with_retry_after() {
    let emu = start(small()).await;
    emu.set_rate_limit(Some((2, Duration::from_secs(30))));
    let u = url(&emu, "/api/v2/organizations.json", &[("page[size]", "1")]);
    let first = get(&emu, u.clone()).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-rate-limit"], "2");
    assert_eq!(first.headers()["x-rate-limit-remaining"], "1");
    assert_eq!(get(&emu, u.clone()).await.status(), StatusCode::OK);
    let res = get(&emu, u).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = res.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=30).contains(&wait));
    assert!(
        res.text()
            .await
            .expect("text")
            .contains("Number of allowed API requests per minute exceeded")
    );
    assert_eq!(emu.stats().by_status.get(&429), Some(&1));
}

#[tokio::test]
async fn invalidated_cursors_are_refused() {
    let emu = start(small()).await;
    let body = get_json(
        &emu,
        url(&emu, "/api/v2/users.json", &[("page[size]", "10")]),
    )
    .await;
    let next = Url::parse(body["links"]["next"].as_str().expect("next")).expect("url");
    assert_eq!(get(&emu, next.clone()).await.status(), StatusCode::OK);
    emu.invalidate_cursors();
    let res = get(&emu, next).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"], "InvalidPaginationParameter");
}

#[tokio::test]
async fn mutations_show_up_and_unknown_paths_are_404() {
    let emu = start(small()).await;
    let org = emu
        .put("organizations", obj(json!({ "name": "Zoë's Café, S.A." })))
        .expect("org");
    let user = emu
        .put(
            "users",
            obj(json!({ "name": "Siobhán O'Brien", "email": "s@example.com", "organization_id": org })),
        )
        .expect("user");
    assert!(
        emu.put("users", obj(json!({ "organization_id": 1 })))
            .is_err(),
        "a user in an organization that does not exist"
    );
    assert!(emu.put("users", obj(json!({ "id": 5 }))).is_err());
    let rec = emu.record("users", user).expect("user");
    assert_eq!(rec["organization_id"], org);
    assert!(emu.delete("organizations", org));
    let rec = emu.record("users", user).expect("user");
    assert!(
        rec["organization_id"].is_null(),
        "user still in a deleted organization"
    );
    let res = get(&emu, url(&emu, "/api/v2/tickets.json", &[])).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: Value = res.json().await.expect("json");
    assert!(body["error"].is_string());
}
