//! The default letter model with real weights (Gemma 3 270M Q4_K_M GGUF, installed by setup)
//! against an independent reference: transformers loading the same GGUF dequantised to float32
//! (models/scripts/make_gemma3_270m_reference.py; only token ids are stored).

mod common;

use std::sync::atomic::AtomicBool;

use common::*;
use medscribe_llm::{generate, Device, Gemma3Text, GemmaTokenizer, GgufWeights, Sampling};
use medscribe_pipeline::{models, DataDir};

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("gemma3-270m-expected.json")).unwrap())
        .unwrap()
}

fn continuation(model: &mut Gemma3Text, prompt: &[u32], steps: usize) -> Vec<u32> {
    model.reset();
    let sampling = Sampling {
        max_new_tokens: steps,
        ..Sampling::default()
    };
    generate(
        model,
        prompt,
        &[],
        &sampling,
        &AtomicBool::new(false),
        &mut |_| true,
    )
    .unwrap()
    .0
}

#[test]
fn dequantised_weights_continue_exactly_like_the_reference() {
    let path = models::default_llm_model(&DataDir::from_env());
    let tokenizer = GemmaTokenizer::load(&path.with_file_name("tokenizer.json"))
        .expect("setup installs the tokenizer");
    let mut model = Gemma3Text::load_gguf_with(&path, &Device::Cpu, GgufWeights::Dequantized)
        .expect("setup installs the GGUF");
    let reference = reference();
    let steps = reference["steps"].as_u64().unwrap() as usize;
    for prompt in reference["prompts"].as_array().unwrap() {
        let text = prompt["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text).unwrap(),
            ids(&prompt["ids"]),
            "{text:?}"
        );
        assert_eq!(
            continuation(&mut model, &ids(&prompt["ids"]), steps),
            ids(&prompt["greedy"]),
            "{text:?}"
        );
    }
}

#[test]
fn quantized_kernels_stay_close_to_the_reference() {
    // candle's quantized matmuls round activations to 8 bits, so greedy decoding may part from
    // the float reference where two tokens are nearly tied: the tokens must agree at least up to
    // the first step whose top-1/top-2 margin in the reference is below 0.05.
    let path = models::default_llm_model(&DataDir::from_env());
    let mut model = Gemma3Text::load_gguf(&path, &Device::Cpu).unwrap();
    let reference = reference();
    let steps = reference["steps"].as_u64().unwrap() as usize;
    for prompt in reference["prompts"].as_array().unwrap() {
        let ours = continuation(&mut model, &ids(&prompt["ids"]), steps);
        let expected = ids(&prompt["greedy"]);
        let agree = ours
            .iter()
            .zip(&expected)
            .take_while(|(a, b)| a == b)
            .count();
        let first_near_tie = prompt["margins"]
            .as_array()
            .unwrap()
            .iter()
            .position(|m| m.as_f64().unwrap() < 0.05)
            .unwrap_or(steps);
        let text = prompt["text"].as_str().unwrap();
        eprintln!(
            "{text:?}: first {agree} of {steps} tokens agree (first near tie at {first_near_tie})"
        );
        assert!(
            agree >= first_near_tie,
            "{text:?}: parted after {agree} tokens, before the near tie at {first_near_tie}"
        );
    }
}
