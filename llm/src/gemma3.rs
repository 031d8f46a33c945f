//! The Gemma 3 text model (MedGemma's language model) with Hugging Face semantics
//! (shared/specs/medgemma.md, "Text model"): embeddings scaled by sqrt(hidden); RMSNorm as
//! x * (1 + w) in f32; q/k norms before RoPE; attention scale query_pre_attn_scalar^-0.5; GQA;
//! sliding layers see keys with q - window < k <= q and use the local RoPE base; full layers use
//! the global base with linear scaling; GELU-tanh MLP; tied output head; soft-capping only for the
//! text-only class. The key/value cache grows with use (nothing sized to the full context) and
//! sliding layers keep only their window, in prefill and decode alike, so a prompt can be fed in
//! pieces (multi-turn) with the same result as at once.

use std::path::{Path, PathBuf};

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::{gguf_file, GgmlDType, QMatMul};

use crate::packed::PackedQ8_0;
use crate::requant::q5_0_to_q8_0;
use candle_core::{DType, Device, Module, Tensor, D};

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
/// candle-nn's fused kernel: the same f32 arithmetic in one pass instead of six tensor ops.
fn rms_norm(x: &Tensor, gain: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::rms_norm(
        &x.contiguous()?,
        gain,
        eps as f32,
    )?)
}

/// Softmax over the last dimension: exp(x - max) / sum, fused.
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?)
}

/// A weight matrix `[out, in]`: float (from safetensors) or quantized (from GGUF, multiplied
/// without unpacking by candle's quantized kernels or, for Q8_0 on CPUs with VNNI, ours in `packed`).
#[derive(Debug, Clone)]
pub(crate) enum Matrix {
    /// Float weights, f32.
    Float(Tensor),
    /// Quantized weights.
    Quantized(QMatMul),
    /// Q8_0 weights in 16-row tiles (CPU).
    Packed(std::sync::Arc<PackedQ8_0>),
    /// bf16 weights kept in bf16, widened exactly in the product (CPU).
    Bf16(Tensor),
}

impl Matrix {
    /// Bytes its weights occupy in memory.
    fn bytes(&self) -> usize {
        let dense = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        match self {
            Matrix::Float(t) | Matrix::Bf16(t) => dense(t),
            Matrix::Quantized(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            Matrix::Quantized(QMatMul::Tensor(t)) | Matrix::Quantized(QMatMul::TensorF16(t)) => {
                dense(t)
            }
            Matrix::Packed(p) => p.bytes(),
        }
    }
}

/// Rows from which a quantized matmul unpacks its weight and runs the float GEMM instead. Unpacking
/// all of the 270M model's layers costs about as much as 50 rows on the quantized kernel
/// (measured with benches/letter_model.rs).
const PREFILL_GEMM_ROWS: usize = 64;
/// Largest weight unpacked that way (f32 values): the tied output head (262144 x 640) is not.
const PREFILL_GEMM_MAX_WEIGHTS: usize = 32 << 20;

/// `x @ w^T` for a `[.., in]` activation and an `[out, in]` weight.
fn linear(x: &Tensor, weight: &Matrix) -> Result<Tensor> {
    let rows = x.elem_count() / x.dim(D::Minus1)?;
    match weight {
        Matrix::Float(w) => Ok(x.broadcast_matmul(&w.t()?)?),
        Matrix::Bf16(w) => crate::bf16::linear_bf16(x, w),
        // candle multiplies Q8_0 one dot product per row and output unless the CPU has VNNI
        // (where our packed kernel takes Q8_0 anyway): for a long prompt, unpacking the weight
        // once and using the float GEMM is faster there. Its k-quant kernels are tiled and beat
        // unpacking (prefill of 157 tokens with candle forced to AVX2: 0.30 s this way, 0.36 s
        // unpacking every type, 0.44 s unpacking none).
        Matrix::Quantized(QMatMul::QTensor(t))
            if rows >= PREFILL_GEMM_ROWS
                && t.dtype() == GgmlDType::Q8_0
                && t.shape().elem_count() <= PREFILL_GEMM_MAX_WEIGHTS =>
        {
            Ok(x.broadcast_matmul(&t.dequantize(x.device())?.t()?)?)
        }
        Matrix::Quantized(q) => Ok(q.forward(x)?),
        Matrix::Packed(packed) => {
            cpu_product(x, packed.cols(), packed.rows(), |values, positions| {
                packed.matmul(values, positions)
            })
        }
    }
}

/// `x @ w^T` through a CPU kernel taking the activation as `[positions, in_width]` f32 values and
/// giving `[positions, out_width]`; `None` from the kernel means the shapes disagree.
pub(crate) fn cpu_product(
    x: &Tensor,
    in_width: usize,
    out_width: usize,
    kernel: impl FnOnce(&[f32], usize) -> Option<Vec<f32>>,
) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let shape_error = || {
        LlmError::Prompt(format!(
            "activation {:?} does not fit a [{out_width}, {in_width}] matrix",
            x.dims()
        ))
    };
    if dims.pop() != Some(in_width) {
        return Err(shape_error());
    }
    let positions = x.elem_count() / in_width.max(1);
    let out = kernel(&x.flatten_all()?.to_vec1::<f32>()?, positions).ok_or_else(shape_error)?;
    dims.push(out_width);
    Ok(Tensor::from_vec(out, dims, x.device())?)
}

/// Projections of the same input. Packed matrices are joined into one, so the input is quantized
/// once and the threads meet once per group instead of once per matrix.
#[derive(Debug, Clone)]
enum Projections {
    Separate(Vec<Matrix>),
    Joined { matrix: Matrix, widths: Vec<usize> },
}

impl Projections {
    fn new(matrices: Vec<Matrix>) -> Self {
        let packed: Vec<&PackedQ8_0> = matrices
            .iter()
            .filter_map(|m| match m {
                Matrix::Packed(p) => Some(p.as_ref()),
                _ => None,
            })
            .collect();
        match PackedQ8_0::join(&packed) {
            Some(joined) if packed.len() == matrices.len() => Projections::Joined {
                widths: packed.iter().map(|p| p.rows()).collect(),
                matrix: Matrix::Packed(std::sync::Arc::new(joined)),
            },
            _ => Projections::Separate(matrices),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Projections::Separate(matrices) => matrices.iter().map(Matrix::bytes).sum(),
            Projections::Joined { matrix, .. } => matrix.bytes(),
        }
    }

    /// The `N` products of `x`, in the order the matrices were given.
    fn forward<const N: usize>(&self, x: &Tensor) -> Result<[Tensor; N]> {
        let outputs = match self {
            Projections::Separate(matrices) => matrices
                .iter()
                .map(|m| linear(x, m))
                .collect::<Result<Vec<_>>>()?,
            Projections::Joined { matrix, widths } => {
                let all = linear(x, matrix)?;
                let mut start = 0;
                let mut outputs = Vec::with_capacity(widths.len());
                for &width in widths {
                    outputs.push(all.narrow(D::Minus1, start, width)?);
                    start += width;
                }
                outputs
            }
        };
        outputs.try_into().map_err(|v: Vec<Tensor>| {
            LlmError::Prompt(format!("{} projections where {N} were expected", v.len()))
        })
    }
}

/// Rotary tables for positions `start..start + len`: (cos, sin), each `[len, head_dim / 2]` (HF
/// repeats the same half twice), computed in f32 as HF does (inverse frequencies divided by the
/// linear factor).
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
    let mut cos = Vec::with_capacity(len * half);
    let mut sin = Vec::with_capacity(len * half);
    for position in start..start + len {
        let p = position as f32;
        for &f in &inv_freq {
            let angle = p * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (len, half), device)?,
        Tensor::from_vec(sin, (len, half), device)?,
    ))
}

/// `x * cos + rotate_half(x) * sin` for `x` of shape `[1, heads, len, head_dim]`, with candle-nn's
/// fused kernel (the same products and sums, per element).
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?)
}

/// Token embeddings: a float table, or GGUF Q8_0 blocks unpacked row by row when looked up (the
/// 270M model's table is 262144 x 640: 671 MB as f32, 178 MB as stored).
#[derive(Debug, Clone)]
enum EmbeddingTable {
    Dense(Tensor),
    /// Shared with the packed output head.
    Packed(std::sync::Arc<PackedQ8_0>),
    Q8_0 {
        table: std::sync::Arc<candle_core::quantized::QTensor>,
        width: usize,
    },
}

/// Positions of a prompt run through the layers at once (see `forward_grouped`).
const PREFILL_CHUNK: usize = 512;

/// Bytes of one Q8_0 block: an f16 scale and 32 signed bytes.
const Q8_0_BLOCK_BYTES: usize = 34;
const Q8_0_BLOCK_VALUES: usize = 32;

impl EmbeddingTable {
    /// Rows `ids` as f32 `[len, width]`.
    fn rows(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        match self {
            EmbeddingTable::Dense(table) => {
                let ids = Tensor::from_slice(ids, ids.len(), device)?;
                Ok(table.index_select(&ids, 0)?.to_dtype(DType::F32)?)
            }
            EmbeddingTable::Packed(table) => {
                let mut values = Vec::with_capacity(ids.len() * table.cols());
                for &id in ids {
                    if !table.dequantize_row_into(id as usize, &mut values) {
                        return Err(LlmError::Prompt(format!(
                            "token id {id} is outside the embedding table"
                        )));
                    }
                }
                Ok(Tensor::from_vec(values, (ids.len(), table.cols()), device)?)
            }
            EmbeddingTable::Q8_0 { table, width } => {
                let data = table.data()?;
                let row_bytes = width / Q8_0_BLOCK_VALUES * Q8_0_BLOCK_BYTES;
                let mut values = Vec::with_capacity(ids.len() * width);
                for &id in ids {
                    let start = id as usize * row_bytes;
                    let row = data.get(start..start + row_bytes).ok_or_else(|| {
                        LlmError::Prompt(format!("token id {id} is outside the embedding table"))
                    })?;
                    // ggml's Q8_0: value = scale * q, q a signed byte.
                    for block in row.chunks_exact(Q8_0_BLOCK_BYTES) {
                        let scale = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                        values.extend(block[2..].iter().map(|&q| f32::from(q as i8) * scale));
                    }
                }
                Ok(Tensor::from_vec(values, (ids.len(), *width), device)?)
            }
        }
    }
}

/// Keys and values seen so far by one layer, `[1, kv_heads, rows, head_dim]` buffers with room to
/// grow: a step writes its rows in place instead of copying the whole cache. Row `r` holds
/// position `start + r`; rows before `first` are no longer visible to anyone.
#[derive(Debug, Clone, Default)]
struct KvCache {
    buffers: Option<(Tensor, Tensor)>,
    start: usize,
    first: usize,
    used: usize,
}

impl KvCache {
    /// Adds the keys and values of positions `position..position + len` and returns those a
    /// query among them can see: all kept rows, or for a sliding layer (`window`) only the last
    /// `window - 1` before the new ones. Returns (keys, values, position of the first key).
    fn append(
        &mut self,
        keys: &Tensor,
        values: &Tensor,
        position: usize,
        window: Option<usize>,
    ) -> Result<(Tensor, Tensor, usize)> {
        let len = keys.dim(2)?;
        if self.buffers.is_none() {
            self.start = position;
            self.first = 0;
            self.used = 0;
        }
        // Rows still needed by these and later queries.
        let first = match window {
            Some(window) => self.used.saturating_sub(window - 1).max(self.first),
            None => self.first,
        };
        let capacity = self.buffers.as_ref().map_or(Ok(0), |(k, _)| k.dim(2))?;
        if self.used + len > capacity {
            // Start over in a buffer twice what is kept, moving the kept rows to the front.
            let kept = self.used - first;
            let rows = ((kept + len) * 2).max(64);
            let (heads, head_dim) = (keys.dim(1)?, keys.dim(3)?);
            let grow = |old: Option<&Tensor>| -> Result<Tensor> {
                let buffer =
                    Tensor::zeros((1, heads, rows, head_dim), keys.dtype(), keys.device())?;
                if let Some(old) = old.filter(|_| kept > 0) {
                    buffer.slice_set(&old.narrow(2, first, kept)?.contiguous()?, 2, 0)?;
                }
                Ok(buffer)
            };
            let old = self.buffers.take();
            self.buffers = Some((
                grow(old.as_ref().map(|(k, _)| k))?,
                grow(old.as_ref().map(|(_, v)| v))?,
            ));
            self.start += first;
            self.used = kept;
            self.first = 0;
        } else {
            self.first = first;
        }
        let Some((key_buffer, value_buffer)) = &self.buffers else {
            return Err(LlmError::Prompt("key/value cache lost its buffers".into()));
        };
        key_buffer.slice_set(&keys.contiguous()?, 2, self.used)?;
        value_buffer.slice_set(&values.contiguous()?, 2, self.used)?;
        self.used += len;
        let visible = self.used - self.first;
        Ok((
            key_buffer.narrow(2, self.first, visible)?,
            value_buffer.narrow(2, self.first, visible)?,
            self.start + self.first,
        ))
    }
}

#[derive(Debug, Clone)]
struct Layer {
    kind: LayerKind,
    input_norm: Tensor,
    post_attention_norm: Tensor,
    pre_feedforward_norm: Tensor,
    post_feedforward_norm: Tensor,
    /// q, k and v projections.
    qkv: Projections,
    o_proj: Matrix,
    q_norm: Tensor,
    k_norm: Tensor,
    /// Gate and up projections.
    gate_up: Projections,
    down_proj: Matrix,
    cache: KvCache,
}

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

/// Where the weights come from, for error messages.
struct WeightSource {
    tensors: candle_core::safetensors::MmapedSafetensors,
    prefix: &'static str,
    path: PathBuf,
    device: Device,
}

/// A per-layer tensor's name in Hugging Face checkpoints (after `layers.N.`) and in llama.cpp's
/// GGUF files (between `blk.N.` and `.weight`).
struct TensorName {
    hugging_face: &'static str,
    gguf: &'static str,
}

const fn name(hugging_face: &'static str, gguf: &'static str) -> TensorName {
    TensorName { hugging_face, gguf }
}

/// Reads the weights of one decoder layer, whatever the file format.
trait LayerWeights {
    /// A norm's gain (1 + w in Gemma's terms) of `size` values.
    fn gain(&mut self, layer: usize, name: &TensorName, size: usize) -> Result<Tensor>;
    /// A projection `[out, in]`.
    fn matrix(&mut self, layer: usize, name: &TensorName, shape: [usize; 2]) -> Result<Matrix>;
}

/// The decoder layers of `config`, read through `w`.
fn build_layers(config: &Gemma3TextConfig, w: &mut dyn LayerWeights) -> Result<Vec<Layer>> {
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
            qkv: Projections::new(vec![
                w.matrix(n, &name("self_attn.q_proj.weight", "attn_q"), [nh * hd, h])?,
                w.matrix(n, &name("self_attn.k_proj.weight", "attn_k"), [nkv * hd, h])?,
                w.matrix(n, &name("self_attn.v_proj.weight", "attn_v"), [nkv * hd, h])?,
            ]),
            o_proj: w.matrix(
                n,
                &name("self_attn.o_proj.weight", "attn_output"),
                [h, nh * hd],
            )?,
            gate_up: Projections::new(vec![
                w.matrix(n, &name("mlp.gate_proj.weight", "ffn_gate"), [i, h])?,
                w.matrix(n, &name("mlp.up_proj.weight", "ffn_up"), [i, h])?,
            ]),
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
}

impl WeightSource {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.raw(name, shape)?.to_dtype(DType::F32)?)
    }

    fn raw(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
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
    fn float_matrix(&self, stored: Tensor) -> Result<Matrix> {
        Ok(match stored.dtype() {
            DType::BF16 if self.device.is_cpu() => Matrix::Bf16(stored),
            _ => Matrix::Float(stored.to_dtype(DType::F32)?),
        })
    }

    /// A norm weight stored as w, returned as the gain 1 + w.
    fn norm(&self, name: &str, size: usize) -> Result<Tensor> {
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
            _ => return Err(LlmError::Prompt("unexpected embedding matrix".into())),
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
        let config = gguf_config(content).map_err(bad)?;
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
        let (embed, head) = if let Some(packed) =
            g.packed_from_file("token_embd.weight", [config.vocab_size, h])?
        {
            let packed = std::sync::Arc::new(packed);
            (
                EmbeddingTable::Packed(packed.clone()),
                Matrix::Packed(packed),
            )
        } else {
            let embedding = std::sync::Arc::new(g.qtensor("token_embd.weight")?);
            if embedding.shape().dims() != [config.vocab_size, h] {
                return Err(bad(format!(
                    "token_embd has shape {:?}",
                    embedding.shape().dims()
                )));
            }
            // The tied head stays quantized and runs on the quantized kernels; lookups unpack
            // single rows of the same blocks (Q8_0) or, for other types, use an f16 copy.
            match weights {
                GgufWeights::Quantized => {
                    let table = if embedding.dtype() == candle_core::quantized::GgmlDType::Q8_0
                        && device.is_cpu()
                        && h.is_multiple_of(Q8_0_BLOCK_VALUES)
                    {
                        EmbeddingTable::Q8_0 {
                            table: embedding.clone(),
                            width: h,
                        }
                    } else {
                        EmbeddingTable::Dense(embedding.dequantize_f16(device)?)
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
            return Err(LlmError::Prompt(format!(
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
            return Err(LlmError::Prompt(
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

impl Layer {
    fn forward(
        &mut self,
        x: &Tensor,
        start: usize,
        config: &Gemma3TextConfig,
        rope: &(Tensor, Tensor),
        groups: Option<&[u32]>,
        device: &Device,
    ) -> Result<Tensor> {
        let eps = config.rms_norm_eps;
        let residual = x;
        let h = rms_norm(x, &self.input_norm, eps)?;
        let h = self.attention(&h, start, config, rope, groups, device)?;
        let x = (residual + rms_norm(&h, &self.post_attention_norm, eps)?)?;
        let h = rms_norm(&x, &self.pre_feedforward_norm, eps)?;
        let [gate, up] = self.gate_up.forward::<2>(&h)?;
        let h = linear(&crate::gelu::gelu_tanh_mul(&gate, &up)?, &self.down_proj)?;
        Ok((x + rms_norm(&h, &self.post_feedforward_norm, eps)?)?)
    }

    fn attention(
        &mut self,
        x: &Tensor,
        start: usize,
        config: &Gemma3TextConfig,
        (cos, sin): &(Tensor, Tensor),
        groups: Option<&[u32]>,
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
        let [q, k, v] = self.qkv.forward::<3>(x)?;
        let q = rms_norm(&heads(q, nh)?, &self.q_norm, config.rms_norm_eps)?;
        let k = rms_norm(&heads(k, nkv)?, &self.k_norm, config.rms_norm_eps)?;
        let v = heads(v, nkv)?;
        let q = apply_rope(&q, cos, sin)?;
        let k = apply_rope(&k, cos, sin)?;

        let window = config.sliding_window;
        let (keys, values, key_start) = self.cache.append(
            &k,
            &v,
            start,
            (self.kind == LayerKind::Sliding).then_some(window),
        )?;
        let total = keys.dim(2)?;
        // Mask: key position kp is visible to query position qp iff (kp <= qp or both are of the
        // same image in this chunk) and, on sliding layers, kp > qp - window (HF 5.x:
        // AND(window, OR(causal, same image))).
        let group_of = |position: usize| -> u32 {
            match groups {
                Some(g) if position >= start => g.get(position - start).copied().unwrap_or(0),
                _ => 0,
            }
        };
        // A single new position sees every key the cache returned (sliding layers return only
        // the window), so it needs no mask.
        let mask = (len > 1)
            .then(|| {
                let mut mask = Vec::with_capacity(len * total);
                for qi in 0..len {
                    let qp = start + qi;
                    let query_group = group_of(qp);
                    for kj in 0..total {
                        let kp = key_start + kj;
                        let same_image = query_group != 0 && group_of(kp) == query_group;
                        let visible = (kp <= qp || same_image)
                            && (self.kind == LayerKind::Full || kp + window > qp);
                        mask.push(if visible { 0.0f32 } else { f32::NEG_INFINITY });
                    }
                }
                Tensor::from_vec(mask, (len, total), device)
            })
            .transpose()?;

        // HF repeat_kv: query head h uses key/value head h / repeat. Rather than copying each
        // key/value head `repeat` times, the query heads that share one are stacked as rows of a
        // single product (a free reshape: q is contiguous, heads of a group adjacent).
        let repeat = nh / nkv;
        let scale = config.query_pre_attn_scalar.powf(-0.5);
        let grouped_q = q.reshape((1, nkv, repeat * len, hd))?;
        let scores = (grouped_q.matmul(&keys.t()?)? * scale)?.reshape((1, nh, len, total))?;
        let probabilities = match &mask {
            Some(mask) => softmax_last(&scores.broadcast_add(mask)?)?,
            None => softmax_last(&scores)?,
        };
        let out = probabilities
            .reshape((1, nkv, repeat * len, total))?
            .matmul(&values)?
            .reshape((1, nh, len, hd))?;
        let out = out.transpose(1, 2)?.reshape((1, len, nh * hd))?;

        linear(&out, &self.o_proj)
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

/// Reads tensors of one GGUF file, checking their shapes.
struct GgufReader<'a> {
    content: &'a gguf_file::Content,
    reader: std::io::BufReader<std::fs::File>,
    path: &'a Path,
    device: &'a Device,
    weights: GgufWeights,
}

impl GgufReader<'_> {
    fn weights_error(&self, reason: String) -> LlmError {
        LlmError::Weights {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn qtensor(&mut self, name: &str) -> Result<candle_core::quantized::QTensor> {
        self.content
            .tensor(&mut self.reader, name, self.device)
            .map_err(|e| self.weights_error(format!("tensor {name}: {e}")))
    }

    fn matrix(&mut self, name: &str, shape: [usize; 2]) -> Result<Matrix> {
        let q = self.qtensor(name)?;
        if q.shape().dims() != shape {
            return Err(self.weights_error(format!(
                "tensor {name} has shape {:?}, the metadata needs {shape:?}",
                q.shape().dims()
            )));
        }
        if self.weights == GgufWeights::Dequantized {
            return Ok(Matrix::Float(q.dequantize(self.device)?));
        }
        // Q5_0 is re-encoded exactly as Q8_0, which both kernels multiply faster.
        let q8_0: std::borrow::Cow<[u8]> = match q.dtype() {
            GgmlDType::Q8_0 if self.packs() => q.data()?,
            GgmlDType::Q5_0 => q5_0_to_q8_0(&q.data()?)
                .ok_or_else(|| self.weights_error(format!("tensor {name}: torn Q5_0 data")))?
                .into(),
            _ => return Ok(Matrix::Quantized(QMatMul::from_qtensor(q)?)),
        };
        if self.packs() {
            let packed = PackedQ8_0::pack(&q8_0, shape[0], shape[1]).ok_or_else(|| {
                self.weights_error(format!("tensor {name}: Q8_0 data of the wrong size"))
            })?;
            return Ok(Matrix::Packed(std::sync::Arc::new(packed)));
        }
        Ok(Matrix::Quantized(QMatMul::from_qtensor(
            qtensor_from_ggml(GgmlDType::Q8_0, &q8_0, shape.to_vec(), self.device)?,
        )?))
    }

    /// Whether Q8_0 (and re-encoded Q5_0) matrices go to the packed kernel.
    fn packs(&self) -> bool {
        self.weights == GgufWeights::Quantized && self.device.is_cpu() && crate::packed::supported()
    }

    /// A Q8_0 matrix packed while it is read from the file, 16 rows at a time; `None` when the
    /// tensor is of another type or the packed kernel is not used here.
    fn packed_from_file(&mut self, name: &str, shape: [usize; 2]) -> Result<Option<PackedQ8_0>> {
        use std::io::{Read, Seek, SeekFrom};
        let Some(info) = self.content.tensor_infos.get(name) else {
            return Err(self.weights_error(format!("tensor {name} is missing")));
        };
        if !self.packs() || info.ggml_dtype != GgmlDType::Q8_0 {
            return Ok(None);
        }
        if info.shape.dims() != shape {
            return Err(self.weights_error(format!(
                "tensor {name} has shape {:?}, the metadata needs {shape:?}",
                info.shape.dims()
            )));
        }
        let start = self.content.tensor_data_offset + info.offset;
        self.reader
            .seek(SeekFrom::Start(start))
            .map_err(|e| self.weights_error(format!("tensor {name}: {e}")))?;
        let reader = &mut self.reader;
        let packed = PackedQ8_0::pack_with(shape[0], shape[1], |_, rows: &mut [u8]| {
            reader.read_exact(rows)
        })
        .ok_or_else(|| {
            self.weights_error(format!("tensor {name}: rows are not whole Q8_0 blocks"))
        })?
        .map_err(|e| self.weights_error(format!("tensor {name}: {e}")))?;
        Ok(Some(packed))
    }

    /// A norm gain (llama.cpp stores 1 + w already).
    fn gain(&mut self, name: &str, size: usize) -> Result<Tensor> {
        let t = self.qtensor(name)?.dequantize(self.device)?;
        if t.dims() != [size] {
            return Err(self.weights_error(format!(
                "norm {name} has shape {:?}, expected [{size}]",
                t.dims()
            )));
        }
        Ok(t)
    }
}

/// The text configuration from GGUF metadata (llama.cpp's `gemma3` keys). What llama.cpp does not
/// store follows llama.cpp: every sixth layer is global, the local RoPE base is 10000, and the
/// attention scale uses head_dim, except for the 27B shape (hidden 5376), whose
/// query_pre_attn_scalar is 168.
fn gguf_config(content: &gguf_file::Content) -> std::result::Result<Gemma3TextConfig, String> {
    let meta = &content.metadata;
    let arch = meta
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if arch != "gemma3" {
        return Err(format!("architecture `{arch}` is not Gemma 3 (gemma3)"));
    }
    let number = |key: &str| -> std::result::Result<usize, String> {
        let value = meta
            .get(&format!("gemma3.{key}"))
            .ok_or_else(|| format!("metadata gemma3.{key} is missing"))?;
        value
            .to_u32()
            .map(|n| n as usize)
            .or_else(|_| value.to_u64().map(|n| n as usize))
            .map_err(|_| format!("metadata gemma3.{key} is not a number"))
    };
    let float = |key: &str, default: f64| -> f64 {
        meta.get(&format!("gemma3.{key}"))
            .and_then(|v| v.to_f32().ok())
            .map_or(default, f64::from)
    };
    let hidden = number("embedding_length")?;
    let heads = number("attention.head_count")?;
    let head_dim = number("attention.key_length").unwrap_or(hidden / heads.max(1));
    let layers = number("block_count")?;
    if layers == 0 || layers > crate::config::MAX_LAYERS {
        return Err(format!(
            "block_count {layers} is not between 1 and {}",
            crate::config::MAX_LAYERS
        ));
    }
    let embedding = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or("no token_embd.weight tensor")?;
    let vocab = match embedding.shape.dims() {
        [rows, width] if *width == hidden => *rows,
        dims => {
            return Err(format!(
                "token_embd.weight has shape {dims:?}, expected [vocabulary, {hidden}]"
            ))
        }
    };
    let scaling_type = meta
        .get("gemma3.rope.scaling.type")
        .and_then(|v| v.to_string().ok())
        .cloned();
    let linear_factor = match scaling_type.as_deref() {
        None | Some("none") => 1.0,
        Some("linear") => float("rope.scaling.factor", 1.0),
        Some(other) => return Err(format!("RoPE scaling `{other}` is not supported")),
    };
    let config = Gemma3TextConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: number("feed_forward_length")?,
        layers: (0..layers)
            .map(|i| {
                if (i + 1) % 6 != 0 {
                    LayerKind::Sliding
                } else {
                    LayerKind::Full
                }
            })
            .collect(),
        num_attention_heads: heads,
        num_key_value_heads: number("attention.head_count_kv").unwrap_or(heads),
        head_dim,
        query_pre_attn_scalar: if hidden == 5376 {
            168.0
        } else {
            head_dim as f64
        },
        sliding_window: number("attention.sliding_window").unwrap_or(4096),
        rope_local: RopeSettings {
            theta: 10_000.0,
            linear_factor: 1.0,
        },
        rope_global: RopeSettings {
            theta: float("rope.freq_base", 1_000_000.0),
            linear_factor,
        },
        rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-6),
        final_logit_softcapping: meta
            .get("gemma3.final_logit_softcapping")
            .and_then(|v| v.to_f32().ok())
            .map(f64::from),
        multimodal: false,
        context_length: number("context_length").unwrap_or(131_072),
    };
    config.check_sizes()?;
    Ok(config)
}

/// Opens a GGUF file and parses its header (metadata and tensor table).
pub(crate) fn read_gguf(
    path: &Path,
) -> Result<(gguf_file::Content, std::io::BufReader<std::fs::File>)> {
    let bad = |reason: String| LlmError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = crate::files::open_regular(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let file_len = file
        .metadata()
        .map_err(|e| bad(format!("cannot open: {e}")))?
        .len();
    // The header holds the whole vocabulary as ~800,000 small fields: unbuffered, each would be
    // a system call (most of the load time).
    let mut file = std::io::BufReader::with_capacity(1 << 20, file);
    crate::gguf_check::check_header(&mut file)
        .map_err(|e| bad(format!("not a readable GGUF file: {e}")))?;
    std::io::Seek::rewind(&mut file).map_err(|e| bad(format!("cannot read: {e}")))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| bad(format!("not a readable GGUF file: {e}")))?;
    crate::gguf_check::check_tensors(&content, file_len).map_err(bad)?;
    Ok((content, file))
}

/// The vocabulary stored in a GGUF header (`tokenizer.ggml.tokens`), to check a tokenizer against.
pub(crate) fn gguf_vocabulary(content: &gguf_file::Content, path: &Path) -> Result<Vec<String>> {
    let tokens = content
        .metadata
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok())
        .ok_or_else(|| LlmError::BadFile {
            path: path.to_path_buf(),
            reason: "no tokenizer.ggml.tokens in the metadata".into(),
        })?;
    Ok(tokens
        .iter()
        .map(|t| t.to_string().cloned().unwrap_or_default())
        .collect())
}
#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};

    #[test]
    fn cache_returns_what_each_chunk_may_see_while_it_grows_and_slides() {
        let device = Device::Cpu;
        let (heads, head_dim) = (2usize, 3usize);
        // Row p of every key holds the value p, values hold -p: what comes back names positions.
        let chunk = |start: usize, len: usize, sign: f32| {
            let data: Vec<f32> = (0..heads)
                .flat_map(|_| (start..start + len).flat_map(|p| [sign * p as f32; 3]))
                .collect();
            Tensor::from_vec(data, (1, heads, len, head_dim), &device).unwrap()
        };
        for window in [None, Some(5), Some(40)] {
            let mut cache = KvCache::default();
            let mut position = 7; // a conversation need not start at 0
            let first_position = position;
            for len in [1, 3, 1, 1, 60, 1, 1, 2, 130, 1, 1, 1, 9, 1] {
                let (keys, values, key_start) = cache
                    .append(
                        &chunk(position, len, 1.0),
                        &chunk(position, len, -1.0),
                        position,
                        window,
                    )
                    .unwrap();
                let visible_from = match window {
                    Some(w) => position.saturating_sub(w - 1).max(first_position),
                    None => first_position,
                };
                let expected: Vec<f32> = (visible_from..position + len).map(|p| p as f32).collect();
                assert_eq!(key_start, visible_from, "window {window:?}, len {len}");
                for head in 0..heads {
                    let column = |t: &Tensor| -> Vec<f32> {
                        t.narrow(1, head, 1)
                            .unwrap()
                            .narrow(3, 0, 1)
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1()
                            .unwrap()
                    };
                    assert_eq!(column(&keys), expected, "window {window:?}, len {len}");
                    let negated: Vec<f32> = expected.iter().map(|p| -p).collect();
                    assert_eq!(column(&values), negated);
                }
                position += len;
            }
        }
    }

    #[test]
    fn q8_0_rows_equal_candles_dequantisation() {
        let device = Device::Cpu;
        let (rows, width) = (50usize, 96usize);
        let values: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let table = Tensor::from_vec(values, (rows, width), &device).unwrap();
        let q = std::sync::Arc::new(QTensor::quantize(&table, GgmlDType::Q8_0).unwrap());
        let reference = q.dequantize(&device).unwrap();
        let lookup = EmbeddingTable::Q8_0 { table: q, width };
        let ids = [0u32, 7, 49, 7];
        let ours = lookup.rows(&ids, &device).unwrap();
        let index = Tensor::from_slice(&ids, ids.len(), &device).unwrap();
        let expected = reference.index_select(&index, 0).unwrap();
        let diff: f32 = (ours - expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(diff, 0.0);
        assert!(
            lookup.rows(&[50], &device).is_err(),
            "past the table is an error, not a panic"
        );
    }
}
