//! `crm-sync connect` and `crm-sync disconnect`: arguments and output; the work is in
//! `crm_sync::connect`. Kept out of `main.rs` so each command is one line there.

use std::path::PathBuf;
use std::process::ExitCode;

use crm_sync::connect::{self, DEFAULT_ADMIN_TOKEN, SalesforceArgs};

#[derive(clap::Subcommand)]
pub enum ConnectTarget {
    /// Provision the Salesforce end of a source's connection, least privilege, as a Salesforce
    /// administrator: a permission set reading exactly the mapped Account and Contact fields,
    /// an integration user (Salesforce Integration licence) holding it, and a connected app
    /// for the client credentials flow running as that user. Idempotent: running it again
    /// changes nothing, or completes what a failed run left half-done.
    Salesforce(SalesforceConnect),
    /// Provision the Dataverse end, as a System Administrator of the environment: a security
    /// role `crm-sync` with only the privileges the configuration needs on account and contact
    /// (delete only under a `delete` policy), assigned to the application user of [dataverse]
    /// client_id, and for identity = "alternate-key" the key on (msdyn_source_crm,
    /// msdyn_source_crm_id), waited for until Active. Without the rights, prints the steps.
    Dataverse(DataverseConnect),
}

#[derive(clap::Args)]
pub struct DataverseConnect {
    /// Configuration file with [dataverse] url and client_id.
    #[arg(long, default_value = "crm-sync.toml")]
    config: PathBuf,
    /// Reference to an access token of a System Administrator for the environment
    /// (env:NAME or file:/path); never printed.
    #[arg(long, default_value = "env:DATAVERSE_ADMIN_TOKEN")]
    admin_token: String,
    /// Seconds to wait for the alternate key's index to become Active.
    #[arg(long, default_value_t = 600)]
    key_wait: u64,
}

#[derive(clap::Subcommand)]
pub enum DisconnectTarget {
    /// Remove the connected app and the permission set, and deactivate the integration user
    /// (Salesforce does not delete users): the connector can no longer read Salesforce.
    Salesforce(SalesforceCommon),
}

#[derive(clap::Args)]
pub struct SalesforceCommon {
    /// Configuration file with the source and its [sources.connection] (client credentials:
    /// client_id becomes the app's consumer key, client_secret a file: where its secret goes).
    #[arg(long, default_value = "crm-sync.toml")]
    config: PathBuf,
    /// The source id (default: the configuration's only Salesforce source).
    #[arg(long)]
    source: Option<String>,
    /// Reference to an access token of a Salesforce administrator (env:NAME or file:/path);
    /// never printed.
    #[arg(long, default_value = DEFAULT_ADMIN_TOKEN)]
    admin_token: String,
    /// The org's URL (default: the source's base_url).
    #[arg(long)]
    instance_url: Option<String>,
}

#[derive(clap::Args)]
pub struct SalesforceConnect {
    #[command(flatten)]
    common: SalesforceCommon,
    /// Log in as the integration user and check every mapped field is readable; list the
    /// ones that are not. Needs no admin token.
    #[arg(long, conflicts_with = "reconnect")]
    verify: bool,
    /// After the mappings changed: grant the fields they read now and revoke the ones they no
    /// longer read (and recreate whatever was removed).
    #[arg(long)]
    reconnect: bool,
    /// The integration user's username (default crm-sync.<source>@<instance host>).
    #[arg(long)]
    username: Option<String>,
    /// The integration user's email (default: the username).
    #[arg(long)]
    email: Option<String>,
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .ok()
}

fn args(
    common: SalesforceCommon,
    username: Option<String>,
    email: Option<String>,
) -> SalesforceArgs {
    SalesforceArgs {
        config: common.config,
        source: common.source,
        admin_token: common.admin_token,
        instance_url: common.instance_url,
        username,
        email,
    }
}

pub fn connect(target: ConnectTarget) -> ExitCode {
    let Some(rt) = runtime() else {
        eprintln!("crm-sync connect: cannot start the runtime");
        return ExitCode::from(2);
    };
    let a = match target {
        ConnectTarget::Salesforce(a) => a,
        ConnectTarget::Dataverse(d) => {
            return match rt.block_on(connect::connect_dataverse(
                &d.config,
                &d.admin_token,
                std::time::Duration::from_secs(d.key_wait),
            )) {
                Ok(r) => {
                    println!("crm-sync connect dataverse");
                    for s in &r.steps {
                        println!("{s}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("crm-sync connect dataverse: {e:#}");
                    ExitCode::from(1)
                }
            };
        }
    };
    if a.verify {
        return match rt.block_on(connect::verify_salesforce(
            &a.common.config,
            a.common.source.as_deref(),
        )) {
            Ok(v) if v.unreadable.is_empty() => {
                println!(
                    "PASS  source {}: the integration user reads all {} fields crm-sync reads",
                    v.source, v.checked
                );
                ExitCode::SUCCESS
            }
            Ok(v) => {
                println!(
                    "FAIL  source {}: the integration user cannot read {}",
                    v.source,
                    v.unreadable.join(", ")
                );
                println!(
                    "      fix: crm-sync connect salesforce --reconnect --config {}",
                    a.common.config.display()
                );
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("crm-sync connect salesforce --verify: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let what = if a.reconnect { " --reconnect" } else { "" };
    match rt.block_on(connect::connect_salesforce(&args(
        a.common, a.username, a.email,
    ))) {
        Ok(r) => {
            println!("crm-sync connect salesforce{what}: source {}", r.source);
            for s in &r.steps {
                println!("{s}");
            }
            println!("ids kept in {}", r.state_file.display());
            println!(
                "next: crm-sync connect salesforce --verify (a new connected app can take a few minutes to accept logins)"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crm-sync connect salesforce{what}: {e:#}");
            ExitCode::from(1)
        }
    }
}

pub fn disconnect(target: DisconnectTarget) -> ExitCode {
    let Some(rt) = runtime() else {
        eprintln!("crm-sync disconnect: cannot start the runtime");
        return ExitCode::from(2);
    };
    let DisconnectTarget::Salesforce(c) = target;
    match rt.block_on(connect::disconnect_salesforce(&args(c, None, None))) {
        Ok(r) => {
            println!("crm-sync disconnect salesforce: source {}", r.source);
            for s in &r.steps {
                println!("{s}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crm-sync disconnect salesforce: {e:#}");
            ExitCode::from(1)
        }
    }
}
