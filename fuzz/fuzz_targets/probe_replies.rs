#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssh_fuzz::probe_replies::run(data));
