//! Reading weights: Hugging Face safetensors across the transformers name layouts, and the
//! per-layer reading shared with GGUF.

use super::*;

/// Tensor-name prefixes of the language model across transformers versions.
pub(super) const PREFIXES: [&str; 5] = [
    "model.language_model.",
    "language_model.model.",
    "model.",
    "language_model.",
    "",
];

/// Where the weights come from, for error messages.
pub(super) struct WeightSource {
    pub(super) tensors: candle_core::safetensors::MmapedSafetensors,
    pub(super) prefix: &'static str,
    pub(super) path: PathBuf,
    pub(super) device: Device,
}

/// A per-layer tensor's name in Hugging Face checkpoints (after `layers.N.`) and in llama.cpp's
/// GGUF files (between `blk.N.` and `.weight`).
pub(super) struct TensorName {
    pub(super) hugging_face: &'static str,
    pub(super) gguf: &'static str,
}

pub(super) const fn name(hugging_face: &'static str, gguf: &'static str) -> TensorName {
    TensorName { hugging_face, gguf }
}

/// Reads the weights of one decoder layer, whatever the file format.
pub(super) trait LayerWeights {
    /// A norm's gain (1 + w in Gemma's terms) of `size` values.
    fn gain(&mut self, layer: usize, name: &TensorName, size: usize) -> Result<Tensor>;
    /// A projection `[out, in]`.
    fn matrix(&mut self, layer: usize, name: &TensorName, shape: [usize; 2]) -> Result<Matrix>;
    /// Projections of the same input, joined where their kernels can take them as one.
    fn projections(
        &mut self,
        layer: usize,
        parts: &[(TensorName, [usize; 2])],
    ) -> Result<Projections> {
        let matrices = parts
            .iter()
            .map(|(name, shape)| self.matrix(layer, name, *shape))
            .collect::<Result<Vec<_>>>()?;
        Ok(Projections::new(matrices))
    }
}

/// The decoder layers of `config`, read through `w`.
pub(super) fn build_layers(
    config: &Gemma3TextConfig,
    w: &mut dyn LayerWeights,
) -> Result<Vec<Layer>> {
    let (h, i, hd) = (
        config.hidden_size,
        config.intermediate_size,
        config.head_dim,
    );
    let (nh, nkv) = (config.num_attention_heads, config.num_key_value_heads);
    let mut layers = Vec::with_capacity(config.layers.len());
    for (n, kind) in config.layers.iter().enumerate() {
        layers.push(Layer {
            kind: *kind,
            input_norm: w.gain(n, &name("input_layernorm.weight", "attn_norm"), h)?,
            post_attention_norm: w.gain(
                n,
                &name("post_attention_layernorm.weight", "post_attention_norm"),
                h,
            )?,
            pre_feedforward_norm: w.gain(
                n,
                &name("pre_feedforward_layernorm.weight", "ffn_norm"),
                h,
            )?,
            post_feedforward_norm: w.gain(
                n,
                &name("post_feedforward_layernorm.weight", "post_ffw_norm"),
                h,
            )?,
            q_norm: w.gain(n, &name("self_attn.q_norm.weight", "attn_q_norm"), hd)?,
            k_norm: w.gain(n, &name("self_attn.k_norm.weight", "attn_k_norm"), hd)?,
            qkv: w.projections(
                n,
                &[
                    (name("self_attn.q_proj.weight", "attn_q"), [nh * hd, h]),
                    (name("self_attn.k_proj.weight", "attn_k"), [nkv * hd, h]),
                    (name("self_attn.v_proj.weight", "attn_v"), [nkv * hd, h]),
                ],
            )?,
            o_proj: w.matrix(
                n,
                &name("self_attn.o_proj.weight", "attn_output"),
                [h, nh * hd],
            )?,
            gate_up: w.projections(
                n,
                &[
                    (name("mlp.gate_proj.weight", "ffn_gate"), [i, h]),
                    (name("mlp.up_proj.weight", "ffn_up"), [i, h]),
                ],
            )?,
            down_proj: w.matrix(n, &name("mlp.down_proj.weight", "ffn_down"), [h, i])?,
            cache: KvCache::default(),
        });
    }
    Ok(layers)
}

impl LayerWeights for WeightSource {
    fn gain(&mut self, layer: usize, name: &TensorName, size: usize) -> Result<Tensor> {
        self.norm(&format!("layers.{layer}.{}", name.hugging_face), size)
    }

    fn matrix(&mut self, layer: usize, name: &TensorName, shape: [usize; 2]) -> Result<Matrix> {
        let stored = self.raw(&format!("layers.{layer}.{}", name.hugging_face), &shape)?;
        self.float_matrix(stored)
    }
}

impl LayerWeights for GgufReader<'_> {
    fn gain(&mut self, layer: usize, name: &TensorName, size: usize) -> Result<Tensor> {
        GgufReader::gain(self, &format!("blk.{layer}.{}.weight", name.gguf), size)
    }

    fn matrix(&mut self, layer: usize, name: &TensorName, shape: [usize; 2]) -> Result<Matrix> {
        GgufReader::matrix(self, &format!("blk.{layer}.{}.weight", name.gguf), shape)
    }

    fn projections(
        &mut self,
        layer: usize,
        parts: &[(TensorName, [usize; 2])],
    ) -> Result<Projections> {
        let named: Vec<(String, [usize; 2])> = parts
            .iter()
            .map(|(name, shape)| (format!("blk.{layer}.{}.weight", name.gguf), *shape))
            .collect();
        let borrowed: Vec<(&str, [usize; 2])> = named
            .iter()
            .map(|(name, shape)| (name.as_str(), *shape))
            .collect();
        if borrowed.len() > 1 {
            if let Some(joined) = self.k_quant_from_file(&borrowed)? {
                return Ok(Projections::Joined {
                    matrix: Matrix::KQuant(std::sync::Arc::new(joined)),
                    widths: borrowed.iter().map(|(_, shape)| shape[0]).collect(),
                });
            }
        }
        let matrices = named
            .iter()
            .map(|(name, shape)| GgufReader::matrix(self, name, *shape))
            .collect::<Result<Vec<_>>>()?;
        Ok(Projections::new(matrices))
    }
}

impl WeightSource {
    pub(super) fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.raw(name, shape)?.to_dtype(DType::F32)?)
    }

    pub(super) fn raw(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
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
        Ok(tensor)
    }

    /// A matrix as stored: bf16 stays bf16 on the CPU (half the memory, the same products),
    /// anything else becomes f32.
    pub(super) fn float_matrix(&self, stored: Tensor) -> Result<Matrix> {
        Ok(match stored.dtype() {
            DType::BF16 if self.device.is_cpu() => Matrix::Bf16(stored),
            _ => Matrix::Float(stored.to_dtype(DType::F32)?),
        })
    }

    /// A norm weight stored as w, returned as the gain 1 + w.
    pub(super) fn norm(&self, name: &str, size: usize) -> Result<Tensor> {
        Ok((self.tensor(name, &[size])? + 1.0)?)
    }
}

/// The safetensors files of a model directory (one file or shards).
pub(crate) fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
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
