//! `crm-sync check` end to end: the binary run against the embedded Dataverse and Salesforce
//! emulators with a config file a user would write. A correct setup passes; each kind of
//! misconfiguration fails with its own line and a non-zero exit, and no secret is ever printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crm_emulator::{
    HubSpotConfig, HubSpotEmulator, SalesforceConfig, SalesforceEmulator, ServiceNowConfig,
    ServiceNowEmulator,
};
use dataverse_emulator::{
    AttributeChange, Emulator, EmulatorConfig, KeyStatus, default_privileges,
};

const DV_SECRET: &str = "dataverse-secret-for-check-tests";
const SF_SECRET: &str = "salesforce-secret-for-check-tests";
const HOOK_SECRET: &str = "webhook-secret-for-check-tests";

/// What differs from a correct deployment.
struct Setup {
    dv: EmulatorConfig,
    identity: &'static str,
    crm_choice: i32,
    dv_secret: &'static str,
    sf_secret: &'static str,
    /// The webhook section's secret reference; `None`: the correct secret in a file.
    webhook_secret: Option<&'static str>,
    /// Extra TOML appended to the source (mapping overrides).
    extra: &'static str,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            dv: EmulatorConfig {
                client_secret: DV_SECRET.into(),
                alternate_key: Some(KeyStatus::Active),
                ..EmulatorConfig::default()
            },
            identity: "alternate-key",
            crm_choice: 1,
            dv_secret: DV_SECRET,
            sf_secret: SF_SECRET,
            webhook_secret: None,
            extra: "",
        }
    }
}

struct Outcome {
    code: i32,
    out: String,
}

impl Outcome {
    fn has(&self, line: &str) -> bool {
        self.out.lines().any(|l| l.starts_with(line))
    }

    /// The run failed, with `line`, and printed no secret.
    fn fails_with(&self, line: &str) {
        assert_eq!(self.code, 1, "{}", self.out);
        assert!(
            self.has(line),
            "no line starting {line:?} in:\n{}",
            self.out
        );
        self.no_secrets();
    }

    fn no_secrets(&self) {
        for s in [DV_SECRET, SF_SECRET, HOOK_SECRET, "wrong-secret-"] {
            assert!(!self.out.contains(s), "secret {s} printed:\n{}", self.out);
        }
    }
}

fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("check-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A secret in a file of `dir`, as a `file:` reference.
fn secret_file(dir: &Path, name: &str, value: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).unwrap();
    format!("file:{}", p.display())
}

/// Runs `crm-sync check` on a config with `[dataverse]` pointed at `dv` and `source` (a
/// `[[sources]]` table) as written.
async fn run_check(
    dv: &Emulator,
    client_id: &str,
    dv_secret: &str,
    identity: &str,
    dir: &Path,
    source: &str,
) -> Outcome {
    let text = format!(
        r#"[dataverse]
identity = "{identity}"
url = "{dv_url}"
token_url = "{dv_token}"
client_id = "{client_id}"
client_secret = "{secret}"

{source}"#,
        dv_url = dv.base_url(),
        dv_token = dv.token_url(),
        secret = secret_file(dir, "dv-secret", dv_secret),
    );
    let config = dir.join("crm-sync.toml");
    std::fs::write(&config, text).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_crm-sync"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Shown when a test fails (captured otherwise).
    println!("{out}");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        out,
    }
}

/// The Salesforce source of `setup` against the emulators.
async fn check(setup: Setup) -> Outcome {
    let dv = Emulator::start(setup.dv.clone()).await.unwrap();
    let sf = SalesforceEmulator::start(SalesforceConfig {
        accounts: 3,
        contacts_per_account: 1,
        orphan_contacts: 0,
        client_secret: SF_SECRET.into(),
        ..SalesforceConfig::default()
    })
    .await
    .unwrap();
    let dir = scratch();
    let hook = setup.webhook_secret.map_or_else(
        || secret_file(&dir, "hook-secret", HOOK_SECRET),
        str::to_string,
    );
    let source = format!(
        r#"[[sources]]
id = "sf"
kind = "salesforce"
crm_choice = {choice}
base_url = "{sf_base}"
{extra}
[sources.connection]
auth = "salesforce-client-credentials"
token_url = "{sf_token}"
client_id = "{sf_client}"
client_secret = "{sf_secret}"
[sources.webhook]
auth = "contract"
secret = "{hook}"
"#,
        choice = setup.crm_choice,
        sf_base = sf.instance_url(),
        extra = setup.extra,
        sf_token = sf.token_url(),
        sf_client = sf.config().client_id,
        sf_secret = secret_file(&dir, "sf-secret", setup.sf_secret),
    );
    let o = run_check(
        &dv,
        &setup.dv.client_id,
        setup.dv_secret,
        setup.identity,
        &dir,
        &source,
    )
    .await;
    sf.shutdown().await;
    dv.shutdown().await;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_setup_passes_every_check() {
    let o = check(Setup::default()).await;
    assert_eq!(o.code, 0, "{}", o.out);
    for line in [
        "PASS  dataverse connection: token accepted",
        "PASS  account columns:",
        "PASS  contact columns:",
        "PASS  account msdyn_source_crm choices: values present: sf=1",
        "PASS  account alternate key: msdyn_source_crm_key is Active",
        "PASS  contact alternate key:",
        "PASS  dataverse privileges:",
        "PASS  source sf: CRM access: reachable",
        "PASS  source sf: account fields: every mapped field is readable",
        "PASS  source sf: contact fields: every mapped field is readable",
        "PASS  source sf: webhook auth: secret set",
    ] {
        assert!(o.has(line), "no line starting {line:?} in:\n{}", o.out);
    }
    // The service's recommended parallelism is reported.
    assert!(o.out.contains("x-ms-dop-hint 50"), "{}", o.out);
    assert!(!o.out.contains("FAIL"), "{}", o.out);
    o.no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_column_fails() {
    let mut s = Setup::default();
    s.dv.attributes = BTreeMap::from([(
        ("contact".to_string(), "msdyn_source_crm_url".to_string()),
        AttributeChange::Missing,
    )]);
    let o = check(s).await;
    o.fails_with(
        "FAIL  contact columns: contact.msdyn_source_crm_url does not exist in this environment",
    );
    assert!(o.has("PASS  account columns:"), "{}", o.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_choice_value_fails() {
    let o = check(Setup {
        crm_choice: 7,
        ..Setup::default()
    })
    .await;
    o.fails_with(
        "FAIL  account msdyn_source_crm choices: no option 7 (source sf) in msdyn_source_crm (it has 1, 2, 3)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alternate_key_that_is_not_active_fails_with_what_to_do() {
    for (status, line, fix) in [
        (
            Some(KeyStatus::Pending),
            "FAIL  account alternate key: msdyn_source_crm_key is Pending",
            "wait for the system job",
        ),
        (
            Some(KeyStatus::InProgress),
            "FAIL  account alternate key: msdyn_source_crm_key is InProgress",
            "wait for the index build",
        ),
        (
            Some(KeyStatus::Failed),
            "FAIL  account alternate key: msdyn_source_crm_key is Failed",
            "POST ReactivateEntityKey",
        ),
        (
            None,
            "FAIL  account alternate key: no alternate key on (msdyn_source_crm, msdyn_source_crm_id)",
            "POST EntityDefinitions(LogicalName='account')/Keys",
        ),
    ] {
        let mut s = Setup::default();
        s.dv.alternate_key = status;
        let o = check(s).await;
        o.fails_with(line);
        assert!(o.out.contains(fix), "{status:?}: {}", o.out);
    }
    // Under deterministic ids the key is not needed, and not checked.
    let mut s = Setup {
        identity: "deterministic-id",
        ..Setup::default()
    };
    s.dv.alternate_key = None;
    let o = check(s).await;
    assert_eq!(o.code, 0, "{}", o.out);
    assert!(!o.out.contains("alternate key"), "{}", o.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_shorter_than_the_mapping_assumes_fails() {
    let mut s = Setup::default();
    s.dv.attributes = BTreeMap::from([(
        ("account".to_string(), "name".to_string()),
        AttributeChange::MaxLength(100),
    )]);
    let o = check(s).await;
    o.fails_with(
        "FAIL  account columns: account.name has MaxLength 100 in this environment, the mapping writes up to 160",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_privilege_fails_naming_it() {
    let mut s = Setup::default();
    s.dv.privileges = default_privileges()
        .into_iter()
        .filter(|p| p != "prvAppendToAccount")
        .collect();
    let o = check(s).await;
    o.fails_with("FAIL  dataverse privileges: the application user lacks prvAppendToAccount");
    assert!(
        o.out
            .contains("fix: grant prvAppendToAccount to the application user's security role"),
        "{}",
        o.out
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_dataverse_secret_is_credentials_refused() {
    let o = check(Setup {
        dv_secret: "wrong-secret-dataverse",
        ..Setup::default()
    })
    .await;
    o.fails_with("FAIL  dataverse connection: credentials refused");
    // The CRM is still checked.
    assert!(o.has("PASS  source sf: CRM access"), "{}", o.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_crm_credentials_are_credentials_refused() {
    let o = check(Setup {
        sf_secret: "wrong-secret-salesforce",
        ..Setup::default()
    })
    .await;
    o.fails_with("FAIL  source sf: CRM access: credentials refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_mapped_field_fails_naming_it() {
    let o = check(Setup {
        extra: "[sources.mapping.account.columns]\nwebsiteurl = \"/Region__c\"\n",
        ..Setup::default()
    })
    .await;
    o.fails_with(
        "FAIL  source sf: account fields: not readable by the integration user: Region__c",
    );
    assert!(
        o.has("PASS  source sf: contact fields: every mapped field is readable"),
        "{}",
        o.out
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_webhook_secret_fails_naming_the_key() {
    let o = check(Setup {
        webhook_secret: Some("env:CRM_SYNC_CHECK_TEST_SURELY_UNSET"),
        ..Setup::default()
    })
    .await;
    o.fails_with("FAIL  source sf: webhook auth:");
    assert!(
        o.out.contains("sources[0].webhook.secret")
            && o.out
                .contains("environment variable CRM_SYNC_CHECK_TEST_SURELY_UNSET is not set"),
        "{}",
        o.out
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_fields_are_checked_on_a_record_and_its_password_is_never_shown() {
    let dv_cfg = Setup::default().dv;
    let dv = Emulator::start(dv_cfg.clone()).await.unwrap();
    let sn = ServiceNowEmulator::start(ServiceNowConfig {
        accounts: 2,
        contacts_per_account: 1,
        orphan_contacts: 0,
        ..ServiceNowConfig::default()
    })
    .await
    .unwrap();
    let dir = scratch();
    let source = |password: &str, extra: &str| {
        format!(
            r#"[[sources]]
id = "sn"
kind = "servicenow"
base_url = "{base}"
{extra}
[sources.connection]
auth = "servicenow-basic"
user = "{user}"
password = "{password}"
"#,
            base = sn.base_url(),
            user = sn.config().user,
            password = secret_file(&dir, "sn-password", password),
        )
    };
    let ok = source(&sn.config().password, "");
    let o = run_check(
        &dv,
        &dv_cfg.client_id,
        DV_SECRET,
        "alternate-key",
        &dir,
        &ok,
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.out);
    assert!(
        o.has("PASS  source sn: account fields: every mapped field is readable"),
        "{}",
        o.out
    );
    assert!(
        o.has("PASS  account msdyn_source_crm choices: values present: sn=2"),
        "{}",
        o.out
    );
    // No webhook section: webhooks are off, which is said but does not fail.
    assert!(
        o.has("WARN  source sn: webhook auth: no [sources.webhook]"),
        "{}",
        o.out
    );

    let unknown = source(
        &sn.config().password,
        "[sources.mapping.contact.columns]\ndepartment = \"/u_department\"\n",
    );
    let o = run_check(
        &dv,
        &dv_cfg.client_id,
        DV_SECRET,
        "alternate-key",
        &dir,
        &unknown,
    )
    .await;
    o.fails_with(
        "FAIL  source sn: contact fields: not readable by the integration user: u_department",
    );

    let wrong = source("wrong-secret-servicenow", "");
    let o = run_check(
        &dv,
        &dv_cfg.client_id,
        DV_SECRET,
        "alternate-key",
        &dir,
        &wrong,
    )
    .await;
    o.fails_with("FAIL  source sn: CRM access: credentials refused");
    assert!(!o.out.contains(&sn.config().password), "{}", o.out);
    sn.shutdown().await;
    dv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_properties_are_checked_without_reading_a_record() {
    let mut dv_cfg = Setup::default().dv;
    dv_cfg.choice_values = vec![1, 2, 3, 100_000_002];
    let dv = Emulator::start(dv_cfg.clone()).await.unwrap();
    let token = "pat-na1-check-test-token";
    let hs = HubSpotEmulator::start(HubSpotConfig {
        companies: 0,
        contacts_per_company: 0,
        orphan_contacts: 0,
        token: token.into(),
        ..HubSpotConfig::default()
    })
    .await
    .unwrap();
    let dir = scratch();
    let source = |token: &str, extra: &str| {
        format!(
            r#"[[sources]]
id = "hs"
kind = "hubspot"
crm_choice = 100000002
base_url = "https://app.hubspot.com"
vars = {{ portal_id = "62515" }}
{extra}
[sources.connection]
auth = "hubspot-private-app"
token = "{token}"
api_url = "{api}"
"#,
            token = secret_file(&dir, "hs-token", token),
            api = hs.base_url(),
        )
    };
    // An empty portal: the property list answers all the same.
    let o = run_check(
        &dv,
        &dv_cfg.client_id,
        DV_SECRET,
        "alternate-key",
        &dir,
        &source(token, ""),
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.out);
    assert!(
        o.has("PASS  source hs: account fields: every mapped field is readable"),
        "{}",
        o.out
    );
    let unknown = source(
        token,
        "[sources.mapping.account.columns]\nwebsiteurl = \"/properties/hs_region\"\n",
    );
    let o = run_check(
        &dv,
        &dv_cfg.client_id,
        DV_SECRET,
        "alternate-key",
        &dir,
        &unknown,
    )
    .await;
    o.fails_with(
        "FAIL  source hs: account fields: not readable by the integration user: hs_region",
    );
    let o = run_check(
        &dv,
        &dv_cfg.client_id,
        DV_SECRET,
        "alternate-key",
        &dir,
        &source("wrong-secret-hubspot", ""),
    )
    .await;
    o.fails_with("FAIL  source hs: CRM access: credentials refused");
    assert!(!o.out.contains(token), "{}", o.out);
    hs.shutdown().await;
    dv.shutdown().await;
}
