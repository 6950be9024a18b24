//! Every webhook signature and credential verifier over arbitrary headers and bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| crm_sync_fuzz::verify(data));
