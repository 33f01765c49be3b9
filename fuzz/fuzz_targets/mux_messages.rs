#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssh_fuzz::mux_messages::run(data));
