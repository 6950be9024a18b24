//! Conformance of the Salesforce emulator over HTTP: the token endpoint, error shapes and
//! status codes, query paging and locators, queryAll, limits, getUpdated/getDeleted, sObject
//! Collections retrieve, and the generated data.

use crm_emulator::{SalesforceConfig, SalesforceEmulator};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Map, Value, json};

const V: &str = "v62.0";

async fn start(accounts: usize) -> SalesforceEmulator {
    SalesforceEmulator::start(SalesforceConfig {
        accounts,
        contacts_per_account: 2,
        orphan_contacts: 3,
        ..SalesforceConfig::default()
    })
    .await
    .expect("emulator")
}

async fn token(emu: &SalesforceEmulator) -> String {
    let cfg = emu.config();
    let body: Value = Client::new()
        .post(emu.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", cfg.client_id.as_str()),
            ("client_secret", cfg.client_secret.as_str()),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    body["access_token"].as_str().expect("token").to_string()
}

async fn get(emu: &SalesforceEmulator, tok: &str, path: &str, batch: Option<u32>) -> Response {
    let mut rb = Client::new()
        .get(format!("{}{path}", emu.instance_url()))
        .bearer_auth(tok);
    if let Some(n) = batch {
        rb = rb.header("Sforce-Query-Options", format!("batchSize={n}"));
    }
    rb.send().await.expect("send")
}

fn q(soql: &str) -> String {
    let mut u = reqwest::Url::parse("http://x/").expect("url");
    u.query_pairs_mut().append_pair("q", soql);
    format!("/services/data/{V}/query?{}", u.query().unwrap_or(""))
}

async fn error_of(r: Response) -> (StatusCode, String, String) {
    let status = r.status();
    let v: Value = r.json().await.expect("error json");
    (
        status,
        v[0]["errorCode"].as_str().unwrap_or("").into(),
        v[0]["message"].as_str().unwrap_or("").into(),
    )
}

#[tokio::test]
async fn client_credentials_token_and_its_errors() {
    let emu = start(1).await;
    let c = Client::new();
    let cfg = emu.config().clone();
    let ok: Value = c
        .post(emu.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &cfg.client_id),
            ("client_secret", &cfg.client_secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for k in [
        "access_token",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
        "signature",
    ] {
        assert!(ok.get(k).is_some(), "missing {k}");
    }
    assert_eq!(ok["token_type"], "Bearer");
    assert_eq!(ok["instance_url"], json!(emu.instance_url()));
    let bad = c
        .post(emu.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &cfg.client_id),
            ("client_secret", "nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(
        bad,
        json!({"error": "invalid_client", "error_description": "invalid client credentials"})
    );
    let unknown: Value = c
        .post(emu.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "x"),
            ("client_secret", "y"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unknown["error"], "invalid_client_id");
    let grant: Value = c
        .post(emu.token_url())
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(grant["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn sessions_and_limits() {
    let emu = start(5).await;
    let r = get(&emu, "bogus", &q("SELECT Id FROM Account"), None).await;
    assert!(r.headers().get("Sforce-Limit-Info").is_some());
    assert_eq!(
        error_of(r).await,
        (
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID".into(),
            "Session expired or invalid".into()
        )
    );
    let tok = token(&emu).await;
    let r = get(&emu, &tok, &q("SELECT Id FROM Account"), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["Sforce-Limit-Info"], "api-usage=1/100000");
    emu.set_daily_limit(1);
    let r = get(&emu, &tok, &q("SELECT Id FROM Account"), None).await;
    assert_eq!(r.headers()["Sforce-Limit-Info"], "api-usage=1/1");
    let (s, code, _) = error_of(r).await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::FORBIDDEN, "REQUEST_LIMIT_EXCEEDED")
    );
    emu.set_daily_limit(100);
    emu.expire_sessions();
    let (s, code, _) = error_of(get(&emu, &tok, &q("SELECT Id FROM Account"), None).await).await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::UNAUTHORIZED, "INVALID_SESSION_ID")
    );
    // The same client gets a new session afterwards.
    assert_ne!(token(&emu).await, tok);
}

#[tokio::test]
async fn query_pages_follow_next_records_url_and_locators_expire() {
    let emu = start(450).await;
    let tok = token(&emu).await;
    let soql = "SELECT Id, Name, SystemModstamp FROM Account ORDER BY SystemModstamp, Id";
    let first: Value = get(&emu, &tok, &q(soql), Some(200))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["totalSize"], 450);
    assert_eq!(first["done"], false);
    assert_eq!(first["records"].as_array().unwrap().len(), 200);
    let next = first["nextRecordsUrl"].as_str().unwrap().to_string();
    assert!(next.starts_with(&format!("/services/data/{V}/query/01g")) && next.ends_with("-200"));
    let rec = &first["records"][0];
    assert_eq!(rec["attributes"]["type"], "Account");
    let id = rec["Id"].as_str().unwrap();
    assert_eq!(
        rec["attributes"]["url"],
        json!(format!("/services/data/{V}/sobjects/Account/{id}"))
    );
    assert_eq!(id.len(), 18);
    assert!(id.starts_with("001"));
    let stamp = rec["SystemModstamp"].as_str().unwrap();
    assert_eq!(stamp.len(), "2024-01-16T17:43:01.000+0000".len());
    assert!(stamp.ends_with("+0000"));
    // A batch size below 200 is raised to 200 (no guarantee, as documented).
    let mut seen = 200;
    let mut url = next.clone();
    loop {
        let page: Value = get(&emu, &tok, &url, Some(50)).await.json().await.unwrap();
        seen += page["records"].as_array().unwrap().len();
        match page["nextRecordsUrl"].as_str() {
            Some(n) => url = n.to_string(),
            None => {
                assert_eq!(page["done"], true);
                break;
            }
        }
    }
    assert_eq!(seen, 450);
    emu.expire_cursors();
    let (s, code, _) = error_of(get(&emu, &tok, &next, None).await).await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::BAD_REQUEST, "INVALID_QUERY_LOCATOR")
    );
    let (s, code, _) = error_of(
        get(
            &emu,
            &tok,
            &format!("/services/data/{V}/query/nonsense"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::BAD_REQUEST, "INVALID_QUERY_LOCATOR")
    );
}

#[tokio::test]
async fn soql_errors_and_filters() {
    let emu = start(30).await;
    let tok = token(&emu).await;
    let (s, code, msg) =
        error_of(get(&emu, &tok, &q("SELECT Id, Foo FROM Account"), None).await).await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::BAD_REQUEST, "INVALID_FIELD")
    );
    assert!(
        msg.contains("No such column 'Foo' on entity 'Account'"),
        "{msg}"
    );
    let (_, code, _) =
        error_of(get(&emu, &tok, &q("SELECT Id FROM Account WHERE"), None).await).await;
    assert_eq!(code, "MALFORMED_QUERY");
    let (_, code, _) = error_of(get(&emu, &tok, &q("SELEKT Id FROM Account"), None).await).await;
    assert_eq!(code, "MALFORMED_QUERY");
    let ids = emu.ids("Account");
    let body: Value = get(
        &emu,
        &tok,
        &q(&format!(
            "SELECT Id FROM Account WHERE Id IN ('{}', '{}') OR Id = '{}'",
            ids[0],
            ids[1],
            &ids[2][..15]
        )),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["totalSize"], 3);
    let body: Value = get(
        &emu,
        &tok,
        &q(&format!("SELECT Id FROM Account WHERE SystemModstamp >= 2024-01-01T00:00:00Z AND Id > '{}' LIMIT 5", ids[9])),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["totalSize"], 5);
    assert_eq!(body["done"], true);
    let body: Value = get(
        &emu,
        &tok,
        &q("SELECT Id FROM Account WHERE SystemModstamp > 2099-01-01T00:00:00Z"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body, json!({"totalSize": 0, "done": true, "records": []}));
}

#[tokio::test]
async fn query_all_returns_deleted_rows_and_the_delete_log_lists_them() {
    let emu = start(20).await;
    let tok = token(&emu).await;
    let victim = emu.ids("Account")[3].clone();
    assert!(emu.delete(&victim));
    let path = |all: &str| {
        let mut u = reqwest::Url::parse("http://x/").unwrap();
        u.query_pairs_mut().append_pair(
            "q",
            "SELECT Id, IsDeleted FROM Account WHERE IsDeleted = true",
        );
        format!("/services/data/{V}/{all}?{}", u.query().unwrap())
    };
    let live: Value = get(&emu, &tok, &path("query"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(live["totalSize"], 0);
    let all: Value = get(&emu, &tok, &path("queryAll"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["totalSize"], 1);
    assert_eq!(all["records"][0]["Id"], json!(victim));
    assert_eq!(all["records"][0]["IsDeleted"], true);

    let now = chrono::Utc::now();
    let window = format!(
        "start={}&end={}",
        (now - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%S%%2B00:00"),
        (now + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%S%%2B00:00")
    );
    let del: Value = get(
        &emu,
        &tok,
        &format!("/services/data/{V}/sobjects/Account/deleted/?{window}"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(del["deletedRecords"][0]["id"], json!(victim));
    assert!(
        del["deletedRecords"][0]["deletedDate"]
            .as_str()
            .unwrap()
            .ends_with("+0000")
    );
    assert!(del.get("earliestDateAvailable").is_some() && del.get("latestDateCovered").is_some());

    let mut m = Map::new();
    m.insert("Name".into(), json!("Changed Co."));
    let changed = emu.ids("Account")[0].clone();
    emu.update(&changed, m).unwrap();
    let upd: Value = get(
        &emu,
        &tok,
        &format!("/services/data/{V}/sobjects/Account/updated/?{window}"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(upd["ids"], json!([changed]));
    assert!(upd.get("latestDateCovered").is_some());
    let (s, code, _) = error_of(
        get(&emu, &tok, &format!("/services/data/{V}/sobjects/Account/updated/?start=2020-01-01T00:00:00Z&end=2020-01-02T00:00:00Z"), None).await,
    )
    .await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::BAD_REQUEST, "INVALID_REPLICATION_DATE")
    );
}

#[tokio::test]
async fn sobject_collections_retrieve_returns_null_for_unknown_ids() {
    let emu = start(5).await;
    let tok = token(&emu).await;
    let ids = emu.ids("Contact");
    let body: Value = get(
        &emu,
        &tok,
        &format!("/services/data/{V}/composite/sobjects/Contact?ids={},003Dn0000000zzzAAA,{}&fields=Id,LastName,MailingAddress", ids[0], ids[1]),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let arr = body.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    assert_eq!(arr[0]["Id"], json!(ids[0]));
    assert!(arr[1].is_null());
    assert!(arr[0]["MailingAddress"]["city"].is_string());
    let (s, code, _) = error_of(
        get(
            &emu,
            &tok,
            &format!(
                "/services/data/{V}/composite/sobjects/Contact?ids={}&fields=Nope",
                ids[0]
            ),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::BAD_REQUEST, "INVALID_FIELD")
    );
}

#[tokio::test]
async fn generated_data_is_deterministic_and_realistic() {
    let a = start(40).await;
    let b = start(40).await;
    assert_eq!(a.ids("Account"), b.ids("Account"));
    let ra = a.record(&a.ids("Contact")[7]).unwrap();
    assert_eq!(Some(&ra), b.record(&b.ids("Contact")[7]).as_ref());
    assert_eq!(a.count("Contact"), 40 * 2 + 3);
    let names: Vec<String> = a
        .ids("Account")
        .iter()
        .filter_map(|id| a.record(id)?.get("Name")?.as_str().map(String::from))
        .collect();
    assert_eq!(names.iter().filter(|n| n.chars().count() > 160).count(), 3);
    let c = a.record(&a.ids("Contact")[0]).unwrap();
    assert!(c["Email"].as_str().unwrap().contains('@'));
    assert!(c["AccountId"].as_str().unwrap().starts_with("001"));
    // Some records share a SystemModstamp, so paging must tie-break on Id.
    let mut stamps: Vec<String> = a
        .ids("Contact")
        .iter()
        .filter_map(|id| {
            a.record(id)?
                .get("SystemModstamp")?
                .as_str()
                .map(String::from)
        })
        .collect();
    let n = stamps.len();
    stamps.sort();
    stamps.dedup();
    assert!(stamps.len() < n);
}
