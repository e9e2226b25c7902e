#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_fuzz::run(switchboard_model::Vendor::Aircall, data));
