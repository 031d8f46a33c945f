//! Letter writing for medscribe: Gemma 3 / MedGemma on candle (text model, SigLIP vision,
//! projector, KV cache, sampling), GGUF and safetensors loading, the chat template, letter
//! templates and structured output. Not built yet: this crate only marks its place in the
//! workspace so dependencies point the right way from the start.
#![deny(missing_docs)]
