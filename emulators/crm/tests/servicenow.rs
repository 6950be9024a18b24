//! Conformance of the ServiceNow emulator over HTTP: Basic auth, the error body, paging
//! headers (`Link`, `X-Total-Count`), the encoded query subset, `sysparm_fields`, references,
//! single-record reads and the rate limit rule.

use std::collections::HashSet;
use std::time::Duration;

use crm_emulator::{ServiceNowConfig, ServiceNowEmulator};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Map, Value, json};

async fn start(accounts: usize) -> ServiceNowEmulator {
    ServiceNowEmulator::start(ServiceNowConfig {
        accounts,
        contacts_per_account: 2,
        orphan_contacts: 3,
        ..ServiceNowConfig::default()
    })
    .await
    .expect("emulator")
}

async fn get(emu: &ServiceNowEmulator, path_and_query: &str) -> Response {
    let cfg = emu.config();
    Client::new()
        .get(format!("{}{path_and_query}", emu.base_url()))
        .basic_auth(&cfg.user, Some(&cfg.password))
        .send()
        .await
        .expect("request")
}

async fn list(emu: &ServiceNowEmulator, table: &str, params: &[(&str, &str)]) -> Vec<Value> {
    let mut url =
        reqwest::Url::parse(&format!("{}/api/now/table/{table}", emu.base_url())).expect("url");
    url.query_pairs_mut().extend_pairs(params);
    let cfg = emu.config();
    let res = Client::new()
        .get(url)
        .basic_auth(&cfg.user, Some(&cfg.password))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    body["result"].as_array().expect("result array").clone()
}

fn is_failure(body: &Value) -> bool {
    body["status"] == "failure" && body["error"]["message"].is_string()
}

fn sys_id(r: &Value) -> String {
    r["sys_id"].as_str().expect("sys_id").to_string()
}

#[tokio::test]
async fn basic_auth_is_required() {
    let emu = start(3).await;
    let url = format!("{}/api/now/table/customer_account", emu.base_url());
    for rb in [
        Client::new().get(&url),
        Client::new()
            .get(&url)
            .basic_auth("integration.user", Some("wrong")),
        Client::new().get(&url).bearer_auth("token"),
    ] {
        let res = rb.send().await.expect("request");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let body: Value = res.json().await.expect("json");
        assert!(is_failure(&body), "{body}");
        assert_eq!(body["error"]["message"], "User Not Authenticated");
    }
    assert_eq!(
        get(&emu, "/api/now/table/customer_account").await.status(),
        200
    );
}

#[tokio::test]
async fn records_are_strings_with_references() {
    let emu = start(4).await;
    let contacts = list(&emu, "customer_contact", &[]).await;
    assert_eq!(contacts.len(), 4 * 2 + 3);
    assert_eq!(emu.count("customer_contact"), 11);
    let accounts: HashSet<String> = emu.ids("customer_account").into_iter().collect();
    let mut orphans = 0;
    for c in &contacts {
        let id = sys_id(c);
        assert!(id.len() == 32 && id.chars().all(|ch| matches!(ch, '0'..='9' | 'a'..='f')));
        let stamp = c["sys_updated_on"].as_str().expect("stamp");
        assert!(chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S").is_ok());
        match &c["account"] {
            Value::Object(r) => {
                let v = r["value"].as_str().expect("value");
                assert!(accounts.contains(v));
                assert_eq!(
                    r["link"],
                    format!("{}/api/now/table/customer_account/{v}", emu.base_url())
                );
            }
            Value::String(s) if s.is_empty() => orphans += 1,
            other => panic!("unexpected account {other}"),
        }
        for (k, v) in c.as_object().expect("object") {
            assert!(k == "account" || v.is_string(), "{k} is not a string");
        }
    }
    assert_eq!(orphans, 3);
    let plain = list(
        &emu,
        "customer_contact",
        &[
            ("sysparm_exclude_reference_link", "true"),
            ("sysparm_fields", "sys_id,account,nonexistent"),
        ],
    )
    .await;
    for c in &plain {
        let keys: Vec<&String> = c.as_object().expect("object").keys().collect();
        assert_eq!(keys.len(), 2, "{c}");
        assert!(c["account"].is_string());
    }
}

#[tokio::test]
async fn paging_headers_walk_every_record_once() {
    let emu = start(25).await;
    let total = emu.count("customer_account");
    let mut next = Some(format!(
        "{}/api/now/table/customer_account?sysparm_limit=7&sysparm_query=ORDERBYsys_id",
        emu.base_url()
    ));
    let mut seen = Vec::new();
    let cfg = emu.config().clone();
    while let Some(url) = next.take() {
        let res = Client::new()
            .get(&url)
            .basic_auth(&cfg.user, Some(&cfg.password))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["X-Total-Count"].to_str().expect("count"),
            total.to_string()
        );
        let link = res.headers()["Link"].to_str().expect("link").to_string();
        assert!(link.contains("rel=\"first\"") && link.contains("rel=\"last\""));
        next = link.split(',').find_map(|part| {
            let (u, rel) = part.split_once(';')?;
            (rel.trim() == "rel=\"next\"").then(|| {
                u.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
        });
        let body: Value = res.json().await.expect("json");
        seen.extend(
            body["result"]
                .as_array()
                .expect("result")
                .iter()
                .map(sys_id),
        );
    }
    assert_eq!(seen.len(), total);
    assert_eq!(seen, emu.ids("customer_account"), "ORDERBYsys_id order");
}

#[tokio::test]
async fn encoded_query_subset() {
    let emu = start(30).await;
    let all = list(
        &emu,
        "customer_account",
        &[("sysparm_query", "ORDERBYsys_updated_on")],
    )
    .await;
    let stamps: Vec<&str> = all
        .iter()
        .map(|r| r["sys_updated_on"].as_str().expect("t"))
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
    let desc = list(
        &emu,
        "customer_account",
        &[("sysparm_query", "ORDERBYDESCsys_updated_on")],
    )
    .await;
    assert!(
        desc.windows(2)
            .all(|w| w[0]["sys_updated_on"].as_str() >= w[1]["sys_updated_on"].as_str())
    );

    let mid = stamps[15];
    let after = list(
        &emu,
        "customer_account",
        &[("sysparm_query", &format!("sys_updated_on>{mid}"))],
    )
    .await;
    assert_eq!(after.len(), stamps.iter().filter(|s| **s > mid).count());
    let from = list(
        &emu,
        "customer_account",
        &[("sysparm_query", &format!("sys_updated_on>={mid}"))],
    )
    .await;
    assert_eq!(from.len(), stamps.iter().filter(|s| **s >= mid).count());

    let (a, b, c) = (sys_id(&all[0]), sys_id(&all[1]), sys_id(&all[2]));
    let eq_or = list(
        &emu,
        "customer_account",
        &[("sysparm_query", &format!("sys_id={a}^ORsys_id={b}"))],
    )
    .await;
    assert_eq!(eq_or.len(), 2);
    let and = list(
        &emu,
        "customer_account",
        &[("sysparm_query", &format!("sys_id={a}^sys_id={b}"))],
    )
    .await;
    assert!(and.is_empty());
    let inn = list(
        &emu,
        "customer_account",
        &[(
            "sysparm_query",
            &format!("sys_idIN{a},{c},{}", "0".repeat(32)),
        )],
    )
    .await;
    let got: HashSet<String> = inn.iter().map(sys_id).collect();
    assert_eq!(got, HashSet::from([a.clone(), c.clone()]));

    // Keyset: after (t, id) = t' > t, or t' = t and id' > id; ^NQ ORs the two queries.
    let (t, id) = (stamps[10].to_string(), sys_id(&all[10]));
    let q = format!(
        "sys_updated_on>{t}^NQsys_updated_on={t}^sys_id>{id}^ORDERBYsys_updated_on^ORDERBYsys_id"
    );
    let rest = list(&emu, "customer_account", &[("sysparm_query", &q)]).await;
    let ordered = list(
        &emu,
        "customer_account",
        &[("sysparm_query", "ORDERBYsys_updated_on^ORDERBYsys_id")],
    )
    .await;
    assert_eq!(rest, ordered[11..].to_vec());
}

#[tokio::test]
async fn single_record_and_errors() {
    let emu = start(3).await;
    let id = emu.ids("customer_account")[0].clone();
    let res = get(&emu, &format!("/api/now/table/customer_account/{id}")).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["result"]["sys_id"], id.as_str());

    let missing = get(
        &emu,
        &format!("/api/now/table/customer_account/{}", "f".repeat(32)),
    )
    .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(is_failure(&missing.json().await.expect("json")));

    let bad = get(&emu, "/api/now/table/no_such_table").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.expect("json");
    assert!(is_failure(&body));
    assert_eq!(body["error"]["message"], "Invalid table no_such_table");
}

#[tokio::test]
async fn changes_move_sys_updated_on() {
    let emu = start(3).await;
    let id = emu.ids("customer_account")[0].clone();
    let before = emu.record(&id).expect("record");
    let mut f = Map::new();
    f.insert("name".into(), json!("Renamed Ltd"));
    emu.update(&id, f).expect("update");
    let after = emu.record(&id).expect("record");
    assert_eq!(after["name"], "Renamed Ltd");
    assert!(after["sys_updated_on"].as_str() > before["sys_updated_on"].as_str());
    assert_eq!(after["sys_mod_count"], "1");
    let mut bad = Map::new();
    bad.insert("name".into(), json!(5));
    assert!(emu.update(&id, bad).is_err());

    let mut c = Map::new();
    c.insert("first_name".into(), json!("Ada"));
    c.insert("account".into(), json!(id));
    let cid = emu.put("customer_contact", c).expect("put");
    assert_eq!(emu.record(&cid).expect("contact")["name"], "Ada");
    assert!(emu.delete(&cid));
    assert!(!emu.delete(&cid));
    assert_eq!(emu.count("customer_contact"), 3 * 2 + 3);
}

#[tokio::test]
async fn rate_limit_answers_429_with_reset() {
    let emu = start(2).await;
    emu.set_rate_limit(Some((3, Duration::from_secs(30))));
    for _ in 0..3 {
        assert_eq!(
            get(&emu, "/api/now/table/customer_account").await.status(),
            200
        );
    }
    let res = get(&emu, "/api/now/table/customer_account").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let h = res.headers().clone();
    assert_eq!(h["X-RateLimit-Limit"], "3");
    let retry: u64 = h["Retry-After"]
        .to_str()
        .expect("retry")
        .parse()
        .expect("n");
    assert!((1..=30).contains(&retry));
    let reset: u64 = h["X-RateLimit-Reset"]
        .to_str()
        .expect("reset")
        .parse()
        .expect("n");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(reset > now && reset <= now + 31);
    assert!(is_failure(&res.json().await.expect("json")));
    assert_eq!(emu.stats().by_status.get(&429), Some(&1));

    emu.set_rate_limit(Some((2, Duration::from_millis(200))));
    get(&emu, "/api/now/table/customer_account").await;
    get(&emu, "/api/now/table/customer_account").await;
    assert_eq!(
        get(&emu, "/api/now/table/customer_account").await.status(),
        429
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        get(&emu, "/api/now/table/customer_account").await.status(),
        200
    );
}
