//! Maps the benchmark's page a fixed number of times: a deterministic workload for
//! `valgrind --tool=callgrind` (instruction counts do not depend on machine noise).

use mapping::payload::map_records;
use mapping::{
    CrmKind, Entity, IdentityStrategy, Mapper, Notice, Outcome, SourceConfig, SourceId, row,
};
use serde_json::{Value, json};

// The Lambda binaries use mimalloc too: mapping allocates a few dozen small strings per record,
// and glibc's allocator is a third of the work with them (measured with callgrind).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn contact(i: usize) -> Value {
    json!({
        "attributes": {"type": "Contact", "url": format!("/services/data/v62.0/sobjects/Contact/003D00000{i:06}AAA")},
        "Id": format!("003D00000{i:06}AAA"),
        "AccountId": format!("001D00000{:06}AAA", i / 5),
        "Salutation": "Ms.",
        "FirstName": "Rose",
        "LastName": format!("Gonzalez-{i}"),
        "Email": format!("Rose.Gonzalez{i}@Example.COM"),
        "Phone": "(512) 757-6000",
        "MobilePhone": "+1 512 757 9340",
        "HomePhone": "512.555.0101",
        "Title": "SVP, Procurement and Strategic Sourcing",
        "Department": "Procurement",
        "MailingStreet": "312 Constitution Place",
        "MailingCity": "Austin",
        "MailingState": "TX",
        "MailingPostalCode": "78767",
        "MailingCountry": "USA",
        "Birthdate": "1975-04-12",
        "Description": "Key decision maker for all procurement. Prefers email; call after 10am CT. Met at the 2023 user conference; interested in the enterprise tier and the analytics add-on.",
        "AssistantName": "Jamie Park",
        "AssistantPhone": "(512) 757-6001",
        "SystemModstamp": "2024-01-16T17:43:01.000+0000",
        "LastModifiedDate": "2024-01-16T17:43:01.000+0000",
        "CreatedDate": "2020-03-02T09:00:00.000+0000",
        "OwnerId": "005D0000001AbcDIAS",
        "LeadSource": "Trade Show"
    })
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let mut cfg = SourceConfig::new(
        SourceId::new("sf").unwrap(),
        CrmKind::Salesforce,
        "https://acme.my.salesforce.com",
    );
    cfg.crm_choice = Some(1);
    cfg.phone_country = Some("1".into());
    let mapper = Mapper::new(&cfg).unwrap();
    let ctx = mapper.row_context(IdentityStrategy::DeterministicId);
    let page: Vec<Value> = (0..2000).map(contact).collect();
    let mut bytes = 0;
    for _ in 0..rounds {
        for item in map_records(&mapper, Entity::Contact, &page) {
            let Outcome::Notice {
                notice: Notice::Change(ch),
                ..
            } = item.outcome
            else {
                panic!()
            };
            bytes += serde_json::to_vec(&row::build_owned(ch, &ctx).unwrap().unwrap())
                .unwrap()
                .len();
        }
    }
    println!("{} records, {bytes} bytes", rounds * page.len());
}
