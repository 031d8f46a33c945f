//! Entry points for the fuzz targets in `fuzz/` and for the regression tests that replay what
//! they found (`tests/fuzz_regressions.rs`): each feeds arbitrary bytes to one of the crate's
//! file readers exactly as a user's file would reach it. None may panic, hang or allocate beyond
//! what the bytes justify; errors are the expected outcome for most inputs.

use std::path::PathBuf;

/// A scratch file for readers that take a path (one per process and reader: the fuzzer runs one
/// input at a time).
fn scratch(name: &str, data: &[u8]) -> Option<PathBuf> {
    let dir = std::env::temp_dir().join(format!("medscribe-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(name);
    std::fs::write(&path, data).ok()?;
    Some(path)
}

/// A GGUF file through the whole text-model loader (header scan, candle's parser, tensor checks,
/// configuration, weights), the mmproj vision loader and the tokenizer rebuilt from the metadata.
pub fn gguf(data: &[u8]) {
    let Some(path) = scratch("model.gguf", data) else {
        return;
    };
    let _ = crate::Gemma3Text::load_gguf(&path, &crate::Device::Cpu);
    let _ = crate::Gemma3Vision::load_mmproj(&path, 64, &crate::Device::Cpu);
    if let Ok(tokenizer) = crate::GemmaTokenizer::from_gguf(&path) {
        if let Ok(ids) = tokenizer.encode(&crate::user_text("Amlodipine 5 mg <end_of_turn> x")) {
            let _ = tokenizer.decode(&ids);
        }
    }
}

/// A `tokenizer.json` through the tokenizer loader, then a round of encoding and decoding.
pub fn tokenizer(data: &[u8]) {
    let Some(path) = scratch("tokenizer.json", data) else {
        return;
    };
    if let Ok(tokenizer) = crate::GemmaTokenizer::load(&path) {
        if let Ok(ids) = tokenizer.encode(&crate::user_text("Amlodipine 5 mg <end_of_turn> x")) {
            let _ = tokenizer.decode(&ids);
        }
        let _ = tokenizer.text_pieces();
    }
}

/// A letter template file.
pub fn template(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(template) = crate::letter::template::Template::from_json(text, "fuzz") {
            for style in [
                crate::letter::prompt::PromptStyle::Chat,
                crate::letter::prompt::PromptStyle::Completion,
            ] {
                let _ = crate::letter::prompt::letter_prompt(&template, "transcript", style, 1);
            }
        }
    }
}

/// An image file through decoding with our limits and the vision preprocessing.
pub fn image(data: &[u8]) {
    let Some(path) = scratch("image", data) else {
        return;
    };
    if let Ok(rgb) = crate::image::read_rgb(&path) {
        let _ = crate::image::pixels(&rgb, 16, &crate::Device::Cpu);
    }
}
