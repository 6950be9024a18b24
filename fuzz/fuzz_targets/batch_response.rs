//! The Dataverse `$batch` multipart response parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| crm_sync_fuzz::batch_response(data));
