#![no_main]
//! Arbitrary bytes through medscribe's gguf reader (medscribe_llm::fuzzing::gguf).
libfuzzer_sys::fuzz_target!(|data: &[u8]| medscribe_llm::fuzzing::gguf(data));
