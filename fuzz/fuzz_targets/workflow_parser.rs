//! libFuzzer entry point of [`taskfleet_fuzz::workflow_parser`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| taskfleet_fuzz::workflow_parser(data));
