//! `x W^T + b (+ residual)` with a float weight (f16, bf16 or f32) on the CPU: the vision
//! tower's projections and MLP, 4096 patches at a time.
//!
//! Through candle this is a widening of the weight (one thread), the product (on rayon's
//! threads), the bias and the residual (two more passes over the output, on the barrier pool).
//! Here an f16 or bf16 weight is widened to f32 by all workers (an f32 one is read in place),
//! then each worker computes whole blocks of rows alone, with the output first holding the bias
//! (and residual) and the single-threaded product added onto it, then the activation applied
//! while the rows are in cache. One thread pool, one pass.

use std::borrow::Cow;

use candle_core::{CpuStorage, DType, Storage, Tensor};
use half::slice::HalfFloatSliceExt;

use super::Strided;
use crate::error::Result;

/// Rows of `x` one worker multiplies at a time: the weight is packed once per block, so blocks
/// are large (2.5 GFLOP for the tower's MLP) beside the packing (5 M values).
const ROW_BLOCK: usize = 512;
/// Weight rows widened per work item.
const WIDEN_ROWS: usize = 64;

/// What is done to a product's rows once computed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Then<'a> {
    /// Nothing: `x W^T + b`.
    Nothing,
    /// Add a residual `[rows, out]`: `x W^T + b + residual`.
    Add(&'a Tensor),
    /// GELU-tanh: `gelu_tanh(x W^T + b)`.
    Gelu,
}

/// `x W^T + bias`, then `then`, for `x` `[rows, inner]` f32, `weight` `[out, inner]` (f16, bf16
/// or f32), `bias` `[out]` f32: `[rows, out]`. `None` off the CPU, for other types or shapes.
pub(crate) fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    then: Then,
) -> Result<Option<Tensor>> {
    let residual = match then {
        Then::Add(residual) => Some(residual),
        Then::Nothing | Then::Gelu => None,
    };
    let (rows, inner) = x.dims2()?;
    let (out, weight_inner) = weight.dims2()?;
    if !x.device().is_cpu()
        || x.dtype() != DType::F32
        || bias.dtype() != DType::F32
        || weight_inner != inner
        || bias.dims() != [out]
        || residual.is_some_and(|r| r.dims() != [rows, out] || r.dtype() != DType::F32)
        || !matches!(weight.dtype(), DType::F16 | DType::BF16 | DType::F32)
        || rows == 0
        || out == 0
        || inner == 0
    {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    let residual = residual.map(Tensor::contiguous).transpose()?;
    let pool = candle_core::utils::barrier_pool();

    let (weight_storage, weight_layout) = weight.storage_and_layout();
    let Storage::Cpu(weight_cpu) = &*weight_storage else {
        return Ok(None);
    };
    let Some(widened) = widen(weight_cpu, weight_layout.start_offset(), out, inner)? else {
        return Ok(None);
    };
    let bias = bias.to_vec1::<f32>()?;
    let (x_storage, x_layout) = x.storage_and_layout();
    let Storage::Cpu(x_cpu) = &*x_storage else {
        return Ok(None);
    };
    let Some(xs) = x_cpu
        .as_slice::<f32>()?
        .get(x_layout.start_offset()..x_layout.start_offset() + rows * inner)
    else {
        return Ok(None);
    };
    let residual_guard = residual.as_ref().map(|r| r.storage_and_layout());
    let residual_values = match &residual_guard {
        None => None,
        Some((storage, layout)) => {
            let Storage::Cpu(cpu) = &**storage else {
                return Ok(None);
            };
            let start = layout.start_offset();
            match cpu.as_slice::<f32>()?.get(start..start + rows * out) {
                Some(values) => Some(values),
                None => return Ok(None),
            }
        }
    };

    let mut result = vec![0f32; rows * out];
    let writes = super::DisjointWrites::new(&mut result);
    pool.execute_chunked(rows.div_ceil(ROW_BLOCK), |blocks| {
        for block in blocks {
            let first = block * ROW_BLOCK;
            let count = ROW_BLOCK.min(rows - first);
            // SAFETY: blocks of rows are disjoint, inside `result`.
            let dst = unsafe { writes.slice(first * out, count * out) };
            for (row, target) in dst.chunks_exact_mut(out).enumerate() {
                target.copy_from_slice(&bias);
                if let Some(residual) = residual_values {
                    let from = &residual[(first + row) * out..(first + row + 1) * out];
                    for (t, r) in target.iter_mut().zip(from) {
                        *t += r;
                    }
                }
            }
            let lhs = &xs[first * inner..(first + count) * inner];
            // SAFETY: dst is `count x out` row-major, lhs `count x inner` row-major, and the
            // weight `out x inner` row-major read as its transpose `inner x out`: every index
            // the product reads or writes is inside those slices.
            unsafe {
                super::product(
                    (count, out, inner),
                    dst.as_mut_ptr(),
                    out,
                    true,
                    Strided {
                        start: lhs.as_ptr(),
                        row_stride: inner as isize,
                        column_stride: 1,
                    },
                    // The weight's transpose: output o's weights are column o.
                    Strided {
                        start: widened.as_ptr(),
                        row_stride: 1,
                        column_stride: inner as isize,
                    },
                );
            }
            if matches!(then, Then::Gelu) {
                super::gelu::gelu_tanh_in_place(dst);
            }
        }
    });
    Ok(Some(Tensor::from_vec(result, (rows, out), x.device())?))
}

/// The `[rows, inner]` weight from `start` in f32: f16 and bf16 widened by all workers, f32 as
/// stored (`None` when the storage is shorter than that).
fn widen(
    cpu: &CpuStorage,
    start: usize,
    rows: usize,
    inner: usize,
) -> Result<Option<Cow<'_, [f32]>>> {
    let Some(len) = rows.checked_mul(inner) else {
        return Ok(None);
    };
    let range = start..start.saturating_add(len);
    if let CpuStorage::F32(values) = cpu {
        return Ok(values.get(range).map(Cow::Borrowed));
    }
    let mut widened = vec![0f32; len];
    let writes = super::DisjointWrites::new(&mut widened);
    let items = len.div_ceil(WIDEN_ROWS * inner);
    let part = |items: std::ops::Range<usize>| {
        let start = items.start * WIDEN_ROWS * inner;
        let end = len.min(items.end * WIDEN_ROWS * inner);
        // SAFETY: work items cover disjoint ranges of `widened`, inside its length.
        (start..end, unsafe { writes.slice(start, end - start) })
    };
    let pool = candle_core::utils::barrier_pool();
    match cpu {
        CpuStorage::F16(values) => {
            let Some(values) = values.get(range) else {
                return Ok(None);
            };
            pool.execute_chunked(items, |items| {
                let (span, target) = part(items);
                values[span].convert_to_f32_slice(target);
            });
        }
        CpuStorage::BF16(values) => {
            let Some(values) = values.get(range) else {
                return Ok(None);
            };
            pool.execute_chunked(items, |items| {
                let (span, target) = part(items);
                values[span].convert_to_f32_slice(target);
            });
        }
        _ => return Ok(None),
    }
    Ok(Some(Cow::Owned(widened)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn equals_candles_product_bias_and_residual_for_every_weight_type() {
        // 1100 rows: two whole blocks and a part block.
        let (rows, inner, out) = (1100, 40, 24);
        let values = |n: usize, step: f32| -> Vec<f32> {
            (0..n).map(|i| ((i as f32) * step).sin()).collect()
        };
        let device = Device::Cpu;
        let x = Tensor::from_vec(values(rows * inner, 0.37), (rows, inner), &device).unwrap();
        let weight = Tensor::from_vec(values(out * inner, 0.11), (out, inner), &device).unwrap();
        let bias = Tensor::from_vec(values(out, 0.7), out, &device).unwrap();
        let residual = Tensor::from_vec(values(rows * out, 0.05), (rows, out), &device).unwrap();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let stored = weight.to_dtype(dtype).unwrap();
            let expected = x
                .matmul(&stored.to_dtype(DType::F32).unwrap().t().unwrap())
                .unwrap()
                .broadcast_add(&bias)
                .unwrap();
            for then in [Then::Nothing, Then::Add(&residual), Then::Gelu] {
                let ours = linear(&x, &stored, &bias, then).unwrap().unwrap();
                let expected = match then {
                    Then::Add(r) => (&expected + r).unwrap(),
                    Then::Nothing => expected.clone(),
                    Then::Gelu => expected.gelu().unwrap(),
                };
                let diff = crate::cpu::max_abs_diff(&ours, &expected);
                assert!(diff < 1e-4, "{dtype:?} {then:?}: {diff}");
            }
        }
    }
}
