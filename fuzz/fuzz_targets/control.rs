//! libFuzzer entry point of [`taskfleet_fuzz::control`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| taskfleet_fuzz::control(data));
