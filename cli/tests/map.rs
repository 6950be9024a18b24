//! `crm-sync map` run as a user runs it: on the vendor fixtures and the documented-shape examples.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> PathBuf {
    std::env::var("CRM_SYNC_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("../shared/fixtures"))
}

fn map(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .arg("map")
        .args(args)
        .output()
        .expect("runs")
}

fn lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn salesforce_change_event_prints_its_upsert() {
    let f = fixtures().join("salesforce-cdc-event.json");
    let o = map(&[
        "--source",
        "salesforce",
        "--entity",
        "account",
        "--crm-choice",
        "1",
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = lines(&o);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["method"], "PATCH");
    assert!(out[0]["path"].as_str().unwrap().starts_with("accounts("));
    assert_eq!(out[0]["body"]["name"], "Acme");
    assert_eq!(out[0]["body"]["msdyn_source_crm"], 1);
    assert_eq!(out[0]["body"]["msdyn_source_crm_id"], "001T1000001nI4jIAE");
    assert_eq!(out[0]["body"]["address1_line1"], "415 Mission Street");
}

#[test]
fn documented_pages_of_each_crm() {
    let ex = root().join("examples/payloads");
    let cases: [(&[&str], &str, usize); 5] = [
        (&["--source", "salesforce"], "salesforce-query-page.json", 3),
        (
            &["--source", "servicenow"],
            "servicenow-customer-account-page.json",
            1,
        ),
        (
            &["--source", "servicenow"],
            "servicenow-customer-contact-page.json",
            1,
        ),
        (
            &["--source", "hubspot", "--entity", "account"],
            "hubspot-companies-page.json",
            1,
        ),
        (
            &["--source", "hubspot", "--entity", "contact"],
            "hubspot-contacts-page.json",
            1,
        ),
    ];
    for (args, file, n) in cases {
        let path = ex.join(file);
        let mut a = args.to_vec();
        a.push(path.to_str().unwrap());
        let o = map(&a);
        assert!(
            o.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = lines(&o);
        assert_eq!(out.len(), n, "{file}");
        assert!(out.iter().all(|l| l["method"] == "PATCH"), "{file}");
    }
    // ServiceNow contact: its account reference becomes the parent binding to the account's
    // sys_id, which is also that account's primary key.
    let o = map(&[
        "--source",
        "servicenow",
        ex.join("servicenow-customer-contact-page.json")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(
        lines(&o)[0]["body"]["parentcustomerid_account@odata.bind"],
        "/accounts(86837a38-6f03-3100-3b3c-498f5d3ee4ca)"
    );
}

#[test]
fn hubspot_webhook_prints_a_fetch() {
    let f = fixtures().join("hubspot-webhook-v1.body.json");
    let o = map(&["--source", "hubspot", f.to_str().unwrap()]);
    assert!(o.status.success());
    assert_eq!(lines(&o)[0]["fetch"]["ids"][0], "123");
}

#[test]
fn bad_input_exits_non_zero_naming_the_problem() {
    // The REST guide's page elides records with `...`: not JSON, and the line is named.
    let f = fixtures().join("salesforce-query-page.doc.txt");
    let o = map(&["--source", "salesforce", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("salesforce-query-page.doc.txt: line 23 column 9: not valid JSON"),
        "{err}"
    );

    let o = map(&[
        "--source",
        "hubspot",
        root()
            .join("examples/payloads/hubspot-contacts-page.json")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--entity"));

    let o = map(&["--source", "salesforcе", "x.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown CRM kind"));

    let dir = std::env::temp_dir().join(format!("crm-sync-map-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("page.json");
    std::fs::write(
        &page,
        r#"{"records":[{"attributes":{"type":"Account"},"Id":"001D000000IRFmaIAH","Name":null},
        {"attributes":{"type":"Account"},"Id":"001D000000IomazIAB","Name":"Fine"}]}"#,
    )
    .unwrap();
    let o = map(&["--source", "salesforce", page.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "one record failed");
    assert_eq!(lines(&o).len(), 1, "the good record is still printed");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("page.json: records[0]: account 001D000000IRFmaIAH: required column `name` has no value (mapped from /Name)"), "{err}");

    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "[[sources]]\nid = \"sf\"\nkind = \"salesforce\"\ncrm_choice = 1\nbase_url = \"https://a.example\"\n[sources.mapping.account.columns]\nname = { pathh = \"/Name\" }\n").unwrap();
    let o = map(&[
        "--source",
        "sf",
        "--config",
        cfg.to_str().unwrap(),
        page.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("pathh") && err.contains("line 7"),
        "{err}"
    );
}

#[test]
fn config_overrides_and_alternate_keys() {
    let dir = std::env::temp_dir().join(format!("crm-sync-map-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        r#"
[dataverse]
identity = "alternate-key"

[[sources]]
id = "sf-prod"
kind = "salesforce"
crm_choice = 100000001
base_url = "https://acme.my.salesforce.com"
phone_country = "1"

[sources.mapping.account.columns]
new_tier = { path = "/Tier__c", type = "text", max_length = 20 }
"#,
    )
    .unwrap();
    let page = dir.join("acct.json");
    std::fs::write(&page, r#"{"attributes":{"type":"Account"},"Id":"001D000000IRFmaIAH","Name":"Acme","Tier__c":"Gold","Phone":"415 555 0100"}"#).unwrap();
    let o = map(&[
        "--source",
        "sf-prod",
        "--config",
        cfg.to_str().unwrap(),
        page.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let l = &lines(&o)[0];
    assert_eq!(
        l["path"],
        "accounts(msdyn_source_crm=100000001,msdyn_source_crm_id='001D000000IRFmaIAH')"
    );
    assert_eq!(l["body"]["new_tier"], "Gold");
    assert_eq!(l["body"]["telephone1"], "+14155550100");
    assert!(l["body"].get("msdyn_source_crm_id").is_none());
}
