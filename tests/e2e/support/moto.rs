//! moto server as a test's SQS endpoint: a real SQS wire protocol on 127.0.0.1, driven by
//! aws-sdk-sqs exactly as in Lambda, and the crm-sync queues created on it as `template.yaml`
//! declares them (types, content-based deduplication, redrive to a DLQ after maxReceiveCount),
//! with visibility timeouts scaled down so retries come back within a test.
//!
//! `moto_server` comes from `CRM_SYNC_MOTO_SERVER`, else from the repository's
//! `.venv/bin/moto_server` (scripts/test.sh installs it there). Without it the test fails and
//! says so: an end-to-end test over SQS never passes by skipping.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY_ID: &str = "crm-sync-test";
pub const SECRET_ACCESS_KEY: &str = "crm-sync-test-secret";

/// Runs moto on `$1` and keeps it alive exactly as long as this shell's standard input stays
/// open. The test process holds the other end of that pipe, so however the test ends (drop,
/// panic, or the process being killed) the pipe closes, the reader kills moto, and the shell
/// exits; the shell also exits when moto does (a port already taken), which the test sees.
const WATCHDOG: &str = r#"
"$0" -H 127.0.0.1 -p "$1" </dev/null &
moto=$!
exec 3<&0
{ read -r _ <&3; kill "$moto" 2>/dev/null; } &
reader=$!
wait "$moto"
code=$?
kill "$reader" 2>/dev/null
exit "$code"
"#;

/// Where `moto_server` is: `CRM_SYNC_MOTO_SERVER`, else `.venv/bin/moto_server` at the root of
/// the workspace that contains the package under test.
pub fn moto_server_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CRM_SYNC_MOTO_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(manifest);
    root.join(".venv/bin/moto_server")
}

/// A running moto server, stopped on drop.
pub struct Moto {
    shell: Child,
    stdin: Option<ChildStdin>,
    endpoint: String,
    log: PathBuf,
    client: Client,
}

/// A static-credential client for `endpoint` (no environment or profile is read).
pub fn sqs_client(endpoint: &str) -> Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "crm-sync-tests",
        ))
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(conf)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn unique(stem: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{stem}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

impl Moto {
    /// Starts moto on a free port and waits until it answers SQS calls.
    pub async fn start() -> Moto {
        let bin = moto_server_path();
        assert!(
            bin.is_file(),
            "moto_server not found at {}: run scripts/test.sh, which installs moto[server] into \
             the repository's .venv (or point CRM_SYNC_MOTO_SERVER at a moto_server)",
            bin.display()
        );
        // The port is free when picked but could be taken before moto binds it: try again.
        for _ in 0..3 {
            let port = free_port();
            let log = std::env::temp_dir().join(format!("{}.log", unique("crm-sync-moto")));
            let out = std::fs::File::create(&log).expect("moto log file");
            let err = out.try_clone().expect("moto log file");
            let mut shell = Command::new("sh")
                .arg("-c")
                .arg(WATCHDOG)
                .arg(&bin)
                .arg(port.to_string())
                .stdin(Stdio::piped())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("starting sh for moto_server");
            let stdin = shell.stdin.take();
            let endpoint = format!("http://127.0.0.1:{port}");
            let client = sqs_client(&endpoint);
            let until = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let probe =
                    tokio::time::timeout(Duration::from_secs(2), client.list_queues().send()).await;
                if let Ok(Ok(_)) = probe {
                    return Moto {
                        shell,
                        stdin,
                        endpoint,
                        log,
                        client,
                    };
                }
                if shell.try_wait().ok().flatten().is_some() {
                    break;
                }
                if tokio::time::Instant::now() > until {
                    let mut m = Moto {
                        shell,
                        stdin,
                        endpoint,
                        log,
                        client,
                    };
                    let text = m.log_text();
                    m.stop();
                    panic!("moto_server did not answer within 30 s; its log:\n{text}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            eprintln!("moto_server exited at start (retrying on another port):\n{text}");
            let _ = std::fs::remove_file(&log);
        }
        panic!("moto_server could not be started (see the logs above)");
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// What a Lambda binary needs in its environment to reach this moto with the `sqs` crate's
    /// default credential chain.
    pub fn lambda_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SQS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        // moto logs every request: keep what is not a plain success, and only the end.
        let lines: Vec<&str> = s
            .lines()
            .filter(|l| !l.contains("HTTP/1.1\" 200 -"))
            .collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn stop(&mut self) {
        // Closing the pipe makes the watchdog kill moto; the shell then exits.
        drop(self.stdin.take());
        for _ in 0..100 {
            if self.shell.try_wait().ok().flatten().is_some() {
                let _ = std::fs::remove_file(&self.log);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }

    /// Creates a queue; returns its URL and ARN.
    pub async fn create_queue(&self, name: &str, attrs: &[(QueueAttributeName, String)]) -> Queue {
        let mut req = self.client.create_queue().queue_name(name);
        for (k, v) in attrs {
            req = req.attributes(k.clone(), v);
        }
        let url = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating queue {name}: {e:?}"))
            .queue_url()
            .expect("a queue URL")
            .to_string();
        let arn = self
            .client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("a queue ARN");
        Queue {
            name: name.to_string(),
            url,
            arn,
        }
    }

    /// The queues of one crm-sync deployment, as `template.yaml` declares them, named
    /// `<stack>-...` after a fresh stack name.
    pub async fn deployment(&self, settings: &Deployment) -> Queues {
        let stack = unique("crm-sync");
        let fifo = |dedup_scope: &str, throughput: &str| {
            vec![
                (QueueAttributeName::FifoQueue, "true".to_string()),
                (QueueAttributeName::ContentBasedDeduplication, "true".into()),
                (QueueAttributeName::DeduplicationScope, dedup_scope.into()),
                (QueueAttributeName::FifoThroughputLimit, throughput.into()),
            ]
        };
        let dlq_attrs = |fifo: bool| {
            let mut a = vec![
                (QueueAttributeName::MessageRetentionPeriod, "1209600".into()),
                (QueueAttributeName::SqsManagedSseEnabled, "true".into()),
            ];
            if fifo {
                a.push((QueueAttributeName::FifoQueue, "true".into()));
                a.push((QueueAttributeName::ContentBasedDeduplication, "true".into()));
            }
            a
        };
        let work = |mut a: Vec<(QueueAttributeName, String)>, visibility: u32, dlq: &Queue| {
            a.push((
                QueueAttributeName::VisibilityTimeout,
                visibility.to_string(),
            ));
            a.push((QueueAttributeName::MessageRetentionPeriod, "345600".into()));
            a.push((QueueAttributeName::SqsManagedSseEnabled, "true".into()));
            a.push((
                QueueAttributeName::RedrivePolicy,
                serde_json::json!({
                    "deadLetterTargetArn": dlq.arn,
                    "maxReceiveCount": settings.max_receive_count,
                })
                .to_string(),
            ));
            a
        };
        let upsert_dlq = self
            .create_queue(&format!("{stack}-upsert-dlq.fifo"), &dlq_attrs(true))
            .await;
        let retry_dlq = self
            .create_queue(&format!("{stack}-retry-dlq"), &dlq_attrs(false))
            .await;
        let sync_dlq = self
            .create_queue(&format!("{stack}-sync-dlq.fifo"), &dlq_attrs(true))
            .await;
        let webhook_dlq = self
            .create_queue(&format!("{stack}-webhook-dlq"), &dlq_attrs(false))
            .await;
        let upsert = self
            .create_queue(
                &format!("{stack}-upsert.fifo"),
                &work(
                    fifo("messageGroup", "perMessageGroupId"),
                    settings.upsert_visibility,
                    &upsert_dlq,
                ),
            )
            .await;
        let retry = self
            .create_queue(
                &format!("{stack}-retry"),
                &work(Vec::new(), settings.upsert_visibility, &retry_dlq),
            )
            .await;
        let sync = self
            .create_queue(
                &format!("{stack}-sync.fifo"),
                &work(
                    fifo("queue", "perQueue"),
                    settings.sync_visibility,
                    &sync_dlq,
                ),
            )
            .await;
        Queues {
            upsert,
            upsert_dlq,
            retry,
            retry_dlq,
            sync,
            sync_dlq,
            webhook_dlq,
        }
    }

    /// Visible, in flight and delayed messages of a queue.
    pub async fn depth(&self, q: &Queue) -> Depth {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&q.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .unwrap_or_else(|e| panic!("attributes of {}: {e:?}", q.name));
        let get = |k: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&k))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Depth {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        }
    }

    /// Sends one message as a producer would (group and deduplication ids on a FIFO queue).
    pub async fn send(&self, q: &Queue, body: &str, group: Option<&str>, dedup: Option<&str>) {
        self.client
            .send_message()
            .queue_url(&q.url)
            .message_body(body)
            .set_message_group_id(group.map(str::to_string))
            .set_message_deduplication_id(dedup.map(str::to_string))
            .send()
            .await
            .unwrap_or_else(|e| panic!("sending to {}: {e:?}", q.name));
    }

    /// Takes every message of a queue (for a DLQ's contents): received with all attributes and
    /// deleted. Waits up to `wait` for the first.
    pub async fn take_all(&self, q: &Queue, wait: Duration) -> Vec<aws_sdk_sqs::types::Message> {
        let mut all = Vec::new();
        let until = tokio::time::Instant::now() + wait;
        loop {
            let out = self
                .client
                .receive_message()
                .queue_url(&q.url)
                .max_number_of_messages(10)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap_or_else(|e| panic!("receiving from {}: {e:?}", q.name));
            let got = out.messages().to_vec();
            if got.is_empty() {
                if !all.is_empty() || tokio::time::Instant::now() >= until {
                    return all;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            for m in &got {
                if let Some(r) = m.receipt_handle() {
                    let _ = self
                        .client
                        .delete_message()
                        .queue_url(&q.url)
                        .receipt_handle(r)
                        .send()
                        .await;
                }
            }
            all.extend(got);
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("moto log (last lines):\n{}", self.log_text());
        }
        self.stop();
    }
}

/// A queue on moto.
#[derive(Debug, Clone)]
pub struct Queue {
    pub name: String,
    pub url: String,
    pub arn: String,
}

/// The queues of `template.yaml`.
#[derive(Debug, Clone)]
pub struct Queues {
    pub upsert: Queue,
    pub upsert_dlq: Queue,
    pub retry: Queue,
    pub retry_dlq: Queue,
    pub sync: Queue,
    pub sync_dlq: Queue,
    pub webhook_dlq: Queue,
}

impl Queues {
    pub fn work(&self) -> [&Queue; 3] {
        [&self.upsert, &self.retry, &self.sync]
    }

    pub fn dead_letter(&self) -> [&Queue; 4] {
        [
            &self.upsert_dlq,
            &self.retry_dlq,
            &self.sync_dlq,
            &self.webhook_dlq,
        ]
    }

    /// The stack's Outputs as `aws cloudformation describe-stacks --query 'Stacks[0].Outputs'`
    /// prints them (what `crm-sync serve --stack-outputs` reads), with the run ledger's table.
    pub fn stack_outputs(&self, jobs_table: &str) -> String {
        let out = |k: &str, v: &str| serde_json::json!({"OutputKey": k, "OutputValue": v});
        serde_json::json!([
            out("SyncQueueUrl", &self.sync.url),
            out("UpsertQueueUrl", &self.upsert.url),
            out("RetryQueueUrl", &self.retry.url),
            out("SyncDlqUrl", &self.sync_dlq.url),
            out("UpsertDlqUrl", &self.upsert_dlq.url),
            out("WebhookDlqUrl", &self.webhook_dlq.url),
            out("JobsTableName", jobs_table),
        ])
        .to_string()
    }
}

/// The template's queue settings, scaled for tests: the template gives the upsert and retry
/// queues 720 s of visibility (6 x the function's 120 s timeout) and the sync queue 1,800 s.
/// The defaults leave a busy machine ample time per batch; tests that want failed messages back
/// quickly set a second or two.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub upsert_visibility: u32,
    pub sync_visibility: u32,
    /// The template's MaxReceiveCount parameter (default 10).
    pub max_receive_count: u32,
}

impl Default for Deployment {
    fn default() -> Self {
        Deployment {
            upsert_visibility: 10,
            sync_visibility: 10,
            max_receive_count: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl Depth {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}
