//! Salesforce outbound messages: the SOAP parser and the mapping of what it reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static MAPPERS: OnceLock<Vec<mapping::Mapper>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let m = MAPPERS.get_or_init(|| vec![crm_sync_fuzz::mapper(mapping::CrmKind::Salesforce)]);
    crm_sync_fuzz::soap(m, data);
});
