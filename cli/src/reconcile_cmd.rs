//! `crm-sync reconcile`'s arguments and output; the work is in `crm_sync::reconcile`. Kept out of
//! `main.rs` so the command is one line there.

use std::path::PathBuf;
use std::process::ExitCode;

use crm_sync::reconcile::{self, Options, RepairTarget};
use crm_sync::sync_cmd::SqsTarget;
use mapping::Entity;

/// Compare a source's CRM records with its Dataverse rows: missing, orphaned (deleted in the
/// CRM), different (which columns). With --repair, queue the fixes on the upsert queue. Exit code
/// 0: in sync (or every fix queued), 1: drift left, 2: could not run.
#[derive(clap::Args)]
pub struct Args {
    /// The id of a configured source with a [sources.connection].
    #[arg(long)]
    source: String,
    /// Configuration file with [dataverse]'s connection and the source.
    #[arg(long, default_value = "crm-sync.toml")]
    config: PathBuf,
    /// An entity to reconcile (repeatable; default both).
    #[arg(long = "entity", value_parser = parse_entity)]
    entities: Vec<Entity>,
    /// Queue the changes that fix what was found: upserts for missing and different records,
    /// deletes for orphans (applied by the source's delete_policy).
    #[arg(long)]
    repair: bool,
    /// With --repair: the state file whose upsert queue `crm-sync serve` works.
    #[arg(long, default_value = "crm-sync.sqlite")]
    state: PathBuf,
    /// With --repair: a deployed stack's upsert queue instead (AWS credentials from the
    /// environment).
    #[arg(long, value_name = "URL", requires = "repair")]
    sqs_queue_url: Option<String>,
    /// With --sqs-queue-url: another SQS endpoint.
    #[arg(long, value_name = "URL", requires = "sqs_queue_url")]
    sqs_endpoint: Option<String>,
    /// Ids listed per kind of finding.
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Records per CRM page.
    #[arg(long, default_value_t = 500)]
    page_size: u32,
}

fn parse_entity(s: &str) -> Result<Entity, String> {
    s.parse().map_err(|e: mapping::ConfigError| e.message)
}

pub fn run(a: Args) -> ExitCode {
    let args = reconcile::Args {
        config: a.config,
        source: a.source,
        opts: Options {
            entities: a.entities,
            show: a.show,
            crm_page_size: a.page_size,
            ..Options::default()
        },
        repair: a.repair.then_some(match a.sqs_queue_url {
            Some(queue_url) => RepairTarget::Sqs(SqsTarget {
                queue_url,
                endpoint: a.sqs_endpoint,
                jobs: None,
            }),
            None => RepairTarget::State(a.state),
        }),
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crm-sync reconcile: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(reconcile::run(&args)) {
        Ok(report) => {
            if a.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                print!("{report}");
            }
            if report.unresolved() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("crm-sync reconcile: {e:#}");
            ExitCode::from(2)
        }
    }
}
