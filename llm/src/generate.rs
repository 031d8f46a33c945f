//! Text generation: greedy or sampled (temperature, top-k, top-p, repetition penalty, seed),
//! stopping at end-of-turn/end-of-sequence or a token limit, streaming each token to a callback,
//! cancellable from another thread.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Result;
use crate::gemma3::Gemma3Text;
use crate::json_schema::SchemaConstraint;

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Divides positive logits (multiplies negative ones) of tokens already generated; 1 = off.
    pub repetition_penalty: f32,
    /// Seed of the random generator.
    pub seed: u64,
    /// Most tokens to generate.
    pub max_new_tokens: usize,
}

impl Sampling {
    /// Refuses settings that cannot sample (NaN included): temperature 0-100, top-p 0-1,
    /// repetition penalty above 0, at least one token. The message names the options.
    pub fn check(&self) -> std::result::Result<(), String> {
        let within = |x: f32, low: f32, high: f32| x.is_finite() && (low..=high).contains(&x);
        let usable = within(self.temperature, 0.0, 100.0)
            && within(self.top_p, 0.0, 1.0)
            && self.repetition_penalty.is_finite()
            && self.repetition_penalty > 0.0
            && self.max_new_tokens > 0;
        if !usable {
            return Err(format!(
                "sampling settings out of range (temperature {}, top-p {}, repetition penalty {}, \
                 max tokens {}): --temperature must be 0-100, --top-p 0-1, \
                 --repetition-penalty above 0 and the token budget at least 1",
                self.temperature, self.top_p, self.repetition_penalty, self.max_new_tokens
            ));
        }
        Ok(())
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            max_new_tokens: 512,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model ended its turn.
    EndOfTurn,
    /// The token limit was reached.
    Length,
    /// Cancelled by the caller.
    Cancelled,
}

/// SplitMix64: small, seedable, good enough for sampling.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Picks the next token from `logits` (one row).
pub(crate) fn pick(
    logits: &mut [f32],
    sampling: &Sampling,
    previous: &[u32],
    rng: &mut Rng,
) -> u32 {
    if sampling.repetition_penalty != 1.0 {
        for &id in previous {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l > 0.0 {
                    *l / sampling.repetition_penalty
                } else {
                    *l * sampling.repetition_penalty
                };
            }
        }
    }
    let argmax = || {
        let mut best = 0usize;
        for (i, &v) in logits.iter().enumerate() {
            if v > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if sampling.temperature <= 0.0 {
        return argmax();
    }
    let mut order: Vec<usize> = (0..logits.len())
        .filter(|&i| logits[i].is_finite())
        .collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if sampling.top_k > 0 {
        order.truncate(sampling.top_k);
    }
    if order.is_empty() {
        return argmax();
    }
    let max = logits[order[0]];
    let mut weights: Vec<f32> = order
        .iter()
        .map(|&i| ((logits[i] - max) / sampling.temperature).exp())
        .collect();
    let total: f32 = weights.iter().sum();
    if sampling.top_p < 1.0 {
        let mut cumulative = 0.0;
        let mut keep = weights.len();
        for (n, w) in weights.iter().enumerate() {
            cumulative += w / total;
            if cumulative >= sampling.top_p {
                keep = n + 1;
                break;
            }
        }
        weights.truncate(keep);
        order.truncate(keep);
    }
    let total: f32 = weights.iter().sum();
    let mut target = rng.next_f32() * total;
    for (i, w) in order.iter().zip(&weights) {
        if target < *w {
            return *i as u32;
        }
        target -= w;
    }
    order[order.len() - 1] as u32
}

/// Images of a prompt: the soft token that stands for them and their projected features
/// (`[n_images, tokens_per_image, hidden]`, see [`crate::vision::Gemma3Vision::image_features`]).
#[derive(Debug, Clone)]
pub struct PromptImages {
    /// `<image_soft_token>`'s id.
    pub soft_token: u32,
    /// The features, in prompt order.
    pub features: candle_core::Tensor,
}

/// Generates after `prompt` (fed to the model from its current state). `on_token` sees each new
/// id and may return false to stop. Returns the new ids (stop token excluded) and why it ended.
pub fn generate(
    model: &mut Gemma3Text,
    prompt: &[u32],
    stop_ids: &[u32],
    sampling: &Sampling,
    cancel: &AtomicBool,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<(Vec<u32>, StopReason)> {
    generate_with_images(model, prompt, None, stop_ids, sampling, cancel, on_token)
}

/// Like [`generate`], with images bound to the prompt's soft tokens.
pub fn generate_with_images(
    model: &mut Gemma3Text,
    prompt: &[u32],
    images: Option<&PromptImages>,
    stop_ids: &[u32],
    sampling: &Sampling,
    cancel: &AtomicBool,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<(Vec<u32>, StopReason)> {
    let mut rng = Rng(sampling.seed);
    let mut generated: Vec<u32> = Vec::new();
    let mut logits = match images {
        Some(images) => {
            model.forward_with_images(prompt, images.soft_token, &images.features, false)?
        }
        None => model.forward(prompt, false)?,
    };
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok((generated, StopReason::Cancelled));
        }
        if generated.len() >= sampling.max_new_tokens {
            return Ok((generated, StopReason::Length));
        }
        let mut row: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        let next = pick(&mut row, sampling, &generated, &mut rng);
        if stop_ids.contains(&next) {
            return Ok((generated, StopReason::EndOfTurn));
        }
        generated.push(next);
        if !on_token(next) {
            return Ok((generated, StopReason::Cancelled));
        }
        logits = model.forward(&[next], false)?;
    }
}

/// Like [`generate_with_images`], held to a JSON schema: the reply is `constraint`'s document,
/// complete and valid within `sampling.max_new_tokens` (which must be at least
/// [`SchemaConstraint::minimum_tokens`]). `on_token` sees every id of the reply, the forced
/// skeleton included. Ends once the document is complete: [`StopReason::EndOfTurn`], or
/// [`StopReason::Length`] if the budget made it end the cheapest way.
pub fn generate_json(
    model: &mut Gemma3Text,
    prompt: &[u32],
    images: Option<&PromptImages>,
    constraint: &mut SchemaConstraint<'_>,
    sampling: &Sampling,
    cancel: &AtomicBool,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<(Vec<u32>, StopReason)> {
    let budget = sampling.max_new_tokens;
    if budget < constraint.minimum_tokens() {
        return Err(crate::LlmError::Setting(format!(
            "{budget} tokens cannot hold a document of this schema ({} at least)",
            constraint.minimum_tokens()
        )));
    }
    let mut rng = Rng(sampling.seed);
    let mut generated: Vec<u32> = Vec::new();
    let mut input = prompt.to_vec();
    let mut first = true;
    loop {
        let forced = constraint.take_forced(budget.saturating_sub(generated.len()))?;
        for &id in &forced {
            generated.push(id);
            if !on_token(id) {
                return Ok((generated, StopReason::Cancelled));
            }
        }
        input.extend(forced);
        if constraint.is_done() {
            let reason = if constraint.truncated() {
                StopReason::Length
            } else {
                StopReason::EndOfTurn
            };
            return Ok((generated, reason));
        }
        if cancel.load(Ordering::Relaxed) {
            return Ok((generated, StopReason::Cancelled));
        }
        let logits = match (first, images) {
            (true, Some(images)) => {
                model.forward_with_images(&input, images.soft_token, &images.features, false)?
            }
            _ => model.forward(&input, false)?,
        };
        first = false;
        let mut row: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        constraint.mask(&mut row, budget.saturating_sub(generated.len()));
        let next = pick(&mut row, sampling, &generated, &mut rng);
        constraint.accept(next)?;
        generated.push(next);
        if !on_token(next) {
            return Ok((generated, StopReason::Cancelled));
        }
        input = vec![next];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest() {
        let mut rng = Rng(1);
        assert_eq!(
            pick(&mut [0.1, 3.0, 2.0], &Sampling::default(), &[], &mut rng),
            1
        );
    }

    #[test]
    fn repetition_penalty_pushes_away_from_used_tokens() {
        let mut rng = Rng(1);
        let sampling = Sampling {
            repetition_penalty: 2.0,
            ..Sampling::default()
        };
        assert_eq!(pick(&mut [0.1, 3.0, 2.0], &sampling, &[1], &mut rng), 2);
    }

    #[test]
    fn sampling_respects_top_k_and_is_reproducible() {
        let sampling = Sampling {
            temperature: 1.0,
            top_k: 2,
            seed: 7,
            ..Sampling::default()
        };
        let logits = [1.0f32, 1.1, 5.0, 4.9, -2.0];
        let draw = |seed| {
            let mut rng = Rng(seed);
            (0..200)
                .map(|_| pick(&mut logits.clone(), &sampling, &[], &mut rng))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert!(a.iter().all(|&t| t == 2 || t == 3), "only the top 2");
        assert!(a.contains(&2) && a.contains(&3));
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let sampling = Sampling {
            temperature: 1.0,
            top_p: 0.5,
            ..Sampling::default()
        };
        let mut rng = Rng(3);
        for _ in 0..100 {
            assert_eq!(pick(&mut [0.0, 10.0, 0.0], &sampling, &[], &mut rng), 1);
        }
    }
}
