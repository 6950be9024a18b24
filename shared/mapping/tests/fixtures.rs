//! Mapping checked against payloads the vendors published (../shared/fixtures), and against
//! bodies built from their documented shapes.

use std::path::PathBuf;

use mapping::payload::decode;
use mapping::{
    Change, CrmKind, Entity, IdentityStrategy, Mapper, Notice, Operation, Outcome, Parent,
    SourceConfig, SourceId, row,
};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    if let Ok(dir) = std::env::var("CRM_SYNC_FIXTURES") {
        return dir.into();
    }
    // shared/mapping → repository root → its sibling shared/fixtures.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

fn fixture(name: &str) -> String {
    let p = fixtures().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn mapper(kind: CrmKind, cfg: impl FnOnce(&mut SourceConfig)) -> Mapper {
    let mut c = SourceConfig::new(
        SourceId::new(kind.as_str()).unwrap(),
        kind,
        "https://acme.example.com",
    );
    c.crm_choice.get_or_insert(100_000_001);
    cfg(&mut c);
    Mapper::new(&c).unwrap()
}

fn changes(m: &Mapper, payload: &Value, hint: Option<Entity>) -> Vec<Change> {
    decode(m, payload, hint)
        .unwrap()
        .into_iter()
        .map(|i| match i.outcome {
            Outcome::Notice {
                notice: Notice::Change(c),
                ..
            } => c,
            other => panic!("{}: {other:?}", i.at),
        })
        .collect()
}

fn fields(c: &Change) -> &serde_json::Map<String, Value> {
    match &c.op {
        Operation::Upsert { fields } => fields,
        Operation::Delete => panic!("expected an upsert"),
    }
}

#[test]
fn salesforce_change_event_create_maps_compound_address() {
    let m = mapper(CrmKind::Salesforce, |c| {
        c.base_url = "https://acme.lightning.force.com".into()
    });
    let v: Value = serde_json::from_str(&fixture("salesforce-cdc-event.json")).unwrap();
    let cs = changes(&m, &v, None);
    assert_eq!(cs.len(), 1);
    let c = &cs[0];
    assert_eq!(
        (c.entity, c.source_id.as_str()),
        (Entity::Account, "001T1000001nI4jIAE")
    );
    assert_eq!(
        fields(c),
        json!({
            "name": "Acme",
            "websiteurl": "www.salesforce.com",
            "address1_line1": "415 Mission Street",
            "address1_city": "San Francisco",
            "address1_stateorprovince": "CA",
            "address1_postalcode": "94105",
            "address1_country": "United States",
        })
        .as_object()
        .unwrap()
    );
    assert_eq!(
        c.modified_at.unwrap().to_rfc3339(),
        "2022-06-10T22:42:34+00:00"
    );
    assert_eq!(
        c.record_url.as_deref(),
        Some("https://acme.lightning.force.com/lightning/r/Account/001T1000001nI4jIAE/view")
    );
}

#[test]
fn salesforce_change_event_update_delete_and_gap_variants() {
    let m = mapper(CrmKind::Salesforce, |_| {});
    let mut v: Value = serde_json::from_str(&fixture("salesforce-cdc-event.json")).unwrap();
    let h = &mut v["payload"]["ChangeEventHeader"];
    h["changeType"] = json!("UPDATE");
    h["recordIds"] = json!(["001T1000001nI4jIAE", "001T1000001nI4k"]);
    let items = decode(&m, &v, None).unwrap();
    let [item] = items.as_slice() else {
        panic!("{items:?}")
    };
    match &item.outcome {
        Outcome::Notice {
            notice: Notice::Fetch(f),
            ..
        } => {
            // The 15-character id is stored in its 18-character form.
            assert_eq!(f.ids, ["001T1000001nI4jIAE", "001T1000001nI4kIAE"]);
            assert_eq!(f.entity, Entity::Account);
        }
        other => panic!("{other:?}"),
    }
    v["payload"]["ChangeEventHeader"]["changeType"] = json!("DELETE");
    let cs = changes(&m, &v, None);
    assert_eq!(cs.len(), 2);
    assert!(cs.iter().all(|c| c.is_delete()));
    assert_eq!(cs[0].modified_at.unwrap().timestamp_millis(), 1654900954000);
    v["payload"]["ChangeEventHeader"]["changeType"] = json!("GAP_OVERFLOW");
    assert!(matches!(
        decode(&m, &v, None).unwrap()[0].outcome,
        Outcome::Skipped(_)
    ));
}

#[test]
fn salesforce_query_page_from_the_rest_guide() {
    // The guide elides records with a literal `...` line; drop it to get the JSON it stands for.
    let text = fixture("salesforce-query-page.doc.txt");
    let text: String = text
        .lines()
        .filter(|l| l.trim() != "...")
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.replace("}, \n\n\n    ]", "}\n    ]");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let m = mapper(CrmKind::Salesforce, |_| {});
    let cs = changes(&m, &v, None);
    let got: Vec<_> = cs
        .iter()
        .map(|c| (c.source_id.as_str(), fields(c)["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("001D000000IRFmaIAH", "Test 1"),
            ("001D000000IomazIAB", "Test 2")
        ]
    );
}

#[test]
fn servicenow_table_page_reads_reference_fields_as_their_value() {
    // The fixture is a `problem` record: the shapes, not the columns, are what it pins. Map it
    // as a contact whose parent is the `cmdb_ci` reference.
    let m = mapper(CrmKind::Servicenow, |c| {
        c.base_url = "https://instance.service-now.com".into();
        c.mapping = toml::from_str(
            r#"
            [contact]
            parent = "/cmdb_ci"
            [contact.columns]
            lastname = "/short_description"
            description = "/close_notes"
            "#,
        )
        .unwrap();
    });
    let v: Value = serde_json::from_str(&fixture("servicenow-table-page.json")).unwrap();
    let cs = changes(&m, &v, Some(Entity::Contact));
    let c = &cs[0];
    assert_eq!(c.source_id, "04ce72c9c0a8016600b5b7f75ac67b5b");
    assert_eq!(
        c.parent,
        Parent::Account("55b35562c0a8010e01cff22378e0aea9".into())
    );
    assert_eq!(
        fields(c)["lastname"],
        "Switch occasionally drops connections"
    );
    assert_eq!(
        c.modified_at.unwrap().to_rfc3339(),
        "2016-01-19T04:52:04+00:00"
    );
    assert_eq!(
        c.record_url.as_deref(),
        Some(
            "https://instance.service-now.com/now/cwf/agent/record/customer_contact/04ce72c9c0a8016600b5b7f75ac67b5b"
        )
    );
    // sys_id is a GUID: it becomes the primary key as is, and so does the parent's.
    let op = row::build(c, &m.row_context(IdentityStrategy::DeterministicId))
        .unwrap()
        .unwrap();
    assert_eq!(op.path, "contacts(04ce72c9-c0a8-0166-00b5-b7f75ac67b5b)");
    let body = op.body.unwrap();
    assert_eq!(
        body["parentcustomerid_account@odata.bind"],
        "/accounts(55b35562-c0a8-010e-01cf-f22378e0aea9)"
    );
    assert_eq!(body["msdyn_source_crm"], 2);
    assert_eq!(
        body["msdyn_source_crm_id"],
        "04ce72c9c0a8016600b5b7f75ac67b5b"
    );
}

#[test]
fn servicenow_customer_account_page_as_documented() {
    let m = mapper(CrmKind::Servicenow, |_| {});
    let v = json!({"result": [{
        "sys_id": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
        "sys_class_name": "customer_account",
        "number": "ACCT0001001",
        "name": "  Boxeo   Corp ",
        "phone": "(858) 555-0100",
        "website": "https://boxeo.example",
        "street": "1 Main St\nSuite 2",
        "city": "San Diego", "state": "CA", "zip": "92101", "country": "USA",
        "sys_updated_on": "2024-03-01 10:00:00",
        "account_parent": {"link": "https://instance.service-now.com/api/now/table/customer_account/x", "value": "x"},
    }]});
    let cs = changes(&m, &v, None);
    let f = fields(&cs[0]);
    assert_eq!(f["name"], "Boxeo Corp");
    assert_eq!(f["telephone1"], "8585550100");
    assert_eq!(f["accountnumber"], "ACCT0001001");
    assert_eq!(cs[0].entity, Entity::Account);
}

#[test]
fn hubspot_webhook_fixture_becomes_a_fetch_hint() {
    let m = mapper(CrmKind::Hubspot, |c| {
        c.vars.insert("portal_id".into(), "62515".into());
    });
    let body = fixture("hubspot-webhook-v1.body.json");
    let v: Value = serde_json::from_str(&body).unwrap();
    let items = decode(&m, &v, None).unwrap();
    assert_eq!(items.len(), 1);
    match &items[0].outcome {
        Outcome::Notice {
            notice: Notice::Fetch(f),
            ..
        } => {
            assert_eq!(
                (f.entity, f.ids.as_slice()),
                (Entity::Contact, &["123".to_string()][..])
            );
            assert_eq!(f.reason, "hubspot contact.creation");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hubspot_deletions_and_merges() {
    let m = mapper(CrmKind::Hubspot, |c| {
        c.vars.insert("portal_id".into(), "1".into());
    });
    let v = json!([
        {"eventId": 1, "subscriptionType": "company.deletion", "objectId": 7, "occurredAt": 1564113600000i64},
        {"eventId": 2, "subscriptionType": "contact.merge", "objectId": 10, "primaryObjectId": 10,
         "mergedObjectIds": [11, 12], "newObjectId": 13, "occurredAt": 1564113600000i64},
        {"eventId": 3, "subscriptionType": "deal.creation", "objectId": 5},
    ]);
    let items = decode(&m, &v, None).unwrap();
    let mut deletes = vec![];
    let mut fetches = vec![];
    let mut skipped = 0;
    for i in items {
        match i.outcome {
            Outcome::Notice {
                notice: Notice::Change(c),
                ..
            } => {
                assert!(c.is_delete());
                deletes.push((c.entity, c.source_id));
            }
            Outcome::Notice {
                notice: Notice::Fetch(f),
                ..
            } => fetches.push((f.entity, f.ids)),
            Outcome::Skipped(_) => skipped += 1,
            Outcome::Failed(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        deletes,
        [
            (Entity::Account, "7".to_string()),
            (Entity::Contact, "10".into()),
            (Entity::Contact, "11".into()),
            (Entity::Contact, "12".into())
        ]
    );
    assert_eq!(fetches, [(Entity::Contact, vec!["13".to_string()])]);
    assert_eq!(skipped, 1);
}

#[test]
fn hubspot_pages_as_documented() {
    let m = mapper(CrmKind::Hubspot, |c| {
        c.vars.insert("portal_id".into(), "62515".into());
    });
    let companies = json!({"results": [{
        "id": "512", "archived": false,
        "createdAt": "2019-10-30T03:30:17.883Z", "updatedAt": "2019-12-07T16:50:06.678Z",
        "properties": {"name": "Biglytics", "domain": "biglytics.net", "phone": "+1 617 555 0100",
                       "hs_object_id": "512", "numberofemployees": "250"}
    }], "paging": {"next": {"after": "NTI1Cg%3D%3D", "link": "?after=NTI1Cg%3D%3D"}}});
    let cs = changes(&m, &companies, Some(Entity::Account));
    assert_eq!(fields(&cs[0])["numberofemployees"], 250);
    assert_eq!(fields(&cs[0])["websiteurl"], "biglytics.net");
    assert_eq!(
        cs[0].record_url.as_deref(),
        Some("https://app.hubspot.com/contacts/62515/record/0-2/512")
    );
    let contacts = json!({"results": [{
        "id": "901", "archived": false, "updatedAt": "2019-12-07T16:50:06.678Z",
        "properties": {"firstname": "Maria", "lastname": "Johnson (Sample Contact)",
                       "email": "Emailmaria@HubSpot.com", "associatedcompanyid": "512"}
    }]});
    let cs = changes(&m, &contacts, Some(Entity::Contact));
    assert_eq!(fields(&cs[0])["emailaddress1"], "emailmaria@hubspot.com");
    assert_eq!(cs[0].parent, Parent::Account("512".into()));
    assert!(
        decode(&m, &contacts, None).is_err(),
        "a page needs an entity"
    );
}

#[test]
fn contract_bodies_from_apex_and_business_rules() {
    let m = mapper(CrmKind::Salesforce, |_| {});
    let v = json!({"entity": "contact", "operation": "update", "id": "003D000000QmZzT",
        "modified_at": "2024-05-01T10:00:00Z",
        "record": {"attributes": {"type": "Contact"}, "LastName": "Ng", "AccountId": null, "Email": null}});
    let cs = changes(&m, &v, None);
    assert_eq!(cs[0].source_id, "003D000000QmZzTIAV");
    assert_eq!(cs[0].parent, Parent::None);
    assert_eq!(fields(&cs[0])["emailaddress1"], Value::Null);
    let del = json!({"entity": "account", "operation": "delete", "id": "001D000000IRFma"});
    assert!(changes(&m, &del, None)[0].is_delete());
    let bad = json!({"entity": "account", "operation": "explode", "id": "x"});
    let err = decode(&m, &bad, None).unwrap_err().to_string();
    assert!(err.contains("operation"), "{err}");
}

#[test]
fn pipedrive_and_zendesk_shapes() {
    let p = mapper(CrmKind::Pipedrive, |_| {});
    let v = json!({"meta": {"action": "change", "entity": "person", "entity_id": "42", "timestamp": "2024-01-01T00:00:00Z"},
        "data": {"id": 42, "name": "Ann Lee", "first_name": "Ann", "last_name": "Lee", "org_id": 7,
                 "emails": [{"value": "ANN@x.io", "primary": true, "label": "work"}],
                 "phones": [{"value": "+44 20 7946 0958", "primary": true}], "update_time": "2024-01-01T00:00:00Z"},
        "previous": null});
    let cs = changes(&p, &v, None);
    assert_eq!(fields(&cs[0])["telephone1"], "+442079460958");
    assert_eq!(cs[0].parent, Parent::Account("7".into()));
    let z = mapper(CrmKind::Zendesk, |_| {});
    let v = json!({"users": [{"id": 35436, "name": "Johnny Agent", "email": "johnny@example.com",
        "organization_id": 57542, "updated_at": "2012-02-21T23:11:08Z", "phone": null}]});
    let cs = changes(&z, &v, None);
    assert_eq!(fields(&cs[0])["lastname"], "Johnny Agent");
    assert_eq!(fields(&cs[0])["mobilephone"], Value::Null);
    assert_eq!(
        cs[0].record_url.as_deref(),
        Some("https://acme.example.com/agent/users/35436")
    );
}

#[test]
fn record_errors_name_the_column_and_the_path() {
    let m = mapper(CrmKind::Salesforce, |_| {});
    let v = json!({"records": [
        {"attributes": {"type": "Account"}, "Id": "001D000000IRFmaIAH", "Name": "   "},
        {"attributes": {"type": "Contact"}, "Id": "003D000000QmZzTIAV", "LastName": "X", "NumberOfEmployees": 1},
        {"attributes": {"type": "Account"}, "Id": "bad id", "Name": "Acme"},
    ]});
    let items = decode(&m, &v, None).unwrap();
    let msgs: Vec<String> = items
        .iter()
        .map(|i| match &i.outcome {
            Outcome::Failed(e) => format!("{}: {e}", i.at),
            _ => format!("{}: ok", i.at),
        })
        .collect();
    assert_eq!(
        msgs[0],
        "records[0]: account 001D000000IRFmaIAH: required column `name` has no value (mapped from /Name)"
    );
    assert_eq!(msgs[1], "records[1]: ok");
    assert!(
        msgs[2].starts_with("records[2]: account bad id: id is not valid"),
        "{}",
        msgs[2]
    );
}

#[test]
fn long_values_are_truncated_with_a_warning_or_refused_by_config() {
    let long = "x".repeat(300);
    let v = json!({"attributes": {"type": "Account"}, "Id": "001D000000IRFmaIAH", "Name": long});
    let m = mapper(CrmKind::Salesforce, |_| {});
    let items = decode(&m, &v, None).unwrap();
    let Outcome::Notice {
        notice: Notice::Change(c),
        warnings,
    } = &items[0].outcome
    else {
        panic!()
    };
    assert_eq!(fields(c)["name"].as_str().unwrap().len(), 160);
    assert_eq!(
        warnings[0].to_string(),
        "column `name`: value from /Name truncated from 300 to 160 characters"
    );
    let strict = mapper(CrmKind::Salesforce, |c| {
        c.mapping =
            toml::from_str("[account.columns]\nname = { path = \"/Name\", overflow = \"reject\" }")
                .unwrap();
    });
    let items = decode(&strict, &v, None).unwrap();
    let Outcome::Failed(e) = &items[0].outcome else {
        panic!()
    };
    assert!(e.to_string().contains("MaxLength is 160"), "{e}");
}

#[test]
fn config_errors_name_the_key() {
    let base = SourceConfig::new(
        SourceId::new("s").unwrap(),
        CrmKind::Salesforce,
        "https://a.example",
    );
    let err = Mapper::new(&base).unwrap_err();
    assert_eq!(err.key, "crm_choice");
    let mut c = base.clone();
    c.crm_choice = Some(1);
    c.mapping = toml::from_str("[account]\nremove = [\"name\"]").unwrap();
    assert_eq!(
        Mapper::new(&c).unwrap_err().key,
        "mapping.account.columns.name"
    );
    c.mapping = toml::from_str("[contact.columns]\nnew_tier = \"/Tier__c\"").unwrap();
    let e = Mapper::new(&c).unwrap_err();
    assert_eq!(e.key, "mapping.contact.columns.new_tier");
    assert!(e.message.contains("give its `type`"), "{e}");
    c.mapping = toml::from_str("[contact.columns]\nmsdyn_source_crm_id = \"/Id\"").unwrap();
    assert!(
        Mapper::new(&c)
            .unwrap_err()
            .message
            .contains("writes this column itself")
    );
    c.mapping = toml::from_str("[account]\nrecord_url = \"{base_url}/{tenant}/{id}\"").unwrap();
    assert_eq!(
        Mapper::new(&c).unwrap_err().key,
        "mapping.account.record_url"
    );
    let mut g = SourceConfig::new(
        SourceId::new("g").unwrap(),
        CrmKind::Generic,
        "https://g.example",
    );
    g.crm_choice = Some(9);
    assert_eq!(Mapper::new(&g).unwrap_err().key, "mapping.account.id");
}

#[test]
fn generic_kind_from_config_alone() {
    let m = mapper(CrmKind::Generic, |c| {
        c.mapping = toml::from_str(
            r#"
            [account]
            id = "/uid"
            records = "/data/items"
            record_url = "{base_url}/companies/{id}"
            [account.columns]
            name = "/title"
            industrycode = { path = "/sector", map = { tech = 7, retail = 23 }, unmapped = "skip" }
            [contact]
            id = "/uid"
            parent = "/company/uid"
            [contact.columns]
            lastname = { join = ["/given", "/family"], separator = " " }
            telephone1 = { path = "/tel", transforms = ["phone"], default = "n/a", invalid = "skip" }
            "#,
        )
        .unwrap();
        c.phone_country = Some("1".into());
    });
    let page = json!({"data": {"items": [{"uid": "c-1", "title": "Acme", "sector": "tech"},
                                         {"uid": "c-2", "title": "Beta", "sector": "mining"}]}});
    let items = decode(&m, &page, Some(Entity::Account)).unwrap();
    let Outcome::Notice {
        notice: Notice::Change(a),
        ..
    } = &items[0].outcome
    else {
        panic!()
    };
    assert_eq!(fields(a)["industrycode"], 7);
    let Outcome::Notice {
        notice: Notice::Change(b),
        warnings,
    } = &items[1].outcome
    else {
        panic!()
    };
    assert!(!fields(b).contains_key("industrycode"));
    assert_eq!(warnings.len(), 1);
    let contact = json!({"uid": "p-1", "given": "Ada", "family": "Lovelace", "tel": "415 555 0100", "company": {"uid": "c-1"}});
    let cs = changes(&m, &contact, Some(Entity::Contact));
    assert_eq!(fields(&cs[0])["lastname"], "Ada Lovelace");
    assert_eq!(fields(&cs[0])["telephone1"], "+14155550100");
    assert_eq!(cs[0].parent, Parent::Account("c-1".into()));
}

#[test]
fn alternate_key_rows_keep_key_columns_out_of_the_body() {
    let m = mapper(CrmKind::Salesforce, |_| {});
    let v = json!({"attributes": {"type": "Contact"}, "Id": "003D000000QmZzTIAV", "LastName": "O'Neil", "AccountId": "001D000000IRFmaIAH"});
    let c = &changes(&m, &v, None)[0];
    let op = row::build(c, &m.row_context(IdentityStrategy::AlternateKey))
        .unwrap()
        .unwrap();
    assert_eq!(
        op.path,
        "contacts(msdyn_source_crm=100000001,msdyn_source_crm_id='003D000000QmZzTIAV')"
    );
    let body = op.body.unwrap();
    assert!(!body.contains_key("msdyn_source_crm") && !body.contains_key("msdyn_source_crm_id"));
    assert_eq!(
        body["parentcustomerid_account@odata.bind"],
        "/accounts(msdyn_source_crm=100000001,msdyn_source_crm_id='001D000000IRFmaIAH')"
    );
}

#[test]
fn vendor_events_have_identities_that_survive_retries() {
    use mapping::events::event_keys;
    let hubspot: Value = serde_json::from_str(&fixture("hubspot-webhook-v1.body.json")).unwrap();
    let keys = event_keys(CrmKind::Hubspot, &hubspot);
    assert_eq!(
        keys,
        ["hubspot:62515:contact.creation:123:1564113600000::1"]
    );
    let mut retry = hubspot.clone();
    retry[0]["attemptNumber"] = json!(1);
    assert_eq!(event_keys(CrmKind::Hubspot, &retry), keys);

    let cdc: Value = serde_json::from_str(&fixture("salesforce-cdc-event.json")).unwrap();
    let want = ["salesforce-cdc:000001d3-3d55-688b-98ea-39d0a21240f4:1"];
    assert_eq!(event_keys(CrmKind::Salesforce, &cdc), want);
    // Relayed by EventBridge: the same change, the same identity.
    let relayed = json!({"version": "0", "id": "e-1", "detail-type": "AccountChangeEvent",
        "source": "aws.partner/salesforce.com/00D/0YL", "detail": {"payload": cdc["payload"].clone()}});
    assert_eq!(event_keys(CrmKind::Salesforce, &relayed), want);
    // ... and the same changes.
    let m = mapper(CrmKind::Salesforce, |_| {});
    let direct = changes(&m, &cdc, None);
    assert!(!direct.is_empty());
    assert_eq!(changes(&m, &relayed, None), direct);
    // A plain record (Apex, REST) has no event identity.
    assert!(event_keys(CrmKind::Salesforce, &json!({"Id": "001"})).is_empty());
}
