//! Conformance tests: each pins a behaviour of the real Dataverse Web API (or Entra token
//! endpoint) as Microsoft documents it, against a started emulator, over real HTTP.

use std::time::Duration;

use dataverse_emulator::{
    Emulator, EmulatorConfig, Faults, KeyStatus, Limits, TableSetting, TableSettings,
};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

const ACC1: &str = "11111111-1111-1111-1111-111111111111";
const ACC2: &str = "22222222-2222-2222-2222-222222222222";
const CON1: &str = "33333333-3333-3333-3333-333333333333";

struct T {
    emu: Emulator,
    http: Client,
    token: String,
}

async fn start(cfg: EmulatorConfig) -> T {
    let emu = Emulator::start(cfg).await.expect("start emulator");
    let http = Client::new();
    let token = token(&emu, &http).await;
    T { emu, http, token }
}

async fn token(emu: &Emulator, http: &Client) -> String {
    let r = http
        .post(emu.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "client-1"),
            ("client_secret", "secret-1"),
            ("scope", "https://org.crm.dynamics.com/.default"),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("token json");
    v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl T {
    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.emu.api_url()))
            .bearer_auth(&self.token)
            .header("OData-MaxVersion", "4.0")
            .header("OData-Version", "4.0")
            .header("Accept", "application/json")
    }
    async fn patch(&self, path: &str, body: Value) -> Response {
        self.req(Method::PATCH, path)
            .json(&body)
            .send()
            .await
            .expect("send")
    }
    async fn get(&self, path: &str) -> Response {
        self.req(Method::GET, path).send().await.expect("send")
    }
}

async fn error_code(r: Response) -> (StatusCode, String, String) {
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
        v["error"]["message"].as_str().unwrap_or("").to_string(),
    )
}

fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn alt_key_cfg() -> EmulatorConfig {
    EmulatorConfig {
        alternate_key: Some(KeyStatus::Active),
        ..EmulatorConfig::default()
    }
}

// "OAuth 2.0 client credentials flow": success shape; errors carry error, error_description
// (AADSTS…), error_codes, timestamp, trace_id, correlation_id. The secret is never echoed.
#[tokio::test]
async fn token_endpoint_success_and_errors() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let http = Client::new();
    let form = |id: &'static str, secret: &'static str, scope: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
            ("scope", scope),
        ]
    };
    let ok: Value = http
        .post(emu.token_url())
        .form(&form(
            "client-1",
            "secret-1",
            "https://org.crm.dynamics.com/.default",
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok["token_type"], "Bearer");
    assert_eq!(ok["expires_in"], 3599);
    assert!(ok["access_token"].as_str().is_some_and(|t| !t.is_empty()));

    let r = http
        .post(emu.token_url())
        .form(&form(
            "client-1",
            "wrong-secret-value",
            "https://org.crm.dynamics.com/.default",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("wrong-secret-value"),
        "secret echoed: {text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], "invalid_client");
    assert_eq!(v["error_codes"][0], 7000215);
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215")
    );
    for k in ["timestamp", "trace_id", "correlation_id"] {
        assert!(v[k].is_string(), "{k}");
    }

    let r = http
        .post(emu.token_url())
        .form(&form(
            "other-app",
            "secret-1",
            "https://org.crm.dynamics.com/.default",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error_codes"][0], 700016);

    let r = http
        .post(emu.token_url())
        .form(&form(
            "client-1",
            "secret-1",
            "https://org.crm.dynamics.com/user_impersonation",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_scope");

    let r = http
        .post(format!("{}/other-tenant/oauth2/v2.0/token", emu.base_url()))
        .form(&form(
            "client-1",
            "secret-1",
            "https://org.crm.dynamics.com/.default",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    emu.shutdown().await;
}

// Dataverse answers 401 with a WWW-Authenticate Bearer challenge without a valid token;
// every API response carries OData-Version and x-ms-dop-hint ("Send parallel requests").
#[tokio::test]
async fn bearer_required_and_expiry() {
    let t = start(EmulatorConfig::default()).await;
    let r = t
        .http
        .get(format!("{}WhoAmI", t.emu.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").starts_with("Bearer "));
    assert_eq!(header(&r, "x-ms-dop-hint"), "50");

    let r = t.get("WhoAmI").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "odata-version"), "4.0");
    assert_eq!(header(&r, "x-ms-dop-hint"), "50");
    let v: Value = r.json().await.unwrap();
    for k in ["BusinessUnitId", "UserId", "OrganizationId"] {
        assert!(v[k].is_string());
    }

    t.emu.expire_tokens();
    assert_eq!(t.get("WhoAmI").await.status(), 401);
    let fresh = token(&t.emu, &t.http).await;
    let r = t
        .http
        .get(format!("{}WhoAmI", t.emu.api_url()))
        .bearer_auth(fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

// "Use Upsert to Create or Update a record": PATCH without conditions creates or updates,
// 204 + OData-EntityId either way; Prefer: return=representation → 201 on create, 200 on update.
#[tokio::test]
async fn upsert_by_guid() {
    let t = start(EmulatorConfig::default()).await;
    let r = t
        .patch(
            &format!("accounts({ACC1})"),
            json!({"name": "Contoso", "numberofemployees": 10}),
        )
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "odata-entityid"),
        format!("{}accounts({ACC1})", t.emu.api_url())
    );
    let r = t
        .patch(
            &format!("accounts({ACC1})"),
            json!({"telephone1": "+1 555"}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let rows = t.emu.rows("account");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "Contoso");
    assert_eq!(rows[0]["telephone1"], "+1 555");
    assert_eq!(rows[0]["accountid"], ACC1);
    assert!(rows[0]["createdon"].is_string());

    let r = t
        .req(
            Method::PATCH,
            &format!("accounts({ACC2})?$select=accountid,name"),
        )
        .header("Prefer", "return=representation")
        .json(&json!({"name": "Fabrikam"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], "Fabrikam");
    assert_eq!(v["accountid"], ACC2);
    let r = t
        .req(Method::PATCH, &format!("accounts({ACC2})"))
        .header("Prefer", "return=representation")
        .json(&json!({"name": "Fabrikam 2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The body's primary key must match the URL's.
    let r = t
        .patch(&format!("accounts({ACC1})"), json!({"accountid": ACC2}))
        .await;
    assert_eq!(r.status(), 400);
    // ApplicationRequired (name) is not enforced by the server.
    let r = t
        .patch(
            "accounts(44444444-4444-4444-4444-444444444444)",
            json!({"telephone1": "1"}),
        )
        .await;
    assert_eq!(r.status(), 204);
}

// "Perform conditional operations using the Web API": If-Match: * prevents create (404),
// If-None-Match: * prevents update (412).
#[tokio::test]
async fn conditional_upserts() {
    let t = start(EmulatorConfig::default()).await;
    let r = t
        .req(Method::PATCH, &format!("accounts({ACC1})"))
        .header("If-Match", "*")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    let (s, code, msg) = error_code(r).await;
    assert_eq!((s.as_u16(), code.as_str()), (404, "0x80040217"));
    assert!(msg.contains("Does Not Exist"), "{msg}");
    assert!(t.emu.rows("account").is_empty());

    let create = || {
        t.req(Method::PATCH, &format!("accounts({ACC1})"))
            .header("If-None-Match", "*")
            .json(&json!({"name": "x"}))
    };
    assert_eq!(create().send().await.unwrap().status(), 204);
    let (s, code, _) = error_code(create().send().await.unwrap()).await;
    assert_eq!((s.as_u16(), code.as_str()), (412, "0x80040237"));

    let r = t
        .req(Method::PATCH, &format!("accounts({ACC1})"))
        .header("If-Match", "*")
        .json(&json!({"name": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(t.emu.rows("account")[0]["name"], "y");
}

// Column validation as Dataverse does it: undeclared property, MaxLength (0x80044331 with the
// documented message), wrong type, value outside the option set.
#[tokio::test]
async fn rejects_invalid_values() {
    let t = start(EmulatorConfig::default()).await;
    let path = format!("accounts({ACC1})");
    let (s, code, msg) = error_code(t.patch(&path, json!({"nmae": "x"})).await).await;
    assert_eq!((s.as_u16(), code.as_str()), (400, "0x80060888"));
    assert!(
        msg.contains("'nmae'") && msg.contains("Microsoft.Dynamics.CRM.account"),
        "{msg}"
    );

    let (s, code, msg) = error_code(t.patch(&path, json!({"name": "n".repeat(161)})).await).await;
    assert_eq!((s.as_u16(), code.as_str()), (400, "0x80044331"));
    assert_eq!(
        msg,
        "A validation error occurred. The length of the 'name' attribute of the 'account' entity exceeded the maximum allowed length of '160'."
    );
    assert_eq!(
        t.patch(&path, json!({"name": "n".repeat(160)}))
            .await
            .status(),
        204
    );

    let (s, _, _) = error_code(t.patch(&path, json!({"numberofemployees": "ten"})).await).await;
    assert_eq!(s, 400);
    let (s, _, msg) = error_code(t.patch(&path, json!({"msdyn_source_crm": 9})).await).await;
    assert_eq!(s, 400);
    assert!(msg.contains("msdyn_source_crm"), "{msg}");
    assert_eq!(
        t.patch(&path, json!({"msdyn_source_crm": 2}))
            .await
            .status(),
        204
    );

    // Malformed JSON is a 400, never a crash.
    let r = t
        .req(Method::PATCH, &path)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Unknown entity set: "Resource not found for the segment".
    let (s, code, _) = error_code(t.get("Account").await).await;
    assert_eq!((s.as_u16(), code.as_str()), (404, "0x8006088a"));
}

// "Use an alternate key to reference a record": a key must be defined and its index Active;
// string values are quoted with '' escaping; on create the URL's key values are stored.
#[tokio::test]
async fn alternate_key_upsert() {
    let key = format!(
        "accounts(msdyn_source_crm=2,msdyn_source_crm_id='{}')",
        enc("O''Brien # Co")
    );
    for status in [None, Some(KeyStatus::Pending), Some(KeyStatus::Failed)] {
        let t = start(EmulatorConfig {
            alternate_key: status,
            ..EmulatorConfig::default()
        })
        .await;
        let (s, code, _) = error_code(t.patch(&key, json!({"name": "x"})).await).await;
        assert_eq!(
            (s.as_u16(), code.as_str()),
            (400, "0x80060890"),
            "{status:?}"
        );
        assert!(t.emu.rows("account").is_empty());
    }
    let t = start(alt_key_cfg()).await;
    let r = t.patch(&key, json!({"name": "OB"})).await;
    assert_eq!(r.status(), 204);
    let eid = header(&r, "odata-entityid");
    let rows = t.emu.rows("account");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["msdyn_source_crm"], 2);
    assert_eq!(rows[0]["msdyn_source_crm_id"], "O'Brien # Co");
    // `&` is one of the characters "Define alternate keys" lists as unsupported in key values.
    let amp = format!(
        "accounts(msdyn_source_crm=2,msdyn_source_crm_id='{}')",
        enc("O''Brien & Co")
    );
    let (s, _, _) = error_code(t.patch(&amp, json!({"name": "x"})).await).await;
    assert_eq!(s.as_u16(), 400);
    assert_eq!(t.emu.rows("account").len(), 1);
    assert!(eid.ends_with(&format!(
        "accounts({})",
        rows[0]["accountid"].as_str().unwrap()
    )));
    assert_eq!(t.patch(&key, json!({"name": "OB2"})).await.status(), 204);
    assert_eq!(t.emu.rows("account").len(), 1);
    let v: Value = t
        .get(&format!("{key}?$select=name"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["name"], "OB2");
    // Uniqueness of an Active key: a second row with the same values is refused.
    let (s, code, _) = error_code(
        t.patch(
            &format!("accounts({ACC1})"),
            json!({"msdyn_source_crm": 2, "msdyn_source_crm_id": "O'Brien # Co"}),
        )
        .await,
    )
    .await;
    assert_eq!((s.as_u16(), code.as_str()), (412, "0x80060892"));
    // DELETE by alternate key ("Use Upsert": delete works with alternate keys).
    assert_eq!(
        t.req(Method::DELETE, &key).send().await.unwrap().status(),
        204
    );
    let (s, code, _) = error_code(t.req(Method::DELETE, &key).send().await.unwrap()).await;
    assert_eq!((s.as_u16(), code.as_str()), (404, "0x80060891"));
}

// "Associate and disassociate table rows using the Web API": @odata.bind with a GUID or an
// alternate key, null to clear; a missing target is 404 (0x80040217 / 0x80060891).
#[tokio::test]
async fn lookups_with_odata_bind() {
    let t = start(alt_key_cfg()).await;
    let path = format!("contacts({CON1})");
    let (s, code, _) = error_code(
        t.patch(&path, json!({"lastname": "A", "parentcustomerid_account@odata.bind": format!("/accounts({ACC1})")}))
            .await,
    )
    .await;
    assert_eq!((s.as_u16(), code.as_str()), (404, "0x80040217"));
    let (s, code, _) = error_code(
        t.patch(
            &path,
            json!({"parentcustomerid_account@odata.bind": "/accounts(msdyn_source_crm=2,msdyn_source_crm_id='SN1')"}),
        )
        .await,
    )
    .await;
    assert_eq!((s.as_u16(), code.as_str()), (404, "0x80060891"));
    assert!(t.emu.rows("contact").is_empty());

    t.patch(
        &format!("accounts({ACC1})"),
        json!({"name": "A", "msdyn_source_crm": 2, "msdyn_source_crm_id": "SN1"}),
    )
    .await;
    for bind in [
        format!("/accounts({ACC1})"),
        format!("accounts({ACC1})"),
        "/accounts(msdyn_source_crm=2,msdyn_source_crm_id='SN1')".to_string(),
    ] {
        let r = t
            .patch(
                &path,
                json!({"lastname": "A", "parentcustomerid_account@odata.bind": bind}),
            )
            .await;
        assert_eq!(r.status(), 204);
        assert_eq!(t.emu.rows("contact")[0]["_parentcustomerid_value"], ACC1);
    }
    let r = t
        .patch(&path, json!({"parentcustomerid_account@odata.bind": null}))
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        t.emu.rows("contact")[0]["_parentcustomerid_value"],
        Value::Null
    );
    let (s, _, _) = error_code(
        t.patch(
            &path,
            json!({"parentcustomerid_acount@odata.bind": format!("/accounts({ACC1})")}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
}

// DELETE → 204; a missing row → 404 0x80040217 ("Use Upsert…": delete by key).
#[tokio::test]
async fn delete_rows() {
    let t = start(EmulatorConfig::default()).await;
    t.patch(&format!("accounts({ACC1})"), json!({"name": "A"}))
        .await;
    assert_eq!(
        t.req(Method::DELETE, &format!("accounts({ACC1})"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert!(t.emu.rows("account").is_empty());
    let (s, code, _) = error_code(
        t.req(Method::DELETE, &format!("accounts({ACC1})"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s.as_u16(), code.as_str()), (404, "0x80040217"));
}

// "Query data using the Web API": $select, $filter (quotes escaped as ''), $top, unknown
// properties → 400 "Could not find a property named…", and paging with odata.maxpagesize →
// @odata.nextLink until the last page.
#[tokio::test]
async fn query_filter_select_paging() {
    let t = start(EmulatorConfig::default()).await;
    for i in 0..7 {
        let id = format!("00000000-0000-0000-0000-00000000000{i}");
        let name = if i == 3 {
            "O'Brien".to_string()
        } else {
            format!("acc {i}")
        };
        t.patch(
            &format!("accounts({id})"),
            json!({"name": name, "msdyn_source_crm": 2, "msdyn_source_crm_id": format!("x{i}")}),
        )
        .await;
    }
    let filter = enc("name eq 'O''Brien' and (msdyn_source_crm eq 2 or msdyn_source_crm eq 3)");
    let v: Value = t
        .get(&format!("accounts?$select=name&$filter={filter}"))
        .await
        .json()
        .await
        .unwrap();
    let rows = v["value"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "O'Brien");
    assert!(rows[0]["accountid"].is_string());
    assert!(rows[0].get("telephone1").is_none());
    assert!(
        v["@odata.context"]
            .as_str()
            .unwrap()
            .contains("$metadata#accounts(name)")
    );

    let v: Value = t
        .get("accounts?$select=name&$top=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["value"].as_array().unwrap().len(), 2);
    assert!(v.get("@odata.nextLink").is_none());

    let (s, code, msg) = error_code(t.get("accounts?$select=Name").await).await;
    assert_eq!((s.as_u16(), code.as_str()), (400, "0x0"));
    assert!(msg.contains("Could not find a property named 'Name'"));
    assert_eq!(
        t.get(&format!("accounts?$filter={}", enc("name eq")))
            .await
            .status(),
        400
    );

    let mut url = format!("{}accounts?$select=name", t.emu.api_url());
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let r = t
            .http
            .get(&url)
            .bearer_auth(&t.token)
            .header("Prefer", "odata.maxpagesize=3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        seen += v["value"].as_array().unwrap().len();
        pages += 1;
        match v["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    assert_eq!((seen, pages), (7, 3));
}

fn batch_body(boundary: &str, parts: &[String]) -> String {
    let mut b = String::new();
    for p in parts {
        b.push_str(&format!("--{boundary}\r\n{p}\r\n"));
    }
    b.push_str(&format!("--{boundary}--\r\n"));
    b
}

fn http_part(method: &str, url: &str, body: &Value, content_id: Option<u32>) -> String {
    let cid = content_id
        .map(|c| format!("Content-ID: {c}\r\n"))
        .unwrap_or_default();
    format!(
        "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n{cid}\r\n{method} {url} HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n\r\n{body}"
    )
}

async fn send_batch(t: &T, body: String, continue_on_error: bool) -> (StatusCode, String, String) {
    let mut r = t
        .req(Method::POST, "$batch")
        .header("Content-Type", "multipart/mixed; boundary=\"batch_abc\"");
    if continue_on_error {
        r = r.header("Prefer", "odata.continue-on-error");
    }
    let resp = r.body(body).send().await.unwrap();
    let status = resp.status();
    let ct = header(&resp, "content-type");
    (status, ct, resp.text().await.unwrap())
}

// "Execute batch operations using the Web API": multipart/mixed response with
// batchresponse_ boundary, application/http parts in request order, 204 + OData-EntityId;
// stops at the first error by default; Prefer: odata.continue-on-error runs every part.
#[tokio::test]
async fn batch_order_errors_and_continue() {
    let t = start(EmulatorConfig::default()).await;
    let parts = vec![
        http_part(
            "PATCH",
            &format!("/api/data/v9.2/accounts({ACC1})"),
            &json!({"name": "A"}),
            None,
        ),
        http_part(
            "PATCH",
            &format!("/api/data/v9.2/accounts({ACC2})"),
            &json!({"bogus": 1}),
            None,
        ),
        http_part(
            "PATCH",
            &format!(
                "{}accounts(44444444-4444-4444-4444-444444444444)",
                t.emu.api_url()
            ),
            &json!({"name": "C"}),
            None,
        ),
    ];
    let (status, ct, text) = send_batch(&t, batch_body("batch_abc", &parts), false).await;
    assert_eq!(status, 200);
    assert!(
        ct.starts_with("multipart/mixed; boundary=batchresponse_"),
        "{ct}"
    );
    let statuses: Vec<&str> = text.lines().filter(|l| l.starts_with("HTTP/1.1")).collect();
    assert_eq!(
        statuses,
        ["HTTP/1.1 204 No Content", "HTTP/1.1 400 Bad Request"]
    );
    assert!(text.contains(&format!(
        "OData-EntityId: {}accounts({ACC1})",
        t.emu.api_url()
    )));
    assert!(text.contains("0x80060888"));
    assert!(
        text.contains("Content-Type: application/http")
            && text.contains("Content-Transfer-Encoding: binary")
    );
    assert_eq!(t.emu.rows("account").len(), 1);

    let (status, _, text) = send_batch(&t, batch_body("batch_abc", &parts), true).await;
    assert_eq!(status, 200);
    let statuses: Vec<&str> = text.lines().filter(|l| l.starts_with("HTTP/1.1")).collect();
    assert_eq!(
        statuses,
        [
            "HTTP/1.1 204 No Content",
            "HTTP/1.1 400 Bad Request",
            "HTTP/1.1 204 No Content"
        ]
    );
    assert_eq!(t.emu.rows("account").len(), 2);
    // A $batch counts as one request but each executed part is an operation ("Service
    // protection API limits"): 2 parts ran in the first batch, 3 in the second.
    assert_eq!(t.emu.stats().requests, 2);
    assert_eq!(t.emu.stats().operations, 5);
}

// Change sets are atomic and support Content-ID / $n references; over 1,000 requests → 400.
#[tokio::test]
async fn change_sets_and_batch_limit() {
    let t = start(EmulatorConfig::default()).await;
    let cs = |parts: Vec<String>| {
        format!(
            "Content-Type: multipart/mixed; boundary=changeset_1\r\n\r\n{}",
            batch_body("changeset_1", &parts).trim_end()
        )
    };
    let failing = cs(vec![
        http_part(
            "PATCH",
            &format!("accounts({ACC1})"),
            &json!({"name": "A"}),
            Some(1),
        ),
        http_part(
            "PATCH",
            &format!("accounts({ACC2})"),
            &json!({"name": "n".repeat(200)}),
            Some(2),
        ),
    ]);
    let (status, _, text) = send_batch(&t, batch_body("batch_abc", &[failing]), true).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("HTTP/1.1 400 Bad Request") && text.contains("0x80044331"),
        "{text}"
    );
    assert!(
        t.emu.rows("account").is_empty(),
        "change set not rolled back"
    );

    let ok = cs(vec![
        http_part("POST", "accounts", &json!({"name": "Parent"}), Some(1)),
        http_part(
            "POST",
            "contacts",
            &json!({"lastname": "Kid", "parentcustomerid_account@odata.bind": "$1"}),
            Some(2),
        ),
    ]);
    let (_, _, text) = send_batch(&t, batch_body("batch_abc", &[ok]), false).await;
    assert!(text.contains("changesetresponse_"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 204 No Content").count(), 2);
    let parent = t.emu.rows("account")[0]["accountid"].clone();
    assert_eq!(t.emu.rows("contact")[0]["_parentcustomerid_value"], parent);

    let many: Vec<String> = (0..1001)
        .map(|i| {
            http_part(
                "PATCH",
                &format!("accounts(00000000-0000-0000-0000-{i:012})"),
                &json!({"name": "x"}),
                None,
            )
        })
        .collect();
    let (status, _, _) = send_batch(&t, batch_body("batch_abc", &many), true).await;
    assert_eq!(status, 400);
    assert_eq!(t.emu.rows("account").len(), 1);
    // Malformed batch: no boundary → 400.
    let r = t
        .req(Method::POST, "$batch")
        .header("Content-Type", "multipart/mixed")
        .body("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

fn bulk_cfg(supported: bool) -> EmulatorConfig {
    EmulatorConfig {
        alternate_key: Some(KeyStatus::Active),
        tables: TableSettings {
            account: TableSetting {
                bulk_supported: supported,
            },
            contact: TableSetting {
                bulk_supported: supported,
            },
        },
        ..EmulatorConfig::default()
    }
}

// "Use bulk operation messages": @odata.type required per target; standard tables roll back the
// whole request on one error; CreateMultiple → Ids; UpsertMultiple → 204; tables may not support
// the messages, which sdkmessagefilters reveals.
#[tokio::test]
async fn bulk_messages() {
    let t = start(bulk_cfg(false)).await;
    let r = t
        .req(
            Method::POST,
            "accounts/Microsoft.Dynamics.CRM.UpsertMultiple",
        )
        .json(&json!({"Targets": [{"@odata.type": "Microsoft.Dynamics.CRM.account", "name": "A"}]}))
        .send()
        .await
        .unwrap();
    let (s, code, msg) = error_code(r).await;
    assert_eq!((s.as_u16(), code.as_str()), (400, "0x80040800"));
    assert!(msg.contains("'UpsertMultiple' method does not support entities of type 'account'"));
    let filter =
        enc("sdkmessageid/name eq 'CreateMultiple' and primaryobjecttypecode eq 'account'");
    let v: Value = t
        .get(&format!(
            "sdkmessagefilters?$select=sdkmessagefilterid&$filter={filter}"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["value"].as_array().unwrap().len(), 0);

    let t = start(bulk_cfg(true)).await;
    let v: Value = t
        .get(&format!(
            "sdkmessagefilters?$select=sdkmessagefilterid&$filter={filter}"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["value"].as_array().unwrap().len(), 1);

    let ty = "Microsoft.Dynamics.CRM.account";
    let upsert = |targets: Value| {
        t.req(
            Method::POST,
            "accounts/Microsoft.Dynamics.CRM.UpsertMultiple",
        )
        .json(&json!({ "Targets": targets }))
        .send()
    };
    let r = upsert(json!([
        {"@odata.type": ty, "@odata.id": "accounts(msdyn_source_crm=2,msdyn_source_crm_id='A')", "name": "A"},
        {"@odata.type": ty, "@odata.id": format!("accounts({ACC1})"), "name": "B"},
    ]))
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(t.emu.rows("account").len(), 2);

    // One bad target → nothing written.
    let r = upsert(json!([
        {"@odata.type": ty, "@odata.id": format!("accounts({ACC2})"), "name": "C"},
        {"@odata.type": ty, "@odata.id": format!("accounts({ACC1})"), "name": "n".repeat(161)},
    ]))
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(t.emu.rows("account").len(), 2);
    // Missing @odata.type → 400.
    let r = upsert(json!([{"@odata.id": format!("accounts({ACC2})"), "name": "C"}]))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Key columns both in @odata.id and in the body on create → 400 0x80040216.
    let r = upsert(json!([{
        "@odata.type": ty,
        "@odata.id": "accounts(msdyn_source_crm=2,msdyn_source_crm_id='Z')",
        "msdyn_source_crm": 2, "msdyn_source_crm_id": "Z", "name": "Z"
    }]))
    .await
    .unwrap();
    assert_eq!(error_code(r).await.1, "0x80040216");

    let r = t
        .req(
            Method::POST,
            "contacts/Microsoft.Dynamics.CRM.CreateMultiple",
        )
        .json(&json!({"Targets": [
            {"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": "X"},
            {"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": "Y"},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["Ids"].as_array().unwrap().len(), 2);
    assert_eq!(t.emu.rows("contact").len(), 2);
}

// Metadata probes: Keys with EntityKeyIndexStatus, option set values, MaxLength.
#[tokio::test]
async fn metadata_probes() {
    let t = start(EmulatorConfig {
        alternate_key: Some(KeyStatus::Pending),
        ..EmulatorConfig::default()
    })
    .await;
    let v: Value = t
        .get("EntityDefinitions(LogicalName='account')?$select=LogicalName&$expand=Keys($select=SchemaName,KeyAttributes,EntityKeyIndexStatus)")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["Keys"][0]["KeyAttributes"],
        json!(["msdyn_source_crm", "msdyn_source_crm_id"])
    );
    assert_eq!(v["Keys"][0]["EntityKeyIndexStatus"], "Pending");
    let v: Value = t
        .get("EntityDefinitions(LogicalName='account')/Attributes(LogicalName='msdyn_source_crm')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options)")
        .await
        .json()
        .await
        .unwrap();
    let values: Vec<i64> = v["OptionSet"]["Options"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["Value"].as_i64())
        .collect();
    assert_eq!(values, [1, 2, 3]);
    let v: Value = t
        .get("EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='lastname')/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=MaxLength")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["MaxLength"], 50);
}

// "RetrieveUserPrivileges Function": bound to the WhoAmI user; `RolePrivileges` of the
// `RolePrivilege` complex type. Another user id is ObjectDoesNotExist.
#[tokio::test]
async fn user_privileges() {
    let t = start(EmulatorConfig {
        privileges: vec!["prvReadAccount".into(), "prvCreateAccount".into()],
        ..EmulatorConfig::default()
    })
    .await;
    let who: Value = t.get("WhoAmI").await.json().await.unwrap();
    let user = who["UserId"].as_str().unwrap();
    let r = t
        .get(&format!(
            "systemusers({user})/Microsoft.Dynamics.CRM.RetrieveUserPrivileges()"
        ))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let privileges = v["RolePrivileges"].as_array().unwrap();
    assert_eq!(privileges.len(), 2);
    assert_eq!(privileges[0]["PrivilegeName"], "prvReadAccount");
    assert_eq!(privileges[0]["Depth"], "Global");
    assert_eq!(privileges[0]["BusinessUnitId"], who["BusinessUnitId"]);
    assert!(privileges[0]["PrivilegeId"].as_str().is_some());
    let r = t
        .get(&format!(
            "systemusers({ACC1})/Microsoft.Dynamics.CRM.RetrieveUserPrivileges()"
        ))
        .await;
    let (status, code, _) = error_code(r).await;
    assert_eq!((status.as_u16(), code.as_str()), (404, "0x80040217"));
    // The function needs its namespace, as every bound function does.
    let r = t
        .get(&format!("systemusers({user})/RetrieveUserPrivileges()"))
        .await;
    assert_eq!(r.status(), 404);
}

// An org's customised columns: a removed column is unknown to metadata and to writes, a
// shortened one reports and enforces its MaxLength.
#[tokio::test]
async fn customised_columns() {
    use dataverse_emulator::AttributeChange;
    let t = start(EmulatorConfig {
        attributes: [
            (
                ("account".to_string(), "msdyn_source_crm_url".to_string()),
                AttributeChange::Missing,
            ),
            (
                ("account".to_string(), "name".to_string()),
                AttributeChange::MaxLength(10),
            ),
        ]
        .into(),
        ..EmulatorConfig::default()
    })
    .await;
    let r = t
        .get("EntityDefinitions(LogicalName='account')/Attributes(LogicalName='msdyn_source_crm_url')/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=MaxLength")
        .await;
    let (status, code, _) = error_code(r).await;
    assert_eq!((status.as_u16(), code.as_str()), (404, "0x80040217"));
    let r = t
        .patch(
            &format!("accounts({ACC1})"),
            json!({"name": "A", "msdyn_source_crm_url": "https://x.example/1"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    // A removed column cannot be queried either.
    for q in [
        "accounts?$select=name,msdyn_source_crm_url",
        "accounts?$filter=msdyn_source_crm_url eq 'x'",
        "accounts?$orderby=msdyn_source_crm_url",
    ] {
        assert_eq!(t.get(q).await.status(), 400, "{q}");
    }
    for q in ["accounts?$select=name", "accounts?$filter=name eq 'x'"] {
        assert_eq!(t.get(q).await.status(), 200, "{q}");
    }
    let v: Value = t
        .get("EntityDefinitions(LogicalName='account')/Attributes(LogicalName='name')/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=MaxLength")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["MaxLength"], 10);
    let r = t
        .patch(&format!("accounts({ACC1})"), json!({"name": "Eleven char"}))
        .await;
    assert_eq!(r.status(), 400);
    let r = t
        .patch(&format!("accounts({ACC1})"), json!({"name": "Ten chars!"}))
        .await;
    assert_eq!(r.status(), 204);
}

// "Service protection API limits": request count per sliding window → 429 with Retry-After
// and -2147015902 (0x80072322); a $batch counts as one request.
#[tokio::test]
async fn throttles_request_count() {
    let t = start(EmulatorConfig {
        limits: Limits {
            window: Duration::from_secs(2),
            max_requests: 5,
            ..Limits::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    for _ in 0..5 {
        assert_eq!(t.get("WhoAmI").await.status(), 200);
    }
    let r = t.get("WhoAmI").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(header(&r, "x-ms-dop-hint"), "50");
    let (_, code, msg) = error_code(r).await;
    assert_eq!(code, "0x80072322");
    assert_eq!(
        msg,
        "Number of requests exceeded the limit of 5 over time window of 2 seconds."
    );
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(t.get("WhoAmI").await.status(), 200);
    assert_eq!(t.emu.stats().throttled, 1);
}

// Execution time limit (0x80072321): each write operation, including each $batch part, costs.
#[tokio::test]
async fn throttles_execution_time() {
    let t = start(EmulatorConfig {
        limits: Limits {
            window: Duration::from_secs(60),
            max_execution: Duration::from_millis(250),
            cost_per_operation: Duration::from_millis(100),
            ..Limits::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let parts: Vec<String> = (0..3)
        .map(|i| {
            http_part(
                "PATCH",
                &format!("accounts(00000000-0000-0000-0000-{i:012})"),
                &json!({"name": "x"}),
                None,
            )
        })
        .collect();
    let (status, _, _) = send_batch(&t, batch_body("batch_abc", &parts), false).await;
    assert_eq!(status, 200);
    let r = t.get("WhoAmI").await;
    assert_eq!(r.status(), 429);
    assert!(header(&r, "retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(error_code(r).await.1, "0x80072321");
}

// Concurrency limit (0x80072326 "Number of concurrent requests exceeded the limit of N.").
#[tokio::test]
async fn throttles_concurrency() {
    let t = start(EmulatorConfig {
        limits: Limits {
            max_concurrency: 2,
            ..Limits::default()
        },
        faults: Faults {
            latency: Duration::from_millis(300),
            ..Faults::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let futs: Vec<_> = (0..6).map(|_| t.get("WhoAmI")).collect();
    let results = futures_join(futs).await;
    let ok = results.iter().filter(|r| r.status() == 200).count();
    let throttled: Vec<&Response> = results.iter().filter(|r| r.status() == 429).collect();
    assert_eq!(ok, 2);
    assert_eq!(throttled.len(), 4);
    assert_eq!(header(throttled[0], "retry-after"), "1");
    assert_eq!(t.emu.stats().max_concurrency, 2);
}

/// Runs the futures concurrently on this task (no extra dependency for join_all).
async fn futures_join<F: std::future::Future<Output = Response>>(futs: Vec<F>) -> Vec<Response> {
    join_all(futs.into_iter().map(Box::pin).collect()).await
}

async fn join_all<F: std::future::Future + Unpin>(mut futs: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut results: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if results[i].is_none() {
                match std::pin::Pin::new(f).poll(cx) {
                    Poll::Ready(v) => results[i] = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

// Injected faults: dropped connection (transport error), 5xx with a Dataverse error body, and
// the documented SQL deadlock ("Troubleshoot Dataverse bulk operation errors": -2147204784).
#[tokio::test]
async fn injected_faults() {
    let t = start(EmulatorConfig::default()).await;
    t.emu.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let r = t.req(Method::GET, "WhoAmI").send().await;
    assert!(r.is_err(), "expected a connection error, got {r:?}");
    t.emu.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    });
    let r = t.get("WhoAmI").await;
    assert!(r.status().is_server_error());
    assert!(!error_code(r).await.1.is_empty());
    t.emu.set_faults(Faults {
        deadlock_rate: 1.0,
        ..Faults::default()
    });
    let (s, code, _) = error_code(
        t.patch(&format!("accounts({ACC1})"), json!({"name": "A"}))
            .await,
    )
    .await;
    assert_eq!((s.as_u16(), code.as_str()), (500, "0x80044150"));
    assert!(t.emu.rows("account").is_empty());
    t.emu.set_faults(Faults::default());
    assert_eq!(
        t.patch(&format!("accounts({ACC1})"), json!({"name": "A"}))
            .await
            .status(),
        204
    );
    // Emulator-only listing endpoint.
    let v: Value = t
        .http
        .get(format!("{}/_emulator/rows/account", t.emu.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v[0]["accountid"], ACC1);
}
