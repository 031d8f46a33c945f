//! Moonshine parity: our encoder/decoder loop (KV cache, greedy, tokenizer) on the graphs setup
//! prepared gives exactly the text of the Python onnxruntime reference on the shipped .ort files
//! (models/fixtures/moonshine-expected.json, made by scripts/moonshine_reference.py).

use crate::common;

use common::*;
use medscribe_asr::moonshine::Moonshine;
use medscribe_pipeline::{models, DataDir};

#[test]
fn whole_file_transcripts_equal_the_python_reference() {
    if !common::slow_tier() {
        return;
    }
    init_runtime();
    let dir = models::default_asr_model(&DataDir::from_env());
    assert!(
        dir.join("decoder_model_merged.onnx").is_file(),
        "setup prepares the unpacked graphs (scripts/setup.sh)"
    );
    let mut model = Moonshine::load(&dir, 1).expect("default model loads");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("moonshine-expected.json")).unwrap())
            .unwrap();
    for file in expected["files"].as_array().unwrap() {
        let audio = samples(&repo().join(file["wav"].as_str().unwrap()));
        let text = model.transcribe(&audio).unwrap();
        assert_eq!(text, file["text"].as_str().unwrap(), "{}", file["wav"]);
    }
}

#[test]
fn the_shipped_graphs_still_load_and_agree() {
    // A model directory with only the .ort files (no setup preparation) works too.
    init_runtime();
    let shipped = DataDir::from_env().models_dir().join("moonshine-base-en");
    let only_ort = tempfile::tempdir().unwrap();
    for name in [
        "encoder_model.ort",
        "decoder_model_merged.ort",
        "tokenizer.bin",
    ] {
        std::os::unix::fs::symlink(shipped.join(name), only_ort.path().join(name)).unwrap();
    }
    let mut model = Moonshine::load(only_ort.path(), 1).expect("the .ort files load");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("moonshine-expected.json")).unwrap())
            .unwrap();
    let first = &expected["files"][0];
    let audio = samples(&repo().join(first["wav"].as_str().unwrap()));
    assert_eq!(
        model.transcribe(&audio).unwrap(),
        first["text"].as_str().unwrap()
    );
}
