//! libFuzzer entry point of [`taskfleet_fuzz::worker_events`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| taskfleet_fuzz::worker_events(data));
