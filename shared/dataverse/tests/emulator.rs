//! The Web API client against the Dataverse emulator: every write mode, the failure classes, and
//! the retry policy (throttling, token expiry, dropped connections).

use std::time::Duration;

use dataverse::{
    Applied, DataverseWriter, Secret, WebApiClient, WebApiConfig, WriteError, WriteMode,
};
use dataverse_emulator::{Emulator, EmulatorConfig, Faults, KeyStatus, Limits};
use mapping::{DataverseOp, Method};
use serde_json::{Map, Value, json};

fn client(emu: &Emulator, mode: WriteMode) -> WebApiClient {
    let cfg = WebApiConfig {
        api_url: emu.api_url(),
        token_url: emu.token_url(),
        client_id: "client-1".into(),
        client_secret: Secret::new("secret-1"),
        client_certificate: None,
        scope: format!("{}/.default", emu.base_url()),
        mode,
        max_concurrency: 16,
        request_timeout: Duration::from_secs(5),
        max_attempts: 5,
        max_throttle_wait: Duration::from_secs(30),
    };
    WebApiClient::new(cfg).unwrap()
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn upsert(set: &str, n: u32, body: Value) -> DataverseOp {
    DataverseOp {
        method: Method::Patch,
        path: format!("{set}({})", guid(n)),
        if_match_any: false,
        body: Some(obj(body)),
    }
}

fn guid(n: u32) -> String {
    format!("00000000-0000-0000-0000-{n:012}")
}

fn account(n: u32, name: &str) -> DataverseOp {
    upsert(
        "accounts",
        n,
        json!({"name": name, "msdyn_source_crm": 1, "msdyn_source_crm_id": format!("A{n}")}),
    )
}

fn contact(n: u32, parent: u32) -> DataverseOp {
    upsert(
        "contacts",
        n,
        json!({"lastname": format!("L{n}"), "parentcustomerid_account@odata.bind": format!("/accounts({})", guid(parent))}),
    )
}

async fn emulator(f: impl FnOnce(&mut EmulatorConfig)) -> Emulator {
    let mut cfg = EmulatorConfig::default();
    f(&mut cfg);
    Emulator::start(cfg).await.unwrap()
}

#[tokio::test]
async fn every_mode_creates_updates_and_replays_without_duplicates() {
    for mode in [
        WriteMode::Single,
        WriteMode::Batch { size: 7 },
        WriteMode::Bulk { size: 7 },
        WriteMode::Auto,
    ] {
        let emu = emulator(|c| {
            c.tables.account.bulk_supported = true;
        })
        .await;
        let c = client(&emu, mode);
        let ops: Vec<_> = (1..=20).map(|n| account(n, "first")).collect();
        let r = c.apply(&ops, None).await;
        assert!(r.iter().all(Result::is_ok), "{mode:?}: {r:?}");
        // Replaying the same writes changes nothing and duplicates nothing.
        let r = c.apply(&ops, None).await;
        assert!(r.iter().all(Result::is_ok), "{mode:?}: {r:?}");
        let ops: Vec<_> = (1..=20).map(|n| account(n, "second")).collect();
        c.apply(&ops, None).await;
        let rows = emu.rows("account");
        assert_eq!(rows.len(), 20, "{mode:?}");
        assert!(rows.iter().all(|r| r["name"] == "second"), "{mode:?}");
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn failures_are_classified_per_operation() {
    let emu = emulator(|_| {}).await;
    for mode in [WriteMode::Single, WriteMode::Batch { size: 10 }] {
        let c = client(&emu, mode);
        let too_long = upsert("accounts", 90, json!({"name": "x".repeat(161)}));
        let unknown_column = upsert("accounts", 91, json!({"name": "ok", "no_such_column": 1}));
        let orphan = contact(92, 999);
        let delete_missing = DataverseOp {
            method: Method::Delete,
            path: format!("contacts({})", guid(93)),
            if_match_any: false,
            body: None,
        };
        let fine = account(94, "fine");
        let r = c
            .apply(
                &[too_long, unknown_column, orphan, delete_missing, fine],
                None,
            )
            .await;
        assert!(
            matches!(&r[0], Err(WriteError::Permanent { status: 400, .. })),
            "{mode:?} {:?}",
            r[0]
        );
        assert!(
            matches!(&r[1], Err(WriteError::Permanent { status: 400, .. })),
            "{mode:?} {:?}",
            r[1]
        );
        assert!(
            matches!(&r[2], Err(WriteError::MissingParent { .. })),
            "{mode:?} {:?}",
            r[2]
        );
        assert_eq!(r[3], Ok(Applied::AlreadyAbsent), "{mode:?}");
        assert!(r[4].is_ok(), "{mode:?} {:?}", r[4]);
    }
    // The contact applies once its account exists.
    let c = client(&emu, WriteMode::Single);
    assert!(c.apply(&[account(999, "parent")], None).await[0].is_ok());
    assert!(c.apply(&[contact(92, 999)], None).await[0].is_ok());
    let contacts = emu.rows("contact");
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0]["_parentcustomerid_value"], guid(999));
}

#[tokio::test]
async fn alternate_keys_work_only_when_the_key_is_active() {
    let path = "accounts(msdyn_source_crm=1,msdyn_source_crm_id='O''Brien%20%231')";
    let op = DataverseOp {
        method: Method::Patch,
        path: path.into(),
        if_match_any: false,
        body: Some(obj(json!({"name": "O'Brien"}))),
    };
    let active = emulator(|c| c.alternate_key = Some(KeyStatus::Active)).await;
    let r = client(&active, WriteMode::Single)
        .apply(std::slice::from_ref(&op), None)
        .await;
    assert!(r[0].is_ok(), "{r:?}");
    let rows = active.rows("account");
    assert_eq!(rows[0]["msdyn_source_crm_id"], "O'Brien #1");
    let pending = emulator(|c| c.alternate_key = Some(KeyStatus::Pending)).await;
    let r = client(&pending, WriteMode::Single).apply(&[op], None).await;
    assert!(matches!(&r[0], Err(WriteError::Permanent { .. })), "{r:?}");
}

#[tokio::test]
async fn a_throttling_storm_slows_writes_but_loses_none() {
    // 40 requests per 2-second window: 200 single writes must wait several windows out.
    let emu = emulator(|c| {
        c.limits = Limits {
            window: Duration::from_secs(2),
            max_requests: 40,
            ..Limits::default()
        };
    })
    .await;
    let c = client(&emu, WriteMode::Single);
    let ops: Vec<_> = (1..=200).map(|n| account(n, "storm")).collect();
    let r = c.apply(&ops, None).await;
    assert!(
        r.iter().all(Result::is_ok),
        "{:?}",
        r.iter().find(|r| r.is_err())
    );
    assert_eq!(emu.rows("account").len(), 200);
    assert!(emu.stats().throttled > 0, "the emulator did throttle");
    assert!(c.stats.throttled.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn an_expired_token_is_refreshed_and_faults_are_retried() {
    let emu = emulator(|_| {}).await;
    let c = client(&emu, WriteMode::Batch { size: 10 });
    assert!(c.apply(&[account(1, "a")], None).await[0].is_ok());
    emu.expire_tokens();
    assert!(
        c.apply(&[account(2, "b")], None).await[0].is_ok(),
        "refreshed after 401"
    );
    emu.set_faults(Faults {
        error_5xx_rate: 0.2,
        drop_rate: 0.1,
        seed: 7,
        ..Faults::default()
    });
    let ops: Vec<_> = (10..60).map(|n| account(n, "faulty")).collect();
    let r = c.apply(&ops, None).await;
    assert!(
        r.iter().all(Result::is_ok),
        "{:?}",
        r.iter().find(|r| r.is_err())
    );
    assert_eq!(emu.rows("account").len(), 52);
}

#[tokio::test]
async fn wrong_credentials_are_permanent_and_never_echo_the_secret() {
    let emu = emulator(|_| {}).await;
    let mut cfg = WebApiConfig::for_org(
        &emu.base_url(),
        "tenant-1",
        "client-1",
        Secret::new("not-the-secret-xyz"),
    );
    cfg.api_url = emu.api_url();
    cfg.token_url = emu.token_url();
    let c = WebApiClient::new(cfg).unwrap();
    let r = c.apply(&[account(1, "a")], None).await;
    match &r[0] {
        Err(e @ WriteError::Permanent { .. }) => {
            assert!(!e.to_string().contains("not-the-secret-xyz"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn certificate_credentials_instead_of_a_secret() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../emulators/dataverse/tests/data");
    let read = |f: &str| std::fs::read_to_string(data.join(f)).unwrap();
    // Thumbprint of tests/data/test-client.cert.pem (`openssl x509 -fingerprint -sha1`).
    let thumbprint = "E0:8B:64:C9:BF:A8:07:F6:C8:09:F8:93:24:74:32:D8:29:4E:20:4F";
    let emu = emulator(|c| {
        c.client_certificate = Some(dataverse_emulator::ClientCertificate {
            public_key_pem: read("test-client.pub.pem"),
            thumbprint: thumbprint.replace(':', ""),
        })
    })
    .await;
    let mut cfg = WebApiConfig::for_org(
        &emu.base_url(),
        "tenant-1",
        "client-1",
        Secret::new("unused"),
    );
    cfg.api_url = emu.api_url();
    cfg.token_url = emu.token_url();
    cfg.client_certificate = Some((Secret::new(read("test-client.key.pem")), thumbprint.into()));
    let c = WebApiClient::new(cfg.clone()).unwrap();
    assert!(c.apply(&[account(1, "signed")], None).await[0].is_ok());
    // A certificate the app does not know is refused, permanently.
    cfg.client_certificate = Some((Secret::new(read("test-client.key.pem")), "00".repeat(20)));
    let c = WebApiClient::new(cfg).unwrap();
    assert!(matches!(
        c.apply(&[account(2, "x")], None).await[0],
        Err(WriteError::Permanent { .. })
    ));
}
