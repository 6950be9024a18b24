//! The example configurations in `examples/`: one per CRM, each loads and validates as written,
//! keeps its secrets as references, and builds every client serve would build.

use std::path::PathBuf;

use pipeline::config::Config;

fn examples() -> Vec<(String, PathBuf)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().to_string(), p))
        .collect();
    out.sort();
    out
}

#[test]
fn one_example_per_crm() {
    let names: Vec<String> = examples().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "generic-rest",
            "hubspot",
            "pipedrive",
            "salesforce",
            "servicenow",
            "zendesk"
        ]
    );
}

#[test]
fn every_example_loads_as_written() {
    for (name, path) in examples() {
        let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.sources.len(), 1, "{name}");
        let kind = cfg.sources[0].kind.as_str();
        assert_eq!(name.split('-').next(), Some(kind), "{name}: kind {kind}");
        assert!(cfg.sources[0].connection.is_some(), "{name}: can be synced");
        assert!(cfg.sources[0].webhook.is_some(), "{name}: takes webhooks");
        assert!(
            cfg.dataverse.is_connected(),
            "{name}: says where Dataverse is"
        );
    }
}

/// Secret keys anywhere in the file hold `env:` references, never values.
#[test]
fn examples_hold_no_secret_values() {
    const SECRET_KEYS: [&str; 6] = [
        "client_secret",
        "secret",
        "password",
        "token",
        "private_key",
        "value",
    ];
    fn walk(v: &toml::Value, at: &str, name: &str) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    if SECRET_KEYS.contains(&k.as_str())
                        && let toml::Value::String(s) = v
                    {
                        assert!(s.starts_with("env:"), "{name}: {at}.{k} = {s:?}");
                    }
                    walk(v, &format!("{at}.{k}"), name);
                }
            }
            toml::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{at}[{i}]"), name);
                }
            }
            _ => {}
        }
    }
    for (name, path) in examples() {
        let doc: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        walk(&doc, "", &name);
    }
}

/// With its references given values, each example builds what serve builds: the CRM reader,
/// the webhook verification and the Dataverse client (nothing is contacted).
#[test]
fn every_example_builds_its_clients() {
    for (name, path) in examples() {
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"env:", "\"value-of-");
        let cfg = Config::parse(&text, &name).unwrap_or_else(|e| panic!("{e}"));
        let sources = cfg.sources().unwrap_or_else(|e| panic!("{name}: {e}"));
        let crms = cfg
            .crm_readers(&sources)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(crms.len(), 1, "{name}");
        assert!(
            sources.webhook(&cfg.sources[0].id).is_some(),
            "{name}: webhook"
        );
        cfg.dataverse_writer()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The generic REST example's own mapping, on its example page: an upsert and, for the archived
/// company, a deactivation (its delete policy).
#[test]
fn the_generic_rest_example_maps_its_example_page() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .args([
            "map", "--source", "acme-crm", "--entity", "account", "--config",
        ])
        .arg(root.join("examples/generic-rest.toml"))
        .arg(root.join("examples/payloads/generic-rest-companies-page.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["body"]["name"], "Acme Ltd");
    assert_eq!(lines[0]["body"]["telephone1"], "+442079460000");
    assert_eq!(lines[1]["body"]["statecode"], 1);
}
