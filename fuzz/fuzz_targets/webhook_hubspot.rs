//! A HubSpot webhook request: its verifier, then its JSON notification parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mapping::CrmKind;
use std::sync::OnceLock;

static MAPPER: OnceLock<mapping::Mapper> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let m = MAPPER.get_or_init(|| crm_sync_fuzz::mapper(CrmKind::Hubspot));
    crm_sync_fuzz::webhook(CrmKind::Hubspot, m, data);
});
