#![no_main]
//! See `pairgate::fuzzing::upgrade_headers` for what is fed and what is checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pairgate::fuzzing::upgrade_headers(data));
