#![no_main]
//! Arbitrary bytes through medscribe's template reader (medscribe_llm::fuzzing::template).
libfuzzer_sys::fuzz_target!(|data: &[u8]| medscribe_llm::fuzzing::template(data));
