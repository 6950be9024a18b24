//! Properties of mapping over open-ended input: arbitrary JSON never panics and never produces a
//! value Dataverse would refuse; identities are deterministic and collision-free; key literals
//! round-trip.

use std::collections::HashSet;

use mapping::columns::{self, ColumnType};
use mapping::identity::{self, IdentityStrategy, odata_string, parse_odata_string};
use mapping::payload::decode;
use mapping::{CrmKind, Entity, Mapper, Notice, Operation, Outcome, SourceConfig, SourceId, row};
use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use serde_json::{Map, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[0-9 +()-]{0,20}".prop_map(Value::String),
        Just(Value::String("x".repeat(3000))),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Field names that the built-in profiles read, so arbitrary records actually exercise them.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "Id",
            "Name",
            "Phone",
            "Email",
            "LastName",
            "FirstName",
            "AccountId",
            "IsDeleted",
            "NumberOfEmployees",
            "Birthdate",
            "BillingAddress",
            "Street",
            "attributes",
            "type",
            "records",
            "result",
            "results",
            "properties",
            "name",
            "email",
            "phone",
            "id",
            "sys_id",
            "account",
            "value",
            "lastname",
            "associatedcompanyid",
            "subscriptionType",
            "objectId",
            "payload",
            "ChangeEventHeader",
            "entityName",
            "changeType",
            "recordIds",
            "operation",
            "entity",
            "record",
            "meta",
            "data",
            "action",
            "entity_id",
            "users",
            "organizations",
            "organization_id",
            "emails",
            "archived",
            "SystemModstamp",
        ])
        .prop_map(String::from),
        "[a-zA-Z_]{1,8}",
    ]
}

fn mapper(kind: CrmKind) -> Mapper {
    let mut c = SourceConfig::new(SourceId::new("src").unwrap(), kind, "https://x.example");
    c.crm_choice = Some(7);
    c.vars.insert("portal_id".into(), "1".into());
    if kind == CrmKind::Generic {
        c.mapping = toml::from_str(
            "[account]\nid = \"/id\"\n[account.columns]\nname = \"/name\"\n[contact]\nid = \"/id\"\nparent = \"/account\"\n[contact.columns]\nlastname = \"/name\"\ntelephone1 = { path = \"/phone\", transforms = [\"phone\"] }\n",
        )
        .unwrap();
    }
    Mapper::new(&c).unwrap()
}

/// Every value a mapped change carries must be one Dataverse accepts for its column.
fn assert_fits(entity: Entity, fields: &Map<String, Value>) {
    for (name, v) in fields {
        let col = columns::column(entity, name).expect("mapped column is in the catalogue");
        if v.is_null() {
            assert!(!col.required, "{name} is required but null");
            continue;
        }
        match col.ty {
            ColumnType::Text { max } | ColumnType::Memo { max } => {
                let s = v.as_str().expect("text column holds a string");
                assert!(columns::dataverse_len(s) <= max as usize, "{name} too long");
            }
            ColumnType::Integer { min, max } => {
                let n = v.as_i64().expect("integer");
                assert!(n >= min && n <= max);
            }
            ColumnType::Boolean => assert!(v.is_boolean()),
            _ => assert!(!v.is_object() && !v.is_array()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mapping_any_json_never_panics_and_always_fits(payload in arb_json(), kind_ix in 0usize..6, contact in any::<bool>()) {
        let kind = CrmKind::ALL[kind_ix];
        let m = mapper(kind);
        let entity = if contact { Entity::Contact } else { Entity::Account };
        for hint in [None, Some(entity)] {
            let Ok(items) = decode(&m, &payload, hint) else { continue };
            for item in items {
                if let Outcome::Notice { notice: Notice::Change(c), .. } = item.outcome {
                    if let Operation::Upsert { fields } = &c.op {
                        assert_fits(c.entity, fields);
                    }
                    // Building the request never panics either; an error is a clean refusal.
                    for strategy in [IdentityStrategy::DeterministicId, IdentityStrategy::AlternateKey] {
                        let _ = row::build(&c, &m.row_context(strategy));
                    }
                }
            }
        }
        let _ = m.map_record(entity, &payload, None);
    }

    #[test]
    fn identity_is_deterministic_and_collision_free(
        ids in prop::collection::hash_set("[ -~]{1,24}", 1..40),
        sources in prop::collection::hash_set("[a-z][a-z0-9-]{0,10}", 1..4),
    ) {
        let mut seen = HashSet::new();
        for s in &sources {
            let src = SourceId::new(s.clone()).unwrap();
            for e in Entity::ALL {
                for id in &ids {
                    let a = identity::record_guid(&src, e, id, false);
                    prop_assert_eq!(a, identity::record_guid(&src, e, id, false));
                    prop_assert!(seen.insert(a), "collision for {}:{}:{}", s, e, id);
                }
            }
        }
    }

    #[test]
    fn odata_literals_round_trip(s in any::<String>()) {
        prop_assert_eq!(parse_odata_string(&odata_string(&s)), Some(s));
    }

    #[test]
    fn alternate_key_paths_round_trip_or_are_refused(id in any::<String>(), choice in any::<i32>()) {
        let src = SourceId::new("s").unwrap();
        match identity::entity_path(IdentityStrategy::AlternateKey, &src, choice, false, Entity::Contact, &id) {
            Ok(path) => {
                // Nothing the id contains survives as a raw URL delimiter.
                prop_assert!(!path.contains(['?', '#', '/', ' ', '&', '+']));
                let decoded = percent_decode_str(&path).decode_utf8().unwrap();
                let inner = decoded.strip_prefix("contacts(").unwrap().strip_suffix(')').unwrap();
                prop_assert_eq!(identity::parse_alternate_key(inner), Some((choice, id)));
            }
            Err(_) => prop_assert!(identity::check_key_value(&id).is_err()),
        }
    }

    #[test]
    fn phone_normalisation_is_idempotent(s in "[+]?[0-9 ()./-]{3,25}") {
        if let Ok(once) = mapping::transform::normalise_phone(&s, Some("1")) {
            prop_assert_eq!(mapping::transform::normalise_phone(&once, Some("1")).unwrap(), once);
        }
    }
}
