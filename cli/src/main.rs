//! `crm-sync`: the command line. Each subcommand lives in its own module; this file only parses
//! arguments and maps outcomes to exit codes (0 ok, 1 some records failed, 2 unusable input).

mod map_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
