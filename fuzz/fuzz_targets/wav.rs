#![no_main]
//! Arbitrary bytes through medscribe's wav reader (medscribe_pipeline::fuzzing::wav).
libfuzzer_sys::fuzz_target!(|data: &[u8]| medscribe_pipeline::fuzzing::wav(data));
