//! Gemma 3 text parity: our model against Hugging Face transformers on a tiny random
//! Gemma3ForConditionalGeneration with MedGemma's architecture
//! (models/scripts/make_gemma3_fixtures.py; shared/specs/medgemma.md): tokenisation, logits of
//! every prompt position within 1e-3, and 20 greedy tokens with the key/value cache, including a
//! prompt far longer than the sliding window and a prompt fed in pieces (multi-turn prefill).

mod common;

use candle_core::Device;
use common::*;
use medscribe_llm::{Gemma3Text, GemmaTokenizer};

fn expected() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture("gemma3-expected/expected.json")).unwrap(),
    )
    .unwrap()
}

fn model() -> Gemma3Text {
    Gemma3Text::load(&fixture("gemma3-tiny"), &Device::Cpu).expect("tiny Gemma 3 loads")
}

#[test]
fn tokenizer_gives_the_reference_ids() {
    let tokenizer = GemmaTokenizer::load(&fixture("gemma3-tiny/tokenizer.json")).unwrap();
    for (name, prompt) in expected()["prompts"].as_object().unwrap() {
        assert_eq!(
            tokenizer.encode(prompt["text"].as_str().unwrap()).unwrap(),
            ids(&prompt["ids"]),
            "{name}"
        );
    }
}

#[test]
fn logits_of_every_position_match_hf_within_1e_3() {
    for (name, prompt) in expected()["prompts"].as_object().unwrap() {
        let mut model = model();
        let logits = model.forward(&ids(&prompt["ids"]), true).unwrap();
        let shape: Vec<usize> = prompt["logits_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(logits.dims(), shape.as_slice(), "{name}");
        let ours: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        let reference = read_f32(&fixture(&format!(
            "gemma3-expected/{}",
            prompt["logits_file"].as_str().unwrap()
        )));
        let max_diff = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!(
            "{name}: max abs logit diff {max_diff:.2e} over {} values",
            ours.len()
        );
        assert!(max_diff <= 1e-3, "{name}: max abs diff {max_diff}");
    }
}

#[test]
fn greedy_continuations_match_hf() {
    let expected = expected();
    let steps = expected["greedy_tokens"].as_u64().unwrap() as usize;
    for (name, prompt) in expected["prompts"].as_object().unwrap() {
        let mut model = model();
        assert_eq!(
            greedy(&mut model, &ids(&prompt["ids"]), steps),
            ids(&prompt["greedy"]),
            "{name}"
        );
    }
}

#[test]
fn a_prompt_fed_in_pieces_equals_the_prompt_at_once() {
    // Prefill after history: pieces shorter and longer than the sliding window (8).
    let expected = expected();
    let prompt = ids(&expected["prompts"]["long"]["ids"]);
    let steps = expected["greedy_tokens"].as_u64().unwrap() as usize;
    for piece in [1usize, 3, 8, 13] {
        let mut model = model();
        let (head, tail) = prompt.split_at(prompt.len() - 1);
        for chunk in head.chunks(piece) {
            model.forward(chunk, false).unwrap();
        }
        assert_eq!(model.position(), head.len());
        assert_eq!(
            greedy(&mut model, tail, steps),
            ids(&expected["prompts"]["long"]["greedy"]),
            "pieces of {piece}"
        );
    }
}

#[test]
fn reset_starts_a_new_conversation() {
    let expected = expected();
    let prompt = ids(&expected["prompts"]["raw"]["ids"]);
    let mut model = model();
    let first = greedy(&mut model, &prompt, 5);
    model.reset();
    assert_eq!(model.position(), 0);
    assert_eq!(greedy(&mut model, &prompt, 5), first);
}

#[test]
fn bad_model_directories_and_tokens_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = Gemma3Text::load(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no config.json"), "{err}");
    std::fs::copy(
        fixture("gemma3-tiny/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let err = Gemma3Text::load(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("safetensors"), "{err}");
    std::fs::write(dir.path().join("model.safetensors"), b"garbage").unwrap();
    let err = Gemma3Text::load(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    let mut model = model();
    let err = model.forward(&[100_000], false).unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    assert!(model.forward(&[], false).is_err());
}
