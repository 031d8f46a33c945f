//! Products with bf16 weight matrices kept in bf16 (MedGemma's checkpoints are bf16).
//!
//! Widening bf16 to f32 is exact (the bf16 bits are the top half of the f32), so multiplying f32
//! activations by bf16 weights widened on the fly computes the same products as widening the
//! whole model at load, with half the memory (a 4B model: 8.6 GB instead of 17) and half the bytes
//! read per generated token. Few positions (decoding) go through a row-parallel kernel here; a
//! long prompt widens one matrix at a time for the float GEMM.

use candle_core::{DType, Tensor};
use half::bf16;

use crate::error::{LlmError, Result};

/// Positions from which a product widens the whole matrix and uses the float GEMM.
const GEMM_ROWS: usize = 8;
/// Largest matrix widened that way (f32 values); the output head of a large vocabulary is not.
const GEMM_MAX_WEIGHTS: usize = 64 << 20;
/// Lanes of the partial sums: wide enough for the compiler to use whole vector registers.
const LANES: usize = 16;

/// `x @ w^T` for an f32 activation `[.., in]` and a bf16 weight `[out, in]` on the CPU.
pub(crate) fn linear_bf16(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (rows, cols) = weight.dims2()?;
    if weight.dtype() != DType::BF16 {
        return Err(LlmError::Internal(format!(
            "a {:?} matrix is not bf16",
            weight.dtype()
        )));
    }
    let positions = x.elem_count() / cols.max(1);
    let weight = weight.contiguous()?;
    let (storage, layout) = weight.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(cpu)
            if positions < GEMM_ROWS || rows * cols > GEMM_MAX_WEIGHTS =>
        {
            let start = layout.start_offset();
            let weights = &cpu.as_slice::<bf16>()?[start..start + rows * cols];
            super::cpu_product(x, cols, rows, |values, positions| {
                Some(matmul(values, positions, weights, rows, cols))
            })
        }
        _ => Ok(x.broadcast_matmul(&weight.to_dtype(DType::F32)?.t()?)?),
    }
}

/// `out[p, r] = sum_k x[p, k] * w[r, k]`, rows split across candle's worker threads.
fn matmul(x: &[f32], positions: usize, w: &[bf16], rows: usize, cols: usize) -> Vec<f32> {
    debug_assert!(x.len() >= positions * cols && w.len() >= rows * cols);
    let mut out = vec![0f32; positions * rows];
    let writes = super::DisjointWrites::new(&mut out);
    let dot = dot_kernel();
    const ROWS_PER_ITEM: usize = 16;
    candle_core::utils::barrier_pool().execute_chunked(rows.div_ceil(ROWS_PER_ITEM), |items| {
        let mut widened = vec![0f32; cols];
        for row in items.start * ROWS_PER_ITEM..rows.min(items.end * ROWS_PER_ITEM) {
            widen(&w[row * cols..(row + 1) * cols], &mut widened);
            for p in 0..positions {
                let sum = dot(&x[p * cols..(p + 1) * cols], &widened);
                // SAFETY: every (position, row) is written by the one item that owns the row,
                // inside `out`.
                unsafe { writes.slice(p * rows + row, 1)[0] = sum };
            }
        }
    });
    out
}

fn widen(row: &[bf16], out: &mut [f32]) {
    for (o, v) in out.iter_mut().zip(row) {
        *o = f32::from_bits(u32::from(v.to_bits()) << 16);
    }
}

/// The dot product for the widest vectors this CPU has.
pub(crate) fn dot_kernel() -> fn(&[f32], &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the instructions were just detected.
        return |a, b| unsafe { dot_avx512(a, b) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the instructions were just detected.
        return |a, b| unsafe { dot_avx2(a, b) };
    }
    dot_portable
}

/// `out += weight * x` for the widest vectors this CPU has (a weighted sum of rows).
pub(crate) fn axpy_kernel() -> fn(f32, &[f32], &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the instructions were just detected.
        return |w, x, out| unsafe { axpy_avx512(w, x, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the instructions were just detected.
        return |w, x, out| unsafe { axpy_avx2(w, x, out) };
    }
    axpy_portable
}

/// [`axpy_fused`] without the fused multiply-add, a slow library call without the instruction.
fn axpy_portable(weight: f32, x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o += weight * v;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    dot_fused(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_fused(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn axpy_avx512(weight: f32, x: &[f32], out: &mut [f32]) {
    axpy_fused(weight, x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(weight: f32, x: &[f32], out: &mut [f32]) {
    axpy_fused(weight, x, out)
}

#[inline(always)]
fn axpy_fused(weight: f32, x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = weight.mul_add(v, *o);
    }
}

/// Sixteen independent partial sums (no reassociation needed, so the compiler vectorizes it),
/// with fused multiply-adds: for the callers compiled with FMA.
#[inline(always)]
fn dot_fused(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b, f32::mul_add)
}

/// [`dot_fused`] without the fused multiply-add, which is a slow library call on CPUs (and in
/// code compiled) without the instruction.
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b, |x, y, acc| acc + x * y)
}

#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32], multiply_add: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let (a_body, a_tail) = a.split_at(a.len() / LANES * LANES);
    let (b_body, b_tail) = b.split_at(a_body.len());
    for (x, y) in a_body.chunks_exact(LANES).zip(b_body.chunks_exact(LANES)) {
        for i in 0..LANES {
            lanes[i] = multiply_add(x[i], y[i], lanes[i]);
        }
    }
    let mut sum = lanes.iter().sum::<f32>();
    for (x, y) in a_tail.iter().zip(b_tail) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn portable_and_detected_kernels_agree() {
        // Lengths with and without a tail after the 16 lanes.
        for len in [1usize, 16, 37, 256] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let exact: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            for dot in [dot_portable, dot_kernel()] {
                assert!((f64::from(dot(&a, &b)) - exact).abs() < 1e-4, "dot, {len}");
            }
            let (mut portable, mut detected) = (b.clone(), b.clone());
            axpy_portable(0.5, &a, &mut portable);
            axpy_kernel()(0.5, &a, &mut detected);
            for ((p, d), (x, y)) in portable.iter().zip(&detected).zip(a.iter().zip(&b)) {
                assert!((p - (0.5 * x + y)).abs() < 1e-6 && (d - (0.5 * x + y)).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn products_equal_the_widened_float_product() {
        let device = Device::Cpu;
        // Few positions (the kernel) and many (the GEMM); widths with and without a tail.
        for &(rows, cols, positions) in &[(37, 64, 1), (20, 70, 3), (33, 128, 9)] {
            let weight: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7919) % 997) as f32 / 500.0 - 1.0)
                .collect();
            let weight = Tensor::from_vec(weight, (rows, cols), &device)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap();
            let x: Vec<f32> = (0..positions * cols)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let x = Tensor::from_vec(x, (1, positions, cols), &device).unwrap();
            let ours = linear_bf16(&x, &weight).unwrap();
            assert_eq!(ours.dims(), &[1, positions, rows]);
            let widened = weight.to_dtype(DType::F32).unwrap();
            let reference = x.broadcast_matmul(&widened.t().unwrap()).unwrap();
            let diff = (ours - reference)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "{rows}x{cols}, {positions} positions: {diff}");
        }
        let weight = Tensor::zeros((4, 8), DType::BF16, &device).unwrap();
        let x = Tensor::zeros((1, 1, 9), DType::F32, &device).unwrap();
        assert!(linear_bf16(&x, &weight).is_err());
    }
}
