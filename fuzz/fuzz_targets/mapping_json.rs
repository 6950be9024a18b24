//! Arbitrary JSON records through every CRM kind's mapping profile and row building.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static MAPPERS: OnceLock<Vec<mapping::Mapper>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let m = MAPPERS.get_or_init(|| {
        crm_sync_fuzz::KINDS
            .iter()
            .map(|k| crm_sync_fuzz::mapper(*k))
            .collect()
    });
    crm_sync_fuzz::mapping_json(m, data);
});
