//! libFuzzer entry point of [`taskfleet_fuzz::dead_letter`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| taskfleet_fuzz::dead_letter(data));
