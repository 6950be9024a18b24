//! Maps the benchmark's page a fixed number of times: a deterministic workload for
//! `valgrind --tool=callgrind` (instruction counts do not depend on machine noise).

use mapping::payload::map_records;
use mapping::{
    CrmKind, Entity, IdentityStrategy, Mapper, Notice, Outcome, SourceConfig, SourceId, row,
};
use serde_json::Value;

#[path = "../benches/support/mod.rs"]
mod support;
use support::contact;

// The Lambda binaries use mimalloc too: mapping allocates a few dozen small strings per record,
// and glibc's allocator is a third of the work with them (measured with callgrind).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
