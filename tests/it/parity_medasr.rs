//! MedASR parity: our front end, ONNX session handling, CTC decoding and long-audio windowing
//! against Hugging Face transformers on a tiny random LasrForCTC
//! (models/scripts/make_medasr_fixtures.py made the fixtures; transformers' `models/lasr/` the rules).

use crate::common;

use common::*;
use medscribe_asr::features::{FrontEnd, MEL_BANDS};
use medscribe_asr::longform::{ChunkGeometry, CtcModel, LongFormCtc};
use medscribe_asr::medasr::{ExportSignature, MedAsr, MedAsrOptions};
use medscribe_asr::{SpeechRecognizer, WindowedRecognizer};

const FILES: [&str; 3] = ["dictation-short", "dictation-medium", "dictation-long"];
const MODELS: [(&str, ExportSignature); 2] = [
    ("medasr-tiny-hf", ExportSignature::HuggingFace),
    ("medasr-tiny-sherpa", ExportSignature::SherpaOnnx),
];

fn load(model: &str) -> MedAsr {
    init_runtime();
    MedAsr::load(&fixture(model), MedAsrOptions::default()).expect("tiny model loads")
}

fn entry(name: &str) -> serde_json::Value {
    medasr_expected()["files"][name].clone()
}

#[test]
fn features_match_hf_within_1e_4() {
    let expected = entry("dictation-short");
    let audio = samples(&fixture(expected["wav"].as_str().unwrap()));
    assert_eq!(audio.len() as u64, expected["samples"].as_u64().unwrap());
    let reference = read_f32(&fixture(&format!(
        "medasr-expected/{}",
        expected["features_file"].as_str().unwrap()
    )));
    let ours = FrontEnd::new().compute(&audio);
    assert_eq!(
        ours.frames as u64,
        expected["feature_frames"].as_u64().unwrap()
    );
    assert_eq!(ours.values.len(), reference.len());
    assert_eq!(reference.len(), ours.frames * MEL_BANDS);
    let max_diff = ours
        .values
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff <= 1e-4, "max abs diff {max_diff}");
    assert!(ours.mask.iter().all(|&valid| valid));
}

#[test]
fn frame_ids_and_text_match_hf_for_both_signatures() {
    for (model_dir, signature) in MODELS {
        let mut model = load(model_dir);
        assert_eq!(model.signature(), signature);
        for name in FILES {
            let expected = entry(name);
            let audio = samples(&fixture(expected["wav"].as_str().unwrap()));
            let ids = model.frame_ids(&audio).unwrap();
            assert_eq!(
                ids,
                common::ids(&expected["frame_ids"]),
                "{model_dir} {name}: frame ids"
            );
            // Whole-file decode (no windowing) equals HF's tokenizer.decode of the same ids.
            let collapsed = medasr_asr_decode(&model, &ids);
            assert_eq!(
                collapsed,
                expected["text"].as_str().unwrap(),
                "{model_dir} {name}: text"
            );
        }
    }
}

#[test]
fn segment_transcription_equals_the_whole_file_decode() {
    let mut model = load("medasr-tiny-hf");
    let expected = entry("dictation-short");
    let audio = samples(&fixture(expected["wav"].as_str().unwrap()));
    assert_eq!(
        model.transcribe_segment(&audio).unwrap(),
        expected["text"].as_str().unwrap()
    );
}

fn medasr_asr_decode(model: &MedAsr, ids: &[u32]) -> String {
    let frames: Vec<usize> = (0..ids.len()).collect();
    let emitted: Vec<u32> = medscribe_asr::ctc::collapse(ids, &frames, model.vocab().blank())
        .iter()
        .map(|e| e.id)
        .collect();
    model.vocab().decode(&emitted).unwrap()
}

#[test]
fn int8_export_matches_onnxruntime_python() {
    let mut model = load("medasr-tiny-sherpa-int8");
    for name in ["dictation-short", "dictation-medium"] {
        let expected = entry(name);
        let audio = samples(&fixture(expected["wav"].as_str().unwrap()));
        let ids = model.frame_ids(&audio).unwrap();
        assert_eq!(
            ids,
            common::ids(&expected["int8_frame_ids"]),
            "{name}: int8 frame ids"
        );
        assert_eq!(
            medasr_asr_decode(&model, &ids),
            expected["int8_text"].as_str().unwrap()
        );
    }
}

#[test]
fn windowed_long_audio_matches_hf_pipeline() {
    // HF: pipeline(chunk_length_s=20, stride_length_s=2). We stream the file in odd-sized blocks
    // so window boundaries never line up with block boundaries.
    for (model_dir, _) in MODELS {
        let mut model = load(model_dir);
        for name in FILES {
            let expected = entry(name);
            let audio = samples(&fixture(expected["wav"].as_str().unwrap()));
            let mut long_form = LongFormCtc::new(ChunkGeometry::medasr(model.samples_per_frame()));
            for block in audio.chunks(7_777) {
                long_form.push(block, &mut model).unwrap();
            }
            assert_eq!(long_form.samples_seen(), audio.len());
            long_form.flush(&mut model).unwrap();
            let kept = long_form.kept_ids().to_vec();
            assert_eq!(
                kept,
                common::ids(&expected["pipeline_ids"]),
                "{model_dir} {name}: pipeline ids"
            );
            let transcript = long_form.finish(&mut model).unwrap();
            assert_eq!(
                transcript.raw_text,
                expected["pipeline_text"].as_str().unwrap(),
                "{model_dir} {name}"
            );
        }
    }
}

#[test]
fn the_long_file_really_spans_three_windows() {
    let expected = entry("dictation-long");
    let seconds = expected["samples"].as_f64().unwrap() / 16_000.0;
    assert!(
        seconds > 36.0,
        "the long fixture must need a middle window ({seconds} s)"
    );
    // And windowing changes the result, so the test above checks the cutting, not a no-op.
    assert_ne!(expected["pipeline_ids"], expected["frame_ids"]);
}

#[test]
fn recogniser_trait_gives_segments_that_cover_the_text() {
    let mut model = load("medasr-tiny-hf");
    let expected = entry("dictation-long");
    let audio = samples(&fixture(expected["wav"].as_str().unwrap()));
    for block in audio.chunks(16_000) {
        model.accept(block).unwrap();
    }
    let transcript = model.finish().unwrap();
    assert_eq!(
        transcript.raw_text,
        expected["pipeline_text"].as_str().unwrap()
    );
    assert!((transcript.duration_s - audio.len() as f64 / 16_000.0).abs() < 1e-9);
    assert!(!transcript.segments.is_empty());
    let mut previous_end = 0.0;
    for segment in &transcript.segments {
        assert!(segment.start_s >= previous_end - 1e-9 && segment.end_s > segment.start_s);
        previous_end = segment.end_s;
    }
    assert!(previous_end <= transcript.duration_s + 1e-9);
    // A second recording on the same model starts from scratch.
    let short = entry("dictation-short");
    model
        .accept(&samples(&fixture(short["wav"].as_str().unwrap())))
        .unwrap();
    assert_eq!(
        model.finish().unwrap().raw_text,
        short["pipeline_text"].as_str().unwrap()
    );
}

#[test]
fn audio_shorter_than_the_model_minimum_gives_an_empty_transcript() {
    let mut model = load("medasr-tiny-hf");
    for length in [0usize, 1, 399, 2_319] {
        model.accept(&vec![0.1f32; length]).unwrap();
        let transcript = model.finish().unwrap();
        assert_eq!(transcript.text, "", "{length} samples");
        assert!(transcript.segments.is_empty());
    }
    // 2320 samples = 13 frames = the first length the model accepts.
    assert!(model.logits(&vec![0.0f32; 2_320]).unwrap().is_some());
    assert!(model.logits(&vec![0.0f32; 2_319]).unwrap().is_none());
}
