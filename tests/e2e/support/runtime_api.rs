//! A Lambda Runtime API double, and a function binary run against it: the binary's own
//! `main.rs` (config from the environment, clients built on the first invocation, the
//! `lambda_runtime` loop) is exercised as Lambda runs it.
//!
//! The API as documented in "Using the Lambda runtime API for custom runtimes"
//! (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html), version 2018-06-01:
//! - `GET /2018-06-01/runtime/invocation/next`: the event as the body, with the headers
//!   `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms` (epoch milliseconds),
//!   `Lambda-Runtime-Invoked-Function-Arn` and `Lambda-Runtime-Trace-Id`; it blocks until
//!   there is an invocation;
//! - `POST /2018-06-01/runtime/invocation/{AwsRequestId}/response`: the result, 202 Accepted;
//! - `POST /2018-06-01/runtime/invocation/{AwsRequestId}/error`: an error document
//!   (`errorMessage`, `errorType`) with `Lambda-Runtime-Function-Error-Type`, 202 Accepted;
//! - `POST /2018-06-01/runtime/init/error`: an initialisation error, 202 Accepted.
//!
//! An unknown request id is answered 400, as the API does.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// Request ids are this prefix and a counter (the shape of the documentation's example id).
pub const REQUEST_ID_PREFIX: &str = "8476a536-e9f4-11e8-9739-";

/// What the function posted for an invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Response(Value),
    Error {
        /// `Lambda-Runtime-Function-Error-Type`.
        error_type: Option<String>,
        body: Value,
    },
}

impl Outcome {
    /// The response, or a panic naming what was posted instead.
    pub fn response(self) -> Value {
        match self {
            Outcome::Response(v) => v,
            other => panic!("expected a response, the function posted {other:?}"),
        }
    }
}

struct Invocation {
    request_id: String,
    deadline_ms: u64,
    event: Value,
}

struct Shared {
    function_arn: String,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    next_calls: AtomicUsize,
    /// When the runtime first asked for an invocation: it is initialised and ready.
    first_next: Mutex<Option<std::time::Instant>>,
    init_errors: Mutex<Vec<Value>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Runtime API on 127.0.0.1, serving until dropped.
pub struct RuntimeApi {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Invocation>,
    ids: AtomicUsize,
    task: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    pub async fn start(function_name: &str) -> RuntimeApi {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function_name}"),
            rx: tokio::sync::Mutex::new(rx),
            waiting: Mutex::new(HashMap::new()),
            next_calls: AtomicUsize::new(0),
            first_next: Mutex::new(None),
            init_errors: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding the runtime API");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RuntimeApi {
            addr,
            shared,
            tx,
            ids: AtomicUsize::new(0),
            task,
        }
    }

    /// `AWS_LAMBDA_RUNTIME_API`: host and port.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// How many times the runtime has asked for the next invocation.
    pub fn next_calls(&self) -> usize {
        self.shared.next_calls.load(Ordering::SeqCst)
    }

    /// When the runtime first asked for an invocation.
    pub fn first_next(&self) -> Option<std::time::Instant> {
        *lock(&self.shared.first_next)
    }

    pub fn init_errors(&self) -> Vec<Value> {
        lock(&self.shared.init_errors).clone()
    }

    /// Queues an invocation; the receiver gets what the function posts for it.
    fn submit(&self, event: Value, deadline_ms: u64) -> oneshot::Receiver<Outcome> {
        let n = self.ids.fetch_add(1, Ordering::SeqCst);
        let request_id = format!("{REQUEST_ID_PREFIX}{n:012x}");
        let (done, outcome) = oneshot::channel();
        lock(&self.shared.waiting).insert(request_id.clone(), done);
        let _ = self.tx.send(Invocation {
            request_id,
            deadline_ms,
            event,
        });
        outcome
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn next(State(s): State<Arc<Shared>>) -> Response {
    s.next_calls.fetch_add(1, Ordering::SeqCst);
    lock(&s.first_next).get_or_insert_with(std::time::Instant::now);
    let inv = {
        let mut rx = s.rx.lock().await;
        rx.recv().await
    };
    let Some(inv) = inv else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    (
        StatusCode::OK,
        [
            ("content-type", "application/json".to_string()),
            ("lambda-runtime-aws-request-id", inv.request_id.clone()),
            ("lambda-runtime-deadline-ms", inv.deadline_ms.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                s.function_arn.clone(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=0"
                    .to_string(),
            ),
        ],
        inv.event.to_string(),
    )
        .into_response()
}

fn parse(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn finish(s: &Shared, id: &str, outcome: Outcome) -> Response {
    match lock(&s.waiting).remove(id) {
        Some(done) => {
            let _ = done.send(outcome);
            (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
        }
        None => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"errorMessage": format!("unknown request id {id}"),
                "errorType": "InvalidRequestID"})),
        )
            .into_response(),
    }
}

async fn response(State(s): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Response {
    finish(&s, &id, Outcome::Response(parse(&body)))
}

async fn error(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    finish(
        &s,
        &id,
        Outcome::Error {
            error_type,
            body: parse(&body),
        },
    )
}

async fn init_error(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    lock(&s.init_errors).push(parse(&body));
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

/// A running function as an [`Invoke`](super::lambda::Invoke) for an event source mapping:
/// what it posts to `/response` is the result, what it posts to `/error` a function error.
pub fn process_invoker(process: Arc<tokio::sync::Mutex<LambdaProcess>>) -> super::lambda::Invoke {
    super::lambda::invoker(move |event| {
        let process = process.clone();
        async move {
            match process.lock().await.invoke(event).await {
                Outcome::Response(v) => Ok(v),
                Outcome::Error { error_type, body } => Err(format!("{error_type:?}: {body}")),
            }
        }
    })
}

/// A function binary running against its own [`RuntimeApi`], killed on drop. Its output goes to
/// a log file, printed if the test fails.
pub struct LambdaProcess {
    pub api: RuntimeApi,
    child: Child,
    log: PathBuf,
    /// Just before the process was started.
    pub spawned_at: std::time::Instant,
}

impl LambdaProcess {
    /// Starts `bin` with only the runtime's variables and `env` in its environment (nothing
    /// inherited: no stray AWS profile or region from the machine).
    pub async fn spawn(bin: &str, function_name: &str, env: &[(&str, String)]) -> LambdaProcess {
        static N: AtomicUsize = AtomicUsize::new(0);
        let api = RuntimeApi::start(function_name).await;
        let log = std::env::temp_dir().join(format!(
            "crm-sync-{function_name}-{}-{}.log",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", api.host_port())
            .env("AWS_LAMBDA_FUNCTION_NAME", function_name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{function_name}"),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/28/[$LATEST]test")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let spawned_at = std::time::Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        LambdaProcess {
            api,
            child,
            log,
            spawned_at,
        }
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Invokes with Lambda's deadline for a `timeout`-second function.
    pub async fn invoke(&mut self, event: Value) -> Outcome {
        let deadline = super::lambda::now_ms() + 120_000;
        self.invoke_with_deadline(event, deadline).await
    }

    /// Invokes and waits for what the function posts; fails with the function's log if it exits
    /// or posts nothing within 30 s.
    pub async fn invoke_with_deadline(&mut self, event: Value, deadline_ms: u64) -> Outcome {
        let mut outcome = self.api.submit(event, deadline_ms);
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            tokio::select! {
                o = &mut outcome => return o.expect("the runtime API keeps its waiters"),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            if !self.is_running() {
                panic!(
                    "the function exited during an invocation ({:?}); its log:\n{}",
                    self.child.try_wait(),
                    self.logs()
                );
            }
            if tokio::time::Instant::now() >= until {
                panic!(
                    "the function posted no result within 30 s; its log:\n{}",
                    self.logs()
                );
            }
        }
    }

    /// Waits until the runtime has asked for its `n`-th invocation (it is ready for more).
    pub async fn wait_for_next_call(&mut self, n: usize) {
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.api.next_calls() < n {
            assert!(
                self.is_running(),
                "the function exited; its log:\n{}",
                self.logs()
            );
            assert!(
                tokio::time::Instant::now() < until,
                "the runtime did not ask for invocation {n}; its log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for LambdaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("function log ({}):\n{}", self.log.display(), self.logs());
        } else if std::env::var_os("CRM_SYNC_KEEP_LOGS").is_some() {
            eprintln!("function log kept: {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
