//! The arguments and output of `crm-sync dlq list|show|replay` (the work is in
//! `crm_sync::dlq_cmd`): parsing, printing, exit codes (0 done, 1 some messages could not be
//! replayed, 2 unusable input or an unreachable queue).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use crm_sync::dlq::{self, Selection};
use crm_sync::dlq_cmd::{self, Target};

/// Where the DLQs are: the state file, or one SQS DLQ.
#[derive(Args, Debug, Clone)]
pub struct Where {
    /// The state file `crm-sync serve` runs on.
    #[arg(long, default_value = "crm-sync.sqlite")]
    state: PathBuf,
    /// Only this one of the state file's DLQs (sync-dlq or upsert-dlq).
    #[arg(long, value_name = "NAME", conflicts_with = "sqs_queue_url")]
    queue: Option<String>,
    /// A deployed stack's DLQ instead (e.g. its upsert, retry, sync or webhook DLQ); AWS
    /// credentials and region come from the environment. SQS cannot show a message without
    /// receiving it: listing receives each message with a short visibility timeout and makes it
    /// visible again at once (each look counts as a receive). On a FIFO DLQ, SQS hands out at
    /// most 10 messages of a group until they are deleted, so a listing shows at most those.
    #[arg(long, value_name = "URL")]
    sqs_queue_url: Option<String>,
    /// With --sqs-queue-url: another SQS endpoint.
    #[arg(long, value_name = "URL", requires = "sqs_queue_url")]
    sqs_endpoint: Option<String>,
    /// With --sqs-queue-url: the queue replays go to. Default: the queue whose redrive policy
    /// names this DLQ (ListDeadLetterSourceQueues); the webhook DLQ has none.
    #[arg(long, value_name = "URL", requires = "sqs_queue_url")]
    target_queue_url: Option<String>,
}

impl Where {
    async fn target(self) -> Target {
        match self.sqs_queue_url {
            Some(dlq_url) => Target::Sqs {
                client: sqs::SqsQueue::client(self.sqs_endpoint.as_deref()).await,
                dlq_url,
                target_url: self.target_queue_url,
            },
            None => Target::Local {
                state: self.state,
                queue: self.queue,
            },
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List what failed and why: message id, the queue it came from, receives, age, kind,
    /// correlation id, source, entity, record ids, and the reason kept with it.
    ///
    /// With --sqs-queue-url, listing receives each message (SQS has no other way to read one),
    /// invisible for 30 s at most, and makes it visible again right away
    /// (ChangeMessageVisibility 0); each listing adds one to the messages' receive counts.
    List {
        #[command(flatten)]
        at: Where,
        /// Print JSON (one object per message, one per line).
        #[arg(long)]
        json: bool,
    },
    /// Print one message whole: its summary, reason, attributes and body.
    Show {
        #[command(flatten)]
        at: Where,
        id: String,
    },
    /// Send messages back to the queue they came from, without their error and as a fresh
    /// attempt; each leaves the DLQ only once its send succeeded. Criteria combine.
    Replay {
        #[command(flatten)]
        at: Where,
        /// Every message.
        #[arg(long)]
        all: bool,
        /// This message (repeatable).
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<String>,
        /// Messages whose reason contains this text (case-insensitive).
        #[arg(long, value_name = "TEXT")]
        error_contains: Option<String>,
        /// Messages about this source's records.
        #[arg(long, value_name = "SOURCE")]
        source: Option<String>,
        /// Say what would be replayed; send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(command: DlqCommand) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crm-sync dlq: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let fail = |what: &str, e: anyhow::Error| {
        eprintln!("crm-sync dlq {what}: {e:#}");
        ExitCode::from(2)
    };
    match command {
        DlqCommand::List { at, json } => {
            match rt.block_on(async { dlq_cmd::list(&at.target().await).await }) {
                Ok(rows) => {
                    if rows.is_empty() && !json {
                        println!("the dead-letter queue is empty");
                    }
                    for r in rows {
                        if json {
                            println!("{}", serde_json::to_string(&r).unwrap_or_default());
                        } else {
                            println!("{r}");
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail("list", e),
            }
        }
        DlqCommand::Show { at, id } => {
            match rt.block_on(async { dlq_cmd::show(&at.target().await, &id).await }) {
                Ok(l) => {
                    println!("{}", dlq::row(&l, dlq_cmd::now_ms()));
                    if let Some(g) = &l.group_id {
                        println!("group: {g}");
                    }
                    for (k, v) in &l.attributes {
                        println!("attribute {k}: {v}");
                    }
                    println!("body:\n{}", pretty(&l.body));
                    ExitCode::SUCCESS
                }
                Err(e) => fail("show", e),
            }
        }
        DlqCommand::Replay {
            at,
            all,
            ids,
            error_contains,
            source,
            dry_run,
        } => {
            let selection = Selection {
                all,
                ids,
                error_contains,
                source,
            };
            match rt
                .block_on(async { dlq_cmd::replay(&at.target().await, &selection, dry_run).await })
            {
                Ok(r) => {
                    for (id, to) in &r.would_replay {
                        println!("would replay {id} to {to}");
                    }
                    for (id, to) in &r.replayed {
                        println!("replayed {id} to {to}");
                    }
                    for (id, why) in &r.failed {
                        eprintln!("not replayed {id} (still in the DLQ): {why}");
                    }
                    println!(
                        "{} replayed, {} not replayed{}",
                        r.replayed.len(),
                        r.failed.len(),
                        if dry_run {
                            format!(" ({} would be; dry run)", r.would_replay.len())
                        } else {
                            String::new()
                        }
                    );
                    if r.failed.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => fail("replay", e),
            }
        }
    }
}

/// A JSON body indented; anything else as it is.
fn pretty(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.to_string())
}
