//! Entry points for `benches/kernels.rs`: our K-quant products next to candle's on the same
//! weights, in one process, so their ratio is measured on the same machine state.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use crate::cpu::kquant::{KQuant, KQuantMatrix};
use crate::error::{LlmError, Result};

/// One random `[rows, cols]` matrix quantized by candle (ggml's quantizer), held both ways.
pub struct KQuantProducts {
    ours: KQuantMatrix,
    candle: QMatMul,
}

impl KQuantProducts {
    /// A Q4_K (`q6k` false) or Q6_K matrix of values spread like trained weights.
    pub fn random(rows: usize, cols: usize, q6k: bool) -> Result<Self> {
        let dtype = if q6k { GgmlDType::Q6K } else { GgmlDType::Q4K };
        let weights = Tensor::randn(0f32, 0.02, (rows, cols), &Device::Cpu)?;
        let q = QTensor::quantize(&weights, dtype)?;
        let kind = KQuant::of(dtype).ok_or_else(|| LlmError::Internal("not a K-quant".into()))?;
        let ours = KQuantMatrix::from_file_bytes(kind, rows, cols, &q.data()?)
            .ok_or_else(|| LlmError::Internal("cols are not whole super-blocks".into()))?;
        Ok(Self {
            ours,
            candle: QMatMul::from_qtensor(q)?,
        })
    }

    /// `x @ w^T` on our kernels, `x` being `[m, cols]` row-major.
    pub fn ours(&self, x: &[f32], m: usize) -> Option<Vec<f32>> {
        self.ours.matmul(x, m)
    }

    /// The instruction sets our kernels can use on this CPU, best first.
    pub fn instruction_sets() -> Vec<String> {
        KQuantMatrix::instruction_sets()
    }

    /// `x @ w^T` on our kernels for one instruction set of [`KQuantProducts::instruction_sets`].
    pub fn ours_on(&self, isa: &str, x: &[f32], m: usize) -> Option<Vec<f32>> {
        self.ours.matmul_named(isa, x, m)
    }

    /// `x @ w^T` on candle's quantized matmul.
    pub fn candle(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.candle.forward(x)?)
    }
}

/// `[m, cols]` values as a CPU tensor, for [`KQuantProducts::candle`].
pub fn tensor(x: &[f32], m: usize, cols: usize) -> Result<Tensor> {
    Ok(Tensor::from_slice(x, (m, cols), &Device::Cpu)?)
}
