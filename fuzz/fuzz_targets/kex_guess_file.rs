#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssh_fuzz::kex_guess_file::run(data));
