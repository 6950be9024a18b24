//! `crm-sync`: the command line. Each subcommand lives in its own module; this file only parses
//! arguments and maps outcomes to exit codes (0 ok, 1 some records failed, 2 unusable input).

mod map_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crm_sync::demo::{self, DemoCrm};
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
    }
}
