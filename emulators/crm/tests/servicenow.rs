//! Conformance of the ServiceNow emulator over HTTP: Basic auth, the OAuth token endpoint and
//! bearer tokens, the error body, paging headers (`Link`, `X-Total-Count`), the encoded query
//! subset, `sysparm_fields`, references, single-record reads, the deletion audit
//! (`sys_audit_delete`) and the rate limit rule.

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

// OAuth

async fn token_request(emu: &ServiceNowEmulator, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let res = Client::new()
        .post(format!("{}/oauth_token.do", emu.base_url()))
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = res.status();
    (status, res.json().await.expect("json"))
}

async fn get_bearer(emu: &ServiceNowEmulator, token: &str) -> Response {
    Client::new()
        .get(format!("{}/api/now/table/customer_account", emu.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

fn password_form(cfg: &ServiceNowConfig) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "password".to_string()),
        ("client_id", cfg.oauth_client_id.clone()),
        ("client_secret", cfg.oauth_client_secret.clone()),
        ("username", cfg.user.clone()),
        ("password", cfg.password.clone()),
    ]
}

fn pairs<'a>(form: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    form.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn password_grant_gives_a_bearer_token_and_a_refresh_token() {
    let emu = start(3).await;
    let cfg = emu.config().clone();
    let (status, body) = token_request(&emu, &pairs(&password_form(&cfg))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1799);
    assert_eq!(body["scope"], "useraccount");
    let access = body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let refresh = body["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    let res = get_bearer(&emu, &access).await;
    assert_eq!(res.status(), StatusCode::OK);
    let listed: Value = res.json().await.expect("json");
    assert_eq!(listed["result"].as_array().map(Vec::len), Some(3));

    // The refresh grant gives another working access token.
    let (status, body) = token_request(
        &emu,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &cfg.oauth_client_id),
            ("client_secret", &cfg.oauth_client_secret),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let again = body["access_token"].as_str().expect("access_token");
    assert_ne!(again, access);
    assert_eq!(get_bearer(&emu, again).await.status(), StatusCode::OK);
    let stats = emu.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued), (2, 2));
}

#[tokio::test]
async fn client_credentials_grant_needs_the_property() {
    let emu = start(2).await;
    let cfg = emu.config().clone();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", cfg.oauth_client_id.as_str()),
        ("client_secret", cfg.oauth_client_secret.as_str()),
    ];
    let (status, body) = token_request(&emu, &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let access = body["access_token"].as_str().expect("access_token");
    assert_eq!(get_bearer(&emu, access).await.status(), StatusCode::OK);

    let off = ServiceNowEmulator::start(ServiceNowConfig {
        accounts: 1,
        client_credentials_enabled: false,
        oauth_rfc_errors: true,
        ..ServiceNowConfig::default()
    })
    .await
    .expect("emulator");
    let (status, body) = token_request(&off, &form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "unauthorized_client");
}

#[tokio::test]
async fn token_refusals_as_instances_answer_them_or_as_rfc_6749() {
    let observed = start(1).await;
    let rfc = ServiceNowEmulator::start(ServiceNowConfig {
        accounts: 1,
        oauth_rfc_errors: true,
        ..ServiceNowConfig::default()
    })
    .await
    .expect("emulator");
    let cfg = observed.config().clone();
    let mut wrong_secret = password_form(&cfg);
    wrong_secret[2].1 = "not-the-secret".into();
    let mut wrong_password = password_form(&cfg);
    wrong_password[4].1 = "not-the-password".into();
    let mut wrong_client = password_form(&cfg);
    wrong_client[1].1 = "0".repeat(32);
    let cc_wrong = vec![
        ("grant_type", "client_credentials".to_string()),
        ("client_id", cfg.oauth_client_id.clone()),
        ("client_secret", "nope".to_string()),
    ];
    let unknown = vec![("grant_type", "authorization_code".to_string())];
    let cases = [
        (&wrong_secret, StatusCode::UNAUTHORIZED, "invalid_client"),
        (&wrong_client, StatusCode::UNAUTHORIZED, "invalid_client"),
        (&cc_wrong, StatusCode::UNAUTHORIZED, "invalid_client"),
        (&wrong_password, StatusCode::BAD_REQUEST, "invalid_grant"),
        (&unknown, StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    ];
    for (form, status, code) in cases {
        let (s, body) = token_request(&rfc, &pairs(form)).await;
        assert_eq!((s, body["error"].as_str()), (status, Some(code)), "{body}");
        let (s, body) = token_request(&observed, &pairs(form)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body,
            json!({"error": "server_error", "error_description": "access_denied"})
        );
        assert!(!body.to_string().contains("not-the-"));
    }
    assert_eq!(observed.stats().tokens_issued, 0);
}

#[tokio::test]
async fn expired_tokens_are_refused_by_the_table_api() {
    let emu = ServiceNowEmulator::start(ServiceNowConfig {
        accounts: 2,
        oauth_token_lifetime: Duration::from_millis(600),
        ..ServiceNowConfig::default()
    })
    .await
    .expect("emulator");
    let form = password_form(emu.config());
    let (_, body) = token_request(&emu, &pairs(&form)).await;
    assert_eq!(body["expires_in"], 0, "whole seconds, rounded down");
    let access = body["access_token"].as_str().expect("token").to_string();
    assert_eq!(get_bearer(&emu, &access).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let res = get_bearer(&emu, &access).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["message"], "User Not Authenticated");

    // expire_tokens ends live tokens at once; a new one works.
    let (_, body) = token_request(&emu, &pairs(&form)).await;
    let fresh = body["access_token"].as_str().expect("token").to_string();
    assert_eq!(get_bearer(&emu, &fresh).await.status(), StatusCode::OK);
    emu.expire_tokens();
    assert_eq!(
        get_bearer(&emu, &fresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Basic auth keeps working next to OAuth.
    assert_eq!(
        get(&emu, "/api/now/table/customer_account").await.status(),
        200
    );
}

// Deletion audit

fn documentkeys(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["documentkey"].as_str().expect("documentkey").to_string())
        .collect()
}

#[tokio::test]
async fn deletes_are_recorded_in_sys_audit_delete() {
    let emu = start(10).await;
    let accounts = emu.ids("customer_account");
    let contacts = emu.ids("customer_contact");
    let now = chrono::Utc::now();
    let old = now - chrono::Duration::days(3);
    assert!(emu.delete_at(&accounts[0], old));
    assert!(emu.delete(&accounts[1]));
    assert!(emu.delete(&accounts[2]));
    assert!(emu.delete(&contacts[0]));
    assert!(!emu.delete(&accounts[1]), "already gone");
    assert_eq!(emu.count("sys_audit_delete"), 4);

    let all = list(
        &emu,
        "sys_audit_delete",
        &[("sysparm_query", "ORDERBYsys_created_on")],
    )
    .await;
    assert_eq!(all.len(), 4);
    let first = &all[0];
    assert_eq!(first["tablename"], "customer_account");
    assert_eq!(first["documentkey"], accounts[0].as_str());
    assert_eq!(
        first["sys_created_on"],
        old.format("%Y-%m-%d %H:%M:%S").to_string()
    );

    // The catch-up query: one table, since a time, oldest first.
    let since = (now - chrono::Duration::hours(1))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let q = format!("tablename=customer_account^sys_created_on>={since}^ORDERBYsys_created_on");
    let rows = list(
        &emu,
        "sys_audit_delete",
        &[
            ("sysparm_query", &q),
            ("sysparm_fields", "documentkey,sys_created_on"),
        ],
    )
    .await;
    let mut got = documentkeys(&rows);
    got.sort();
    let mut want = vec![accounts[1].clone(), accounts[2].clone()];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(rows[0].as_object().map(|o| o.len()), Some(2));
    let q = format!("tablename=customer_contact^sys_created_on>={since}");
    let rows = list(&emu, "sys_audit_delete", &[("sysparm_query", &q)]).await;
    assert_eq!(documentkeys(&rows), vec![contacts[0].clone()]);

    // Paged like any table.
    let page = get(
        &emu,
        "/api/now/table/sys_audit_delete?sysparm_limit=3&sysparm_query=ORDERBYsys_created_on",
    )
    .await;
    assert_eq!(page.headers()["X-Total-Count"], "4");
    let link = page.headers()["Link"].to_str().expect("link").to_string();
    assert!(link.contains("sysparm_offset=3") && link.contains("rel=\"next\""));

    // Records that were never audited leave no row; the audit itself is not audited.
    let quiet = ServiceNowEmulator::start(ServiceNowConfig {
        accounts: 2,
        audit_deletes: false,
        ..ServiceNowConfig::default()
    })
    .await
    .expect("emulator");
    assert!(quiet.delete(&quiet.ids("customer_account")[0]));
    assert_eq!(quiet.count("sys_audit_delete"), 0);
    let row = emu.ids("sys_audit_delete")[0].clone();
    assert!(emu.delete(&row));
    assert_eq!(emu.count("sys_audit_delete"), 3);
    let mut f = Map::new();
    f.insert("tablename".into(), json!("customer_account"));
    assert!(emu.put("sys_audit_delete", f).is_err());
}

#[tokio::test]
async fn sys_audit_delete_can_be_closed_to_the_integration_user() {
    let emu = ServiceNowEmulator::start(ServiceNowConfig {
        accounts: 3,
        audit_delete_readable: false,
        ..ServiceNowConfig::default()
    })
    .await
    .expect("emulator");
    assert!(emu.delete(&emu.ids("customer_account")[0]));
    let res = get(&emu, "/api/now/table/sys_audit_delete").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body: Value = res.json().await.expect("json");
    assert!(is_failure(&body), "{body}");
    assert_eq!(body["error"]["message"], "User Not Authorized");
    let id = emu.ids("sys_audit_delete")[0].clone();
    assert_eq!(
        get(&emu, &format!("/api/now/table/sys_audit_delete/{id}"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&emu, "/api/now/table/customer_account").await.status(),
        200
    );
}
