//! Every invariant of `orgo_fuzz::check_net`: the guest-facing parsers of
//! `orgo-net` (SNI, HTTP `Host`, DNS) on hostile bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    orgo_fuzz::check_net(data);
});
