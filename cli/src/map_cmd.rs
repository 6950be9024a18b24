//! `crm-sync map`: what an engineer runs to check a mapping before deploying. It reads a payload
//! exactly as the pipeline would and prints the requests it would send, without sending them.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use mapping::payload::decode;
use mapping::{
    CrmKind, Entity, IdentityStrategy, Mapper, Notice, Outcome, SourceConfig, SourceId, row,
};
use pipeline::config::Config;
use serde_json::{Value, json};

pub struct Args {
    pub source: String,
    pub entity: Option<Entity>,
    pub config: Option<PathBuf>,
    pub identity: Option<IdentityStrategy>,
    pub base_url: Option<String>,
    pub crm_choice: Option<i32>,
    pub payload_file: PathBuf,
}

pub fn run(args: &Args) -> ExitCode {
    match map(args, &mut std::io::stdout().lock()) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Maps the payload, printing requests to `out` and diagnostics to stderr; returns how many
/// records failed, or an error when nothing could be mapped at all.
fn map(args: &Args, out: &mut dyn Write) -> Result<usize, String> {
    let (mapper, identity) = mapper_for(args)?;
    let file = args.payload_file.display().to_string();
    let text = std::fs::read(&args.payload_file).map_err(|e| format!("{file}: {e}"))?;
    let payload: Value = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{file}: line {} column {}: not valid JSON: {}",
            e.line(),
            e.column(),
            strip_position(&e.to_string())
        )
    })?;
    let items = decode(&mapper, &payload, args.entity).map_err(|e| format!("{file}: {e}"))?;
    let ctx = mapper.row_context(identity);
    let mut failed = 0;
    for item in items {
        let at = if item.at.is_empty() {
            file.clone()
        } else {
            format!("{file}: {}", item.at)
        };
        let line = match item.outcome {
            Outcome::Notice {
                notice: Notice::Change(c),
                warnings,
            } => {
                for w in warnings {
                    eprintln!("warning: {at}: {} {}: {w}", c.entity, c.source_id);
                }
                match row::build(&c, &ctx) {
                    Ok(Some(op)) => serde_json::to_string(&op).expect("serialises"),
                    Ok(None) => {
                        eprintln!(
                            "note: {at}: delete of {} {} ignored by the source's delete policy",
                            c.entity, c.source_id
                        );
                        continue;
                    }
                    Err(e) => {
                        eprintln!("error: {at}: {} {}: {e}", c.entity, c.source_id);
                        failed += 1;
                        continue;
                    }
                }
            }
            Outcome::Notice {
                notice: Notice::Fetch(f),
                ..
            } => {
                json!({"fetch": {"entity": f.entity, "ids": f.ids, "reason": f.reason}}).to_string()
            }
            Outcome::Skipped(why) => {
                eprintln!("note: {at}: skipped: {why}");
                continue;
            }
            Outcome::Failed(e) => {
                eprintln!("error: {at}: {e}");
                failed += 1;
                continue;
            }
        };
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    Ok(failed)
}

fn strip_position(msg: &str) -> &str {
    msg.split(" at line ").next().unwrap_or(msg)
}

fn mapper_for(args: &Args) -> Result<(Mapper, IdentityStrategy), String> {
    if let Some(path) = &args.config {
        let cfg = Config::load(path).map_err(|e| e.to_string())?;
        let identity = args.identity.unwrap_or(cfg.dataverse.identity);
        let configs = cfg.source_configs();
        let by_id = configs.iter().find(|s| s.id.as_str() == args.source);
        let by_kind: Vec<_> = configs
            .iter()
            .filter(|s| s.kind.as_str() == args.source)
            .collect();
        let src: &SourceConfig = match (by_id, by_kind.as_slice()) {
            (Some(s), _) => s,
            (None, [s]) => s,
            (None, []) => {
                return Err(format!(
                    "{}: no source with id or kind `{}`",
                    path.display(),
                    args.source
                ));
            }
            (None, _) => {
                return Err(format!(
                    "{}: several sources are of kind `{}`; give the source id",
                    path.display(),
                    args.source
                ));
            }
        };
        let mapper = Mapper::new(src).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok((mapper, identity));
    }
    let kind: CrmKind = args
        .source
        .parse()
        .map_err(|e: mapping::ConfigError| e.message)?;
    if kind == CrmKind::Generic {
        return Err(
            "the generic kind has no built-in mapping: pass --config with the source's mapping"
                .into(),
        );
    }
    let base_url = args.base_url.clone().unwrap_or_else(|| {
        match kind {
            CrmKind::Salesforce => "https://example.my.salesforce.com",
            CrmKind::Servicenow => "https://example.service-now.com",
            CrmKind::Hubspot => "https://api.hubapi.com",
            CrmKind::Zendesk => "https://example.zendesk.com",
            CrmKind::Pipedrive | CrmKind::Generic => "https://example.pipedrive.com",
        }
        .to_string()
    });
    let mut cfg = SourceConfig::new(
        SourceId::new(kind.as_str()).expect("kind names are valid ids"),
        kind,
        base_url.clone(),
    );
    cfg.crm_choice = args.crm_choice.or(kind.documented_choice());
    if cfg.crm_choice.is_none() {
        eprintln!(
            "note: preview without --config: msdyn_source_crm has no documented value for {kind}; using 0 (set crm_choice in the config, or pass --crm-choice)"
        );
        cfg.crm_choice = Some(0);
    }
    if kind == CrmKind::Hubspot {
        eprintln!(
            "note: preview without --config: HubSpot record URLs use portal id 0 (set vars.portal_id in the config)"
        );
        cfg.vars.insert("portal_id".into(), "0".into());
    }
    if args.base_url.is_none() && kind != CrmKind::Hubspot {
        eprintln!("note: preview without --config: record URLs use {base_url} (pass --base-url)");
    }
    let mapper = Mapper::new(&cfg).map_err(|e| e.to_string())?;
    Ok((mapper, args.identity.unwrap_or_default()))
}
