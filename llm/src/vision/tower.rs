//! The SigLIP vision tower (transformers' `SiglipVisionTransformer` without its pooling head, that
//! is `last_hidden_state`), with its matrices kept in the checkpoint's own precision.
//!
//! MedGemma 4B's tower has 400M parameters. candle-transformers' `siglip` widens them all to f32
//! (1.6 GB beside an 850 MB f16 file) and computes the attention of 4096 patches as one batched
//! product whose 1 GiB of scores is fresh memory in every layer. Here each matrix stays as stored
//! (f16 in llama.cpp's mmproj files, bf16 in Hugging Face checkpoints) and is widened to f32 only
//! for its own product, one at a time (at most 20 MB). Computing in f32 keeps the activations as
//! exact as transformers' f32 reference; llama.cpp rounds them to f16 instead. The queries, keys
//! and values are one product of the three matrices joined, the attention goes head by head in
//! blocks of queries on the CPU (`cpu::attention::unmasked_attention`), and the MLP's GELU is the
//! vectorized one of the language model.

use candle_core::{DType, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm};
use candle_transformers::models::siglip;

use crate::cpu::dense::Then;

use crate::error::{LlmError, Result};

/// A weight `[out, in]` in its stored type and an f32 bias `[out]`.
struct StoredLinear {
    weight: Tensor,
    bias: Tensor,
}

impl StoredLinear {
    /// `x W^T + b`, then `then`, for `x` `[rows, in]` in f32.
    fn forward(&self, x: &Tensor, then: Then) -> Result<Tensor> {
        if let Some(y) = crate::cpu::dense::linear(x, &self.weight, &self.bias, then)? {
            return Ok(y);
        }
        // Widened for this one product: at most one layer's largest matrix is f32 at a time.
        let weight = self.weight.to_dtype(DType::F32)?;
        let y = x.matmul(&weight.t()?)?.broadcast_add(&self.bias)?;
        Ok(match then {
            Then::Nothing => y,
            Then::Add(residual) => (y + residual)?,
            Then::Gelu => y.gelu()?,
        })
    }
}

struct EncoderLayer {
    norm1: LayerNorm,
    /// The query, key and value projections stacked: `[3 * width, width]`.
    qkv: StoredLinear,
    out: StoredLinear,
    norm2: LayerNorm,
    up: StoredLinear,
    down: StoredLinear,
}

/// The tower: patch embedding, encoder layers, final layer norm.
pub(crate) struct Tower {
    patch_embedding: Conv2d,
    /// `[patches, width]`, f32.
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    post_norm: LayerNorm,
    heads: usize,
    scale: f64,
}

impl Tower {
    /// Builds the tower from Hugging Face-named tensors (`embeddings.patch_embedding.weight`,
    /// `encoder.layers.N.self_attn.q_proj.weight`, ...), each fetched by `get(name, shape)` in
    /// the type it is stored in; shapes are checked by `get`. The configuration's sizes have been
    /// checked by the loader (`Geometry::new`).
    pub(crate) fn new(
        config: &siglip::VisionConfig,
        mut get: impl FnMut(&str, &[usize]) -> Result<Tensor>,
    ) -> Result<Self> {
        let get = &mut get;
        let (width, mlp_width) = (config.hidden_size, config.intermediate_size);
        let (patch, eps) = (config.patch_size, config.layer_norm_eps);
        let patches_per_side = config.image_size / patch.max(1);
        let patch_embedding = Conv2d::new(
            widened(
                get,
                "embeddings.patch_embedding.weight",
                &[width, 3, patch, patch],
            )?,
            Some(widened(get, "embeddings.patch_embedding.bias", &[width])?),
            Conv2dConfig {
                stride: patch,
                ..Default::default()
            },
        );
        let position_embedding = widened(
            get,
            "embeddings.position_embedding.weight",
            &[patches_per_side * patches_per_side, width],
        )?;
        let post_norm = layer_norm(get, "post_layernorm", width, eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for layer in 0..config.num_hidden_layers {
            let prefix = format!("encoder.layers.{layer}");
            let norm1 = layer_norm(get, &format!("{prefix}.layer_norm1"), width, eps)?;
            let norm2 = layer_norm(get, &format!("{prefix}.layer_norm2"), width, eps)?;
            let mut linear = |name: &str, out: usize, inner: usize| -> Result<StoredLinear> {
                let name = format!("{prefix}.{name}");
                Ok(StoredLinear {
                    weight: get(&format!("{name}.weight"), &[out, inner])?,
                    bias: widened(get, &format!("{name}.bias"), &[out])?,
                })
            };
            let q = linear("self_attn.q_proj", width, width)?;
            let k = linear("self_attn.k_proj", width, width)?;
            let v = linear("self_attn.v_proj", width, width)?;
            let qkv = StoredLinear {
                weight: Tensor::cat(&[&q.weight, &k.weight, &v.weight], 0)?,
                bias: Tensor::cat(&[&q.bias, &k.bias, &v.bias], 0)?,
            };
            layers.push(EncoderLayer {
                norm1,
                qkv,
                out: linear("self_attn.out_proj", width, width)?,
                norm2,
                up: linear("mlp.fc1", mlp_width, width)?,
                down: linear("mlp.fc2", width, mlp_width)?,
            });
        }
        let heads = config.num_attention_heads;
        let head_dim = width / heads.max(1);
        Ok(Self {
            patch_embedding,
            position_embedding,
            layers,
            post_norm,
            heads,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    /// The last hidden state for pixel values `[n, 3, size, size]`: `[n, patches, width]`.
    pub(crate) fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let images = pixels.dim(0)?;
        let mut outputs = Vec::with_capacity(images);
        for image in 0..images {
            // [1, width, side, side] -> [patches, width]
            let patches = pixels
                .narrow(0, image, 1)?
                .apply(&self.patch_embedding)?
                .flatten_from(2)?
                .squeeze(0)?
                .t()?;
            let mut hidden = (patches + &self.position_embedding)?;
            for layer in &self.layers {
                hidden = self.layer_forward(layer, &hidden)?;
            }
            outputs.push(self.post_norm.forward(&hidden)?);
        }
        Ok(Tensor::stack(&outputs, 0)?)
    }

    /// One encoder layer on `[patches, width]`.
    fn layer_forward(&self, layer: &EncoderLayer, hidden: &Tensor) -> Result<Tensor> {
        let qkv = layer
            .qkv
            .forward(&layer.norm1.forward(hidden)?, Then::Nothing)?;
        let attended =
            match crate::cpu::attention::unmasked_attention(&qkv, self.heads, self.scale)? {
                Some(attended) => attended,
                None => general_attention(&qkv, self.heads, self.scale)?,
            };
        let hidden = layer.out.forward(&attended, Then::Add(hidden))?;
        let activated = layer
            .up
            .forward(&layer.norm2.forward(&hidden)?, Then::Gelu)?;
        layer.down.forward(&activated, Then::Add(&hidden))
    }
}

/// A tensor fetched by `get`, in f32.
fn widened(
    get: &mut impl FnMut(&str, &[usize]) -> Result<Tensor>,
    name: &str,
    shape: &[usize],
) -> Result<Tensor> {
    Ok(get(name, shape)?.to_dtype(DType::F32)?)
}

/// The layer norm `{prefix}.weight` / `{prefix}.bias`, in f32.
fn layer_norm(
    get: &mut impl FnMut(&str, &[usize]) -> Result<Tensor>,
    prefix: &str,
    width: usize,
    eps: f64,
) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        widened(get, &format!("{prefix}.weight"), &[width])?,
        widened(get, &format!("{prefix}.bias"), &[width])?,
        eps,
    ))
}

/// The attention through candle's batched products (GPUs): `qkv` `[positions, 3 * width]` to
/// `[positions, width]`.
fn general_attention(qkv: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    let (positions, three_widths) = qkv.dims2()?;
    let width = three_widths / 3;
    if heads == 0 || !width.is_multiple_of(heads) {
        return Err(LlmError::Internal(format!(
            "{heads} heads do not divide the vision width {width}"
        )));
    }
    let head_dim = width / heads;
    let split = |part: usize| -> Result<Tensor> {
        Ok(qkv
            .narrow(1, part * width, width)?
            .reshape((positions, heads, head_dim))?
            .transpose(0, 1)?
            .contiguous()?)
    };
    let (queries, keys, values) = (split(0)?, split(1)?, split(2)?);
    let scores = (queries.matmul(&keys.t()?)? * scale)?;
    let weights = candle_nn::ops::softmax_last_dim(&scores)?;
    Ok(weights
        .matmul(&values)?
        .transpose(0, 1)?
        .reshape((positions, width))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn blocked_cpu_attention_equals_the_batched_products() {
        // 600 positions: two whole blocks of queries and a part block.
        let (positions, width, heads) = (600, 48, 4);
        let values: Vec<f32> = (0..positions * 3 * width)
            .map(|i| ((i as f32) * 0.618).sin() * 3.0)
            .collect();
        let qkv = Tensor::from_vec(values, (positions, 3 * width), &Device::Cpu).unwrap();
        let scale = (12f64).powf(-0.5);
        let blocked = crate::cpu::attention::unmasked_attention(&qkv, heads, scale)
            .unwrap()
            .unwrap();
        let batched = general_attention(&qkv, heads, scale).unwrap();
        assert_eq!(blocked.dims(), &[positions, width]);
        let diff = crate::cpu::max_abs_diff(&blocked, &batched);
        assert!(diff < 1e-5, "max diff {diff}");
    }
}
