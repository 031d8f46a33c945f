#![no_main]
//! Arbitrary bytes through medscribe's session reader (medscribe_pipeline::fuzzing::session).
libfuzzer_sys::fuzz_target!(|data: &[u8]| medscribe_pipeline::fuzzing::session(data));
