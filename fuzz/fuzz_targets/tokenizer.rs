#![no_main]
//! Arbitrary bytes through medscribe's tokenizer reader (medscribe_llm::fuzzing::tokenizer).
libfuzzer_sys::fuzz_target!(|data: &[u8]| medscribe_llm::fuzzing::tokenizer(data));
