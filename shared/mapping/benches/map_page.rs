//! Map-and-serialise throughput: a page of 2,000 Salesforce-shaped contacts of about 1 KB each,
//! from the CRM's JSON to the serialised Dataverse requests. Target: 200,000 records/s per core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mapping::payload::map_records;
use mapping::{
    CrmKind, Entity, IdentityStrategy, Mapper, Notice, Outcome, SourceConfig, SourceId, row,
};
use serde_json::Value;

mod support;
use support::contact;

// The Lambda binaries use mimalloc too: mapping allocates a few dozen small strings per record,
// and glibc's allocator is a third of the work with them (measured with callgrind).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
