//! One crm-sync stack over real SQS: the queues of `template.yaml` on moto, the Salesforce and
//! Dataverse emulators, and the three functions' handlers (their library `handle`, with each
//! `App` built from the same configuration and clients as its `main.rs` builds it, pointed at
//! moto and the emulators) behind Lambda-like SQS event source mappings, plus an HTTP front
//! that turns the CRM's webhook requests into the API Gateway events the webhook function gets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use crm_emulator::{SalesforceConfig, SalesforceEmulator};
use crm_sync::emulated::{Comparison, Expected, compare};
use dataverse::{Secret, WebApiClient, WebApiConfig};
use dataverse_emulator::{Emulator, EmulatorConfig};
use mapping::SourceId;
use pipeline::config::Config;
use pipeline::sources::Sources;
use pipeline::sync::SyncSettings;
use pipeline::upsert::UpsertPolicy;
use serde_json::{Value, json};
use sqs::SqsQueue;

use crate::jobs_table::{create_jobs_table, dynamodb_client};
use crate::support::lambda::{
    EventSourceMapping, Invoke, apigw_v2_event, invoker, now_ms, wait_idle,
};
use crate::support::moto::{Deployment, Moto, Queues};
use ledger_dynamodb::DynamoLedger;

pub const SOURCE: &str = "salesforce";
pub const WEBHOOK_SECRET: &str = "e2e-contract-secret";

/// The upsert function's timeout in `template.yaml`: its invocations get this deadline.
const UPSERT_TIMEOUT_MS: u64 = 120_000;

#[derive(Debug, Clone)]
pub struct Options {
    pub accounts: usize,
    pub contacts_per_account: usize,
    pub orphan_contacts: usize,
    /// PAGE_SIZE of the initial-sync function (the Salesforce client reads at least 200).
    pub page_size: u32,
    pub deployment: Deployment,
    /// Attempts per Dataverse request inside one invocation (the client's default is 5).
    pub dataverse_attempts: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            accounts: 250,
            contacts_per_account: 2,
            orphan_contacts: 4,
            // The Salesforce client asks for batchSize=200, Salesforce's smallest.
            page_size: 200,
            deployment: Deployment::default(),
            dataverse_attempts: 5,
        }
    }
}

pub struct Stack {
    pub moto: Moto,
    pub queues: Queues,
    pub sf: SalesforceEmulator,
    pub dv: Emulator,
    pub mappers: Sources,
    pub upsert_app: Arc<dataverse_upsert::App>,
    pub sync_app: Arc<initial_sync::App>,
    pub webhook_app: Arc<webhook_fn::App>,
    /// The run ledger's table (`JobsTable`), on moto.
    pub jobs_table: String,
}

impl Stack {
    /// The run ledger, as the functions' `DynamoLedger::from_env` reaches it.
    pub fn ledger(&self) -> DynamoLedger {
        DynamoLedger::new(
            dynamodb_client(self.moto.endpoint()),
            self.jobs_table.clone(),
        )
    }
}

/// The event source mappings of `template.yaml`, scaled down: the upsert queue (BatchSize 10),
/// the retry queue (BatchSize 10) and the sync queue (BatchSize 1), each with at most two
/// concurrent invocations (the template allows 5, 2 and 2).
pub struct Mappings {
    pub upsert: EventSourceMapping,
    pub retry: EventSourceMapping,
    pub sync: EventSourceMapping,
}

impl Mappings {
    pub fn all(&self) -> [&EventSourceMapping; 3] {
        [&self.upsert, &self.retry, &self.sync]
    }
}

/// The configuration a user writes for Salesforce (demo.rs writes the same), pointed at the
/// emulator: one file for all three functions, as the template gives it to each.
pub fn config_toml(sf: &SalesforceEmulator, webhook_secret: &str) -> String {
    format!(
        r#"
[[sources]]
id = "{SOURCE}"
kind = "salesforce"
crm_choice = 1
base_url = "{base}"
[sources.connection]
auth = "salesforce-client-credentials"
token_url = "{token}"
client_id = "{id}"
client_secret = "{secret}"
[sources.webhook]
auth = "contract"
secret = "{webhook_secret}"
"#,
        base = sf.instance_url(),
        token = sf.token_url(),
        id = sf.config().client_id,
        secret = sf.config().client_secret,
    )
}

impl Stack {
    pub async fn start(opts: Options) -> Stack {
        let moto = Moto::start().await;
        let queues = moto.deployment(&opts.deployment).await;
        let sf = SalesforceEmulator::start(SalesforceConfig {
            accounts: opts.accounts,
            contacts_per_account: opts.contacts_per_account,
            orphan_contacts: opts.orphan_contacts,
            ..SalesforceConfig::default()
        })
        .await
        .expect("salesforce emulator");
        let dv = Emulator::start(EmulatorConfig::default())
            .await
            .expect("dataverse emulator");
        let config = Config::parse(&config_toml(&sf, WEBHOOK_SECRET), "e2e.toml").expect("config");
        let sqs = moto.client();
        let queue = |url: &str| Box::new(SqsQueue::new(sqs.clone(), url));
        let jobs_table = "crm-sync-e2e-jobs".to_string();
        let dynamodb = dynamodb_client(moto.endpoint());
        create_jobs_table(&dynamodb, &jobs_table).await;
        let ledger = || {
            Some(
                Box::new(DynamoLedger::new(dynamodb.clone(), jobs_table.clone()))
                    as Box<dyn pipeline::ledger::JobLedger>,
            )
        };

        // dataverse-upsert, as its main.rs builds it (DATAVERSE_URL, _TENANT, _CLIENT_ID,
        // _CLIENT_SECRET, _TOKEN_URL; RETRY_QUEUE_URL; DLQ_URL = the upsert DLQ).
        let mut dv_cfg = WebApiConfig::for_org(
            &dv.base_url(),
            "tenant-1",
            "client-1",
            Secret::new("secret-1"),
        );
        dv_cfg.token_url = dv.token_url();
        dv_cfg.max_attempts = opts.dataverse_attempts;
        let upsert_app = Arc::new(dataverse_upsert::App {
            metrics: Default::default(),
            ledger: ledger(),
            versions: Some(Box::new(ledger_dynamodb::DynamoVersions::new(
                dynamodb.clone(),
                jobs_table.clone(),
            ))),
            sources: config.mappers().expect("mappers"),
            writer: Box::new(WebApiClient::new(dv_cfg).expect("dataverse client")),
            retry: queue(&queues.retry.url),
            dlq: queue(&queues.upsert_dlq.url),
            refetch: Some(queue(&queues.sync.url)),
            origins: vec![queue(&queues.upsert.url), queue(&queues.retry.url)],
            policy: UpsertPolicy {
                // SQS delays are whole seconds: 1 s, 2 s, 4 s ... instead of 30 s, 60 s ...
                parent_delay: Duration::from_secs(1),
                // MAX_RECEIVE_COUNT, which the template sets from MaxReceiveCount.
                max_receives: Some(opts.deployment.max_receive_count),
                // Every redelivered page is re-read, however young, as the tests expect.
                refetch_after: Duration::ZERO,
                ..UpsertPolicy::default()
            },
        });

        // initial-sync (SYNC_QUEUE_URL, UPSERT_QUEUE_URL, SYNC_DLQ_URL, PAGE_SIZE).
        let sources = config.mappers().expect("mappers");
        let crms = config.crm_readers(&sources).expect("crm readers");
        let sync_app = Arc::new(initial_sync::App {
            metrics: Default::default(),
            ledger: ledger(),
            sources,
            crms,
            upsert: queue(&queues.upsert.url),
            sync: queue(&queues.sync.url),
            dlq: queue(&queues.sync_dlq.url),
            settings: SyncSettings {
                page_size: opts.page_size,
                max_receives: Some(opts.deployment.max_receive_count),
                ..SyncSettings::default()
            },
        });

        // webhook (UPSERT_QUEUE_URL, SYNC_QUEUE_URL, WEBHOOK_DLQ_URL).
        let webhook_app = Arc::new(webhook_fn::App {
            metrics: Default::default(),
            sources: config.sources().expect("sources with webhooks"),
            upsert: queue(&queues.upsert.url),
            sync: queue(&queues.sync.url),
            dlq: queue(&queues.webhook_dlq.url),
            recent: Default::default(),
        });

        Stack {
            mappers: config.mappers().expect("mappers"),
            moto,
            queues,
            sf,
            dv,
            upsert_app,
            sync_app,
            webhook_app,
            jobs_table,
        }
    }

    /// The dataverse-upsert function as Lambda invokes it: the SqsEvent JSON in, the batch
    /// response JSON out, with the deadline of a 120 s function.
    pub fn upsert_fn(&self) -> Invoke {
        let app = self.upsert_app.clone();
        invoker(move |event: Value| {
            let app = app.clone();
            async move {
                let event: SqsEvent =
                    serde_json::from_value(event).map_err(|e| format!("not an SqsEvent: {e}"))?;
                let r = dataverse_upsert::handle(&app, event, now_ms() + UPSERT_TIMEOUT_MS).await;
                serde_json::to_value(r).map_err(|e| e.to_string())
            }
        })
    }

    /// The initial-sync function as Lambda invokes it (any event JSON).
    pub fn sync_fn(&self) -> Invoke {
        let app = self.sync_app.clone();
        invoker(move |event: Value| {
            let app = app.clone();
            async move { initial_sync::handle(&app, event).await }
        })
    }

    pub fn start_mappings(&self) -> Mappings {
        let c = self.moto.client();
        Mappings {
            upsert: EventSourceMapping::start(
                c.clone(),
                &self.queues.upsert,
                10,
                2,
                self.upsert_fn(),
            ),
            retry: EventSourceMapping::start(
                c.clone(),
                &self.queues.retry,
                10,
                1,
                self.upsert_fn(),
            ),
            sync: EventSourceMapping::start(c, &self.queues.sync, 1, 2, self.sync_fn()),
        }
    }

    /// `aws lambda invoke` of initial-sync with `{"source": ..., "entities": [...]}`.
    pub async fn start_sync(&self) -> Value {
        (self.sync_fn())(json!({"source": SOURCE, "entities": ["account", "contact"]}))
            .await
            .expect("the sync starts")
    }

    /// Waits until the work queues (upsert, retry, sync) are empty and no invocation runs.
    pub async fn wait_idle(&self, mappings: &Mappings, limit: Duration) -> bool {
        wait_idle(&self.moto, &self.queues.work(), &mappings.all(), limit).await
    }

    /// Every live Salesforce record as Dataverse should hold it.
    pub fn expected(&self) -> Vec<Expected> {
        crm_sync::emulated::salesforce_expected(&self.sf)
    }

    /// Dataverse against the CRM, record for record.
    pub fn compare(&self) -> Comparison {
        let mapper = self
            .mappers
            .get(&SourceId::new(SOURCE).expect("source id"))
            .expect("the source is configured");
        compare(&self.expected(), &self.dv, mapper)
    }

    /// How many messages each dead-letter queue holds, by queue name.
    pub async fn dead_letters(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for q in self.queues.dead_letter() {
            out.push((q.name.clone(), self.moto.depth(q).await.total()));
        }
        out
    }

    pub async fn assert_no_dead_letters(&self) {
        let dl = self.dead_letters().await;
        assert!(dl.iter().all(|(_, n)| *n == 0), "dead letters: {dl:?}");
    }

    /// Serves `POST /webhooks/{source}` on 127.0.0.1: each request becomes the API Gateway
    /// (payload 2.0) event of the template's route, handed to the webhook function.
    pub async fn webhook_front(&self) -> WebhookFront {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding the webhook front");
        let addr = listener.local_addr().expect("its address");
        let app = Router::new()
            .route("/webhooks/{source}", post(front))
            .with_state(self.webhook_app.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookFront { addr, task }
    }
}

pub struct WebhookFront {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookFront {
    /// Where the CRM posts this source's notifications.
    pub fn url(&self) -> String {
        format!("http://{}/webhooks/{SOURCE}", self.addr)
    }
}

impl Drop for WebhookFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn front(
    State(app): State<Arc<webhook_fn::App>>,
    Path(source): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let event = apigw_v2_event(
        method.as_str(),
        "/webhooks/{source}",
        uri.path(),
        uri.query().unwrap_or(""),
        &[("source", &source)],
        &headers,
        &body,
    );
    let req = lambda_http::request::from_str(&event.to_string()).expect("an API Gateway v2 event");
    let (parts, body) = webhook_fn::handle(&app, req).await.into_parts();
    let bytes = match body {
        lambda_http::Body::Text(t) => t.into_bytes(),
        lambda_http::Body::Binary(b) => b,
        _ => Vec::new(),
    };
    (parts.status, parts.headers, bytes).into_response()
}
