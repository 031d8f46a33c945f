#![no_main]
//! Arbitrary bytes through medscribe's image reader (medscribe_llm::fuzzing::image).
libfuzzer_sys::fuzz_target!(|data: &[u8]| medscribe_llm::fuzzing::image(data));
