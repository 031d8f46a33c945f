//! Gemma 3 / MedGemma parity: our model against Hugging Face transformers on a tiny random
//! Gemma3ForConditionalGeneration with MedGemma's architecture
//! (models/scripts/make_gemma3_fixtures.py; transformers' `models/gemma3/`): tokenisation with image
//! expansion, the vision tower's and the projector's outputs, logits of every prompt position
//! within 1e-3, and 20 greedy tokens with the key/value cache, for text-only, one-image and
//! two-image prompts, a prompt far longer than the sliding window and a prompt fed in pieces
//! (multi-turn prefill). Image preprocessing is compared with HF's PIL processor separately, with
//! a tolerance (resize filters and JPEG decoders differ by a grey level here and there).
//! The model, the tower and the mmproj file compute on the device `MEDSCRIBE_TEST_DEVICE` names
//! (the processor when unset; `cuda` in a `--features cuda` build), within the same bounds.

use crate::common;

use candle_core::{Device, Tensor};
use common::*;
use medscribe_llm::{expand_image_markers, Gemma3Text, Gemma3Vision, GemmaTokenizer, PromptImages};

const TOKENS_PER_IMAGE: usize = 4;

fn model() -> Gemma3Text {
    Gemma3Text::load(&fixture("gemma3-tiny"), &test_device()).expect("tiny Gemma 3 loads")
}

fn vision() -> Gemma3Vision {
    let dir = fixture("gemma3-tiny");
    Gemma3Vision::load(&dir, &[dir.join("model.safetensors")], &test_device())
        .expect("vision tower loads")
        .expect("the tiny model is multimodal")
}

/// HF's pixel values of a fixture image: `[3, size, size]`.
fn reference_pixels(image: &str) -> Tensor {
    let expected = gemma3_expected();
    let shape: Vec<usize> = expected["images"][image]["pixels_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let values = read_f32(&fixture(&format!(
        "gemma3-expected/{}.pixels.f32",
        image.replace('.', "_")
    )));
    Tensor::from_vec(values, shape, &test_device()).unwrap()
}

/// The images of a reference prompt, encoded from HF's own pixel values.
fn prompt_images(prompt: &serde_json::Value) -> Option<PromptImages> {
    let names = prompt["images"].as_array()?;
    if names.is_empty() {
        return None;
    }
    let pixels: Vec<Tensor> = names
        .iter()
        .map(|n| reference_pixels(n.as_str().unwrap()))
        .collect();
    let tokenizer = GemmaTokenizer::load(&fixture("gemma3-tiny/tokenizer.json")).unwrap();
    Some(PromptImages {
        soft_token: tokenizer.token_id("<image_soft_token>").unwrap(),
        features: vision()
            .image_features(&Tensor::stack(&pixels, 0).unwrap())
            .unwrap(),
    })
}

#[test]
fn vision_tower_and_projector_match_hf_within_1e_3() {
    let expected = gemma3_expected();
    let vision = vision();
    assert_eq!(vision.tokens_per_image(), TOKENS_PER_IMAGE);
    for image in expected["images"].as_object().unwrap().keys() {
        let stem = image.replace('.', "_");
        let pixels = reference_pixels(image).unsqueeze(0).unwrap();
        let output = vision.vision_output(&pixels).unwrap();
        let reference = read_f32(&fixture(&format!("gemma3-expected/{stem}.vision.f32")));
        let ours: Vec<f32> = output.flatten_all().unwrap().to_vec1().unwrap();
        let vision_diff = max_abs_diff(&ours, &reference);
        let projected = vision.project(&output).unwrap();
        let reference = read_f32(&fixture(&format!("gemma3-expected/{stem}.projected.f32")));
        assert_eq!(projected.dims(), &[1, TOKENS_PER_IMAGE, 64]);
        let ours: Vec<f32> = projected.flatten_all().unwrap().to_vec1().unwrap();
        let projector_diff = max_abs_diff(&ours, &reference);
        eprintln!("{image}: vision output diff {vision_diff:.2e}, projector {projector_diff:.2e}");
        assert!(vision_diff <= 1e-3 && projector_diff <= 1e-3, "{image}");
    }
}

#[test]
fn vision_from_a_llama_cpp_mmproj_file_matches_hf() {
    // models/scripts/make_gemma3_mmproj_fixture.py: llama.cpp's converter wrote the same tower
    // and projector as a GGUF with f16 matrices (as public MedGemma mmproj files are). Rounding
    // the weights to f16 moves the outputs by about 4e-4; the limit stays the f32 one, 1e-3.
    let path = fixture("gemma3-mmproj/mmproj-gemma3-tiny-f16.gguf");
    let vision = Gemma3Vision::load_mmproj(&path, 64, &test_device()).unwrap();
    assert_eq!(vision.tokens_per_image(), TOKENS_PER_IMAGE);
    assert_eq!(vision.image_size(), 56);
    let expected = gemma3_expected();
    for image in expected["images"].as_object().unwrap().keys() {
        let stem = image.replace('.', "_");
        let pixels = reference_pixels(image).unsqueeze(0).unwrap();
        let output = vision.vision_output(&pixels).unwrap();
        let projected = vision.project(&output).unwrap();
        for (ours, name) in [(output, "vision"), (projected, "projected")] {
            let reference = read_f32(&fixture(&format!("gemma3-expected/{stem}.{name}.f32")));
            let ours: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
            let diff = max_abs_diff(&ours, &reference);
            eprintln!("{image} {name} from mmproj: max diff {diff:.2e}");
            assert!(diff <= 1e-3, "{image} {name}: {diff}");
        }
    }
}

#[test]
fn mmproj_files_of_the_wrong_kind_or_cut_short_are_refused() {
    let path = fixture("gemma3-mmproj/mmproj-gemma3-tiny-f16.gguf");
    // A projector for another language model width is refused with the reason.
    let error = Gemma3Vision::load_mmproj(&path, 640, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("mm.input_projection.weight") && error.contains("[32, 640]"),
        "{error}"
    );
    // A text model GGUF is not a projector.
    let error = Gemma3Vision::load_mmproj(
        &medscribe_pipeline::models::default_llm_model(&medscribe_pipeline::DataDir::from_env()),
        64,
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("not a Gemma 3 vision projector"), "{error}");
    // Truncated files: the header, or the tensors, cut short.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for keep in [100, bytes.len() - 1000] {
        let cut = dir.path().join(format!("mmproj-cut-{keep}.gguf"));
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        let error = Gemma3Vision::load_mmproj(&cut, 64, &Device::Cpu)
            .unwrap_err()
            .to_string();
        eprintln!("{error}");
        assert!(
            error.contains(&format!("mmproj-cut-{keep}.gguf")),
            "{error}"
        );
    }
}

#[test]
fn the_vision_part_is_read_only_when_an_image_needs_it() {
    // Text-only letters never pay for the tower (MedGemma 4B's mmproj: 0.85 GB, 3 s), and what
    // is read later computes exactly as a tower read at once.
    let device = test_device();
    let png = fixture("gemma3-expected/scan.png");
    let loaded = medscribe_llm::load(&fixture("gemma3-tiny"), &device).unwrap();
    let part = loaded
        .vision
        .as_ref()
        .expect("the tiny model is multimodal");
    assert!(!part.is_loaded(), "read before any image asked for it");
    assert_eq!(part.tokens_per_image(), TOKENS_PER_IMAGE);
    let lazily = loaded.encode_images(std::slice::from_ref(&png)).unwrap();
    assert!(part.is_loaded());
    let pixels = medscribe_llm::image::load_pixels(&png, vision().image_size(), &device)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let at_once = vision().image_features(&pixels).unwrap();
    assert_eq!(max_abs_diff_tensors(&lazily.features, &at_once), 0.0);

    // The same for an mmproj file; its header is still checked at once.
    let path = fixture("gemma3-mmproj/mmproj-gemma3-tiny-f16.gguf");
    let part = medscribe_llm::VisionPart::of_mmproj(&path, 64, &device).unwrap();
    assert!(!part.is_loaded());
    assert_eq!(part.tokens_per_image(), TOKENS_PER_IMAGE);
    let lazily = part.get().unwrap().image_features(&pixels).unwrap();
    let at_once = Gemma3Vision::load_mmproj(&path, 64, &device)
        .unwrap()
        .image_features(&pixels)
        .unwrap();
    assert_eq!(max_abs_diff_tensors(&lazily, &at_once), 0.0);
    let error = medscribe_llm::VisionPart::of_mmproj(&path, 640, &device)
        .unwrap_err()
        .to_string();
    assert!(error.contains("expected [32, 640]"), "{error}");
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("mmproj-cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let error = medscribe_llm::VisionPart::of_mmproj(&cut, 64, &device)
        .unwrap_err()
        .to_string();
    assert!(error.contains("mmproj-cut.gguf"), "{error}");
}

fn max_abs_diff_tensors(a: &Tensor, b: &Tensor) -> f32 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    max_abs_diff(&a, &b)
}

#[test]
fn image_preprocessing_is_close_to_hfs_pil_processor() {
    // Our decoder + PIL-style bilinear resize against transformers' PIL image processor. The
    // PNG differs only by rounding; the JPEG also by the decoder's IDCT and chroma upsampling.
    // One grey level is 2/255 = 0.0078 after normalisation.
    for (image, max_allowed, mean_allowed) in
        [("scan.png", 0.0079, 0.001), ("photo.jpg", 0.05, 0.006)]
    {
        let ours = medscribe_llm::image::load_pixels(
            &fixture(&format!("gemma3-expected/{image}")),
            56,
            &Device::Cpu,
        )
        .unwrap();
        let reference = reference_pixels(image);
        assert_eq!(ours.dims(), reference.dims());
        let ours: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
        let reference: Vec<f32> = reference.flatten_all().unwrap().to_vec1().unwrap();
        let max = max_abs_diff(&ours, &reference);
        let mean = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / ours.len() as f32;
        eprintln!("{image}: pixel values max diff {max:.4}, mean {mean:.5}");
        assert!(
            max <= max_allowed && mean <= mean_allowed,
            "{image}: max {max}, mean {mean}"
        );
    }
}

#[test]
fn tokenizer_gives_the_reference_ids() {
    let tokenizer = GemmaTokenizer::load(&fixture("gemma3-tiny/tokenizer.json")).unwrap();
    for (name, prompt) in gemma3_expected()["prompts"].as_object().unwrap() {
        let (text, images) =
            expand_image_markers(prompt["text"].as_str().unwrap(), TOKENS_PER_IMAGE);
        assert_eq!(images, prompt["images"].as_array().unwrap().len(), "{name}");
        assert_eq!(
            tokenizer.encode(&text).unwrap(),
            ids(&prompt["ids"]),
            "{name}"
        );
    }
}

#[test]
fn logits_of_every_position_match_hf_within_1e_3() {
    for (name, prompt) in gemma3_expected()["prompts"].as_object().unwrap() {
        let mut model = model();
        let prompt_ids = ids(&prompt["ids"]);
        let logits = match prompt_images(prompt) {
            Some(images) => model
                .forward_with_images(&prompt_ids, images.soft_token, &images.features, true)
                .unwrap(),
            None => model.forward(&prompt_ids, true).unwrap(),
        };
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
        let max_diff = max_abs_diff(&ours, &reference);
        eprintln!(
            "{name}: max abs logit diff {max_diff:.2e} over {} values",
            ours.len()
        );
        assert!(max_diff <= 1e-3, "{name}: max abs diff {max_diff}");
    }
}

#[test]
fn greedy_continuations_match_hf() {
    let expected = gemma3_expected();
    let steps = expected["greedy_tokens"].as_u64().unwrap() as usize;
    for (name, prompt) in expected["prompts"].as_object().unwrap() {
        let mut model = model();
        let images = prompt_images(prompt);
        assert_eq!(
            greedy_with_images(&mut model, &ids(&prompt["ids"]), images.as_ref(), steps),
            ids(&prompt["greedy"]),
            "{name}"
        );
    }
}

#[test]
fn a_prompt_fed_in_pieces_equals_the_prompt_at_once() {
    // Prefill after history: pieces shorter and longer than the sliding window (8).
    let expected = gemma3_expected();
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
    let expected = gemma3_expected();
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

#[test]
fn bf16_weights_stay_bf16_and_compute_like_their_float_widening() {
    // MedGemma ships bf16. Kept in bf16 and widened inside the products, the model must compute
    // what the same values widened to f32 at load compute: the tiny model written once in bf16
    // and once as those bf16 values in f32 (sqrt(64) = 8 is exact in bf16, so the embedding
    // scale is the same too).
    let tiny = fixture("gemma3-tiny");
    let weights =
        candle_core::safetensors::load(tiny.join("model.safetensors"), &Device::Cpu).unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let mut models = Vec::new();
    for (name, dtype) in [
        ("bf16", candle_core::DType::BF16),
        ("widened", candle_core::DType::F32),
    ] {
        let dir = dirs.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        for file in ["config.json", "tokenizer.json"] {
            std::fs::copy(tiny.join(file), dir.join(file)).unwrap();
        }
        let converted: std::collections::HashMap<String, Tensor> = weights
            .iter()
            .map(|(k, v)| {
                let rounded = v.to_dtype(candle_core::DType::BF16).unwrap();
                (k.clone(), rounded.to_dtype(dtype).unwrap())
            })
            .collect();
        candle_core::safetensors::save(&converted, dir.join("model.safetensors")).unwrap();
        models.push(Gemma3Text::load(&dir, &Device::Cpu).unwrap());
    }
    let tokenizer = GemmaTokenizer::load(&tiny.join("tokenizer.json")).unwrap();
    let prompt = tokenizer
        .encode("<bos>The patient was reviewed on the ward round today and remains stable.")
        .unwrap();
    assert!(prompt.len() >= 8, "the prompt must take the GEMM path too");
    let logits: Vec<Vec<f32>> = models
        .iter_mut()
        .map(|m| {
            m.forward(&prompt, true)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect();
    let diff = max_abs_diff(&logits[0], &logits[1]);
    let (bf16, widened) = models.split_at_mut(1);
    let (a, b) = (
        greedy(&mut bf16[0], &prompt, 20),
        greedy(&mut widened[0], &prompt, 20),
    );
    let bytes = [bf16[0].weight_bytes(), widened[0].weight_bytes()];
    eprintln!("bf16 against widened: logits {diff:.2e}, greedy {a:?}, weights {bytes:?} bytes");
    assert_eq!(bytes[0] * 2, bytes[1], "bf16 matrices take half the memory");
    assert!(diff < 1e-4, "{diff}");
    assert_eq!(a, b);
}
