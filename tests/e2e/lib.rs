//! What the end-to-end tests share: a Web API client for a Dataverse emulator, and the local
//! pipeline over in-process queues, configured alike in every scenario.

use std::sync::Arc;
use std::time::Duration;

use dataverse::{Secret, WebApiClient, WebApiConfig, WriteMode};
use dataverse_emulator::Emulator;
use pipeline::MemoryQueueConfig;
use pipeline::runner::{LocalPipeline, LocalQueues};
use pipeline::sources::Sources;
use pipeline::sync::{Crms, SyncSettings};
use pipeline::upsert::UpsertPolicy;

/// The production client, pointed at the emulator with its default credentials.
pub fn dataverse_client(dv: &Emulator) -> WebApiClient {
    WebApiClient::new(WebApiConfig {
        api_url: dv.api_url(),
        token_url: dv.token_url(),
        client_id: "client-1".into(),
        client_secret: Secret::new("secret-1"),
        client_certificate: None,
        scope: format!("{}/.default", dv.base_url()),
        mode: WriteMode::Auto,
        max_concurrency: 16,
        request_timeout: Duration::from_secs(10),
        max_attempts: 5,
        max_throttle_wait: Duration::from_secs(30),
    })
    .expect("emulator URLs are valid")
}

/// The three steps over in-process queues, writing to `dv`.
pub fn local_pipeline(
    sources: Sources,
    crms: Crms,
    dv: &Emulator,
    page_size: u32,
) -> LocalPipeline {
    LocalPipeline {
        sources: Arc::new(sources),
        crms,
        writer: Arc::new(dataverse_client(dv)),
        queues: LocalQueues::new(MemoryQueueConfig::default()),
        settings: SyncSettings {
            page_size,
            ..SyncSettings::default()
        },
        policy: UpsertPolicy {
            parent_retries: 5,
            parent_delay: Duration::from_millis(50),
        },
        batch_size: 10,
        recent: Default::default(),
    }
}
