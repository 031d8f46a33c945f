//! A decoder layer: rotary embeddings, attention with its sliding-window and causal masks, and
//! the gated MLP.

use super::*;

/// Rotary tables for positions `start..start + len`: (cos, sin), each `[len, head_dim / 2]` (HF
/// repeats the same half twice), computed in f32 as HF does (inverse frequencies divided by the
/// linear factor).
pub(super) fn rope_tables(
    settings: RopeSettings,
    head_dim: usize,
    start: usize,
    len: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let base = settings.theta as f32;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| {
            1.0f32 / base.powf((2 * i) as f32 / head_dim as f32) / settings.linear_factor as f32
        })
        .collect();
    let mut cos = Vec::with_capacity(len * half);
    let mut sin = Vec::with_capacity(len * half);
    for position in start..start + len {
        let p = position as f32;
        for &f in &inv_freq {
            let angle = p * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (len, half), device)?,
        Tensor::from_vec(sin, (len, half), device)?,
    ))
}

/// `x * cos + rotate_half(x) * sin` for `x` of shape `[1, heads, len, head_dim]`, with candle-nn's
/// fused kernel (the same products and sums, per element).
pub(super) fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?)
}

#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) kind: LayerKind,
    pub(super) input_norm: Tensor,
    pub(super) post_attention_norm: Tensor,
    pub(super) pre_feedforward_norm: Tensor,
    pub(super) post_feedforward_norm: Tensor,
    /// q, k and v projections.
    pub(super) qkv: Projections,
    pub(super) o_proj: Matrix,
    pub(super) q_norm: Tensor,
    pub(super) k_norm: Tensor,
    /// Gate and up projections.
    pub(super) gate_up: Projections,
    pub(super) down_proj: Matrix,
    pub(super) cache: KvCache,
}

impl Layer {
    pub(super) fn forward(
        &mut self,
        x: &Tensor,
        start: usize,
        config: &Gemma3TextConfig,
        rope: &(Tensor, Tensor),
        groups: Option<&[u32]>,
        device: &Device,
    ) -> Result<Tensor> {
        let eps = config.rms_norm_eps;
        let residual = x;
        let h = rms_norm(x, &self.input_norm, eps)?;
        let h = self.attention(&h, start, config, rope, groups, device)?;
        let x = (residual + rms_norm(&h, &self.post_attention_norm, eps)?)?;
        let h = rms_norm(&x, &self.pre_feedforward_norm, eps)?;
        let [gate, up] = self.gate_up.forward::<2>(&h)?;
        let h = linear(&gelu_tanh_mul(&gate, &up)?, &self.down_proj)?;
        Ok((x + rms_norm(&h, &self.post_feedforward_norm, eps)?)?)
    }

    pub(super) fn attention(
        &mut self,
        x: &Tensor,
        start: usize,
        config: &Gemma3TextConfig,
        (cos, sin): &(Tensor, Tensor),
        groups: Option<&[u32]>,
        device: &Device,
    ) -> Result<Tensor> {
        let len = x.dim(1)?;
        let (nh, nkv, hd) = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        );
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((1, len, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let [q, k, v] = self.qkv.forward::<3>(x)?;
        let q = rms_norm(&heads(q, nh)?, &self.q_norm, config.rms_norm_eps)?;
        let k = rms_norm(&heads(k, nkv)?, &self.k_norm, config.rms_norm_eps)?;
        let v = heads(v, nkv)?;
        let q = apply_rope(&q, cos, sin)?;
        let k = apply_rope(&k, cos, sin)?;

        let window = config.sliding_window;
        let (keys, values, key_start) = self.cache.append(
            &k,
            &v,
            start,
            (self.kind == LayerKind::Sliding).then_some(window),
        )?;
        let total = keys.dim(2)?;
        // Mask: key position kp is visible to query position qp iff (kp <= qp or both are of the
        // same image in this chunk) and, on sliding layers, kp > qp - window (HF 5.x:
        // AND(window, OR(causal, same image))).
        let group_of = |position: usize| -> u32 {
            match groups {
                Some(g) if position >= start => g.get(position - start).copied().unwrap_or(0),
                _ => 0,
            }
        };
        let scale = config.query_pre_attn_scalar.powf(-0.5);
        // A prompt without images: causal (and windowed) attention on the CPU, with no mask.
        let has_images = groups.is_some_and(|g| g.iter().any(|&group| group != 0));
        if len > 1 && !has_images {
            let layer_window = (self.kind == LayerKind::Sliding).then_some(window);
            if let Some(out) = crate::cpu::attention::causal_attention(
                &q,
                &keys,
                &values,
                scale,
                (start, key_start),
                layer_window,
            )? {
                return linear(&out, &self.o_proj);
            }
        }
        // A single new position sees every key the cache returned (sliding layers return only
        // the window), so it needs no mask.
        let mask = (len > 1)
            .then(|| {
                let mut mask = Vec::with_capacity(len * total);
                for qi in 0..len {
                    let qp = start + qi;
                    let query_group = group_of(qp);
                    for kj in 0..total {
                        let kp = key_start + kj;
                        let same_image = query_group != 0 && group_of(kp) == query_group;
                        let visible = (kp <= qp || same_image)
                            && (self.kind == LayerKind::Full || kp + window > qp);
                        mask.push(if visible { 0.0f32 } else { f32::NEG_INFINITY });
                    }
                }
                Tensor::from_vec(mask, (len, total), device)
            })
            .transpose()?;

        // HF repeat_kv: query head h uses key/value head h / repeat. Rather than copying each
        // key/value head `repeat` times, the query heads that share one are stacked as rows of a
        // single product (a free reshape: q is contiguous, heads of a group adjacent).
        let repeat = nh / nkv;
        if mask.is_none() {
            if let Some(out) = crate::cpu::attention::decode_attention(&q, &keys, &values, scale)? {
                let out = out.transpose(1, 2)?.reshape((1, len, nh * hd))?;
                return linear(&out, &self.o_proj);
            }
        }
        let grouped_q = q.reshape((1, nkv, repeat * len, hd))?;
        let scores = (grouped_q.matmul(&keys.t()?)? * scale)?.reshape((1, nh, len, total))?;
        let probabilities = match &mask {
            Some(mask) => softmax_last(&scores.broadcast_add(mask)?)?,
            None => softmax_last(&scores)?,
        };
        let out = probabilities
            .reshape((1, nkv, repeat * len, total))?
            .matmul(&values)?
            .reshape((1, nh, len, hd))?;
        let out = out.transpose(1, 2)?.reshape((1, len, nh * hd))?;

        linear(&out, &self.o_proj)
    }
}
