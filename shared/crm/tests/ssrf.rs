//! Server-side request forgery (issue 8): every URL a CRM hands back for us to call with our
//! credentials (Salesforce's token-response `instance_url` and `nextRecordsUrl`, HubSpot's
//! `paging.next.link`, Zendesk's `links.next`, a cursor that is a URL) is refused when it points
//! to another host, to a cloud metadata address (169.254.169.254, `fd00:ec2::254`) or to plain
//! http; and a refusal sends nothing anywhere. The per-CRM tests show another host refused; this
//! file adds the metadata addresses and the token response.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::{any, post};
use crm::hubspot::{HubSpotClient, HubSpotSettings};
use crm::salesforce::{SalesforceClient, SalesforceSettings};
use crm::servicenow::{ServiceNowClient, ServiceNowSettings};
use crm::zendesk::{ZendeskAuth, ZendeskClient, ZendeskSettings};
use crm::{CrmError, CrmReader, PageRequest};
use crm_emulator::{
    HubSpotConfig, HubSpotEmulator, SalesforceConfig, SalesforceEmulator, ServiceNowConfig,
    ServiceNowEmulator, ZendeskConfig, ZendeskEmulator,
};
use mapping::Entity;
use serde_json::json;

/// Origins a hostile or broken CRM response might point us to.
const HOSTILE_ORIGINS: [&str; 6] = [
    "http://169.254.169.254",
    "https://169.254.169.254",
    "http://[fd00:ec2::254]",
    "https://[fd00:ec2::254]",
    "http://2852039166",
    "https://evil.example",
];

fn fields() -> HashMap<Entity, Vec<String>> {
    HashMap::from([(Entity::Account, vec!["name".to_string()])])
}

fn req(size: u32) -> PageRequest {
    PageRequest {
        page_size: size,
        ..PageRequest::default()
    }
}

fn assert_refused(r: Result<crm::Page, CrmError>, what: &str) {
    match r {
        Err(CrmError::Permanent(_)) => {}
        other => panic!("{what}: expected a permanent refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_next_records_urls_to_metadata_addresses_are_refused() {
    let emu = SalesforceEmulator::start(SalesforceConfig {
        accounts: 500,
        contacts_per_account: 0,
        ..SalesforceConfig::default()
    })
    .await
    .unwrap();
    let cfg = emu.config();
    let c = SalesforceClient::new(
        SalesforceSettings::new(&emu.token_url(), &cfg.client_id, &cfg.client_secret),
        HashMap::new(),
    )
    .unwrap();
    // Salesforce pages hold at least 200 records (`batchSize` is 200 to 2,000).
    for origin in HOSTILE_ORIGINS {
        emu.set_next_records_origin(Some(origin.into()));
        assert_refused(c.list_page(Entity::Account, &req(200)).await, origin);
        emu.set_next_records_origin(None);
        let before = emu.stats().requests;
        let poisoned = PageRequest {
            cursor: Some(format!("{origin}/services/data/v62.0/query/01gX-200")),
            ..req(200)
        };
        assert_refused(c.list_page(Entity::Account, &poisoned).await, origin);
        assert_eq!(emu.stats().requests, before, "{origin}: something was sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_next_links_to_metadata_addresses_are_refused() {
    let emu = HubSpotEmulator::start(HubSpotConfig {
        companies: 30,
        contacts_per_company: 0,
        ..HubSpotConfig::default()
    })
    .await
    .unwrap();
    let c = HubSpotClient::new(
        HubSpotSettings::new(&emu.base_url(), &emu.config().token.clone()),
        fields(),
    )
    .unwrap();
    for origin in HOSTILE_ORIGINS {
        emu.set_next_link_base(Some(origin));
        assert_refused(c.list_page(Entity::Account, &req(10)).await, origin);
        emu.set_next_link_base(None);
        let before = emu.stats().requests;
        let poisoned = PageRequest {
            cursor: Some(format!("{origin}/crm/v3/objects/companies?after=10")),
            ..req(10)
        };
        assert_refused(c.list_page(Entity::Account, &poisoned).await, origin);
        assert_eq!(emu.stats().requests, before, "{origin}: something was sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_next_links_to_metadata_addresses_are_refused() {
    let emu = ZendeskEmulator::start(ZendeskConfig {
        organizations: 30,
        users_per_organization: 0,
        users_without_organization: 0,
        agents: 1,
        export_rate_limit: None,
        ..ZendeskConfig::default()
    })
    .await
    .unwrap();
    let cfg = emu.config();
    let c = ZendeskClient::new(
        ZendeskSettings::new(
            &emu.base_url(),
            ZendeskAuth::api_token(&cfg.email, &cfg.api_token),
        ),
        fields(),
    )
    .unwrap();
    for origin in HOSTILE_ORIGINS {
        emu.set_link_base(Some(origin));
        assert_refused(c.list_page(Entity::Account, &req(10)).await, origin);
        emu.set_link_base(None);
        let before = emu.stats().requests;
        let poisoned = PageRequest {
            cursor: Some(format!(
                "{origin}/api/v2/organizations.json?page%5Bsize%5D=10"
            )),
            ..req(10)
        };
        assert_refused(c.list_page(Entity::Account, &poisoned).await, origin);
        assert_eq!(emu.stats().requests, before, "{origin}: something was sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_link_cursors_to_metadata_addresses_are_refused() {
    let emu = ServiceNowEmulator::start(ServiceNowConfig::default())
        .await
        .unwrap();
    let cfg = emu.config();
    let c = ServiceNowClient::new(
        ServiceNowSettings::new(&emu.base_url(), &cfg.user, &cfg.password),
        fields(),
    )
    .unwrap();
    for origin in HOSTILE_ORIGINS {
        let before = emu.stats().requests;
        let poisoned = PageRequest {
            cursor: Some(format!("{origin}/api/now/table/customer_account")),
            ..req(10)
        };
        assert_refused(c.list_page(Entity::Account, &poisoned).await, origin);
        assert_eq!(emu.stats().requests, before, "{origin}: something was sent");
    }
}

/// A Salesforce login host whose token response names `instance_url` (its own origin when
/// `None`); counts the requests that reach anything but the token endpoint.
async fn token_server(instance_url: Option<&str>) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let instance = instance_url.unwrap_or(&base).to_string();
    let other = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/services/oauth2/token",
            post(move || {
                let instance = instance.clone();
                async move {
                    axum::Json(
                        json!({"access_token": "00D!AR.token", "instance_url": instance,
                        "token_type": "Bearer", "issued_at": "1700000000000"}),
                    )
                }
            }),
        )
        .fallback(any(|State(n): State<Arc<AtomicUsize>>| async move {
            n.fetch_add(1, Ordering::SeqCst);
            axum::Json(json!({"totalSize": 0, "done": true, "records": []}))
        }))
        .with_state(other.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, other)
}

fn salesforce(base: &str) -> SalesforceClient {
    SalesforceClient::new(
        SalesforceSettings::new(&format!("{base}/services/oauth2/token"), "id", "secret"),
        HashMap::new(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_response_instance_url_elsewhere_is_refused_and_named() {
    // The control: the login host's own loopback origin (how the emulators answer) is used.
    let (base, calls) = token_server(None).await;
    let page = salesforce(&base).list_page(Entity::Account, &req(10)).await;
    assert!(page.is_ok(), "{page:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // A login host on loopback http may only send us to loopback: not to a metadata address,
    // not to a real Salesforce host (the configured scheme and class of host are kept).
    for instance in [
        "http://169.254.169.254",
        "https://169.254.169.254",
        "http://[fd00:ec2::254]",
        "https://[fd00:ec2::254]",
        "http://2852039166",
        "https://acme.my.salesforce.com",
        "http://acme.my.salesforce.com",
        "https://evil.example",
        "file:///etc/passwd",
    ] {
        let (base, calls) = token_server(Some(instance)).await;
        match salesforce(&base).list_page(Entity::Account, &req(10)).await {
            Err(CrmError::Permanent(m)) => {
                assert!(m.contains("instance_url"), "{instance}: {m}")
            }
            other => panic!("{instance}: expected a permanent refusal, got {other:?}"),
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "{instance}: a call was made"
        );
    }
}
