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
//! - A prompt's positions over the cache, causal (and within the sliding window on local
//!   layers): the same per-head blocks, each block's scores only over the keys some of its
//!   queries see, and no mask tensor. Through candle a 512-token prompt of the 270M model made a
//!   mask, the scores, their scaled and masked copies and the softmax as fresh tensors in every
//!   layer (a fifth of the prompt's time went to those products, page clearing and freeing).

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
    let Some(Sizes {
        heads,
        positions,
        head_dim,
        kv_heads,
        context,
    }) = sizes(q, keys, values, scale)?
    else {
        return Ok(None);
    };
    if positions != 1 {
        return Ok(None);
    }
    let query = q.flatten_all()?.to_vec1::<f32>()?;
    let (key_storage, key_layout) = keys.storage_and_layout();
    let (value_storage, value_layout) = values.storage_and_layout();
    let Some(CacheRows {
        keys: all_keys,
        values: all_values,
        spans,
    }) = cache_rows(
        (&key_storage, key_layout),
        (&value_storage, value_layout),
        kv_heads,
        context,
        head_dim,
    )?
    else {
        return Ok(None);
    };
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

/// The sizes of queries `[1, heads, positions, head_dim]` over a cache's keys and values
/// `[1, kv_heads, context, head_dim]`.
struct Sizes {
    heads: usize,
    positions: usize,
    head_dim: usize,
    kv_heads: usize,
    context: usize,
}

/// The sizes, when the tensors are of that form in f32 on the CPU, every `kv_heads`-th query
/// head shares a kv head, and `scale` is positive (as the softmax here needs).
fn sizes(q: &Tensor, keys: &Tensor, values: &Tensor, scale: f64) -> Result<Option<Sizes>> {
    let (_, heads, positions, head_dim) = q.dims4()?;
    let (_, kv_heads, context, key_dim) = keys.dims4()?;
    let fits = key_dim == head_dim
        && values.dims() == keys.dims()
        && kv_heads != 0
        && heads.is_multiple_of(kv_heads)
        && q.device().is_cpu()
        && [q.dtype(), keys.dtype(), values.dtype()] == [DType::F32; 3]
        && scale > 0.0;
    Ok(fits.then_some(Sizes {
        heads,
        positions,
        head_dim,
        kv_heads,
        context,
    }))
}

/// Each kv head's `context` rows of `head_dim` values in the key and value buffers.
type HeadSpans = Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>;
/// The key and value buffers of `[1, kv_heads, context, head_dim]` views of the cache and where
/// each kv head's rows lie in them; `None` off the CPU or for a layout whose rows are not
/// contiguous.
fn cache_rows<'a>(
    (key_storage, key_layout): (&'a Storage, &candle_core::Layout),
    (value_storage, value_layout): (&'a Storage, &candle_core::Layout),
    kv_heads: usize,
    context: usize,
    head_dim: usize,
) -> Result<Option<CacheRows<'a>>> {
    let (Storage::Cpu(key_cpu), Storage::Cpu(value_cpu)) = (key_storage, value_storage) else {
        return Ok(None);
    };
    let (all_keys, all_values) = (key_cpu.as_slice::<f32>()?, value_cpu.as_slice::<f32>()?);
    let rows = |all: &[f32], layout: &candle_core::Layout, head: usize| {
        let stride = layout.stride();
        (stride.len() == 4 && stride[3] == 1 && stride[2] == head_dim).then_some(())?;
        let start = layout
            .start_offset()
            .checked_add(head.checked_mul(stride[1])?)?;
        let end = start.checked_add(context.checked_mul(head_dim)?)?;
        (end <= all.len()).then_some(start..end)
    };
    let spans = (0..kv_heads)
        .map(|head| {
            Some((
                rows(all_keys, key_layout, head)?,
                rows(all_values, value_layout, head)?,
            ))
        })
        .collect::<Option<HeadSpans>>();
    Ok(spans.map(|spans| CacheRows {
        keys: all_keys,
        values: all_values,
        spans,
    }))
}

/// The key and value buffers, and where each kv head's rows lie in them.
struct CacheRows<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    spans: HeadSpans,
}

/// `len` f32 values of a tensor's storage from its layout's start; `None` off the CPU or where
/// the storage is shorter.
fn cpu_values<'a>(
    storage: &'a Storage,
    layout: &candle_core::Layout,
    len: usize,
) -> Result<Option<&'a [f32]>> {
    let Storage::Cpu(cpu) = storage else {
        return Ok(None);
    };
    let start = layout.start_offset();
    Ok(cpu.as_slice::<f32>()?.get(start..start.saturating_add(len)))
}

/// Queries per block in [`causal_attention`]: small enough that a block's keys are close to
/// what each of its queries sees (the causal triangle), large enough for the products.
const CAUSAL_BLOCK: usize = 128;

/// `softmax(q k^T * scale) v` for a prompt's positions over the cache, each query seeing the keys
/// at or before its own position and, with a `window`, after `position - window` (Gemma's local
/// layers). `q` is `[1, heads, len, head_dim]` for positions `start..start + len`; `keys` and
/// `values` `[1, kv_heads, total, head_dim]` (views of the cache, rows contiguous) for positions
/// `key_start..key_start + total`; query head `h` reads kv head `h / (heads / kv_heads)`.
/// Returns `[1, len, heads * head_dim]`, heads side by side. `None` when the tensors are not of
/// that form, the scale is not positive, or a query would see no key: the caller then takes the
/// general path.
pub(crate) fn causal_attention(
    q: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    scale: f64,
    (start, key_start): (usize, usize),
    window: Option<usize>,
) -> Result<Option<Tensor>> {
    let Some(Sizes {
        heads,
        positions: len,
        head_dim,
        kv_heads,
        context: total,
    }) = sizes(q, keys, values, scale)?
    else {
        return Ok(None);
    };
    if len == 0 || window == Some(0) {
        return Ok(None);
    }
    // The keys query `i` sees: indices `lo..hi` of the cache's rows, both growing with `i`.
    let seen = |i: usize| -> (usize, usize) {
        let position = start + i;
        let hi = (position + 1).saturating_sub(key_start).min(total);
        let lo = window.map_or(0, |w| {
            (position + 1).saturating_sub(w).saturating_sub(key_start)
        });
        (lo, hi)
    };
    if (0..len).any(|i| {
        let (lo, hi) = seen(i);
        lo >= hi
    }) {
        return Ok(None);
    }
    let q = q.contiguous()?;
    let (query_storage, query_layout) = q.storage_and_layout();
    let Some(queries) = cpu_values(&query_storage, query_layout, heads * len * head_dim)? else {
        return Ok(None);
    };
    let (key_storage, key_layout) = keys.storage_and_layout();
    let (value_storage, value_layout) = values.storage_and_layout();
    let Some(CacheRows {
        keys: all_keys,
        values: all_values,
        spans,
    }) = cache_rows(
        (&key_storage, key_layout),
        (&value_storage, value_layout),
        kv_heads,
        total,
        head_dim,
    )?
    else {
        return Ok(None);
    };
    let (repeat, scale, width) = (heads / kv_heads, scale as f32, heads * head_dim);
    let mut out = vec![0f32; len * width];
    let writes = super::DisjointWrites::new(&mut out);
    candle_core::utils::barrier_pool().execute_chunked(heads, |range| {
        let block_rows = CAUSAL_BLOCK.min(len);
        let mut scores = vec![0f32; block_rows * total];
        let mut block_out = vec![0f32; block_rows * head_dim];
        for head in range {
            let (key_span, value_span) = &spans[head / repeat];
            let (head_keys, head_values) =
                (&all_keys[key_span.clone()], &all_values[value_span.clone()]);
            let head_queries = &queries[head * len * head_dim..(head + 1) * len * head_dim];
            for first in (0..len).step_by(CAUSAL_BLOCK) {
                let rows = CAUSAL_BLOCK.min(len - first);
                let (span_lo, _) = seen(first);
                let (_, span_hi) = seen(first + rows - 1);
                let keys_seen = span_hi - span_lo;
                // SAFETY: query (first + i, d) is at (first + i) * head_dim + d of the head's
                // `len x head_dim` rows, key (c, d) at (span_lo + c) * head_dim + d of its
                // `total x head_dim` rows, with i < rows, c < keys_seen <= total - span_lo and
                // d < head_dim; the output is this worker's `block_rows x total` buffer, written
                // as `rows x keys_seen` with row stride `keys_seen`.
                unsafe {
                    super::product(
                        (rows, keys_seen, head_dim),
                        scores.as_mut_ptr(),
                        keys_seen,
                        false,
                        Strided {
                            start: head_queries[first * head_dim..].as_ptr(),
                            row_stride: head_dim as isize,
                            column_stride: 1,
                        },
                        Strided {
                            start: head_keys[span_lo * head_dim..].as_ptr(),
                            row_stride: 1,
                            column_stride: head_dim as isize,
                        },
                    );
                }
                for (i, row) in scores[..rows * keys_seen]
                    .chunks_exact_mut(keys_seen)
                    .enumerate()
                {
                    let (lo, hi) = seen(first + i);
                    let (lo, hi) = (lo - span_lo, hi - span_lo);
                    softmax_row(&mut row[lo..hi], scale);
                    row[..lo].fill(0.0);
                    row[hi..].fill(0.0);
                }
                // SAFETY: the weights are `rows x keys_seen` of `scores`; value (c, d) is at
                // (span_lo + c) * head_dim + d of the head's rows, as for the keys.
                unsafe {
                    super::product(
                        (rows, head_dim, keys_seen),
                        block_out.as_mut_ptr(),
                        head_dim,
                        false,
                        Strided {
                            start: scores.as_ptr(),
                            row_stride: keys_seen as isize,
                            column_stride: 1,
                        },
                        Strided {
                            start: head_values[span_lo * head_dim..].as_ptr(),
                            row_stride: head_dim as isize,
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
                    let target =
                        unsafe { writes.slice((first + row) * width + head * head_dim, head_dim) };
                    target.copy_from_slice(values);
                }
            }
        }
    });
    Ok(Some(Tensor::from_vec(out, (1, len, width), q.device())?))
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
    let Some(all) = cpu_values(&storage, layout, positions * three_widths)? else {
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

    /// The general path of `gemma3::attention`: the mask as a tensor, candle's products.
    fn masked_reference(
        q: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        scale: f64,
        (start, key_start): (usize, usize),
        window: Option<usize>,
    ) -> Tensor {
        let (_, heads, len, head_dim) = q.dims4().unwrap();
        let (_, kv_heads, total, _) = keys.dims4().unwrap();
        let mut mask = Vec::with_capacity(len * total);
        for qi in 0..len {
            for kj in 0..total {
                let (qp, kp) = (start + qi, key_start + kj);
                let visible = kp <= qp && window.is_none_or(|w| kp + w > qp);
                mask.push(if visible { 0.0f32 } else { f32::NEG_INFINITY });
            }
        }
        let mask = Tensor::from_vec(mask, (len, total), q.device()).unwrap();
        let repeat = heads / kv_heads;
        let grouped = q.reshape((1, kv_heads, repeat * len, head_dim)).unwrap();
        let scores = (grouped.matmul(&keys.t().unwrap()).unwrap() * scale)
            .unwrap()
            .reshape((1, heads, len, total))
            .unwrap();
        let probabilities =
            candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask).unwrap()).unwrap();
        probabilities
            .reshape((1, kv_heads, repeat * len, total))
            .unwrap()
            .matmul(&values.contiguous().unwrap())
            .unwrap()
            .reshape((1, heads, len, head_dim))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((1, len, heads * head_dim))
            .unwrap()
    }

    #[test]
    fn causal_prompt_attention_equals_the_masked_products() {
        let device = Device::Cpu;
        let (heads, kv_heads, head_dim) = (4, 2, 16);
        let values_of = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 / 500.0) - 1.0)
                .collect()
        };
        // (start, len, key_start, total, window): a later chunk over a cache that keeps only
        // the window, a first chunk of several query blocks on a local and on a global layer,
        // and a window wider than the context.
        for (case, &(start, len, key_start, total, window)) in [
            (20usize, 37usize, 7usize, 50usize, Some(16usize)),
            (0, 300, 0, 300, Some(100)),
            (0, 300, 0, 300, None),
            (5, 140, 0, 145, Some(1024)),
        ]
        .iter()
        .enumerate()
        {
            let q = Tensor::from_vec(
                values_of(heads * len * head_dim, case),
                (1, heads, len, head_dim),
                &device,
            )
            .unwrap();
            // Views of a cache buffer longer than what is visible, as the cache returns them.
            let rows = total + 9;
            let buffer = |seed| {
                Tensor::from_vec(
                    values_of(kv_heads * rows * head_dim, seed),
                    (1, kv_heads, rows, head_dim),
                    &device,
                )
                .unwrap()
                .narrow(2, 3, total)
                .unwrap()
            };
            let (keys, values) = (buffer(case + 10), buffer(case + 20));
            let scale = 0.25;
            let ours = causal_attention(&q, &keys, &values, scale, (start, key_start), window)
                .unwrap()
                .expect("this layout is the causal path's");
            let expected = masked_reference(&q, &keys, &values, scale, (start, key_start), window);
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let worst = flat(&ours)
                .iter()
                .zip(&flat(&expected))
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert_eq!(ours.dims(), expected.dims());
            assert!(worst < 1e-5, "case {case}: max diff {worst}");
        }
        // A query that would see no key is the general path's (candle gives NaN there).
        let q = Tensor::zeros((1, heads, 2, head_dim), DType::F32, &device).unwrap();
        let keys = Tensor::zeros((1, kv_heads, 4, head_dim), DType::F32, &device).unwrap();
        assert!(causal_attention(&q, &keys, &keys, 0.25, (0, 1), None)
            .unwrap()
            .is_none());
        assert!(causal_attention(&q, &keys, &keys, -0.25, (3, 0), None)
            .unwrap()
            .is_none());
    }
}
