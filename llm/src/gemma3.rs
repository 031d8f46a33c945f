//! The Gemma 3 text model (MedGemma's language model) with Hugging Face semantics
//! (shared/specs/medgemma.md, "Text model"): embeddings scaled by sqrt(hidden); RMSNorm as
//! x * (1 + w) in f32; q/k norms before RoPE; attention scale query_pre_attn_scalar^-0.5; GQA;
//! sliding layers see keys with q - window < k <= q and use the local RoPE base; full layers use
//! the global base with linear scaling; GELU-tanh MLP; tied output head; soft-capping only for the
//! text-only class. The key/value cache grows with use (nothing sized to the full context) and
//! sliding layers keep only their window, in prefill and decode alike, so a prompt can be fed in
//! pieces (multi-turn) with the same result as at once.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};

use crate::config::{Gemma3TextConfig, LayerKind, RopeSettings};
use crate::error::{LlmError, Result};

/// Tensor-name prefixes of the language model across transformers versions.
const PREFIXES: [&str; 5] = [
    "model.language_model.",
    "language_model.model.",
    "model.",
    "language_model.",
    "",
];

/// `x * rsqrt(mean(x^2) + eps) * gain` over the last dimension, where `gain` is `1 + w`.
fn rms_norm(x: &Tensor, gain: &Tensor, eps: f64) -> Result<Tensor> {
    let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = x.broadcast_div(&(variance + eps)?.sqrt()?)?;
    Ok(normed.broadcast_mul(gain)?)
}

/// Softmax over the last dimension.
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let exp = x.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_keepdim(D::Minus1)?;
    Ok(exp.broadcast_div(&sum)?)
}

/// `x @ w^T` for a `[.., in]` activation and an `[out, in]` weight.
fn linear(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_matmul(&weight.t()?)?)
}

/// Rotary tables for positions `start..start + len`: (cos, sin), each `[len, head_dim]`,
/// computed in f32 as HF does (inverse frequencies divided by the linear factor).
fn rope_tables(
    settings: RopeSettings,
    head_dim: usize,
    start: usize,
    len: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let base = settings.theta as f32;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| {
            1.0f32 / base.powf((2 * i) as f32 / head_dim as f32) / settings.linear_factor as f32
        })
        .collect();
    let mut cos = Vec::with_capacity(len * head_dim);
    let mut sin = Vec::with_capacity(len * head_dim);
    for position in start..start + len {
        let p = position as f32;
        for _ in 0..2 {
            for &f in &inv_freq {
                let angle = p * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    Ok((
        Tensor::from_vec(cos, (len, head_dim), device)?,
        Tensor::from_vec(sin, (len, head_dim), device)?,
    ))
}

/// `x * cos + rotate_half(x) * sin` for `x` of shape `[1, heads, len, head_dim]`.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// Keys and values seen so far by one layer; `start` is the position of the first kept key.
#[derive(Debug, Clone, Default)]
struct KvCache {
    keys: Option<Tensor>,
    values: Option<Tensor>,
    start: usize,
}

#[derive(Debug, Clone)]
struct Layer {
    kind: LayerKind,
    input_norm: Tensor,
    post_attention_norm: Tensor,
    pre_feedforward_norm: Tensor,
    post_feedforward_norm: Tensor,
    q_proj: Tensor,
    k_proj: Tensor,
    v_proj: Tensor,
    o_proj: Tensor,
    q_norm: Tensor,
    k_norm: Tensor,
    gate_proj: Tensor,
    up_proj: Tensor,
    down_proj: Tensor,
    cache: KvCache,
}

/// A loaded Gemma 3 text model with its conversation state (the key/value cache).
#[derive(Debug, Clone)]
pub struct Gemma3Text {
    config: Gemma3TextConfig,
    embed: Tensor,
    final_norm: Tensor,
    layers: Vec<Layer>,
    position: usize,
    device: Device,
}

/// Where the weights come from, for error messages.
struct WeightSource {
    tensors: candle_core::safetensors::MmapedSafetensors,
    prefix: &'static str,
    path: PathBuf,
    device: Device,
}

impl WeightSource {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let tensor = self
            .tensors
            .load(&full, &self.device)
            .map_err(|e| LlmError::Weights {
                path: self.path.clone(),
                reason: format!("tensor {full}: {e}"),
            })?;
        if tensor.dims() != shape {
            return Err(LlmError::Weights {
                path: self.path.clone(),
                reason: format!(
                    "tensor {full} has shape {:?}, the configuration needs {shape:?}",
                    tensor.dims()
                ),
            });
        }
        Ok(tensor.to_dtype(DType::F32)?)
    }

    /// A norm weight stored as w, returned as the gain 1 + w.
    fn norm(&self, name: &str, size: usize) -> Result<Tensor> {
        Ok((self.tensor(name, &[size])? + 1.0)?)
    }
}

/// The safetensors files of a model directory (one file or shards).
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| LlmError::BadFile {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LlmError::MissingFile {
            dir: dir.to_path_buf(),
            file: "*.safetensors (the weights)".into(),
        });
    }
    Ok(files)
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
        let source = WeightSource {
            tensors,
            prefix,
            path: files[0].clone(),
            device: device.clone(),
        };
        Self::from_source(config, &source)
    }

    fn from_source(config: Gemma3TextConfig, w: &WeightSource) -> Result<Self> {
        let (h, i, hd) = (
            config.hidden_size,
            config.intermediate_size,
            config.head_dim,
        );
        let (nh, nkv) = (config.num_attention_heads, config.num_key_value_heads);
        let mut layers = Vec::with_capacity(config.layers.len());
        for (index, kind) in config.layers.iter().enumerate() {
            let n = |name: &str| format!("layers.{index}.{name}");
            layers.push(Layer {
                kind: *kind,
                input_norm: w.norm(&n("input_layernorm.weight"), h)?,
                post_attention_norm: w.norm(&n("post_attention_layernorm.weight"), h)?,
                pre_feedforward_norm: w.norm(&n("pre_feedforward_layernorm.weight"), h)?,
                post_feedforward_norm: w.norm(&n("post_feedforward_layernorm.weight"), h)?,
                q_proj: w.tensor(&n("self_attn.q_proj.weight"), &[nh * hd, h])?,
                k_proj: w.tensor(&n("self_attn.k_proj.weight"), &[nkv * hd, h])?,
                v_proj: w.tensor(&n("self_attn.v_proj.weight"), &[nkv * hd, h])?,
                o_proj: w.tensor(&n("self_attn.o_proj.weight"), &[h, nh * hd])?,
                q_norm: w.norm(&n("self_attn.q_norm.weight"), hd)?,
                k_norm: w.norm(&n("self_attn.k_norm.weight"), hd)?,
                gate_proj: w.tensor(&n("mlp.gate_proj.weight"), &[i, h])?,
                up_proj: w.tensor(&n("mlp.up_proj.weight"), &[i, h])?,
                down_proj: w.tensor(&n("mlp.down_proj.weight"), &[h, i])?,
                cache: KvCache::default(),
            });
        }
        Ok(Self {
            embed: w.tensor("embed_tokens.weight", &[config.vocab_size, h])?,
            final_norm: w.norm("norm.weight", h)?,
            layers,
            position: 0,
            device: w.device.clone(),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Gemma3TextConfig {
        &self.config
    }

    /// Tokens processed so far in this conversation.
    pub fn position(&self) -> usize {
        self.position
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
        let ids = Tensor::from_slice(ids, ids.len(), &self.device)?;
        let scale = (self.config.hidden_size as f64).sqrt() as f32;
        Ok((self.embed.index_select(&ids, 0)? * f64::from(scale))?.unsqueeze(0)?)
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

    /// Like [`Gemma3Text::forward`] on ready embeddings `[1, len, hidden]` (image features merged
    /// in by the caller).
    pub fn forward_embeddings(
        &mut self,
        embeddings: &Tensor,
        all_positions: bool,
    ) -> Result<Tensor> {
        let len = embeddings.dim(1)?;
        let start = self.position;
        let config = &self.config;
        let mut x = embeddings.clone();
        for layer in &mut self.layers {
            x = layer.forward(&x, start, config, &self.device)?;
        }
        self.position += len;
        let x = if all_positions {
            x
        } else {
            x.narrow(1, len - 1, 1)?
        };
        let x = rms_norm(&x, &self.final_norm, self.config.rms_norm_eps)?;
        let mut logits = linear(&x, &self.embed)?.squeeze(0)?;
        if let Some(cap) = self.config.effective_softcapping() {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        Ok(logits)
    }
}

impl Layer {
    fn forward(
        &mut self,
        x: &Tensor,
        start: usize,
        config: &Gemma3TextConfig,
        device: &Device,
    ) -> Result<Tensor> {
        let eps = config.rms_norm_eps;
        let residual = x;
        let h = rms_norm(x, &self.input_norm, eps)?;
        let h = self.attention(&h, start, config, device)?;
        let x = (residual + rms_norm(&h, &self.post_attention_norm, eps)?)?;
        let h = rms_norm(&x, &self.pre_feedforward_norm, eps)?;
        let gate = linear(&h, &self.gate_proj)?.gelu()?;
        let h = linear(&(gate * linear(&h, &self.up_proj)?)?, &self.down_proj)?;
        Ok((x + rms_norm(&h, &self.post_feedforward_norm, eps)?)?)
    }

    fn attention(
        &mut self,
        x: &Tensor,
        start: usize,
        config: &Gemma3TextConfig,
        device: &Device,
    ) -> Result<Tensor> {
        let len = x.dim(1)?;
        let (nh, nkv, hd) = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        );
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((1, len, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = rms_norm(
            &heads(linear(x, &self.q_proj)?, nh)?,
            &self.q_norm,
            config.rms_norm_eps,
        )?;
        let k = rms_norm(
            &heads(linear(x, &self.k_proj)?, nkv)?,
            &self.k_norm,
            config.rms_norm_eps,
        )?;
        let v = heads(linear(x, &self.v_proj)?, nkv)?;
        let rope = match self.kind {
            LayerKind::Sliding => config.rope_local,
            LayerKind::Full => config.rope_global,
        };
        let (cos, sin) = rope_tables(rope, hd, start, len, device)?;
        let q = apply_rope(&q, &cos, &sin)?;
        let k = apply_rope(&k, &cos, &sin)?;

        let (keys, values) = match (&self.cache.keys, &self.cache.values) {
            (Some(old_k), Some(old_v)) => {
                (Tensor::cat(&[old_k, &k], 2)?, Tensor::cat(&[old_v, &v], 2)?)
            }
            _ => {
                self.cache.start = start;
                (k, v)
            }
        };
        let key_start = self.cache.start;
        let total = keys.dim(2)?;
        // Mask: key position kp is visible to query position qp iff kp <= qp and, on sliding
        // layers, kp > qp - window.
        let window = config.sliding_window;
        let mut mask = Vec::with_capacity(len * total);
        for qi in 0..len {
            let qp = start + qi;
            for kj in 0..total {
                let kp = key_start + kj;
                let visible = kp <= qp && (self.kind == LayerKind::Full || kp + window > qp);
                mask.push(if visible { 0.0f32 } else { f32::NEG_INFINITY });
            }
        }
        let mask = Tensor::from_vec(mask, (len, total), device)?;

        let repeat = nh / nkv;
        let expand = |t: &Tensor| -> Result<Tensor> {
            if repeat == 1 {
                return Ok(t.clone());
            }
            // HF repeat_kv: query head h uses key/value head h / repeat.
            let (b, n, t_len, d) = t.dims4()?;
            Ok(t.unsqueeze(2)?
                .broadcast_as((b, n, repeat, t_len, d))?
                .reshape((b, n * repeat, t_len, d))?)
        };
        let scale = config.query_pre_attn_scalar.powf(-0.5);
        let scores = (q.matmul(&expand(&keys)?.t()?.contiguous()?)? * scale)?;
        let probabilities = softmax_last(&scores.broadcast_add(&mask)?)?;
        let out = probabilities.matmul(&expand(&values)?.contiguous()?)?;
        let out = out.transpose(1, 2)?.reshape((1, len, nh * hd))?;

        // Sliding layers keep only what a later query can see: the last window - 1 keys.
        let (keys, values) = if self.kind == LayerKind::Sliding && total > window - 1 {
            let keep = window - 1;
            self.cache.start = key_start + total - keep;
            (
                keys.narrow(2, total - keep, keep)?,
                values.narrow(2, total - keep, keep)?,
            )
        } else {
            (keys, values)
        };
        self.cache.keys = Some(keys);
        self.cache.values = Some(values);
        linear(&out, &self.o_proj)
    }
}
