//! The world `crm-sync serve` tests run in: the Dataverse and Salesforce emulators, a config
//! file a user would write pointed at them (secrets in files, by reference), a state file path,
//! and the record-for-record comparison of Dataverse with the CRM.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crm_emulator::{SalesforceConfig, SalesforceEmulator};
use crm_sync::emulated::{Expected, compare};
use crm_sync::jobs::{JobStatus, LocalState};
use crm_sync::serve::ServeOptions;
use crm_sync::sync_cmd::StartArgs;
use dataverse_emulator::{Emulator, EmulatorConfig};
use mapping::SourceId;
use pipeline::config::Config;
use serde_json::{Map, Value};

/// Secrets recognisable anywhere they might leak to (logs, outputs, queue messages).
pub const WEBHOOK_SECRET: &str = "hook-s3cret-Tn5Rb1Lq";
pub const DATAVERSE_SECRET: &str = "dv-s3cret-Qx7Zk2Wd";
pub const SALESFORCE_SECRET: &str = "sf-s3cret-Wm4Yp8Jc";

/// A fresh directory under the target's scratch space.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("serve-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct World {
    pub dv: Emulator,
    pub sf: SalesforceEmulator,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
}

impl World {
    /// The emulators, a config file pointing at them (secrets in files, by reference) and a
    /// state file path.
    pub async fn start(name: &str, accounts: usize) -> World {
        let dv = Emulator::start(EmulatorConfig {
            client_secret: DATAVERSE_SECRET.into(),
            ..EmulatorConfig::default()
        })
        .await
        .unwrap();
        let sf = SalesforceEmulator::start(SalesforceConfig {
            client_secret: SALESFORCE_SECRET.into(),
            accounts,
            contacts_per_account: 4,
            orphan_contacts: 7,
            daily_limit: 10_000_000,
            ..SalesforceConfig::default()
        })
        .await
        .unwrap();
        let dir = scratch(name);
        let secret = |file: &str, value: &str| {
            let p = dir.join(file);
            std::fs::write(&p, format!("{value}\n")).unwrap();
            p.display().to_string()
        };
        let dv_secret = secret("dataverse-secret", DATAVERSE_SECRET);
        let sf_secret = secret("salesforce-secret", &sf.config().client_secret);
        let hook_secret = secret("webhook-secret", WEBHOOK_SECRET);
        let text = format!(
            r#"# What a user writes for serve, pointed at the emulators.
[dataverse]
url = "{dv_url}"
token_url = "{dv_token}"
client_id = "{dv_client}"
client_secret = "file:{dv_secret}"
write_mode = "batch"
max_concurrency = 8

[[sources]]
id = "salesforce"
kind = "salesforce"
crm_choice = 1
base_url = "{sf_base}"
[sources.connection]
auth = "salesforce-client-credentials"
token_url = "{sf_token}"
client_id = "{sf_client}"
client_secret = "file:{sf_secret}"
[sources.webhook]
auth = "contract"
secret = "file:{hook_secret}"
"#,
            dv_url = dv.base_url(),
            dv_token = dv.token_url(),
            dv_client = EmulatorConfig::default().client_id,
            sf_base = sf.instance_url(),
            sf_token = sf.token_url(),
            sf_client = sf.config().client_id,
        );
        let config = dir.join("crm-sync.toml");
        std::fs::write(&config, text).unwrap();
        let state = dir.join("crm-sync.sqlite");
        World {
            dv,
            sf,
            dir,
            config,
            state,
        }
    }

    pub fn options(&self) -> ServeOptions {
        ServeOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            page_size: 200,
            parent_retry_delay: Duration::from_millis(500),
            ..ServeOptions::new(self.config.clone(), self.state.clone())
        }
    }

    pub fn start_args(&self) -> StartArgs {
        StartArgs {
            config: self.config.clone(),
            source: "salesforce".into(),
            entities: vec![],
            state: self.state.clone(),
            sqs: None,
        }
    }

    /// Every live Salesforce record and, for contacts, its account.
    pub fn expected(&self) -> Vec<Expected> {
        crm_sync::emulated::salesforce_expected(&self.sf)
    }

    pub fn comparison(&self) -> crm_sync::emulated::Comparison {
        let config = Config::load(&self.config).unwrap();
        let sources = config.mappers().unwrap();
        let mapper = sources.get(&SourceId::new("salesforce").unwrap()).unwrap();
        compare(&self.expected(), &self.dv, mapper)
    }

    pub fn status(&self, job: &str) -> JobStatus {
        let state = LocalState::open(&self.state).unwrap();
        state
            .ledger()
            .status(job)
            .unwrap()
            .expect("the job is known")
    }

    /// Polls until Dataverse matches the CRM.
    pub async fn converged(&self, limit: Duration) -> crm_sync::emulated::Comparison {
        let deadline = Instant::now() + limit;
        loop {
            let c = self.comparison();
            if c.is_exact() || Instant::now() >= deadline {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Scratch files are kept when a test fails, to look at.
impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
