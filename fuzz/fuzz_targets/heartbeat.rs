//! libFuzzer entry point of [`taskfleet_fuzz::heartbeat`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| taskfleet_fuzz::heartbeat(data));
