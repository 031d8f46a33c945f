//! Attention on the CPU where candle's general path is slow.
//!
//! - One new position (a decode step) over the key/value cache, read straight from the cache's
//!   buffers. Through candle this is two small matrix products per layer, each packing its
//!   operands and waking the threads; at a 600-token context that was about 8% of a 4B decode
//!   step, growing with the context.
//! - Every position over every position, unmasked (the SigLIP vision tower: 4096 patches of an
//!   896-pixel image). Through candle's batched product the scores of all 16 heads are one 1 GiB
//!   tensor per layer, made of fresh pages each time, and the product of 16 heads of width 72 ran
//!   at under half the speed of one head at a time. Here each worker takes whole heads, computes
//!   their scores for 256 queries at a time (4 MiB, reused) with single-threaded products, and
//!   the softmax uses a vectorized `exp`.

use candle_core::{DType, Storage, Tensor};

use super::Strided;

use crate::error::Result;

/// `softmax(q k^T * scale) v` for one query position: `q` is `[1, heads, 1, head_dim]`, `keys`
/// and `values` `[1, kv_heads, context, head_dim]` (views of the cache, rows contiguous), and
/// query head `h` reads key/value head `h / (heads / kv_heads)`. `None` when the tensors are not
/// of that form (another device or type, a layout this does not read, or a scale that is not
/// positive): the caller then takes the general path.
pub(crate) fn decode_attention(
    q: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    scale: f64,
) -> Result<Option<Tensor>> {
    let (_, heads, positions, head_dim) = q.dims4()?;
    let (_, kv_heads, context, key_dim) = keys.dims4()?;
    if positions != 1
        || key_dim != head_dim
        || values.dims() != keys.dims()
        || kv_heads == 0
        || !heads.is_multiple_of(kv_heads)
        || !q.device().is_cpu()
        || [q.dtype(), keys.dtype(), values.dtype()] != [DType::F32; 3]
        || scale <= 0.0
    {
        return Ok(None);
    }
    let query = q.flatten_all()?.to_vec1::<f32>()?;
    let (key_storage, key_layout) = keys.storage_and_layout();
    let (value_storage, value_layout) = values.storage_and_layout();
    let (Storage::Cpu(key_cpu), Storage::Cpu(value_cpu)) = (&*key_storage, &*value_storage) else {
        return Ok(None);
    };
    let (all_keys, all_values) = (key_cpu.as_slice::<f32>()?, value_cpu.as_slice::<f32>()?);
    // Each kv head's `context` rows of `head_dim` values, one after another.
    let head_rows = |all: &[f32],
                     layout: &candle_core::Layout,
                     head: usize|
     -> Option<std::ops::Range<usize>> {
        let stride = layout.stride();
        (stride.len() == 4 && stride[3] == 1 && stride[2] == head_dim).then_some(())?;
        let start = layout
            .start_offset()
            .checked_add(head.checked_mul(stride[1])?)?;
        let end = start.checked_add(context.checked_mul(head_dim)?)?;
        (end <= all.len()).then_some(start..end)
    };
    let mut spans = Vec::with_capacity(kv_heads);
    for head in 0..kv_heads {
        match (
            head_rows(all_keys, key_layout, head),
            head_rows(all_values, value_layout, head),
        ) {
            (Some(k), Some(v)) => spans.push((k, v)),
            _ => return Ok(None),
        }
    }
    let repeat = heads / kv_heads;
    let scale = scale as f32;
    let (dot, axpy) = (super::bf16::dot_kernel(), super::bf16::axpy_kernel());
    let mut out = vec![0f32; heads * head_dim];
    let writes = super::DisjointWrites::new(&mut out);
    candle_core::utils::barrier_pool().execute_chunked(heads, |range| {
        let mut weights = vec![0f32; context];
        for head in range {
            let (key_span, value_span) = &spans[head / repeat];
            let (head_keys, head_values) =
                (&all_keys[key_span.clone()], &all_values[value_span.clone()]);
            let q = &query[head * head_dim..(head + 1) * head_dim];
            for (weight, key) in weights.iter_mut().zip(head_keys.chunks_exact(head_dim)) {
                *weight = dot(q, key);
            }
            softmax_row(&mut weights, scale);
            // SAFETY: head `head`'s output is written by the one item that owns it, inside `out`.
            let output = unsafe { writes.slice(head * head_dim, head_dim) };
            output.fill(0.0);
            for (&weight, value) in weights.iter().zip(head_values.chunks_exact(head_dim)) {
                axpy(weight, value, output);
            }
        }
    });
    Ok(Some(Tensor::from_vec(
        out,
        (1, heads, 1, head_dim),
        q.device(),
    )?))
}

/// Queries whose scores one worker computes at once in [`unmasked_attention`]: 256 x 4096
/// scores are 4 MiB per worker, reused for every block.
const QUERY_BLOCK: usize = 256;

/// `softmax(q k^T * scale) v` of every position over every position, for `qkv` `[positions, 3 *
/// width]` holding queries, keys and values side by side (head `h` at columns `h * head_dim..`
/// of each): `[positions, width]`, heads side by side. `scale` is positive. `None` off the CPU
/// or for another type.
///
/// Each of candle's workers takes whole heads and computes them alone, with single-threaded
/// products: a head's scores, softmax and product by the values then never hand over between
/// thread pools (candle's products run on rayon's threads, our loops on candle's barrier pool,
/// and each pool's threads spin a while after their work, so alternating them left two threads
/// competing for each core).
pub(crate) fn unmasked_attention(qkv: &Tensor, heads: usize, scale: f64) -> Result<Option<Tensor>> {
    let (positions, three_widths) = qkv.dims2()?;
    let width = three_widths / 3;
    if !qkv.device().is_cpu()
        || qkv.dtype() != DType::F32
        || heads == 0
        || !three_widths.is_multiple_of(3)
        || !width.is_multiple_of(heads)
        || positions == 0
    {
        return Ok(None);
    }
    let head_dim = width / heads;
    let qkv = qkv.contiguous()?;
    let (storage, layout) = qkv.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let start = layout.start_offset();
    let Some(all) = cpu
        .as_slice::<f32>()?
        .get(start..start + positions * three_widths)
    else {
        return Ok(None);
    };
    let scale = scale as f32;
    let mut out = vec![0f32; positions * width];
    let writes = super::DisjointWrites::new(&mut out);
    let stride = three_widths as isize;
    candle_core::utils::barrier_pool().execute_chunked(heads, |range| {
        let block_rows = QUERY_BLOCK.min(positions);
        let mut scores = vec![0f32; block_rows * positions];
        let mut block_out = vec![0f32; block_rows * head_dim];
        for head in range {
            let column = head * head_dim;
            for first in (0..positions).step_by(QUERY_BLOCK) {
                let rows = QUERY_BLOCK.min(positions - first);
                let queries = &all[first * three_widths + column..];
                let keys = &all[width + column..];
                let values = &all[2 * width + column..];
                // SAFETY: every element read is inside `all`: query (first + i, d) at
                // (first + i) * 3w + column + d, key (c, d) at c * 3w + w + column + d, value
                // (c, d) at c * 3w + 2w + column + d, with i < rows, c < positions and
                // d < head_dim, so column + d < w; the outputs are this worker's own buffers,
                // `rows x positions` and `rows x head_dim`.
                unsafe {
                    super::product(
                        (rows, positions, head_dim),
                        scores.as_mut_ptr(),
                        positions,
                        false,
                        Strided {
                            start: queries.as_ptr(),
                            row_stride: stride,
                            column_stride: 1,
                        },
                        // The keys' transpose: key c's values are column c.
                        Strided {
                            start: keys.as_ptr(),
                            row_stride: 1,
                            column_stride: stride,
                        },
                    );
                }
                for row in scores[..rows * positions].chunks_exact_mut(positions) {
                    softmax_row(row, scale);
                }
                // SAFETY: as above; the weights are `rows x positions` of `scores`.
                unsafe {
                    super::product(
                        (rows, head_dim, positions),
                        block_out.as_mut_ptr(),
                        head_dim,
                        false,
                        Strided {
                            start: scores.as_ptr(),
                            row_stride: positions as isize,
                            column_stride: 1,
                        },
                        Strided {
                            start: values.as_ptr(),
                            row_stride: stride,
                            column_stride: 1,
                        },
                    );
                }
                for (row, values) in block_out[..rows * head_dim]
                    .chunks_exact(head_dim)
                    .enumerate()
                {
                    // SAFETY: head `head`'s columns of row `first + row` are written by the one
                    // work item that owns the head, inside `out`.
                    let target = unsafe { writes.slice((first + row) * width + column, head_dim) };
                    target.copy_from_slice(values);
                }
            }
        }
    });
    Ok(Some(Tensor::from_vec(
        out,
        (positions, width),
        qkv.device(),
    )?))
}

/// `softmax(row * scale)` in place, `scale` positive.
fn softmax_row(row: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the instructions were just detected.
        return unsafe { softmax_row_avx2(row, scale) };
    }
    softmax_row_portable(row, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(row: &mut [f32], scale: f32) {
    softmax_row_portable(row, scale)
}

/// Eight running maxima and sums, so the compiler can keep them in one vector register.
#[inline(always)]
fn softmax_row_portable(row: &mut [f32], scale: f32) {
    const LANES: usize = 8;
    let mut maxima = [f32::NEG_INFINITY; LANES];
    let mut lanes = row.chunks_exact(LANES);
    for chunk in &mut lanes {
        for (m, &s) in maxima.iter_mut().zip(chunk) {
            *m = m.max(s);
        }
    }
    let max = lanes
        .remainder()
        .iter()
        .chain(&maxima)
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for s in row.iter_mut() {
        *s = super::gelu::exp((*s - max) * scale);
    }
    let mut sums = [0f32; LANES];
    let mut lanes = row.chunks_exact(LANES);
    for chunk in &mut lanes {
        for (sum, &e) in sums.iter_mut().zip(chunk) {
            *sum += e;
        }
    }
    let sum: f32 = lanes.remainder().iter().sum::<f32>() + sums.iter().sum::<f32>();
    let inverse = 1.0 / sum;
    for s in row.iter_mut() {
        *s *= inverse;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn equals_the_matrix_product_path_on_a_view_of_the_cache() {
        let device = Device::Cpu;
        let (heads, kv_heads, head_dim, rows, first, context) = (8, 4, 32, 50, 7, 37);
        let values_of = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + seed) % 1000) as f32 / 500.0) - 1.0)
                .collect()
        };
        let q = Tensor::from_vec(
            values_of(heads * head_dim, 1),
            (1, heads, 1, head_dim),
            &device,
        )
        .unwrap();
        // A cache buffer of `rows` rows of which `context` from `first` are visible, as in use.
        let buffer = |seed| {
            Tensor::from_vec(
                values_of(kv_heads * rows * head_dim, seed),
                (1, kv_heads, rows, head_dim),
                &device,
            )
            .unwrap()
            .narrow(2, first, context)
            .unwrap()
        };
        let (keys, values) = (buffer(2), buffer(3));
        let scale = 0.17;
        let ours = decode_attention(&q, &keys, &values, scale)
            .unwrap()
            .unwrap();
        let grouped = q
            .reshape((1, kv_heads, heads / kv_heads, head_dim))
            .unwrap();
        let scores = (grouped.matmul(&keys.t().unwrap()).unwrap() * scale).unwrap();
        let probabilities = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let expected = probabilities
            .matmul(&values.contiguous().unwrap())
            .unwrap()
            .reshape((1, heads, 1, head_dim))
            .unwrap();
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let worst = flat(ours)
            .iter()
            .zip(&flat(expected))
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-5, "{worst}");
        // More than one query position is not this path's.
        let two = Tensor::zeros((1, heads, 2, head_dim), DType::F32, &device).unwrap();
        assert!(decode_attention(&two, &keys, &values, scale)
            .unwrap()
            .is_none());
    }
}
