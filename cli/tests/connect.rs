//! `crm-sync connect|disconnect salesforce` end to end against the Salesforce emulator, which
//! enforces the permission set it provisions on every read: connect, verify, sync, add a field
//! to the mapping and see the clear error, reconnect, sync again; disconnect and see reads
//! refused. Running connect twice changes nothing, a half-failed connect completes on the next
//! run, and the permission set grants exactly the documented minimum, field by field.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crm_sync::jobs::LocalState;
use crm_sync::serve::Serve;
use crm_sync::sync_cmd;
use serde_json::{Map, Value};
use world::World;

#[path = "support/world.rs"]
mod world;

const CONSUMER_KEY: &str = "crm-sync-test-consumer-key";

struct Run {
    code: i32,
    out: String,
}

/// The binary with the admin's token in the environment (as an admin would export it).
async fn crm_sync(w: &World, args: &[&str]) -> Run {
    let bin = env!("CARGO_BIN_EXE_crm-sync");
    let token = w.sf.admin_token();
    let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    full.extend(["--config".into(), w.config.display().to_string()]);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(&full)
            .env("SALESFORCE_ADMIN_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("$ crm-sync {}\n{text}", args.join(" "));
    // Neither the admin's token nor the generated consumer secret is ever printed.
    assert!(
        !text.contains(&w.sf.admin_token()),
        "admin token printed:\n{text}"
    );
    if let Ok(secret) = std::fs::read_to_string(w.dir.join("sf-app-secret")) {
        let secret = secret.trim();
        assert!(
            secret.is_empty() || !text.contains(secret),
            "secret printed:\n{text}"
        );
    }
    Run {
        code: out.status.code().unwrap_or(-1),
        out: text,
    }
}

/// Points the source's connection at the app connect will create (its consumer key, and a
/// secret file connect fills), and applies `mapping` (TOML appended to the source).
fn configure(w: &World, mapping: &str) {
    let text = std::fs::read_to_string(&w.config).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("client_id = \"3MVG9") {
            out.push_str(&format!("client_id = \"{CONSUMER_KEY}\"\n"));
        } else if line.starts_with("client_secret = \"file:") && line.contains("salesforce-secret")
        {
            out.push_str(&format!(
                "client_secret = \"file:{}\"\n",
                w.dir.join("sf-app-secret").display()
            ));
        } else if line.starts_with("# mapping:") {
            break;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("# mapping:\n");
    out.push_str(mapping);
    std::fs::write(&w.config, out).unwrap();
}

/// Runs an initial sync through serve and returns the job's final status line and error.
async fn sync(w: &World) -> (String, Option<String>) {
    let serve = Serve::start(&w.options()).await.unwrap();
    let job = sync_cmd::start(&w.start_args()).await.unwrap();
    let state = LocalState::open(&w.state).unwrap();
    let done = sync_cmd::wait(&state, Some(&job), Duration::from_secs(120))
        .await
        .unwrap();
    serve.shutdown().await;
    let s = &done[0];
    (
        s.state().to_string(),
        s.failed.clone().or(s.last_error.clone()),
    )
}

fn ours(w: &World, object: &str, key: &str, ps: &str) -> Vec<Map<String, Value>> {
    w.sf.setup_records(object)
        .into_iter()
        .filter(|r| r.get(key).and_then(Value::as_str) == Some(ps))
        .collect()
}

fn permission_set(w: &World) -> Map<String, Value> {
    let sets: Vec<_> =
        w.sf.setup_records("PermissionSet")
            .into_iter()
            .filter(|p| p["Name"] == "CrmSync_salesforce")
            .collect();
    assert_eq!(sets.len(), 1, "{sets:?}");
    sets[0].clone()
}

/// The FieldPermissions of crm-sync's permission set, as `Object.Field` with (read, edit).
fn granted_fields(w: &World) -> BTreeSet<String> {
    let ps = permission_set(w)["Id"].as_str().unwrap().to_string();
    ours(w, "FieldPermissions", "ParentId", &ps)
        .iter()
        .map(|f| {
            assert_eq!(f["PermissionsRead"], true, "{f:?}");
            assert_eq!(f["PermissionsEdit"], false, "read-only: {f:?}");
            f["Field"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Every setup record, to compare before and after a run.
fn snapshot(w: &World) -> Vec<Vec<Map<String, Value>>> {
    [
        "PermissionSet",
        "ObjectPermissions",
        "FieldPermissions",
        "PermissionSetAssignment",
        "PermissionSetLicenseAssign",
        "User",
    ]
    .iter()
    .map(|o| w.sf.setup_records(o))
    .collect()
}

/// What the built-in Salesforce profile reads, minus what is always readable with the object
/// (Id, Name, LastName, FirstName, Salutation, SystemModstamp, IsDeleted: not permissionable).
fn expected_fields(contact_extra: &[&str], contact_removed: &[&str]) -> BTreeSet<String> {
    let mut account: Vec<String> = [
        "AccountNumber",
        "Phone",
        "Fax",
        "Website",
        "TickerSymbol",
        "Sic",
        "Description",
        "NumberOfEmployees",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut contact: Vec<String> = [
        "AccountId",
        "Title",
        "Department",
        "Email",
        "Phone",
        "HomePhone",
        "OtherPhone",
        "MobilePhone",
        "Fax",
        "AssistantName",
        "AssistantPhone",
        "Description",
        "Birthdate",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for part in ["Street", "City", "State", "PostalCode", "Country"] {
        account.push(format!("Billing{part}"));
        account.push(format!("Shipping{part}"));
        contact.push(format!("Mailing{part}"));
    }
    contact.extend(contact_extra.iter().map(|s| s.to_string()));
    contact.retain(|f| !contact_removed.contains(&f.as_str()));
    account
        .iter()
        .map(|f| format!("Account.{f}"))
        .chain(contact.iter().map(|f| format!("Contact.{f}")))
        .collect()
}

fn secret_file(w: &World) -> std::path::PathBuf {
    w.dir.join("sf-app-secret")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_verify_sync_add_a_field_reconnect_sync_and_disconnect() {
    let w = World::start("connect-flow", 20).await;
    // The mapping starts without Department.
    configure(&w, "[sources.mapping.contact]\nremove = [\"department\"]\n");

    let r = crm_sync(&w, &["connect", "salesforce"]).await;
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out.contains("created  permission set CrmSync_salesforce"),
        "{}",
        r.out
    );
    assert!(
        r.out.contains("created  connected app CrmSync_salesforce"),
        "{}",
        r.out
    );
    assert!(Path::new(&w.dir.join("crm-sync.connections.json")).exists());
    let secret = std::fs::read_to_string(secret_file(&w)).unwrap();
    assert!(secret.trim().len() >= 32, "a generated secret was written");
    assert_eq!(w.sf.connected_apps(), ["CrmSync_salesforce"]);

    let r = crm_sync(&w, &["connect", "salesforce", "--verify"]).await;
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(r.out.starts_with("PASS"), "{}", r.out);

    let (state, error) = sync(&w).await;
    assert_eq!(state, "finished", "{error:?}");
    let c = w.comparison();
    assert!(c.is_exact(), "{c}");

    // Department is mapped now: the integration user may not read it.
    configure(&w, "");
    let r = crm_sync(&w, &["connect", "salesforce", "--verify"]).await;
    assert_eq!(r.code, 1, "{}", r.out);
    assert!(
        r.out.contains("cannot read Contact.Department"),
        "{}",
        r.out
    );
    assert!(r.out.contains("--reconnect"), "{}", r.out);
    // `crm-sync check` reports the connection and the same fix.
    let r = crm_sync(&w, &["check"]).await;
    assert_eq!(r.code, 1, "{}", r.out);
    assert!(
        r.out.contains(
            "PASS  source salesforce: Salesforce connection: provisioned by crm-sync connect"
        ),
        "{}",
        r.out
    );
    assert!(
        r.out.contains("FAIL  source salesforce: contact fields: not readable by the integration user: Department"),
        "{}",
        r.out
    );
    assert!(
        r.out
            .contains("fix: crm-sync connect salesforce --reconnect"),
        "{}",
        r.out
    );
    let (state, error) = sync(&w).await;
    assert_eq!(state, "failed");
    let error = error.expect("the failure is recorded");
    assert!(error.contains("Contact.Department"), "{error}");
    assert!(
        error.contains("crm-sync connect salesforce --reconnect"),
        "{error}"
    );

    let r = crm_sync(&w, &["connect", "salesforce", "--reconnect"]).await;
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out.contains("created  read on Contact.Department"),
        "{}",
        r.out
    );
    let r = crm_sync(&w, &["connect", "salesforce", "--verify"]).await;
    assert_eq!(r.code, 0, "{}", r.out);
    let (state, error) = sync(&w).await;
    assert_eq!(state, "finished", "{error:?}");
    assert!(w.comparison().is_exact());

    // Removing a field from the mapping removes its permission on reconnect.
    configure(
        &w,
        "[sources.mapping.contact]\nremove = [\"assistantphone\"]\n",
    );
    let r = crm_sync(&w, &["connect", "salesforce", "--reconnect"]).await;
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out
            .contains("removed  read on Contact.AssistantPhone (no longer mapped)"),
        "{}",
        r.out
    );
    assert_eq!(
        granted_fields(&w),
        expected_fields(&[], &["AssistantPhone"])
    );

    // Disconnect: the app is gone, the user inactive, the permission set removed; reads fail.
    let r = crm_sync(&w, &["disconnect", "salesforce"]).await;
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(w.sf.connected_apps().is_empty());
    assert!(
        w.sf.setup_records("PermissionSet")
            .iter()
            .all(|p| p["Name"] != "CrmSync_salesforce")
    );
    let user =
        w.sf.setup_records("User")
            .into_iter()
            .find(|u| u["Username"] == "crm-sync.salesforce@127.0.0.1")
            .unwrap();
    assert_eq!(user["IsActive"], false, "deactivated, not deleted");
    let r = crm_sync(&w, &["connect", "salesforce", "--verify"]).await;
    assert_eq!(r.code, 1, "{}", r.out);
    assert!(r.out.contains("invalid_client_id"), "{}", r.out);
    let (state, _) = sync(&w).await;
    assert_eq!(state, "failed");
    // Disconnecting again finds everything already gone.
    let r = crm_sync(&w, &["disconnect", "salesforce"]).await;
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(r.out.contains("already absent  connected app"), "{}", r.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_twice_changes_nothing_and_grants_exactly_the_minimum() {
    let w = World::start("connect-twice", 5).await;
    configure(&w, "");
    let r = crm_sync(&w, &["connect", "salesforce"]).await;
    assert_eq!(r.code, 0, "{}", r.out);
    let before = snapshot(&w);
    let r = crm_sync(&w, &["connect", "salesforce"]).await;
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(!r.out.contains(" created  "), "{}", r.out);
    assert!(!r.out.contains(" updated  "), "{}", r.out);
    assert!(!r.out.contains(" removed  "), "{}", r.out);
    assert_eq!(snapshot(&w), before, "the second run changed nothing");

    // Field by field: read on exactly the mapped fields (+ AccountId), nothing editable.
    assert_eq!(granted_fields(&w), expected_fields(&[], &[]));
    // Object by object: read on Account and Contact only, no create/edit/delete/view all.
    let ps = permission_set(&w);
    let ps_id = ps["Id"].as_str().unwrap();
    let objects = ours(&w, "ObjectPermissions", "ParentId", ps_id);
    let mut names: Vec<&str> = objects
        .iter()
        .map(|o| o["SobjectType"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["Account", "Contact"]);
    for o in &objects {
        assert_eq!(o["PermissionsRead"], true);
        for p in [
            "PermissionsCreate",
            "PermissionsEdit",
            "PermissionsDelete",
            "PermissionsViewAllRecords",
            "PermissionsModifyAllRecords",
        ] {
            assert_eq!(o[p], false, "{p} on {}", o["SobjectType"]);
        }
    }
    // The user: Salesforce Integration licence's profile, this permission set only.
    let user =
        w.sf.setup_records("User")
            .into_iter()
            .find(|u| u["Username"] == "crm-sync.salesforce@127.0.0.1")
            .unwrap();
    let profile =
        w.sf.setup_records("Profile")
            .into_iter()
            .find(|p| p["Id"] == user["ProfileId"])
            .unwrap();
    assert_eq!(profile["Name"], "Minimum Access - API Only Integrations");
    let uid = user["Id"].as_str().unwrap();
    let sets: Vec<_> = ours(&w, "PermissionSetAssignment", "AssigneeId", uid)
        .iter()
        .map(|a| a["PermissionSetId"].clone())
        .collect();
    assert_eq!(sets, [ps["Id"].clone()]);
    assert_eq!(
        ours(&w, "PermissionSetLicenseAssign", "AssigneeId", uid).len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_failed_connect_completes_on_the_next_run() {
    let w = World::start("connect-half", 5).await;
    configure(&w, "");
    // A consumer secret Salesforce refuses (shorter than 8 characters): the run stops at the
    // connected app, after the permission set, user and assignments exist.
    std::fs::write(secret_file(&w), "short\n").unwrap();
    let r = crm_sync(&w, &["connect", "salesforce"]).await;
    assert_eq!(r.code, 1, "{}", r.out);
    assert!(r.out.contains("createMetadata ConnectedApp"), "{}", r.out);
    assert!(w.sf.connected_apps().is_empty());
    assert_eq!(granted_fields(&w), expected_fields(&[], &[]));
    let state = std::fs::read_to_string(w.dir.join("crm-sync.connections.json")).unwrap();
    assert!(state.contains("permission_set_id"), "{state}");

    std::fs::write(secret_file(&w), "").unwrap();
    let r = crm_sync(&w, &["connect", "salesforce"]).await;
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out
            .contains("unchanged  permission set CrmSync_salesforce"),
        "{}",
        r.out
    );
    assert!(
        r.out.contains("created  connected app CrmSync_salesforce"),
        "{}",
        r.out
    );
    assert_eq!(
        w.sf.setup_records("PermissionSet")
            .iter()
            .filter(|p| p["Name"] == "CrmSync_salesforce")
            .count(),
        1
    );
    let r = crm_sync(&w, &["connect", "salesforce", "--verify"]).await;
    assert_eq!(r.code, 0, "{}", r.out);
}

// ---- Dataverse ----------------------------------------------------------------------------

const DV_ADMIN: &str = "dv-admin-token-Hq8Lm3";

struct Dv {
    dv: dataverse_emulator::Emulator,
    dir: std::path::PathBuf,
    config: std::path::PathBuf,
}

async fn dataverse(
    name: &str,
    delete_policy: &str,
    build: dataverse_emulator::security::KeyBuild,
) -> Dv {
    use dataverse_emulator::{Emulator, EmulatorConfig};
    let dv = Emulator::start(EmulatorConfig {
        admin_token: Some(DV_ADMIN.into()),
        // The application user holds no role yet.
        privileges: vec![],
        key_build: build,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let dir = world::scratch(name);
    std::fs::write(dir.join("dv-secret"), "secret-1\n").unwrap();
    let config = dir.join("crm-sync.toml");
    std::fs::write(
        &config,
        format!(
            r#"[dataverse]
identity = "alternate-key"
url = "{}"
token_url = "{}"
client_id = "{}"
client_secret = "file:{}"

[[sources]]
id = "salesforce"
kind = "salesforce"
crm_choice = 1
base_url = "https://acme.my.salesforce.com"
delete_policy = "{delete_policy}"
"#,
            dv.base_url(),
            dv.token_url(),
            EmulatorConfig::default().client_id,
            dir.join("dv-secret").display()
        ),
    )
    .unwrap();
    Dv { dv, dir, config }
}

async fn run_dv(d: &Dv, args: &[&str], token: Option<&str>) -> Run {
    let bin = env!("CARGO_BIN_EXE_crm-sync");
    let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    full.extend(["--config".into(), d.config.display().to_string()]);
    let token = token.map(str::to_string);
    let out = tokio::task::spawn_blocking(move || {
        let mut c = Command::new(bin);
        c.args(&full).env_remove("DATAVERSE_ADMIN_TOKEN");
        if let Some(t) = token {
            c.env("DATAVERSE_ADMIN_TOKEN", t);
        }
        c.output().unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("$ crm-sync {}\n{text}", args.join(" "));
    assert!(!text.contains(DV_ADMIN), "admin token printed:\n{text}");
    assert!(!text.contains("secret-1"), "client secret printed:\n{text}");
    Run {
        code: out.status.code().unwrap_or(-1),
        out: text,
    }
}

fn privileges(actions: &[&str]) -> std::collections::BTreeMap<String, String> {
    ["Account", "Contact"]
        .iter()
        .flat_map(|t| {
            actions
                .iter()
                .map(move |a| (format!("prv{a}{t}"), "Global".to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_dataverse_grants_exactly_the_minimum_and_creates_the_key() {
    let d = dataverse("dv-connect", "deactivate", Default::default()).await;
    let r = run_dv(
        &d,
        &["connect", "dataverse", "--key-wait", "20"],
        Some(DV_ADMIN),
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out.contains("created  security role crm-sync"),
        "{}",
        r.out
    );
    assert!(
        r.out
            .contains("created  alternate key msdyn_source_crm_key on account (Active)"),
        "{}",
        r.out
    );
    // Privilege by privilege: no delete under the deactivate policy, nothing else.
    let roles = d.dv.app_user_roles();
    assert_eq!(roles.len(), 1, "{roles:?}");
    assert_eq!(
        roles["crm-sync"],
        privileges(&["Create", "Read", "Write", "Append", "AppendTo"])
    );

    let r = run_dv(
        &d,
        &["connect", "dataverse", "--key-wait", "20"],
        Some(DV_ADMIN),
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        !r.out.contains(" created  ") && !r.out.contains(" updated  "),
        "{}",
        r.out
    );
    assert_eq!(d.dv.role_names(), ["crm-sync"], "no second role");

    // `crm-sync check` sees the privileges and the Active keys.
    let r = run_dv(&d, &["check"], None).await;
    assert_eq!(r.code, 0, "{}", r.out);
    for line in [
        "PASS  account alternate key: msdyn_source_crm_key is Active",
        "PASS  contact alternate key: msdyn_source_crm_key is Active",
        "PASS  dataverse privileges: 10 privileges held",
    ] {
        assert!(r.out.contains(line), "{line} in:\n{}", r.out);
    }

    // The delete policy changes: the role gains delete, on reconnect.
    let text = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("\"deactivate\"", "\"delete\"");
    std::fs::write(&d.config, text).unwrap();
    let r = run_dv(&d, &["connect", "dataverse"], Some(DV_ADMIN)).await;
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(r.out.contains("updated  12 privileges"), "{}", r.out);
    assert_eq!(
        d.dv.app_user_roles()["crm-sync"],
        privileges(&["Create", "Read", "Write", "Delete", "Append", "AppendTo"])
    );
    let _ = std::fs::remove_dir_all(&d.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_dataverse_reports_a_failed_key_and_prints_the_steps_without_rights() {
    use dataverse_emulator::security::KeyBuild;
    let reason = "The CREATE UNIQUE INDEX statement terminated because a duplicate key was found for the object name 'dbo.AccountBase'";
    let d = dataverse("dv-key-fails", "delete", KeyBuild::Fails(reason.into())).await;
    let r = run_dv(
        &d,
        &["connect", "dataverse", "--key-wait", "20"],
        Some(DV_ADMIN),
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.out);
    assert!(
        r.out.contains("the alternate key on account failed"),
        "{}",
        r.out
    );
    assert!(r.out.contains("duplicate key was found"), "{}", r.out);

    // No admin token, then a token that is not an administrator's: the exact steps instead.
    for token in [None, Some("not-a-valid-token")] {
        let r = run_dv(&d, &["connect", "dataverse"], token).await;
        assert_eq!(r.code, 1, "{}", r.out);
        assert!(r.out.contains("do this by hand"), "{}", r.out);
        for p in privileges(&["Create", "Read", "Write", "Delete", "Append", "AppendTo"]).keys() {
            assert!(r.out.contains(&format!("     {p}\n")), "{p} in:\n{}", r.out);
        }
        assert!(r.out.contains("Keys → New key"), "{}", r.out);
    }
    let _ = std::fs::remove_dir_all(&d.dir);
}
