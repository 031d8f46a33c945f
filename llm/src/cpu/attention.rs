//! Attention of one new position (a decode step) over the key/value cache, read straight from
//! the cache's buffers. Through candle this is two small matrix products per layer, each packing
//! its operands and waking the threads; at a 600-token context that was about 8% of a 4B decode
//! step, growing with the context.

use candle_core::{DType, Storage, Tensor};

use crate::error::Result;

/// `softmax(q k^T * scale) v` for one query position: `q` is `[1, heads, 1, head_dim]`, `keys`
/// and `values` `[1, kv_heads, context, head_dim]` (views of the cache, rows contiguous), and
/// query head `h` reads key/value head `h / (heads / kv_heads)`. `None` when the tensors are not
/// of that form (another device or type, or a layout this does not read): the caller then takes
/// the general path.
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
            let mut max = f32::NEG_INFINITY;
            for (weight, key) in weights.iter_mut().zip(head_keys.chunks_exact(head_dim)) {
                *weight = dot(q, key) * scale;
                max = max.max(*weight);
            }
            let mut sum = 0f32;
            for weight in weights.iter_mut() {
                *weight = (*weight - max).exp();
                sum += *weight;
            }
            // SAFETY: head `head`'s output is written by the one item that owns it, inside `out`.
            let output = unsafe { writes.slice(head * head_dim, head_dim) };
            output.fill(0.0);
            for (&weight, value) in weights.iter().zip(head_values.chunks_exact(head_dim)) {
                axpy(weight / sum, value, output);
            }
        }
    });
    Ok(Some(Tensor::from_vec(
        out,
        (1, heads, 1, head_dim),
        q.device(),
    )?))
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
