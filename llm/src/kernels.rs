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
