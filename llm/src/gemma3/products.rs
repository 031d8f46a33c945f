//! Weights and their products: float, bf16, quantized and packed matrices, fused projections,
//! normalisation and softmax, and the token embedding table.

use std::sync::Arc;

use super::*;

/// `x * rsqrt(mean(x^2) + eps) * gain` over the last dimension, where `gain` is `1 + w`.
/// candle-nn's fused kernel: the same f32 arithmetic in one pass instead of six tensor ops.
pub(super) fn rms_norm(x: &Tensor, gain: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::rms_norm(
        &x.contiguous()?,
        gain,
        eps as f32,
    )?)
}

/// Softmax over the last dimension: exp(x - max) / sum, fused.
pub(super) fn softmax_last(x: &Tensor) -> Result<Tensor> {
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
    /// Q4_K or Q6_K weights as stored in the file (CPU).
    KQuant(std::sync::Arc<KQuantMatrix>),
}

impl Matrix {
    /// Bytes its weights occupy in memory.
    pub(super) fn bytes(&self) -> usize {
        let dense = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        match self {
            Matrix::Float(t) | Matrix::Bf16(t) => dense(t),
            Matrix::Quantized(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            Matrix::Quantized(QMatMul::Tensor(t)) | Matrix::Quantized(QMatMul::TensorF16(t)) => {
                dense(t)
            }
            Matrix::Packed(p) => p.bytes(),
            Matrix::KQuant(k) => k.bytes(),
        }
    }
}

/// Rows from which a quantized matmul unpacks its weight and runs the float GEMM instead. Unpacking
/// all of the 270M model's layers costs about as much as 50 rows on the quantized kernel
/// (measured with benches/letter_model.rs).
pub(super) const PREFILL_GEMM_ROWS: usize = 64;
/// Largest weight unpacked that way (f32 values): the tied output head (262144 x 640) is not.
pub(super) const PREFILL_GEMM_MAX_WEIGHTS: usize = 32 << 20;

/// `x @ w^T` for a `[.., in]` activation and an `[out, in]` weight.
pub(super) fn linear(x: &Tensor, weight: &Matrix) -> Result<Tensor> {
    let rows = x.elem_count() / x.dim(D::Minus1)?;
    match weight {
        Matrix::Float(w) => Ok(x.broadcast_matmul(&w.t()?)?),
        Matrix::Bf16(w) => linear_bf16(x, w),
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
        Matrix::KQuant(matrix) => {
            cpu_product(x, matrix.cols(), matrix.rows(), |values, positions| {
                matrix.matmul(values, positions)
            })
        }
    }
}

/// Projections of the same input. Packed matrices are joined into one, so the input is quantized
/// once and the threads meet once per group instead of once per matrix; K-quant ones are tiled
/// into one as they are read (`GgufReader::k_quant_from_file`).
#[derive(Debug, Clone)]
pub(super) enum Projections {
    Separate(Vec<Matrix>),
    Joined { matrix: Matrix, widths: Vec<usize> },
}

impl Projections {
    pub(super) fn new(matrices: Vec<Matrix>) -> Self {
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
                matrix: Matrix::Packed(Arc::new(joined)),
            },
            _ => Projections::Separate(matrices),
        }
    }

    pub(super) fn bytes(&self) -> usize {
        match self {
            Projections::Separate(matrices) => matrices.iter().map(Matrix::bytes).sum(),
            Projections::Joined { matrix, .. } => matrix.bytes(),
        }
    }

    /// The `N` products of `x`, in the order the matrices were given.
    pub(super) fn forward<const N: usize>(&self, x: &Tensor) -> Result<[Tensor; N]> {
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
            LlmError::Internal(format!("{} projections where {N} were expected", v.len()))
        })
    }
}

/// Token embeddings: a float table, or GGUF Q8_0 blocks unpacked row by row when looked up (the
/// 270M model's table is 262144 x 640: 671 MB as f32, 178 MB as stored).
#[derive(Debug, Clone)]
pub(super) enum EmbeddingTable {
    Dense(Tensor),
    /// Shared with the packed output head.
    Packed(std::sync::Arc<PackedQ8_0>),
    /// Q4_K or Q6_K rows, shared with the output head.
    KQuant(std::sync::Arc<KQuantMatrix>),
    /// ggml blocks of any type in host memory, unpacked a row at a time. On the CPU this is the
    /// quantized head's own table; beside a GPU a host copy, as llama.cpp keeps `token_embd` on
    /// the host, so that the device holds no f16 copy of the table (1.34 GB for MedGemma 4B).
    Blocks {
        table: std::sync::Arc<candle_core::quantized::QTensor>,
        width: usize,
    },
}

/// Positions of a prompt run through the layers at once (see `forward_grouped`).
pub(super) const PREFILL_CHUNK: usize = 512;

/// Bytes of one Q8_0 block: an f16 scale and 32 signed bytes.
pub(super) const Q8_0_BLOCK_BYTES: usize = 34;
pub(super) const Q8_0_BLOCK_VALUES: usize = 32;

impl EmbeddingTable {
    /// Lookups in `table`'s blocks, if it is a `[rows, width]` table in host memory whose rows
    /// are whole blocks.
    pub(super) fn blocks(table: std::sync::Arc<candle_core::quantized::QTensor>) -> Option<Self> {
        let &[_, width] = table.shape().dims() else {
            return None;
        };
        let whole_blocks = width.is_multiple_of(table.dtype().block_size());
        (table.device().is_cpu() && whole_blocks).then_some(Self::Blocks { table, width })
    }

    /// Rows `ids` as f32 `[len, width]`.
    pub(super) fn rows(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        match self {
            EmbeddingTable::Dense(table) => {
                let ids = Tensor::from_slice(ids, ids.len(), device)?;
                Ok(table.index_select(&ids, 0)?.to_dtype(DType::F32)?)
            }
            EmbeddingTable::Packed(table) => unpacked_rows(ids, table.cols(), device, |id, out| {
                table.dequantize_row_into(id, out)
            }),
            EmbeddingTable::KQuant(table) => unpacked_rows(ids, table.cols(), device, |id, out| {
                table.dequantize_row_into(id, out)
            }),
            EmbeddingTable::Blocks { table, width } => {
                let dtype = table.dtype();
                let row_bytes = width / dtype.block_size() * dtype.type_size();
                let data = table.data()?;
                let mut rows = Vec::with_capacity(ids.len() * row_bytes);
                for &id in ids {
                    let start = id as usize * row_bytes;
                    let row = data.get(start..start + row_bytes).ok_or_else(|| {
                        LlmError::Prompt(format!("token id {id} is outside the embedding table"))
                    })?;
                    rows.extend_from_slice(row);
                }
                let picked =
                    qtensor_from_ggml(dtype, &rows, vec![ids.len(), *width], &Device::Cpu)?;
                Ok(picked.dequantize(&Device::Cpu)?.to_device(device)?)
            }
        }
    }
}

/// Rows `ids` of a quantized table, each appended by `row_into` (`false`: no such row).
fn unpacked_rows(
    ids: &[u32],
    width: usize,
    device: &Device,
    row_into: impl Fn(usize, &mut Vec<f32>) -> bool,
) -> Result<Tensor> {
    let mut values = Vec::with_capacity(ids.len() * width);
    for &id in ids {
        if !row_into(id as usize, &mut values) {
            return Err(LlmError::Prompt(format!(
                "token id {id} is outside the embedding table"
            )));
        }
    }
    Ok(Tensor::from_vec(values, (ids.len(), width), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};

    #[test]
    fn rows_of_every_block_type_equal_candles_dequantisation() {
        // The types of MedGemma GGUFs' token_embd (Q6_K in Q4_K_M, Q8_0, Q5_K, F16) and others.
        let device = Device::Cpu;
        let (rows, width) = (50usize, 512usize);
        let values: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let table = Tensor::from_vec(values, (rows, width), &device).unwrap();
        for dtype in [
            GgmlDType::Q8_0,
            GgmlDType::Q4_0,
            GgmlDType::Q5_0,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
            GgmlDType::F16,
        ] {
            let q = std::sync::Arc::new(QTensor::quantize(&table, dtype).unwrap());
            let reference = q.dequantize(&device).unwrap();
            let lookup = EmbeddingTable::blocks(q).unwrap();
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
            assert_eq!(diff, 0.0, "{dtype:?}");
            assert!(
                lookup.rows(&[50], &device).is_err(),
                "{dtype:?}: past the table is an error, not a panic"
            );
        }
    }
}
