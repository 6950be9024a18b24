//! `crm-sync`: the command line. Each subcommand lives in its own module; this file only parses
//! arguments and maps outcomes to exit codes (0 ok, 1 some records failed, 2 unusable input).

mod connect_args;
mod dlq_args;
mod map_cmd;
mod reconcile_cmd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use crm_sync::demo::{self, DemoCrm};
use crm_sync::serve::{Serve, ServeOptions};
use crm_sync::sync_cmd;
use mapping::{Entity, IdentityStrategy};

#[derive(Parser)]
#[command(
    name = "crm-sync",
    version,
    about = "Keep a CRM's accounts and contacts in Microsoft Dataverse"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline on this machine against embedded emulators, with nothing
    /// configured: an initial sync of a generated CRM into a Dataverse emulator, then a burst of
    /// signed webhooks, then a record-for-record comparison.
    Demo {
        /// The CRM to emulate.
        #[arg(long, value_enum, default_value = "salesforce")]
        crm: DemoCrm,
        /// Accounts and contacts to generate in the CRM (about one account per four contacts).
        #[arg(long, default_value_t = 5000)]
        records: usize,
        /// Seed of the generated data: the same seed, the same CRM.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where the final Dataverse rows are written.
        #[arg(long, default_value = "crm-sync-demo")]
        out: PathBuf,
        /// Log lines (RUST_LOG syntax) on stderr instead of the progress bar.
        #[arg(long)]
        log: Option<String>,
    },
    /// Print the Dataverse requests a CRM payload implies, one JSON object per line.
    ///
    /// PAYLOAD_FILE is a list page, a single record or a webhook body, in the CRM's own shape.
    /// Without --config, the built-in mapping of the CRM kind is used with preview defaults.
    Map {
        /// A CRM kind (salesforce, servicenow, hubspot, zendesk, pipedrive, generic) or, with
        /// --config, the id of a configured source.
        #[arg(long)]
        source: String,
        /// The entity, for payloads that do not say (HubSpot, ServiceNow and Pipedrive pages).
        #[arg(long, value_parser = parse_entity)]
        entity: Option<Entity>,
        /// Configuration file with the source's settings and mapping overrides.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Identity strategy (default: the config's, else deterministic-id).
        #[arg(long, value_parser = parse_identity)]
        identity: Option<IdentityStrategy>,
        /// Preview only: the instance base URL used in record URLs.
        #[arg(long)]
        base_url: Option<String>,
        /// Preview only: the msdyn_source_crm value.
        #[arg(long)]
        crm_choice: Option<i32>,
        payload_file: PathBuf,
    },
    /// Before the first sync, prove the deployment will work: Dataverse reachable with the
    /// credentials, the columns, choice values, alternate key and privileges the mapping needs,
    /// each CRM readable, webhook secrets set. One line per check; exit code 1 if any fails.
    Check {
        /// Configuration file (the same one serve and the Lambdas run with).
        #[arg(long, default_value = "crm-sync.toml")]
        config: PathBuf,
    },
    /// Provision, verify or update a source's server-to-server connection, least privilege.
    Connect {
        #[command(subcommand)]
        target: connect_args::ConnectTarget,
    },
    /// Remove what `connect` provisioned.
    Disconnect {
        #[command(subcommand)]
        target: connect_args::DisconnectTarget,
    },
    /// Run the pipeline on this machine against the configured CRMs and Dataverse, without AWS:
    /// the webhook endpoint (POST /webhooks/{source}), the sync worker and the Dataverse upsert
    /// workers, over durable queues in one SQLite state file. Stops on Ctrl-C or SIGTERM after
    /// finishing the batches in hand; what is left waits in the state file for the next start.
    Serve {
        /// Configuration file: [dataverse] with its connection settings, [[sources]].
        #[arg(long)]
        config: PathBuf,
        /// Address of the webhook endpoint (port 0: any free port). Put a TLS-terminating proxy
        /// in front of it to expose it to a CRM.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The state file (queues and sync-job progress); created if missing.
        #[arg(long, default_value = "crm-sync.sqlite")]
        state: PathBuf,
        /// Records per CRM page.
        #[arg(long, default_value_t = 500)]
        page_size: u32,
        /// Dataverse write batches in progress at once.
        #[arg(long, default_value_t = 4)]
        upsert_workers: usize,
        /// Queue messages per write batch.
        #[arg(long, default_value_t = 10)]
        batch_size: usize,
        /// Seconds before a contact whose account is not in Dataverse yet is tried again
        /// (doubling each time).
        #[arg(long, default_value_t = 30)]
        parent_retry_delay: u64,
        /// Receives of a failing message before it is dead-lettered with its last error
        /// (default: 5 on the sync queue, 10 on the upsert queue).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_receives: Option<u32>,
        /// Log filter (RUST_LOG syntax), on stderr.
        #[arg(long, default_value = "info")]
        log: String,
        /// Log lines as JSON objects.
        #[arg(long)]
        log_json: bool,
        /// Work a deployed stack's SQS queues instead of the state file's, as its functions
        /// would (and record jobs in its run ledger): the stack's Outputs as
        /// `aws cloudformation describe-stacks --query 'Stacks[0].Outputs'` prints them.
        /// AWS credentials and region come from the environment.
        #[arg(long, value_name = "FILE", conflicts_with = "state")]
        stack_outputs: Option<PathBuf>,
        /// With --stack-outputs: another endpoint for SQS and DynamoDB.
        #[arg(long, value_name = "URL", requires = "stack_outputs")]
        aws_endpoint: Option<String>,
    },
    Reconcile(reconcile_cmd::Args),
    /// Start an initial sync, or show how far one is.
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// Inspect the dead-letter queues (the state file's, or a deployed stack's) and replay
    /// what failed once its cause is fixed.
    Dlq {
        #[command(subcommand)]
        command: dlq_args::DlqCommand,
    },
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Queue the first page job of an initial sync of a source in the state file; a running
    /// `crm-sync serve` on that state file reads it page by page. Prints the job id.
    Start {
        /// Configuration file (the same one serve runs with).
        #[arg(long)]
        config: PathBuf,
        /// The id of a configured source with a [sources.connection].
        #[arg(long)]
        source: String,
        /// An entity to sync (repeatable; default both, accounts before contacts).
        #[arg(long = "entity", value_parser = parse_entity)]
        entities: Vec<Entity>,
        /// The state file serve runs on.
        #[arg(long, default_value = "crm-sync.sqlite")]
        state: PathBuf,
        /// Start it on a deployed stack instead: its sync queue's URL (the stack's
        /// `SyncQueueUrl` output); AWS credentials and region come from the environment.
        #[arg(long, value_name = "URL")]
        sqs_queue_url: Option<String>,
        /// With --sqs-queue-url: another SQS endpoint.
        #[arg(long, value_name = "URL", requires = "sqs_queue_url")]
        sqs_endpoint: Option<String>,
        /// With --sqs-queue-url: the stack's run ledger (the `JobsTableName` output), to record
        /// the job so `sync status --jobs-table` can follow it.
        #[arg(long, value_name = "TABLE", requires = "sqs_queue_url")]
        jobs_table: Option<String>,
        /// With --jobs-table: another DynamoDB endpoint.
        #[arg(long, value_name = "URL", requires = "jobs_table")]
        dynamodb_endpoint: Option<String>,
    },
    /// Show a job's progress (pages, records read, enqueued, skipped, deleted, pending writes,
    /// phase; finished or not), or every job's without JOB_ID. Exit code 1 if a job shown failed.
    Status {
        /// The state file serve runs on.
        #[arg(long, default_value = "crm-sync.sqlite")]
        state: PathBuf,
        /// Print JSON (one object per job, one per line).
        #[arg(long)]
        json: bool,
        /// Wait until the jobs shown are finished or failed (at most this many seconds); one
        /// job's progress is drawn with its rate and the time left.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "86400")]
        wait: Option<u64>,
        /// Read a deployed stack's run ledger instead of the state file: its DynamoDB table
        /// (the `JobsTableName` output); AWS credentials and region from the environment.
        #[arg(long, value_name = "TABLE")]
        jobs_table: Option<String>,
        /// With --jobs-table: another DynamoDB endpoint.
        #[arg(long, value_name = "URL", requires = "jobs_table")]
        dynamodb_endpoint: Option<String>,
        job_id: Option<String>,
    },
}

fn parse_entity(s: &str) -> Result<Entity, String> {
    s.parse().map_err(|e: mapping::ConfigError| e.message)
}

fn parse_identity(s: &str) -> Result<IdentityStrategy, String> {
    match s {
        "deterministic-id" => Ok(IdentityStrategy::DeterministicId),
        "alternate-key" => Ok(IdentityStrategy::AlternateKey),
        _ => Err("expected deterministic-id or alternate-key".into()),
    }
}

fn runtime(what: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("crm-sync {what}: cannot start the runtime: {e}");
        ExitCode::from(2)
    })
}

/// Waits for Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn serve(opts: ServeOptions, log: &str, log_json: bool) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_new(log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = match runtime("serve") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let running = match Serve::start(&opts).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("crm-sync serve: {e}");
                return ExitCode::from(2);
            }
        };
        let queues = match &opts.stack {
            Some(t) => format!("queues of the stack (sync {})", t.outputs.sync),
            None => format!("state {}", opts.state.display()),
        };
        println!(
            "crm-sync serve: webhooks on {}{{source}}, {queues}; Ctrl-C to stop",
            running.webhook_base_url(),
        );
        stop_signal().await;
        eprintln!(
            "crm-sync serve: stopping after the batches in hand (Ctrl-C again to stop at once; unfinished work stays queued)"
        );
        tokio::select! {
            _ = running.shutdown() => ExitCode::SUCCESS,
            _ = stop_signal() => ExitCode::from(130),
        }
    })
}

fn sync(command: SyncCommand) -> ExitCode {
    let rt = match runtime("sync") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match command {
        SyncCommand::Start {
            config,
            source,
            entities,
            state,
            sqs_queue_url,
            sqs_endpoint,
            jobs_table,
            dynamodb_endpoint,
        } => {
            let args = sync_cmd::StartArgs {
                config,
                source,
                entities,
                state,
                sqs: sqs_queue_url.map(|queue_url| sync_cmd::SqsTarget {
                    queue_url,
                    endpoint: sqs_endpoint,
                    jobs: jobs_table.map(|table| sync_cmd::JobsTable {
                        table,
                        endpoint: dynamodb_endpoint,
                    }),
                }),
            };
            match rt.block_on(sync_cmd::start(&args)) {
                Ok(job_id) => {
                    println!("{job_id}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("crm-sync sync start: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        SyncCommand::Status {
            jobs_table: Some(table),
            dynamodb_endpoint,
            json,
            wait,
            job_id,
            ..
        } => {
            let jobs = sync_cmd::JobsTable {
                table,
                endpoint: dynamodb_endpoint,
            };
            let shown = rt.block_on(async {
                let ledger = jobs.ledger().await;
                let fetch = || sync_cmd::cloud_status(&ledger, job_id.as_deref());
                match wait {
                    Some(secs) => {
                        sync_cmd::wait_with(fetch, Duration::from_secs(secs), !json).await
                    }
                    None => fetch().await,
                }
            });
            match shown {
                Ok(jobs) => print_jobs(&jobs, json),
                Err(e) => {
                    eprintln!("crm-sync sync status: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        SyncCommand::Status {
            state,
            json,
            wait,
            job_id,
            ..
        } => {
            let shown = rt.block_on(async {
                let state = sync_cmd::open_existing(&state)?;
                let jobs = match wait {
                    Some(secs) => {
                        let fetch = || async { sync_cmd::status(&state, job_id.as_deref()) };
                        sync_cmd::wait_with(fetch, Duration::from_secs(secs), !json).await
                    }
                    None => sync_cmd::status(&state, job_id.as_deref()),
                }?;
                anyhow::Ok((jobs, state.store.depths()?))
            });
            let (jobs, depths) = match shown {
                Ok(shown) => shown,
                Err(e) => {
                    eprintln!("crm-sync sync status: {e:#}");
                    return ExitCode::from(2);
                }
            };
            let code = print_jobs(&jobs, json);
            if !json && job_id.is_none() {
                let queues: Vec<String> = depths
                    .iter()
                    .map(|(q, total, visible)| format!("{q} {total} ({visible} ready)"))
                    .collect();
                println!(
                    "\nqueues: {}",
                    if queues.is_empty() {
                        "all empty".to_string()
                    } else {
                        queues.join(", ")
                    }
                );
            }
            code
        }
    }
}

/// Prints jobs as text or JSON lines; exit code 1 if one failed.
fn print_jobs<J: serde::Serialize + std::fmt::Display + sync_cmd::Tracked>(
    jobs: &[J],
    json: bool,
) -> ExitCode {
    if jobs.is_empty() && !json {
        println!("no sync jobs yet (start one with `crm-sync sync start`)");
    }
    for (i, j) in jobs.iter().enumerate() {
        if json {
            let mut v = serde_json::to_value(j).unwrap_or_default();
            v["state"] = j.state().into();
            println!("{v}");
        } else {
            if i > 0 {
                println!();
            }
            print!("{j}");
        }
    }
    if jobs.iter().any(|j| j.state() == "failed") {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn check(config: &std::path::Path) -> ExitCode {
    let runtime = match runtime("check") {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(crm_sync::check::run(config)) {
        Ok(lines) => {
            print!("{}", crm_sync::preflight::report(&lines));
            if crm_sync::preflight::failed(&lines) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("crm-sync check: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            crm,
            records,
            seed,
            out,
            log,
        } => {
            if let Some(filter) = &log {
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                    .with_writer(std::io::stderr)
                    .init();
            }
            let opts = demo::Options {
                crm,
                records,
                seed,
                out_dir: out,
                progress: log.is_none(),
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("crm-sync demo: cannot start the runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            match runtime.block_on(demo::run(&opts)) {
                Ok(summary) => {
                    print!("{summary}");
                    if summary.comparison.is_exact() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("crm-sync demo: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Map {
            source,
            entity,
            config,
            identity,
            base_url,
            crm_choice,
            payload_file,
        } => map_cmd::run(&map_cmd::Args {
            source,
            entity,
            config,
            identity,
            base_url,
            crm_choice,
            payload_file,
        }),
        Command::Check { config } => check(&config),
        Command::Connect { target } => connect_args::connect(target),
        Command::Disconnect { target } => connect_args::disconnect(target),
        Command::Serve {
            config,
            listen,
            state,
            page_size,
            upsert_workers,
            batch_size,
            parent_retry_delay,
            max_receives,
            log,
            log_json,
            stack_outputs,
            aws_endpoint,
        } => {
            let stack = match stack_outputs
                .as_deref()
                .map(crm_sync::stack::StackOutputs::load)
            {
                Some(Ok(outputs)) => Some(crm_sync::serve::StackTarget {
                    outputs,
                    endpoint: aws_endpoint,
                }),
                Some(Err(e)) => {
                    eprintln!("crm-sync serve: {e:#}");
                    return ExitCode::from(2);
                }
                None => None,
            };
            let opts = ServeOptions {
                stack,
                listen,
                page_size,
                upsert_workers,
                batch_size,
                parent_retry_delay: Duration::from_secs(parent_retry_delay),
                max_receives,
                ..ServeOptions::new(config, state)
            };
            serve(opts, &log, log_json)
        }
        Command::Sync { command } => sync(command),
        Command::Reconcile(args) => reconcile_cmd::run(args),
        Command::Dlq { command } => dlq_args::run(command),
    }
}
