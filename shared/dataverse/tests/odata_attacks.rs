//! Source ids with OData and URL syntax in them (issue 8): quotes, slashes, percent signs,
//! query delimiters, parentheses, commas, spaces, `$filter=` and non-ASCII text, written and
//! read back against the Dataverse emulator under both identity strategies, through the
//! production path builder (`mapping::row`) and the Web API client (single requests and
//! `$batch`). Each id must land on exactly its own row, a lookup or `$filter` for one id must
//! return only that row, and a delete must touch only its row: no id can change a request's
//! meaning. Under `alternate-key`, ids Dataverse cannot address by key ("Define alternate keys":
//! `/ < > * % & : \ ? +`) are refused before any request is sent.

use std::collections::BTreeMap;
use std::time::Duration;

use dataverse::read::TablePages;
use dataverse::{DataverseWriter, Secret, WebApiClient, WebApiConfig, WriteMode};
use dataverse_emulator::{Emulator, EmulatorConfig, KeyStatus};
use mapping::identity::{KEY_FORBIDDEN, odata_string};
use mapping::{
    Change, DeletePolicy, Entity, IdentityStrategy, Operation, Parent, RowContext, SourceId,
};
use serde_json::{Map, Value, json};

const CHOICE: i32 = 1;

/// Ids that are syntax somewhere between our code and Dataverse's key and filter parsers.
const IDS: &[&str] = &[
    "'",
    "''",
    "a'b",
    "/",
    "a/b",
    "%",
    "%27",
    "%2527",
    "?",
    "#",
    "&",
    ")",
    "a)b(",
    ",",
    "a,msdyn_source_crm=2",
    "a b",
    " lead",
    "$filter=name eq 'x'",
    "x' or msdyn_source_crm_id ne 'y",
    "x') or (1 eq 1",
    "Zoë/株式会社'x",
    "株式会社",
    "e\u{301}",
    "plain-1",
    "a+b",
    "a;b=c",
    "@p1",
    "a\\b",
    "*",
    "<tag>",
    "a:b",
];

fn client(emu: &Emulator, mode: WriteMode) -> WebApiClient {
    WebApiClient::new(WebApiConfig {
        api_url: emu.api_url(),
        token_url: emu.token_url(),
        client_id: "client-1".into(),
        client_secret: Secret::new("secret-1"),
        client_certificate: None,
        scope: format!("{}/.default", emu.base_url()),
        mode,
        max_concurrency: 4,
        request_timeout: Duration::from_secs(5),
        max_attempts: 3,
        max_throttle_wait: Duration::from_secs(5),
    })
    .unwrap()
}

fn ctx(identity: IdentityStrategy) -> RowContext {
    RowContext {
        source: SourceId::new("odata-src").unwrap(),
        crm_choice: CHOICE,
        guid_passthrough: false,
        delete_policy: DeletePolicy::Delete,
        identity,
    }
}

fn change(entity: Entity, id: &str, op: Operation, parent: Parent) -> Change {
    Change {
        source: SourceId::new("odata-src").unwrap(),
        entity,
        source_id: id.to_string(),
        op,
        modified_at: None,
        parent,
        record_url: None,
    }
}

fn upsert(entity: Entity, id: &str, name: &str) -> Change {
    let (column, parent) = match entity {
        Entity::Account => ("name", Parent::Unchanged),
        Entity::Contact => ("lastname", Parent::Account(id.to_string())),
    };
    let mut fields = Map::new();
    fields.insert(column.into(), json!(name));
    change(entity, id, Operation::Upsert { fields }, parent)
}

/// Whether Dataverse can address `id` by alternate key at all.
fn addressable_by_key(id: &str) -> bool {
    !id.chars()
        .any(|c| KEY_FORBIDDEN.contains(&c) || c.is_control())
}

/// The emulator's rows of `table`, by source id; every source id appears once.
fn rows_by_source_id(emu: &Emulator, table: &str) -> BTreeMap<String, Map<String, Value>> {
    let rows = emu.rows(table);
    let mut out = BTreeMap::new();
    for r in rows {
        let id = r["msdyn_source_crm_id"].as_str().unwrap().to_string();
        assert!(
            out.insert(id.clone(), r).is_none(),
            "two {table} rows for {id:?}"
        );
    }
    out
}

async fn rows_matching(c: &WebApiClient, filter: &str) -> Vec<Map<String, Value>> {
    let select = ["accountid", "name", "msdyn_source_crm_id"].map(String::from);
    let mut pages = TablePages::new(c, "accounts", &select, Some(filter), 100);
    let mut out = Vec::new();
    while let Some(rows) = pages.next_page().await.expect("a page") {
        out.extend(rows);
    }
    out
}

#[tokio::test]
async fn every_source_id_addresses_only_its_own_row_under_both_strategies() {
    for identity in [
        IdentityStrategy::DeterministicId,
        IdentityStrategy::AlternateKey,
    ] {
        for mode in [WriteMode::Single, WriteMode::Batch { size: 10 }] {
            let emu = Emulator::start(EmulatorConfig {
                alternate_key: Some(KeyStatus::Active),
                ..EmulatorConfig::default()
            })
            .await
            .unwrap();
            let c = client(&emu, mode);
            let ctx = ctx(identity);
            let what = format!("{identity:?} {mode:?}");
            let ids: Vec<&str> = match identity {
                IdentityStrategy::DeterministicId => IDS.to_vec(),
                IdentityStrategy::AlternateKey => {
                    // Refused by the path builder: nothing is sent for them.
                    for id in IDS.iter().filter(|id| !addressable_by_key(id)) {
                        let r = mapping::row::build(&upsert(Entity::Account, id, "x"), &ctx);
                        assert!(r.is_err(), "{what}: {id:?} was given a key path: {r:?}");
                    }
                    IDS.iter()
                        .copied()
                        .filter(|id| addressable_by_key(id))
                        .collect()
                }
            };
            assert!(ids.len() >= 15, "{what}: too few ids left to mean anything");

            // Accounts, then contacts whose parent is the account of the same source id.
            for entity in [Entity::Account, Entity::Contact] {
                let ops: Vec<_> = ids
                    .iter()
                    .map(|id| {
                        mapping::row::build(&upsert(entity, id, &format!("row of {id}")), &ctx)
                            .unwrap()
                            .unwrap()
                    })
                    .collect();
                let r = c.apply(&ops, None).await;
                assert!(r.iter().all(Result::is_ok), "{what} {entity:?}: {r:?}");
            }
            let accounts = rows_by_source_id(&emu, "account");
            let contacts = rows_by_source_id(&emu, "contact");
            assert_eq!(accounts.len(), ids.len(), "{what}: {:?}", accounts.keys());
            assert_eq!(contacts.len(), ids.len(), "{what}");
            for id in &ids {
                let a = &accounts[*id];
                assert_eq!(a["name"], format!("row of {id}"), "{what}: {id:?}");
                assert_eq!(a["msdyn_source_crm"], CHOICE, "{what}: {id:?}");
                let ct = &contacts[*id];
                assert_eq!(ct["lastname"], format!("row of {id}"), "{what}: {id:?}");
                assert_eq!(
                    ct["_parentcustomerid_value"], a["accountid"],
                    "{what}: {id:?}'s contact is under another account"
                );
            }

            // Reads: the key path and a `$filter` on the id find that row and no other.
            for id in &ids {
                let path = ctx.path(Entity::Account, id).unwrap();
                let row = c.get_json(&path, None).await.expect("read by key");
                assert_eq!(row["msdyn_source_crm_id"], *id, "{what}: GET {path}");
                let filter = format!(
                    "msdyn_source_crm eq {CHOICE} and msdyn_source_crm_id eq {}",
                    odata_string(id)
                );
                let found = rows_matching(&c, &filter).await;
                assert_eq!(found.len(), 1, "{what}: {filter} found {found:?}");
                assert_eq!(found[0]["msdyn_source_crm_id"], *id, "{what}: {filter}");
            }
            let prefix = rows_matching(
                &c,
                &format!("startswith(msdyn_source_crm_id,{})", odata_string("x'")),
            )
            .await;
            assert!(
                prefix
                    .iter()
                    .all(|r| r["msdyn_source_crm_id"].as_str().unwrap().starts_with("x'")),
                "{what}: {prefix:?}"
            );

            // An update and a delete of one id touch only its row.
            let victim = ids[0];
            let ops = [
                mapping::row::build(&upsert(Entity::Account, victim, "renamed"), &ctx)
                    .unwrap()
                    .unwrap(),
                mapping::row::build(
                    &change(
                        Entity::Contact,
                        victim,
                        Operation::Delete,
                        Parent::Unchanged,
                    ),
                    &ctx,
                )
                .unwrap()
                .unwrap(),
            ];
            let r = c.apply(&ops, None).await;
            assert!(r.iter().all(Result::is_ok), "{what}: {r:?}");
            let after = rows_by_source_id(&emu, "account");
            let contacts_after = rows_by_source_id(&emu, "contact");
            assert_eq!(contacts_after.len(), ids.len() - 1, "{what}");
            assert!(!contacts_after.contains_key(victim), "{what}");
            for id in &ids {
                let want = if *id == victim {
                    "renamed".to_string()
                } else {
                    format!("row of {id}")
                };
                assert_eq!(after[*id]["name"], want, "{what}: {id:?}");
            }
            emu.shutdown().await;
        }
    }
}

/// The emulator holds Dataverse's side of the rule: a key path with an unsupported character,
/// sent by a client that did not refuse it, is a 400 that creates nothing.
#[tokio::test]
async fn key_values_dataverse_cannot_address_are_refused_by_the_service_too() {
    let emu = Emulator::start(EmulatorConfig {
        alternate_key: Some(KeyStatus::Active),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let c = client(&emu, WriteMode::Single);
    for encoded in [
        "a%2Fb", "100%25", "a%3Fb", "a%26b", "a%2Bb", "a%3Ab", "a*b", "a%5Cb",
    ] {
        let op = mapping::DataverseOp {
            method: mapping::Method::Patch,
            path: format!("accounts(msdyn_source_crm={CHOICE},msdyn_source_crm_id='{encoded}')"),
            if_match_any: false,
            body: Some(json!({"name": "x"}).as_object().unwrap().clone()),
        };
        let r = c.apply(&[op], None).await;
        assert!(
            matches!(
                &r[0],
                Err(dataverse::WriteError::Permanent { status: 400, .. })
            ),
            "{encoded}: {r:?}"
        );
    }
    assert!(emu.rows("account").is_empty());
}
