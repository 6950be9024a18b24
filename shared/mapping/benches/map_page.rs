//! Map-and-serialise throughput: a page of 2,000 Salesforce-shaped contacts of about 1 KB each,
//! from the CRM's JSON to the serialised Dataverse requests. Target: 200,000 records/s per core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

fn bench(c: &mut Criterion) {
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
    let avg = page.iter().map(|r| r.to_string().len()).sum::<usize>() / page.len();
    eprintln!("average record size: {avg} bytes");
    let mut g = c.benchmark_group("map_and_serialise");
    g.throughput(Throughput::Elements(page.len() as u64));
    g.bench_function("salesforce_contacts_page_2000", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for item in map_records(&mapper, Entity::Contact, &page) {
                let Outcome::Notice {
                    notice: Notice::Change(ch),
                    ..
                } = item.outcome
                else {
                    panic!("unexpected {:?}", item.outcome)
                };
                let op = row::build_owned(ch, &ctx).unwrap().unwrap();
                bytes += serde_json::to_vec(&op).unwrap().len();
            }
            bytes
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
