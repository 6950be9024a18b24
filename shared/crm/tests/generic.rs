//! GenericClient, through the CrmReader trait only: the ServiceNow and Salesforce emulators
//! configured as generic REST CRMs (link-header, offset and next-link-in-body paging, Basic and
//! OAuth client credentials), and a small stub server for what the emulators cannot show
//! (cursor paging, offset paging without a total, foreign next links, error shapes, token
//! expiry).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DurationRound, Utc};
use crm::generic::{GenericClient, GenericConfig};
use crm::{CrmError, CrmReader, Page, PageRequest};
use crm_emulator::{SalesforceConfig, SalesforceEmulator, ServiceNowConfig, ServiceNowEmulator};
use mapping::Entity;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn client(toml_text: &str, fields: HashMap<Entity, Vec<String>>) -> GenericClient {
    let cfg: GenericConfig = toml::from_str(toml_text).expect("config parses");
    cfg.validate().expect("config is valid");
    GenericClient::new(cfg, fields).expect("client")
}

fn req(size: u32) -> PageRequest {
    PageRequest {
        page_size: size,
        ..PageRequest::default()
    }
}

#[derive(Default)]
struct Walk {
    records: Vec<Value>,
    pages: usize,
    rate_limited: Vec<Duration>,
    restarts: usize,
}

/// Walks to the end as the pipeline does: follows the cursor, keeps the checkpoint, waits
/// after RateLimited, drops the cursor after CursorExpired. `during` runs after each page.
async fn walk(
    c: &GenericClient,
    e: Entity,
    start: PageRequest,
    mut during: impl FnMut(usize),
) -> Walk {
    let mut req = start;
    let mut w = Walk::default();
    loop {
        let page: Page = match c.list_page(e, &req).await {
            Ok(p) => p,
            Err(CrmError::RateLimited(d)) => {
                assert!(d <= Duration::from_secs(3), "{d:?}");
                w.rate_limited.push(d);
                tokio::time::sleep(d).await;
                continue;
            }
            Err(CrmError::CursorExpired) if req.cursor.is_some() => {
                w.restarts += 1;
                req.cursor = None;
                continue;
            }
            Err(other) => panic!("walk failed: {other}"),
        };
        w.pages += 1;
        w.records.extend(page.records);
        assert!(w.pages < 10_000, "runaway walk");
        if !page.more {
            assert!(page.cursor.is_none());
            break;
        }
        assert!(page.cursor.is_some(), "more without a cursor");
        req.cursor = page.cursor;
        req.checkpoint = page.checkpoint;
        during(w.pages);
    }
    w
}

fn ids(records: &[Value], key: &str) -> Vec<String> {
    records
        .iter()
        .map(|r| match &r[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

fn unique(records: &[Value], key: &str) -> HashSet<String> {
    let all = ids(records, key);
    let set: HashSet<String> = all.iter().cloned().collect();
    assert_eq!(set.len(), all.len(), "duplicates in the walk");
    set
}

// ---------------------------------------------------------------------------------------------
// ServiceNow emulator as a generic CRM

/// The ServiceNow Table API as a generic REST CRM, as a user writes it (the example the README
/// shows); tests swap in the emulator's URL and credentials.
const SERVICENOW_EXAMPLE: &str = r#"
[[sources]]
id = "servicenow-rest"
kind = "generic"
crm_choice = 2
base_url = "https://acme.service-now.com"

[sources.connection]
auth = "generic-rest"
base_url = "https://acme.service-now.com"
# ServiceNow datetimes are UTC, to the second.
modified_since_format = "%Y-%m-%d %H:%M:%S"
max_page_size = 10000

[sources.connection.credentials]
type = "basic"
user = "integration.user"
password = "env:SERVICENOW_PASSWORD"

[sources.connection.paging]
# Or "offset", with &sysparm_offset={offset} in list_url and since_url (X-Total-Count ends it).
style = "link_header"

[sources.connection.account]
list_url = "/api/now/table/customer_account?sysparm_query=ORDERBYsys_updated_on^ORDERBYsys_id&sysparm_fields={fields}&sysparm_limit={page_size}"
since_url = "/api/now/table/customer_account?sysparm_query=sys_updated_on>={modified_since}^ORDERBYsys_updated_on^ORDERBYsys_id&sysparm_fields={fields}&sysparm_limit={page_size}"
records = "/result"
id = "/sys_id"
modified = "/sys_updated_on"
fetch_url = "/api/now/table/customer_account?sysparm_query=sys_idIN{ids}&sysparm_fields={fields}&sysparm_limit={count}"
fetch_batch = 100
# sys_ids are 32 hex characters: anything else is never put into a query.
id_chars = ""

[sources.connection.contact]
list_url = "/api/now/table/customer_contact?sysparm_query=ORDERBYsys_updated_on^ORDERBYsys_id&sysparm_fields={fields}&sysparm_limit={page_size}"
since_url = "/api/now/table/customer_contact?sysparm_query=sys_updated_on>={modified_since}^ORDERBYsys_updated_on^ORDERBYsys_id&sysparm_fields={fields}&sysparm_limit={page_size}"
records = "/result"
id = "/sys_id"
modified = "/sys_updated_on"
fetch_url = "/api/now/table/customer_contact?sysparm_query=sys_idIN{ids}&sysparm_fields={fields}&sysparm_limit={count}"
fetch_batch = 100
id_chars = ""
"#;

/// `[sources.connection]` as the pipeline's tagged `ConnectionConfig` reads it: the TOML turned
/// into JSON, the `auth` tag picking the variant.
#[derive(serde::Deserialize)]
#[serde(tag = "auth", rename_all = "kebab-case", deny_unknown_fields)]
enum Connection {
    GenericRest(GenericConfig),
}

fn connection_of(example: &str) -> GenericConfig {
    let doc: toml::Value = toml::from_str(example).expect("example parses");
    let conn = doc["sources"][0]["connection"].clone();
    let json = serde_json::to_value(conn).expect("to JSON");
    match serde_json::from_value::<Connection>(json).expect("connection section") {
        Connection::GenericRest(cfg) => cfg,
    }
}

#[test]
fn examples_validate_as_written() {
    for (example, key) in [
        (SERVICENOW_EXAMPLE, "credentials.password"),
        (SALESFORCE_EXAMPLE, "credentials.client_secret"),
    ] {
        let mut cfg = connection_of(example);
        cfg.validate().expect("valid");
        let secrets = cfg.secrets_mut();
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0].0, key);
        assert!(secrets[0].1.starts_with("env:"));
    }
}

/// The example on the emulator: its URL and password; `edits` are further (from, to)
/// replacements.
fn servicenow_config(emu_url: &str, password: &str, edits: &[(&str, &str)]) -> GenericConfig {
    let mut text = SERVICENOW_EXAMPLE
        .replace("https://acme.service-now.com", emu_url)
        .replace("env:SERVICENOW_PASSWORD", password);
    for (from, to) in edits {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    let cfg = connection_of(&text);
    cfg.validate().expect("valid");
    cfg
}

const LINK: &[(&str, &str)] = &[];
const OFFSET: &[(&str, &str)] = &[
    ("style = \"link_header\"", "style = \"offset\""),
    (
        "&sysparm_limit={page_size}\"",
        "&sysparm_limit={page_size}&sysparm_offset={offset}\"",
    ),
];
/// Contacts fetched one by one: `GET .../customer_contact/{sys_id}`, 404 when missing.
const SINGLE_FETCH: (&str, &str) = (
    "fetch_url = \"/api/now/table/customer_contact?sysparm_query=sys_idIN{ids}&sysparm_fields={fields}&sysparm_limit={count}\"\nfetch_batch = 100",
    "fetch_url = \"/api/now/table/customer_contact/{id}?sysparm_fields={fields}\"\nfetch_records = \"/result\"",
);

fn sn_fields() -> HashMap<Entity, Vec<String>> {
    HashMap::from([
        (
            Entity::Account,
            ["name", "phone", "city"].map(String::from).to_vec(),
        ),
        (
            Entity::Contact,
            ["first_name", "last_name", "email", "account"]
                .map(String::from)
                .to_vec(),
        ),
    ])
}

async fn servicenow(accounts: usize, per: usize, orphans: usize) -> ServiceNowEmulator {
    ServiceNowEmulator::start(ServiceNowConfig {
        accounts,
        contacts_per_account: per,
        orphan_contacts: orphans,
        ..ServiceNowConfig::default()
    })
    .await
    .expect("emulator starts")
}

fn sn_client(emu: &ServiceNowEmulator, edits: &[(&str, &str)]) -> GenericClient {
    let cfg = servicenow_config(&emu.base_url(), &emu.config().password, edits);
    GenericClient::new(cfg, sn_fields()).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_link_header_walk_is_exact() {
    let emu = servicenow(2600, 3, 50).await;
    let c = sn_client(&emu, LINK);
    let first = c
        .list_page(Entity::Contact, &req(1000))
        .await
        .expect("page");
    assert_eq!(first.total, Some(2600 * 3 + 50));
    assert!(
        first
            .cursor
            .as_deref()
            .unwrap_or("")
            .starts_with(&emu.base_url())
    );
    let before = emu.stats().list_requests;
    let accounts = walk(&c, Entity::Account, req(1000), |_| {}).await;
    assert_eq!(emu.stats().list_requests - before, 3);
    let contacts = walk(&c, Entity::Contact, req(1000), |_| {}).await;
    assert_eq!(accounts.records.len(), 2600);
    assert_eq!(contacts.records.len(), 2600 * 3 + 50);
    assert!(accounts.records.len() + contacts.records.len() > 10_000);
    assert_eq!(
        unique(&accounts.records, "sys_id"),
        emu.ids("customer_account").into_iter().collect()
    );
    assert_eq!(
        unique(&contacts.records, "sys_id"),
        emu.ids("customer_contact").into_iter().collect()
    );
    // {fields}: the id and modified fields, then the mapping's.
    let mut keys: Vec<&String> = contacts.records[0]
        .as_object()
        .expect("object")
        .keys()
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "account",
            "email",
            "first_name",
            "last_name",
            "sys_id",
            "sys_updated_on"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_offset_with_total_is_exact() {
    let emu = servicenow(1300, 3, 40).await;
    let c = sn_client(&emu, OFFSET);
    let before = emu.stats().list_requests;
    let accounts = walk(&c, Entity::Account, req(500), |_| {}).await;
    // X-Total-Count ends the walk on the last (short) page: no extra empty request.
    assert_eq!(emu.stats().list_requests - before, 3);
    assert_eq!(accounts.pages, 3);
    let contacts = walk(&c, Entity::Contact, req(500), |_| {}).await;
    assert_eq!(
        unique(&accounts.records, "sys_id"),
        emu.ids("customer_account").into_iter().collect()
    );
    assert_eq!(
        unique(&contacts.records, "sys_id"),
        emu.ids("customer_contact").into_iter().collect()
    );
    assert_eq!(contacts.records.len(), 1300 * 3 + 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_catch_up_reads_what_changed() {
    let emu = servicenow(300, 0, 0).await;
    let c = sn_client(&emu, LINK);
    let started = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .expect("trunc");
    let all = emu.ids("customer_account");
    let changed: HashSet<String> = [3usize, 77, 150, 299]
        .iter()
        .map(|i| all[*i].clone())
        .collect();
    for id in &changed {
        let mut f = Map::new();
        f.insert("name".into(), json!("Changed"));
        emu.update(id, f).expect("update");
    }
    let catch_up = walk(
        &c,
        Entity::Account,
        PageRequest {
            page_size: 2,
            modified_since: Some(started),
            ..PageRequest::default()
        },
        |_| {},
    )
    .await;
    assert_eq!(unique(&catch_up.records, "sys_id"), changed);
    assert_eq!(catch_up.pages, 2);
    assert!(
        catch_up
            .records
            .iter()
            .all(|r| r["name"] == json!("Changed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_fetch_by_ids_reports_missing() {
    let emu = servicenow(150, 1, 0).await;
    let c = sn_client(&emu, &[SINGLE_FETCH]);
    let mut wanted = emu.ids("customer_account");
    let gone = wanted[3].clone();
    assert!(emu.delete(&gone));
    wanted.push("0".repeat(32));
    wanted.push("x^ORsys_id!=0".into()); // not an id: never sent (id_chars)
    let before = emu.stats().list_requests;
    let got = c
        .fetch_by_ids(Entity::Account, &wanted)
        .await
        .expect("fetch");
    assert_eq!(got.records.len(), 149);
    assert_eq!(
        got.missing,
        vec![gone, "0".repeat(32), "x^ORsys_id!=0".to_string()]
    );
    assert_eq!(
        ids(&got.records, "sys_id"),
        wanted[..150]
            .iter()
            .filter(|i| **i != got.missing[0])
            .cloned()
            .collect::<Vec<_>>()
    );
    // 151 askable ids in batches of 100.
    assert_eq!(emu.stats().list_requests - before, 2);
    assert!(got.records.iter().all(|r| r.get("name").is_some()));

    // Contacts fetch one by one ({id}); a 404 is a missing id.
    let contacts = emu.ids("customer_contact");
    assert!(emu.delete(&contacts[1]));
    let got = c
        .fetch_by_ids(Entity::Contact, &contacts[..3])
        .await
        .expect("fetch");
    assert_eq!(
        ids(&got.records, "sys_id"),
        [contacts[0].clone(), contacts[2].clone()]
    );
    assert_eq!(got.missing, [contacts[1].clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_rate_limit_slows_but_loses_nothing() {
    let emu = servicenow(600, 0, 0).await;
    emu.set_rate_limit(Some((2, Duration::from_secs(1))));
    let c = sn_client(&emu, LINK);
    let w = walk(&c, Entity::Account, req(100), |_| {}).await;
    assert!(!w.rate_limited.is_empty(), "the limit was never hit");
    assert_eq!(w.pages, 6);
    assert_eq!(
        unique(&w.records, "sys_id"),
        emu.ids("customer_account").into_iter().collect()
    );
    assert!(emu.stats().by_status.get(&429).copied().unwrap_or(0) > 0);
}

#[tokio::test]
async fn servicenow_wrong_password_is_access_without_the_secret() {
    let emu = servicenow(3, 1, 0).await;
    let secret = "Sup3r-Secret-Pa55";
    let cfg = servicenow_config(&emu.base_url(), secret, &[]);
    assert!(!format!("{cfg:?}").contains(secret));
    let c = GenericClient::new(cfg, sn_fields()).expect("client");
    for err in [
        c.list_page(Entity::Account, &req(10))
            .await
            .expect_err("refused"),
        c.fetch_by_ids(Entity::Account, &emu.ids("customer_account"))
            .await
            .expect_err("refused"),
    ] {
        assert!(matches!(err, CrmError::Access(_)), "{err:?}");
        assert!(!err.is_retryable());
        assert!(!err.to_string().contains(secret));
        assert!(!format!("{err:?}").contains(secret));
    }
    assert!(!format!("{c:?}").contains(secret));
}

#[tokio::test]
async fn servicenow_poisoned_cursor_sends_nothing() {
    let emu = servicenow(12, 0, 0).await;
    let c = sn_client(&emu, LINK);
    let before = emu.stats().requests;
    for cursor in [
        "https://evil.example/api/now/table/customer_account",
        "http://localhost:1/api/now/table/customer_account",
    ] {
        let poisoned = PageRequest {
            cursor: Some(cursor.into()),
            ..req(5)
        };
        let err = c
            .list_page(Entity::Account, &poisoned)
            .await
            .expect_err("refused");
        assert!(
            matches!(&err, CrmError::Permanent(m) if m.contains("another host")),
            "{err:?}"
        );
    }
    assert_eq!(emu.stats().requests, before, "nothing was sent");
}

// ---------------------------------------------------------------------------------------------
// Salesforce emulator as a generic CRM

/// The Salesforce REST API as a generic REST CRM, as a user writes it; tests swap in the
/// emulator's URL and connected app.
const SALESFORCE_EXAMPLE: &str = r#"
[[sources]]
id = "salesforce-rest"
kind = "generic"
crm_choice = 100000001
base_url = "https://acme.my.salesforce.com"

[sources.connection]
auth = "generic-rest"
# The org's instance URL (what the token response calls instance_url).
base_url = "https://acme.my.salesforce.com"
# ORDER BY SystemModstamp: a walk whose query cursor died resumes at its checkpoint.
sorted_by_modified = true
headers = { "Sforce-Query-Options" = "batchSize=2000" }

[sources.connection.credentials]
type = "oauth_client_credentials"
token_url = "https://acme.my.salesforce.com/services/oauth2/token"
client_id = "3MVG9-consumer-key"
client_secret = "env:SALESFORCE_CLIENT_SECRET"

[sources.connection.paging]
style = "next_link_body"
next = "/nextRecordsUrl"
done = "/done"
total = "/totalSize"
cursor_expired = { status = 400, body_contains = "INVALID_QUERY_LOCATOR" }

[sources.connection.account]
list_url = "/services/data/v62.0/query?q=SELECT {fields} FROM Account ORDER BY SystemModstamp, Id"
since_url = "/services/data/v62.0/query?q=SELECT {fields} FROM Account WHERE SystemModstamp >= {modified_since} ORDER BY SystemModstamp, Id"
records = "/records"
id = "/Id"
modified = "/SystemModstamp"
fetch_url = "/services/data/v62.0/composite/sobjects/Account?ids={ids}&fields={fields}"
fetch_records = ""
fetch_batch = 200
# Names the mapping reads that are not SOQL columns.
skip_fields = ["BillingAddress", "ShippingAddress", "ChangeEventHeader"]
id_chars = ""

[sources.connection.contact]
list_url = "/services/data/v62.0/query?q=SELECT {fields} FROM Contact ORDER BY SystemModstamp, Id"
since_url = "/services/data/v62.0/query?q=SELECT {fields} FROM Contact WHERE SystemModstamp >= {modified_since} ORDER BY SystemModstamp, Id"
records = "/records"
id = "/Id"
modified = "/SystemModstamp"
fetch_url = "/services/data/v62.0/composite/sobjects/Contact?ids={ids}&fields={fields}"
fetch_records = ""
fetch_batch = 200
skip_fields = ["MailingAddress", "OtherAddress", "ChangeEventHeader"]
id_chars = ""
"#;

fn salesforce_config(emu_url: &str, client_id: &str, secret: &str, batch: u32) -> GenericConfig {
    let text = SALESFORCE_EXAMPLE
        .replace("https://acme.my.salesforce.com", emu_url)
        .replace("3MVG9-consumer-key", client_id)
        .replace("env:SALESFORCE_CLIENT_SECRET", secret)
        .replace("batchSize=2000", &format!("batchSize={batch}"));
    let cfg = connection_of(&text);
    cfg.validate().expect("valid");
    cfg
}

fn sf_fields() -> HashMap<Entity, Vec<String>> {
    HashMap::from([
        (
            Entity::Account,
            [
                "Name",
                "Phone",
                "BillingCity",
                "BillingAddress",
                "ChangeEventHeader",
            ]
            .map(String::from)
            .to_vec(),
        ),
        (
            Entity::Contact,
            ["FirstName", "LastName", "Email", "AccountId"]
                .map(String::from)
                .to_vec(),
        ),
    ])
}

async fn salesforce(accounts: usize, per: usize, orphans: usize) -> SalesforceEmulator {
    SalesforceEmulator::start(SalesforceConfig {
        accounts,
        contacts_per_account: per,
        orphan_contacts: orphans,
        ..SalesforceConfig::default()
    })
    .await
    .expect("emulator starts")
}

fn sf_client(emu: &SalesforceEmulator, batch: u32) -> GenericClient {
    let cfg = emu.config();
    GenericClient::new(
        salesforce_config(&emu.base_url(), &cfg.client_id, &cfg.client_secret, batch),
        sf_fields(),
    )
    .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_next_link_walk_is_exact() {
    let emu = salesforce(2600, 3, 50).await;
    let c = sf_client(&emu, 2000);
    let accounts = walk(&c, Entity::Account, req(2000), |_| {}).await;
    let contacts = walk(&c, Entity::Contact, req(2000), |_| {}).await;
    assert_eq!(accounts.records.len(), 2600);
    assert_eq!(contacts.records.len(), 2600 * 3 + 50);
    assert_eq!(
        unique(&accounts.records, "Id"),
        emu.ids("Account").into_iter().collect()
    );
    assert_eq!(
        unique(&contacts.records, "Id"),
        emu.ids("Contact").into_iter().collect()
    );
    let a = &accounts.records[0];
    assert!(a.get("Name").is_some() && a.get("SystemModstamp").is_some());
    assert!(a.get("BillingAddress").is_none());
    // One session; 2 + 4 pages.
    let st = emu.stats();
    assert_eq!(st.sessions, 1);
    assert_eq!(st.queries, 2);
    assert_eq!(st.query_more, 1 + 3);
    let first = c
        .list_page(Entity::Account, &req(2000))
        .await
        .expect("page");
    assert_eq!(first.total, Some(2600));
    assert!(
        first
            .cursor
            .as_deref()
            .unwrap_or("")
            .starts_with(&emu.base_url())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_token_refresh_and_dead_cursor_resume() {
    let emu = salesforce(1500, 1, 0).await;
    let c = sf_client(&emu, 200);
    // Sessions (and with them cursors) die after page 2: the next request gets a 401, a new
    // token, then INVALID_QUERY_LOCATOR, and the walk resumes at the checkpoint's time.
    let w = walk(&c, Entity::Account, req(200), |page| {
        if page == 2 {
            emu.expire_sessions();
        }
    })
    .await;
    assert_eq!(w.restarts, 1);
    assert_eq!(emu.stats().sessions, 2, "one new token after the 401");
    let seen: HashSet<String> = ids(&w.records, "Id").into_iter().collect();
    assert_eq!(seen, emu.ids("Account").into_iter().collect::<HashSet<_>>());
    // Only records at the checkpoint's second are read twice.
    let extra = w.records.len() - 1500;
    assert!(extra < 20, "{extra} records read twice");

    // Fetch by id after another expiry: one more token, same answer.
    emu.expire_sessions();
    let wanted = emu.ids("Contact")[..250].to_vec();
    let got = c
        .fetch_by_ids(Entity::Contact, &wanted)
        .await
        .expect("fetch");
    assert_eq!(ids(&got.records, "Id"), wanted);
    assert!(got.missing.is_empty());
    assert_eq!(emu.stats().sessions, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_fetch_reports_missing() {
    let emu = salesforce(10, 30, 0).await;
    let c = sf_client(&emu, 2000);
    let all = emu.ids("Contact");
    let gone = all[2].clone();
    assert!(emu.delete(&gone));
    let mut wanted = all[..250].to_vec();
    wanted.push("003Dn0000000zzzAAA".into());
    wanted.push("x' OR Id != '".into());
    let got = c
        .fetch_by_ids(Entity::Contact, &wanted)
        .await
        .expect("fetch");
    assert_eq!(got.records.len(), 249);
    assert_eq!(
        got.missing,
        vec![gone, "003Dn0000000zzzAAA".into(), "x' OR Id != '".into()]
    );
    assert!(got.records.iter().all(|r| r.get("LastName").is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_foreign_next_link_is_refused() {
    let emu = salesforce(500, 0, 0).await;
    let c = sf_client(&emu, 200);
    emu.set_next_records_origin(Some("http://evil.example:8080".into()));
    match c.list_page(Entity::Account, &req(200)).await {
        Err(CrmError::Permanent(m)) => assert!(m.contains("another host"), "{m}"),
        other => panic!("expected Permanent, got {other:?}"),
    }
    emu.set_next_records_origin(None);
    let before = emu.stats().requests;
    let poisoned = PageRequest {
        cursor: Some("https://evil.example/services/data/v62.0/query/01gX-200".into()),
        ..req(200)
    };
    assert!(matches!(
        c.list_page(Entity::Account, &poisoned).await,
        Err(CrmError::Permanent(_))
    ));
    assert_eq!(emu.stats().requests, before, "nothing was sent anywhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_wrong_secret_is_access_without_the_secret() {
    let emu = salesforce(1, 0, 0).await;
    let secret = "wrong-secret-xyz";
    let cfg = salesforce_config(&emu.base_url(), &emu.config().client_id, secret, 2000);
    let c = GenericClient::new(cfg, sf_fields()).expect("client");
    match c.list_page(Entity::Account, &req(10)).await {
        Err(CrmError::Access(m)) => {
            assert!(m.contains("invalid_client"), "{m}");
            assert!(!m.contains(secret));
        }
        other => panic!("expected Access, got {other:?}"),
    }
    assert!(!format!("{c:?}").contains(secret));
}

// ---------------------------------------------------------------------------------------------
// A stub CRM for what the emulators do not do

#[derive(Default)]
struct Stub {
    /// Where rel="next" links of /v1/links point (another origin).
    foreign: Mutex<String>,
    requests: AtomicU64,
    token_requests: AtomicU64,
    tokens: Mutex<HashSet<String>>,
    /// Tokens issued with this expires_in.
    expires_in: AtomicU64,
    revoked: AtomicBool,
}

const API_KEY: &str = "k3y-Secret-0042";
const RECORDS: usize = 23;

fn stub_record(i: usize) -> Value {
    json!({ "id": i + 1, "props": { "updated": format!("2024-01-01T00:00:{:02}Z", i), "name": format!("n{i}") } })
}

fn authorised(st: &Stub, h: &HeaderMap) -> bool {
    let key = h.get("x-api-key").and_then(|v| v.to_str().ok());
    let bearer = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    key == Some(API_KEY)
        || bearer.is_some_and(|t| {
            !st.revoked.load(Ordering::SeqCst) && st.tokens.lock().unwrap().contains(t)
        })
}

fn param(q: &HashMap<String, String>, k: &str) -> usize {
    q.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

async fn stub_router(st: Arc<Stub>) -> Router {
    let deny = || {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "bad key"})),
        )
            .into_response()
    };
    Router::new()
        // Cursor paging: {results, paging: {next: {after}}}.
        .route(
            "/v1/contacts",
            get(move |State(st): State<Arc<Stub>>, h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                st.requests.fetch_add(1, Ordering::SeqCst);
                if !authorised(&st, &h) {
                    return deny();
                }
                let (after, limit) = (param(&q, "after"), param(&q, "limit").max(1));
                let end = (after + limit).min(RECORDS);
                let results: Vec<Value> = (after..end).map(stub_record).collect();
                let mut body = json!({ "results": results });
                if end < RECORDS {
                    body["paging"] = json!({ "next": { "after": end.to_string() } });
                }
                Json(body).into_response()
            }),
        )
        // Offset paging without a total; serves at most 7 per page whatever is asked.
        .route(
            "/v1/companies",
            get(move |State(st): State<Arc<Stub>>, h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                st.requests.fetch_add(1, Ordering::SeqCst);
                if !authorised(&st, &h) {
                    return deny();
                }
                let (offset, limit) = (param(&q, "offset"), param(&q, "limit").clamp(1, 7));
                let results: Vec<Value> = (offset..(offset + limit).min(RECORDS)).map(stub_record).collect();
                Json(json!({ "data": results })).into_response()
            }),
        )
        .route(
            "/v1/companies/{id}",
            get(move |State(st): State<Arc<Stub>>, h: HeaderMap, Path(id): Path<String>| async move {
                st.requests.fetch_add(1, Ordering::SeqCst);
                if !authorised(&st, &h) {
                    return deny();
                }
                match id.parse::<usize>() {
                    Ok(n) if (1..=RECORDS).contains(&n) => Json(json!({ "data": stub_record(n - 1) })).into_response(),
                    _ => (StatusCode::NOT_FOUND, Json(json!({"message": "no such company"}))).into_response(),
                }
            }),
        )
        // Link header pointing at another origin.
        .route(
            "/v1/links",
            get(move |State(st): State<Arc<Stub>>| async move {
                st.requests.fetch_add(1, Ordering::SeqCst);
                let foreign = st.foreign.lock().unwrap().clone();
                let mut res = Json(json!({ "data": [stub_record(0)] })).into_response();
                res.headers_mut().insert(
                    "Link",
                    format!("<{foreign}/v1/links?page=2>; rel=\"next\"").parse().unwrap(),
                );
                res
            }),
        )
        .route(
            "/v1/error/{kind}",
            get(move |Path(kind): Path<String>| async move {
                let reset = (Utc::now().timestamp() + 2).to_string();
                let date = (Utc::now() + chrono::Duration::seconds(2)).to_rfc2822().replace("+0000", "GMT");
                let mut res = match kind.as_str() {
                    "limited" => (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response(),
                    "down" => (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response(),
                    "echo" => (StatusCode::BAD_REQUEST, format!("{{\"message\": \"bad filter\", \"key\": \"{API_KEY}\"}}")).into_response(),
                    "html" => (StatusCode::OK, "<html>not json</html>").into_response(),
                    "shape" => Json(json!({ "data": { "not": "an array" } })).into_response(),
                    "self" => (
                        [("Link", "</v1/error/self>; rel=\"next\"")],
                        Json(json!({ "data": [stub_record(0)] })),
                    )
                        .into_response(),
                    "redirect" => (StatusCode::FOUND, [("Location", "https://evil.example/")], "").into_response(),
                    _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                };
                match kind.as_str() {
                    "limited" => {
                        res.headers_mut().insert("X-RateLimit-Reset", reset.parse().unwrap());
                    }
                    "down" => {
                        res.headers_mut().insert("Retry-After", date.parse().unwrap());
                    }
                    _ => {}
                }
                res
            }),
        )
        .route(
            "/oauth/token",
            post(move |State(st): State<Arc<Stub>>, Form(f): Form<HashMap<String, String>>| async move {
                st.token_requests.fetch_add(1, Ordering::SeqCst);
                if f.get("grant_type").map(String::as_str) != Some("client_credentials")
                    || f.get("client_secret").map(String::as_str) != Some("cs-Secret-77")
                {
                    return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client", "error_description": "bad secret"}))).into_response();
                }
                let token = format!("at-{}", st.token_requests.load(Ordering::SeqCst));
                st.tokens.lock().unwrap().insert(token.clone());
                st.revoked.store(false, Ordering::SeqCst);
                Json(json!({ "access_token": token, "token_type": "Bearer", "expires_in": st.expires_in.load(Ordering::SeqCst) })).into_response()
            }),
        )
        .with_state(st)
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://127.0.0.1:{port}")
}

async fn stub() -> (Arc<Stub>, String) {
    let st = Arc::new(Stub::default());
    st.expires_in.store(3600, Ordering::SeqCst);
    let base = serve(stub_router(st.clone()).await).await;
    (st, base)
}

/// The stub as a generic CRM: `paging` and `credentials` tables, and the two entities' URLs.
fn stub_toml(base: &str, credentials: &str, paging: &str, account: &str, contact: &str) -> String {
    format!(
        r#"
base_url = "{base}/v1"
[credentials]
{credentials}
[paging]
{paging}
[account]
{account}
id = "/id"
modified = "/props/updated"
[contact]
{contact}
id = "/id"
modified = "/props/updated"
"#
    )
}

const KEY_AUTH: &str = "type = \"header\"\nname = \"X-Api-Key\"\nvalue = \"k3y-Secret-0042\"";

#[tokio::test]
async fn stub_cursor_paging_reads_everything_once() {
    let (st, base) = stub().await;
    let text = stub_toml(
        &base,
        KEY_AUTH,
        "style = \"cursor\"\nnext = \"/paging/next/after\"",
        "list_url = \"/contacts?limit={page_size}&after={cursor}\"\nrecords = \"/results\"",
        "list_url = \"/contacts?limit={page_size}&after={cursor}\"\nrecords = \"/results\"",
    );
    let c = client(&text, HashMap::new());
    let w = walk(&c, Entity::Contact, req(5), |_| {}).await;
    assert_eq!(w.pages, 5);
    assert_eq!(unique(&w.records, "id").len(), RECORDS);
    assert_eq!(st.requests.load(Ordering::SeqCst), 5);
    let p = c.list_page(Entity::Contact, &req(20)).await.expect("page");
    assert_eq!(p.cursor.as_deref(), Some("20"));
    assert_eq!(p.checkpoint.expect("checkpoint").id, "20");

    // A wrong key: Access, and the key is nowhere.
    let wrong = text.replace(API_KEY, "Wr0ng-Key-999");
    let err = client(&wrong, HashMap::new())
        .list_page(Entity::Contact, &req(5))
        .await
        .expect_err("refused");
    assert!(matches!(err, CrmError::Access(_)), "{err:?}");
    assert!(!err.to_string().contains("Wr0ng-Key-999"));
}

#[tokio::test]
async fn stub_offset_without_total_survives_short_pages() {
    let (st, base) = stub().await;
    let list = "list_url = \"/companies?offset={offset}&limit={page_size}\"\nrecords = \"/data\"\nfetch_url = \"/companies/{id}\"\nfetch_records = \"/data\"";
    let text = stub_toml(&base, KEY_AUTH, "style = \"offset\"", list, list);
    let c = client(&text, HashMap::new());
    // Asked for 10, served 7: every page is short, none is the end; the empty page is.
    let w = walk(&c, Entity::Account, req(10), |_| {}).await;
    assert_eq!(unique(&w.records, "id").len(), RECORDS);
    assert_eq!(w.pages, 5);
    assert_eq!(st.requests.load(Ordering::SeqCst), 5);

    // One by one, 404 is missing; ids that cannot be a path segment are missing unasked.
    let wanted: Vec<String> = ["3", "99", "..", "1"].map(String::from).to_vec();
    let got = c
        .fetch_by_ids(Entity::Account, &wanted)
        .await
        .expect("fetch");
    assert_eq!(ids(&got.records, "id"), ["3", "1"]);
    assert_eq!(got.missing, ["99", ".."]);
    assert_eq!(st.requests.load(Ordering::SeqCst), 5 + 3);
}

#[tokio::test]
async fn stub_foreign_link_header_is_never_followed() {
    let (st, base) = stub().await;
    let foreign_hits = Arc::new(AtomicU64::new(0));
    let hits = foreign_hits.clone();
    let foreign = serve(Router::new().fallback(move || {
        hits.fetch_add(1, Ordering::SeqCst);
        async { Json(json!({ "data": [] })) }
    }))
    .await;
    *st.foreign.lock().unwrap() = foreign.clone();
    let list = "list_url = \"/links\"\nrecords = \"/data\"";
    let c = client(
        &stub_toml(&base, KEY_AUTH, "style = \"link_header\"", list, list),
        HashMap::new(),
    );
    let err = c
        .list_page(Entity::Account, &req(5))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, CrmError::Permanent(m) if m.contains("another host")),
        "{err:?}"
    );
    // Handing the foreign link back as a cursor does not send it either.
    let poisoned = PageRequest {
        cursor: Some(format!("{foreign}/v1/links?page=2")),
        ..req(5)
    };
    assert!(matches!(
        c.list_page(Entity::Account, &poisoned).await,
        Err(CrmError::Permanent(_))
    ));
    assert_eq!(
        foreign_hits.load(Ordering::SeqCst),
        0,
        "the foreign host was contacted"
    );
}

#[tokio::test]
async fn stub_error_shapes() {
    let (_st, base) = stub().await;
    let make = |kind: &str| {
        let list = format!("list_url = \"/error/{kind}\"\nrecords = \"/data\"");
        client(
            &stub_toml(&base, KEY_AUTH, "style = \"link_header\"", &list, &list),
            HashMap::new(),
        )
    };
    let err = |kind: &'static str| {
        let c = make(kind);
        async move { c.list_page(Entity::Account, &req(5)).await.expect_err(kind) }
    };
    match err("limited").await {
        CrmError::RateLimited(d) => assert!(
            d >= Duration::from_secs(1) && d <= Duration::from_secs(3),
            "{d:?}"
        ),
        other => panic!("limited: {other:?}"),
    }
    match err("down").await {
        CrmError::RateLimited(d) => assert!(
            d >= Duration::from_secs(1) && d <= Duration::from_secs(3),
            "{d:?}"
        ),
        other => panic!("down: {other:?}"),
    }
    match err("echo").await {
        CrmError::Permanent(m) => {
            assert!(m.contains("400") && m.contains("bad filter"), "{m}");
            assert!(!m.contains(API_KEY), "{m}");
        }
        other => panic!("echo: {other:?}"),
    }
    assert!(matches!(err("html").await, CrmError::Permanent(m) if m.contains("not JSON")));
    assert!(
        matches!(err("shape").await, CrmError::Permanent(m) if m.contains("account.records") && m.contains("/data"))
    );
    assert!(matches!(err("redirect").await, CrmError::Permanent(m) if m.contains("redirect")));
    assert!(matches!(err("boom").await, CrmError::Unavailable(_)));
    // A next link to the page just read would loop forever.
    let looping = make("self");
    let first = looping
        .list_page(Entity::Account, &req(5))
        .await
        .expect("first");
    let again = PageRequest {
        cursor: first.cursor,
        ..req(5)
    };
    let e = looping
        .list_page(Entity::Account, &again)
        .await
        .expect_err("loop");
    assert!(
        matches!(&e, CrmError::Permanent(m) if m.contains("page just read")),
        "{e:?}"
    );
    // No fetch_url: a permanent error that says so.
    let e = make("x")
        .fetch_by_ids(Entity::Account, &["1".into()])
        .await
        .expect_err("no fetch");
    assert!(
        matches!(&e, CrmError::Permanent(m) if m.contains("account.fetch_url")),
        "{e:?}"
    );
    // Nothing listening: unavailable, retryable.
    let dead = client(
        &stub_toml(
            "http://127.0.0.1:9",
            KEY_AUTH,
            "style = \"link_header\"",
            "list_url = \"/x\"\nrecords = \"/d\"",
            "list_url = \"/x\"\nrecords = \"/d\"",
        ),
        HashMap::new(),
    );
    let e = dead
        .list_page(Entity::Account, &req(5))
        .await
        .expect_err("down");
    assert!(
        matches!(e, CrmError::Unavailable(_)) && e.is_retryable(),
        "{e:?}"
    );
}

#[tokio::test]
async fn stub_oauth_token_is_cached_renewed_and_refetched_on_401() {
    let (st, base) = stub().await;
    let oauth = format!(
        "type = \"oauth_client_credentials\"\ntoken_url = \"{base}/oauth/token\"\nclient_id = \"app\"\nclient_secret = \"cs-Secret-77\"\nscope = \"crm.read\""
    );
    let list = "list_url = \"/contacts?limit={page_size}&after={cursor}\"\nrecords = \"/results\"";
    let paging = "style = \"cursor\"\nnext = \"/paging/next/after\"";
    let c = client(
        &stub_toml(&base, &oauth, paging, list, list),
        HashMap::new(),
    );
    let w = walk(&c, Entity::Contact, req(10), |_| {}).await;
    assert_eq!(w.records.len(), RECORDS);
    assert_eq!(
        st.token_requests.load(Ordering::SeqCst),
        1,
        "one token for the walk"
    );
    // Revoked: a 401, one new token, the request succeeds.
    st.revoked.store(true, Ordering::SeqCst);
    c.list_page(Entity::Contact, &req(5))
        .await
        .expect("after revocation");
    assert_eq!(st.token_requests.load(Ordering::SeqCst), 2);
    // Short-lived tokens are replaced before they expire, without a 401.
    st.expires_in.store(1, Ordering::SeqCst);
    st.revoked.store(true, Ordering::SeqCst);
    c.list_page(Entity::Contact, &req(5))
        .await
        .expect("renewed");
    assert_eq!(st.token_requests.load(Ordering::SeqCst), 3);
    let before = st.requests.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.list_page(Entity::Contact, &req(5))
        .await
        .expect("renewed");
    assert_eq!(st.token_requests.load(Ordering::SeqCst), 4);
    assert_eq!(
        st.requests.load(Ordering::SeqCst),
        before + 1,
        "no 401 round trip"
    );
    // A wrong secret: Access, secret absent.
    let bad = stub_toml(
        &base,
        &oauth.replace("cs-Secret-77", "cs-Wrong-11"),
        paging,
        list,
        list,
    );
    let e = client(&bad, HashMap::new())
        .list_page(Entity::Contact, &req(5))
        .await
        .expect_err("refused");
    assert!(
        matches!(&e, CrmError::Access(m) if m.contains("invalid_client") && !m.contains("cs-Wrong-11")),
        "{e:?}"
    );
}
