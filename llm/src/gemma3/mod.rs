//! The Gemma 3 text model (MedGemma's language model) with Hugging Face semantics
//! (transformers' `models/gemma3/`, "Text model"): embeddings scaled by sqrt(hidden); RMSNorm as
//! x * (1 + w) in f32; q/k norms before RoPE; attention scale query_pre_attn_scalar^-0.5; GQA;
//! sliding layers see keys with q - window < k <= q and use the local RoPE base; full layers use
//! the global base with linear scaling; GELU-tanh MLP; tied output head; soft-capping only for the
//! text-only class. The key/value cache grows with use (nothing sized to the full context) and
//! sliding layers keep only their window, in prefill and decode alike, so a prompt can be fed in
//! pieces (multi-turn) with the same result as at once.

use std::path::{Path, PathBuf};

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::{gguf_file, GgmlDType, QMatMul};

use crate::cpu::kquant::{KQuant, KQuantMatrix};
use crate::cpu::packed::PackedQ8_0;
use crate::cpu::requant::q5_0_to_q8_0;
use crate::cpu::{bf16::linear_bf16, cpu_product, gelu::gelu_tanh_mul};
use candle_core::{DType, Device, Module, Tensor, D};

use crate::config::{Gemma3TextConfig, LayerKind, RopeSettings};
use crate::error::{LlmError, Result};

mod attention;
mod gguf;
mod kv_cache;
mod products;
mod safetensors;

use attention::*;
use gguf::*;
pub(crate) use gguf::{gguf_vocabulary, read_gguf};
use kv_cache::*;
use products::*;
pub(crate) use safetensors::safetensors_files;
use safetensors::*;

/// A loaded Gemma 3 text model with its conversation state (the key/value cache).
#[derive(Debug, Clone)]
pub struct Gemma3Text {
    config: Gemma3TextConfig,
    /// Token embeddings for lookup.
    embed: EmbeddingTable,
    /// sqrt(hidden) rounded to the dtype the weights were trained in, as HF does.
    embed_scale: f64,
    /// The output head: the embedding matrix (tied), float or quantized.
    head: Matrix,
    final_norm: Tensor,
    layers: Vec<Layer>,
    position: usize,
    device: Device,
}

impl Gemma3Text {
    /// Loads `config.json` and the safetensors weights (f32, bf16 or f16; computed in f32) from a
    /// Hugging Face model directory of Gemma3ForConditionalGeneration or Gemma3ForCausalLM.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|_| LlmError::MissingFile {
            dir: dir.to_path_buf(),
            file: "config.json".into(),
        })?;
        let config = Gemma3TextConfig::from_json(&text).map_err(|reason| LlmError::BadFile {
            path: config_path.clone(),
            reason,
        })?;
        let files = safetensors_files(dir)?;
        // SAFETY: the files are memory-mapped read-only; medscribe never writes model files
        // while they are in use.
        let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
            .map_err(|e| LlmError::BadFile {
                path: files[0].clone(),
                reason: format!("not readable safetensors: {e}"),
            })?;
        let prefix = PREFIXES
            .iter()
            .find(|p| tensors.get(&format!("{p}embed_tokens.weight")).is_ok())
            .ok_or_else(|| LlmError::Weights {
                path: files[0].clone(),
                reason:
                    "no language-model embedding (embed_tokens.weight) under any known name layout"
                        .into(),
            })?;
        let mut source = WeightSource {
            tensors,
            prefix,
            path: files[0].clone(),
            device: device.clone(),
        };
        Self::from_source(config, &mut source)
    }

    fn from_source(config: Gemma3TextConfig, w: &mut WeightSource) -> Result<Self> {
        let h = config.hidden_size;
        let layers = build_layers(&config, w)?;
        let stored = w.raw("embed_tokens.weight", &[config.vocab_size, h])?;
        // HF multiplies by sqrt(hidden) cast to the weights' dtype (bf16 for the real models).
        let embed_scale = Tensor::new(&[(h as f32).sqrt()], &w.device)?
            .to_dtype(stored.dtype())?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?[0];
        // The lookup table and the tied head share one copy, bf16 or f32 as float_matrix keeps it.
        let head = w.float_matrix(stored)?;
        let table = match &head {
            Matrix::Bf16(t) | Matrix::Float(t) => t.clone(),
            _ => return Err(LlmError::Internal("unexpected embedding matrix".into())),
        };
        Ok(Self {
            head,
            embed: EmbeddingTable::Dense(table),
            embed_scale: f64::from(embed_scale),
            final_norm: w.norm("norm.weight", h)?,
            layers,
            position: 0,
            device: w.device.clone(),
            config,
        })
    }

    /// Loads a llama.cpp GGUF file of the `gemma3` architecture (text model). Projections stay
    /// quantized; norm weights already hold 1 + w (llama.cpp's converter folds it in); the
    /// global layers' RoPE scaling comes from the metadata.
    pub fn load_gguf(path: &Path, device: &Device) -> Result<Self> {
        Self::load_gguf_with(path, device, GgufWeights::Quantized)
    }

    /// Like [`Gemma3Text::load_gguf`], choosing how the weights are held.
    pub fn load_gguf_with(path: &Path, device: &Device, weights: GgufWeights) -> Result<Self> {
        let (content, file) = read_gguf(path)?;
        Self::from_gguf(&content, file, path, device, weights)
    }

    /// Builds the model from an already parsed GGUF header and its open file.
    pub(crate) fn from_gguf(
        content: &gguf_file::Content,
        reader: std::io::BufReader<std::fs::File>,
        path: &Path,
        device: &Device,
        weights: GgufWeights,
    ) -> Result<Self> {
        let bad = |reason: String| LlmError::BadFile {
            path: path.to_path_buf(),
            reason,
        };
        let config = Gemma3TextConfig::from_gguf(content).map_err(bad)?;
        let mut g = GgufReader {
            content,
            reader,
            path,
            device,
            weights,
        };
        let h = config.hidden_size;
        let layers = build_layers(&config, &mut g)?;
        let final_norm = g.gain("output_norm.weight", h)?;
        // Packed straight from the file, so the 178 MB table of the 270M model is never held
        // twice; the packed copy serves both the head and the lookups.
        let table_shape = [config.vocab_size, h];
        let (embed, head) = if let Some(packed) =
            g.packed_from_file("token_embd.weight", table_shape)?
        {
            let packed = std::sync::Arc::new(packed);
            (
                EmbeddingTable::Packed(packed.clone()),
                Matrix::Packed(packed),
            )
        } else if let Some(table) = g.k_quant_from_file(&[("token_embd.weight", table_shape)])? {
            // Like the packed table: one quantized copy for the head and the lookups.
            let table = std::sync::Arc::new(table);
            (EmbeddingTable::KQuant(table.clone()), Matrix::KQuant(table))
        } else {
            let embedding = std::sync::Arc::new(g.qtensor("token_embd.weight")?);
            if embedding.shape().dims() != [config.vocab_size, h] {
                return Err(bad(format!(
                    "token_embd has shape {:?}",
                    embedding.shape().dims()
                )));
            }
            // The tied head stays quantized and runs on the quantized kernels; lookups unpack
            // the rows they need from the same blocks, kept in host memory (a second, host copy
            // beside a GPU), or, where rows are not whole blocks, use an f16 copy.
            match weights {
                GgufWeights::Quantized => {
                    let whole_blocks = h.is_multiple_of(embedding.dtype().block_size());
                    let host_table = if device.is_cpu() || !whole_blocks {
                        embedding.clone()
                    } else {
                        std::sync::Arc::new(g.qtensor_on("token_embd.weight", &Device::Cpu)?)
                    };
                    let table = match EmbeddingTable::blocks(host_table) {
                        Some(table) => table,
                        None => EmbeddingTable::Dense(embedding.dequantize_f16(device)?),
                    };
                    (table, Matrix::Quantized(QMatMul::from_arc(embedding)?))
                }
                GgufWeights::Dequantized => {
                    let table = embedding.dequantize(device)?;
                    (EmbeddingTable::Dense(table.clone()), Matrix::Float(table))
                }
            }
        };
        Ok(Self {
            head,
            embed,
            // llama.cpp scales by sqrtf(n_embd) in f32.
            embed_scale: f64::from((h as f32).sqrt()),
            final_norm,
            layers,
            position: 0,
            device: device.clone(),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Gemma3TextConfig {
        &self.config
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes the weight matrices occupy in memory (the tied embedding counted once; norms,
    /// a few kilobytes, left out).
    pub fn weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| l.qkv.bytes() + l.o_proj.bytes() + l.gate_up.bytes() + l.down_proj.bytes())
            .sum();
        layers + self.head.bytes()
    }

    /// Tokens processed so far in this conversation.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Where the conversation stands now, to come back to with [`Gemma3Text::restore`] (a
    /// prompt read once, then many continuations of it).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            position: self.position,
            caches: self
                .layers
                .iter()
                .map(|l| (l.cache.start, l.cache.first, l.cache.used))
                .collect(),
        }
    }

    /// Forgets everything after `checkpoint`. The rows up to it are still in the caches unless
    /// a cache was rebuilt since (it moves rows when it grows after dropping old ones): then
    /// nothing changes and `false` says the prompt must be read again.
    pub fn restore(&mut self, checkpoint: &Checkpoint) -> bool {
        let intact =
            checkpoint.caches.len() == self.layers.len()
                && self.layers.iter().zip(&checkpoint.caches).all(
                    |(layer, &(start, first, used))| {
                        let cache = &layer.cache;
                        (cache.buffers.is_some() || used == 0)
                            && cache.start == start
                            && cache.first >= first
                            && cache.used >= used
                    },
                );
        if !intact || self.position < checkpoint.position {
            return false;
        }
        self.position = checkpoint.position;
        for (layer, &(_, first, used)) in self.layers.iter_mut().zip(&checkpoint.caches) {
            layer.cache.first = first;
            layer.cache.used = used;
        }
        true
    }

    /// Forgets the conversation (empties the caches).
    pub fn reset(&mut self) {
        self.position = 0;
        for layer in &mut self.layers {
            layer.cache = KvCache::default();
        }
    }

    /// Token embeddings of `ids`, scaled by sqrt(hidden): `[1, len, hidden]`.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(&bad) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(LlmError::Prompt(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.config.vocab_size
            )));
        }
        let rows = self.embed.rows(ids, &self.device)?;
        Ok((rows * self.embed_scale)?.unsqueeze(0)?)
    }

    /// Runs `ids` after everything seen so far and returns the logits of every new position
    /// (`all_positions`) or of the last one only: `[n, vocab]`.
    pub fn forward(&mut self, ids: &[u32], all_positions: bool) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(LlmError::Prompt("no tokens to run".into()));
        }
        let embeddings = self.embed(ids)?;
        self.forward_embeddings(&embeddings, all_positions)
    }

    /// Like [`Gemma3Text::forward`] on ready embeddings `[1, len, hidden]`.
    pub fn forward_embeddings(
        &mut self,
        embeddings: &Tensor,
        all_positions: bool,
    ) -> Result<Tensor> {
        self.forward_grouped(embeddings, None, all_positions)
    }

    /// Runs `ids` in which runs of `soft_token` stand for images, replaced in order by the rows
    /// of `features` (`[n_images, tokens_per_image, hidden]`, from the projector; not scaled like
    /// token embeddings). As in HF, tokens of the same image see each other both ways during this
    /// prefill; everything else is causal (and windowed on sliding layers).
    pub fn forward_with_images(
        &mut self,
        ids: &[u32],
        soft_token: u32,
        features: &Tensor,
        all_positions: bool,
    ) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(LlmError::Prompt("no tokens to run".into()));
        }
        let hidden = self.config.hidden_size;
        let (images, per_image, width) = features.dims3()?;
        if width != hidden {
            return Err(LlmError::Incompatible(format!(
                "image features of width {width}, the language model's is {hidden}"
            )));
        }
        let soft_count = ids.iter().filter(|&&id| id == soft_token).count();
        if soft_count != images * per_image {
            return Err(LlmError::Prompt(format!(
                "the prompt has {soft_count} image tokens, the {images} image(s) give {}",
                images * per_image
            )));
        }
        let embeddings = self.embed(ids)?.squeeze(0)?;
        let features = features.reshape((images * per_image, hidden))?;
        // Image group of every position (0 = text); a new group starts at each run of soft tokens.
        let mut groups = Vec::with_capacity(ids.len());
        let mut group = 0u32;
        let mut pieces = Vec::new();
        let (mut text_start, mut feature_row) = (0usize, 0usize);
        let mut i = 0usize;
        while i < ids.len() {
            if ids[i] != soft_token {
                groups.push(0);
                i += 1;
                continue;
            }
            let run = ids[i..].iter().take_while(|&&id| id == soft_token).count();
            group += 1;
            groups.extend(std::iter::repeat_n(group, run));
            if i > text_start {
                pieces.push(embeddings.narrow(0, text_start, i - text_start)?);
            }
            pieces.push(features.narrow(0, feature_row, run)?);
            feature_row += run;
            i += run;
            text_start = i;
        }
        if text_start < ids.len() {
            pieces.push(embeddings.narrow(0, text_start, ids.len() - text_start)?);
        }
        let merged = Tensor::cat(&pieces, 0)?.unsqueeze(0)?;
        self.forward_grouped(&merged, Some(&groups), all_positions)
    }

    /// The forward pass; `groups` (one per new position, 0 = none) lets positions of the same
    /// non-zero group attend to each other regardless of order. A long prompt runs in chunks of
    /// [`PREFILL_CHUNK`] positions (an image's tokens are never split): attention memory grows
    /// with chunk x context instead of context squared.
    fn forward_grouped(
        &mut self,
        embeddings: &Tensor,
        groups: Option<&[u32]>,
        all_positions: bool,
    ) -> Result<Tensor> {
        let len = embeddings.dim(1)?;
        let context = self.config.context_length;
        if self.position.saturating_add(len) > context {
            return Err(LlmError::Prompt(format!(
                "{} tokens do not fit the model's context of {context} tokens",
                self.position.saturating_add(len)
            )));
        }
        let mut outputs = Vec::new();
        let mut from = 0;
        while from < len {
            let mut to = (from + PREFILL_CHUNK).min(len);
            if let Some(groups) = groups {
                while to < len && groups[to] != 0 && groups[to] == groups[to - 1] {
                    to += 1;
                }
            }
            let chunk = embeddings.narrow(1, from, to - from)?;
            let x = self.run_layers(&chunk, groups.map(|g| &g[from..to]))?;
            if all_positions {
                outputs.push(x);
            } else if to == len {
                outputs.push(x.narrow(1, to - from - 1, 1)?);
            }
            from = to;
        }
        let x = if outputs.len() == 1 {
            outputs.remove(0)
        } else {
            Tensor::cat(&outputs, 1)?
        };
        let x = rms_norm(&x, &self.final_norm, self.config.rms_norm_eps)?;
        self.logits(&linear(&x, &self.head)?.squeeze(0)?)
    }

    /// Soft-capping, where the model applies it, of raw head outputs.
    fn logits(&self, raw: &Tensor) -> Result<Tensor> {
        Ok(match self.config.effective_softcapping() {
            Some(cap) => ((raw / cap)?.tanh()? * cap)?,
            None => raw.clone(),
        })
    }

    /// Runs `ids` after everything seen so far and returns the logits of every new position for
    /// the `vocabulary` tokens only: `[n, vocabulary.len()]`. Gemma's output head is its
    /// embedding table, so only those rows are multiplied: scoring text against a few thousand
    /// candidate tokens costs a fraction of the full 262,144-token head.
    pub fn forward_restricted(&mut self, ids: &[u32], vocabulary: &[u32]) -> Result<Tensor> {
        if ids.is_empty() || vocabulary.is_empty() {
            return Err(LlmError::Prompt("no tokens to run".into()));
        }
        let embeddings = self.embed(ids)?;
        let len = embeddings.dim(1)?;
        if self.position.saturating_add(len) > self.config.context_length {
            return Err(LlmError::Prompt(format!(
                "{} tokens do not fit the model's context of {} tokens",
                self.position.saturating_add(len),
                self.config.context_length
            )));
        }
        let mut outputs = Vec::new();
        let mut from = 0;
        while from < len {
            let to = (from + PREFILL_CHUNK).min(len);
            outputs.push(self.run_layers(&embeddings.narrow(1, from, to - from)?, None)?);
            from = to;
        }
        let x = Tensor::cat(&outputs, 1)?;
        let x = rms_norm(&x, &self.final_norm, self.config.rms_norm_eps)?.squeeze(0)?;
        if vocabulary
            .iter()
            .any(|&id| id as usize >= self.config.vocab_size)
        {
            return Err(LlmError::Internal(
                "a candidate token is outside the vocabulary".into(),
            ));
        }
        let rows = self.embed.rows(vocabulary, &self.device)?;
        self.logits(&x.matmul(&rows.t()?)?)
    }

    /// Runs new positions through every layer (keys and values join the caches): the hidden
    /// states `[1, len, hidden]` before the final norm.
    fn run_layers(&mut self, embeddings: &Tensor, groups: Option<&[u32]>) -> Result<Tensor> {
        let len = embeddings.dim(1)?;
        let start = self.position;
        let config = &self.config;
        // RoPE tables depend only on the layer kind and the positions: build each once.
        let local = rope_tables(config.rope_local, config.head_dim, start, len, &self.device)?;
        let global = rope_tables(
            config.rope_global,
            config.head_dim,
            start,
            len,
            &self.device,
        )?;
        let mut x = embeddings.clone();
        for layer in &mut self.layers {
            let rope = match layer.kind {
                LayerKind::Sliding => &local,
                LayerKind::Full => &global,
            };
            x = layer.forward(&x, start, config, rope, groups, &self.device)?;
        }
        self.position += len;
        Ok(x)
    }
}

/// A point of a conversation to go back to ([`Gemma3Text::checkpoint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    position: usize,
    /// Per layer: the cache's (start, first, used).
    caches: Vec<(usize, usize, usize)>,
}

/// How GGUF weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufWeights {
    /// As stored, multiplied by quantized kernels (candle's, or for Q8_0 our packed ones; both
    /// round activations to 8 bits, as llama.cpp's do):
    /// the fast, small default.
    Quantized,
    /// Unpacked to f32 once: 4-8x the memory, float arithmetic throughout. For checking against
    /// float references.
    Dequantized,
}
