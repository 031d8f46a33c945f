//! Letter writing for medscribe: the Gemma 3 / MedGemma language model on candle with Hugging
//! Face semantics (our own implementation: candle-transformers' Gemma 3 is numerically wrong for
//! MedGemma, transformers' `models/gemma3/`), configuration parsing, safetensors loading across the
//! transformers name layouts and GGUF loading (quantized weights stay quantized), Gemma's
//! tokenizer and chat template, generation, and MedGemma's vision path (image preprocessing, the
//! SigLIP tower, the projector, merging image features into the prompt). It knows nothing about
//! audio or user interfaces. Also structured letters: templates, schema-constrained JSON
//! generation, grounding and renderers (`letter`).
#![deny(missing_docs)]

pub mod chat;
pub mod chat_template;
pub mod config;
mod cpu;
pub mod error;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod gemma3;
pub mod generate;
mod gguf_check;
mod gguf_tokenizer;
pub mod image;
pub mod json_schema;
#[doc(hidden)]
pub mod kernels;
pub mod letter;
pub mod loader;
mod tokenizer_file;
pub mod vision;

pub use candle_core::Device;
pub use chat::{
    chat_prompt, conversation_prompt, expand_image_markers, user_text, ChatPart, ChatRole,
    GemmaTokenizer, IMAGE_MARKER,
};
pub use config::Gemma3TextConfig;
pub use error::{LlmError, Result};
pub use gemma3::{Gemma3Text, GgufWeights};
pub use generate::{
    generate, generate_json, generate_with_images, PromptImages, Sampling, StopReason,
};
pub use json_schema::{JsonSchema, SchemaConstraint};
pub use loader::{load, load_with_mmproj, LoadedModel};
pub use vision::{Gemma3Vision, VisionPart};

/// The instructions this machine's CPU runs the letter model's quantized products on, as
/// detected at run time, best first per weight type: for example `"K-quants avx512vnni, Q8_0
/// avx512vnni"` or `"K-quants avx2, Q8_0 avx2"`. Logs and benches print it so that a speed is
/// read with the kernels that made it.
pub fn cpu_kernels() -> String {
    cpu::kernel_summary()
}
