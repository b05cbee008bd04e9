//! libFuzzer entry point of [`taskfleet_fuzz::task_message`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| taskfleet_fuzz::task_message(data));
