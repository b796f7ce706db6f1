//! Every invariant of `orgo_fuzz::check`, on the input read as YAML and as JSON.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    orgo_fuzz::check(data);
});
