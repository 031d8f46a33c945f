//! Entry points for `benches/kernels.rs`: our quantized products (K-quant tiles, packed Q8_0)
//! next to candle's on the same weights, in one process, so their ratio is measured on the same
//! machine state.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use crate::cpu::kquant::{KQuant, KQuantMatrix};
use crate::cpu::packed::PackedQ8_0;
use crate::error::{LlmError, Result};

/// The GGUF weight types our CPU kernels multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    /// Q4_K (most matrices of a Q4_K_M file).
    Q4K,
    /// Q5_K (most matrices of a Q5_K_M file).
    Q5K,
    /// Q6_K (`ffn_down` and `attn_v` in half of a Q4_K_M file's layers, the output head).
    Q6K,
    /// Q8_0 (Gemma 3 270M's matrices; its Q5_0 ones are re-encoded as Q8_0 at load).
    Q8_0,
}

enum Ours {
    KQuant(KQuantMatrix),
    Packed(PackedQ8_0),
}

/// One random `[rows, cols]` matrix quantized by candle (ggml's quantizer), held both ways.
pub struct QuantizedProducts {
    ours: Ours,
    candle: QMatMul,
}

impl QuantizedProducts {
    /// A matrix of `weights` type holding values spread like trained weights.
    pub fn random(rows: usize, cols: usize, weights: WeightType) -> Result<Self> {
        let dtype = match weights {
            WeightType::Q4K => GgmlDType::Q4K,
            WeightType::Q5K => GgmlDType::Q5K,
            WeightType::Q6K => GgmlDType::Q6K,
            WeightType::Q8_0 => GgmlDType::Q8_0,
        };
        let values = Tensor::randn(0f32, 0.02, (rows, cols), &Device::Cpu)?;
        let q = QTensor::quantize(&values, dtype)?;
        let bytes = q.data()?;
        let wrong_size = || LlmError::Internal("cols are not whole blocks".into());
        let ours = match KQuant::of(dtype) {
            Some(kind) => Ours::KQuant(
                KQuantMatrix::from_file_bytes(kind, rows, cols, &bytes).ok_or_else(wrong_size)?,
            ),
            None => Ours::Packed(PackedQ8_0::pack(&bytes, rows, cols).ok_or_else(wrong_size)?),
        };
        Ok(Self {
            ours,
            candle: QMatMul::from_qtensor(q)?,
        })
    }

    /// `x @ w^T` on our best kernel, `x` being `[m, cols]` row-major; `None` when the shapes
    /// disagree or this CPU has none of our kernels for this type.
    pub fn ours(&self, x: &[f32], m: usize) -> Option<Vec<f32>> {
        match &self.ours {
            Ours::KQuant(matrix) => matrix.matmul(x, m),
            Ours::Packed(matrix) => matrix.matmul(x, m),
        }
    }

    /// The instruction sets our kernels for this type can use on this CPU, best first.
    pub fn instruction_sets(&self) -> Vec<String> {
        match &self.ours {
            Ours::KQuant(_) => KQuantMatrix::instruction_sets(),
            Ours::Packed(_) => PackedQ8_0::instruction_sets(),
        }
    }

    /// `x @ w^T` on our kernel for one instruction set of
    /// [`QuantizedProducts::instruction_sets`].
    pub fn ours_on(&self, isa: &str, x: &[f32], m: usize) -> Option<Vec<f32>> {
        match &self.ours {
            Ours::KQuant(matrix) => matrix.matmul_named(isa, x, m),
            Ours::Packed(matrix) => matrix.matmul_named(isa, x, m),
        }
    }

    /// `x @ w^T` on candle's quantized matmul.
    pub fn candle(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.candle.forward(x)?)
    }
}

/// `[m, cols]` values as a CPU tensor, for [`QuantizedProducts::candle`].
pub fn tensor(x: &[f32], m: usize, cols: usize) -> Result<Tensor> {
    Ok(Tensor::from_slice(x, (m, cols), &Device::Cpu)?)
}

/// A random SigLIP vision tower of MedGemma 4B's width (1152, MLP 4304, 16 heads, patch 14) at
/// a given image size and depth, built twice from the same f16 values: ours (f16 weights, our
/// CPU attention and products) and candle-transformers' `siglip` (the same values widened to
/// f32), which is what the letter model used before.
pub struct VisionTowers {
    ours: crate::vision::tower::Tower,
    candle: candle_transformers::models::siglip::VisionModel,
    image_size: usize,
}

impl VisionTowers {
    /// Towers of `layers` encoder layers taking `image_size`-pixel images (896 for MedGemma).
    pub fn random(layers: usize, image_size: usize) -> Result<Self> {
        use candle_core::DType;
        let (width, mlp, heads, patch) = (1152, 4304, 16, 14);
        let patches = (image_size / patch).pow(2);
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            (
                "embeddings.patch_embedding.weight".into(),
                vec![width, 3, patch, patch],
            ),
            ("embeddings.patch_embedding.bias".into(), vec![width]),
            (
                "embeddings.position_embedding.weight".into(),
                vec![patches, width],
            ),
            ("post_layernorm.weight".into(), vec![width]),
            ("post_layernorm.bias".into(), vec![width]),
        ];
        for layer in 0..layers {
            let prefix = format!("encoder.layers.{layer}");
            for (name, dims) in [
                ("self_attn.q_proj", vec![width, width]),
                ("self_attn.k_proj", vec![width, width]),
                ("self_attn.v_proj", vec![width, width]),
                ("self_attn.out_proj", vec![width, width]),
                ("mlp.fc1", vec![mlp, width]),
                ("mlp.fc2", vec![width, mlp]),
                ("layer_norm1", vec![width]),
                ("layer_norm2", vec![width]),
            ] {
                let out = dims[0];
                shapes.push((format!("{prefix}.{name}.weight"), dims));
                shapes.push((format!("{prefix}.{name}.bias"), vec![out]));
            }
        }
        let mut stored = std::collections::HashMap::new();
        for (name, dims) in shapes {
            let values = if dims.len() == 1 && name.contains("norm") && name.ends_with("weight") {
                Tensor::ones(dims.as_slice(), DType::F32, &Device::Cpu)?
            } else {
                Tensor::randn(0f32, 0.02, dims.as_slice(), &Device::Cpu)?
            };
            stored.insert(name, values.to_dtype(DType::F16)?);
        }
        let widened = stored
            .iter()
            .map(|(name, t)| Ok((name.clone(), t.to_dtype(DType::F32)?)))
            .collect::<Result<std::collections::HashMap<_, _>>>()?;
        let config: candle_transformers::models::siglip::VisionConfig =
            serde_json::from_value(serde_json::json!({
                "hidden_size": width, "intermediate_size": mlp, "num_hidden_layers": layers,
                "num_attention_heads": heads, "num_channels": 3, "image_size": image_size,
                "patch_size": patch, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
            }))
            .map_err(|e| LlmError::Internal(e.to_string()))?;
        let builder = candle_nn::VarBuilder::from_tensors(widened, DType::F32, &Device::Cpu);
        let candle =
            candle_transformers::models::siglip::VisionModel::new(&config, false, builder)?;
        let ours = crate::vision::tower::Tower::new(&config, |name, _shape| {
            stored
                .get(name)
                .cloned()
                .ok_or_else(|| LlmError::Internal(format!("no {name}")))
        })?;
        Ok(Self {
            ours,
            candle,
            image_size,
        })
    }

    /// Pixel values `[1, 3, size, size]` spread like a normalised image.
    pub fn pixels(&self) -> Result<Tensor> {
        let size = self.image_size;
        Ok(Tensor::rand(-1f32, 1.0, (1, 3, size, size), &Device::Cpu)?)
    }

    /// Our tower's last hidden state.
    pub fn ours(&self, pixels: &Tensor) -> Result<Tensor> {
        self.ours.forward(pixels)
    }

    /// candle-transformers' tower's last hidden state.
    pub fn candle(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.candle.forward(pixels)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_vision_tower_computes_like_candles_at_medgemmas_width() {
        // Width 1152 and 16 heads of 72 as in MedGemma 4B; 8x8 patches keep it quick.
        let towers = VisionTowers::random(2, 112).unwrap();
        let pixels = towers.pixels().unwrap();
        let ours = towers.ours(&pixels).unwrap();
        let candle = towers.candle(&pixels).unwrap();
        assert_eq!(ours.dims(), &[1, 64, 1152]);
        let diff = crate::cpu::max_abs_diff(&ours, &candle);
        assert!(diff < 1e-4, "max diff {diff}");
    }
}
