//! GELU-tanh on the CPU: the gated form of Gemma's MLP, `gelu_tanh(gate) * up`, in one pass, and the
//! plain form of the SigLIP vision tower's MLP.
//!
//! candle computes GELU-tanh element by element through libm's `tanhf`: for a 157-token prompt
//! of Gemma 3 270M that was a fifth of the whole prefill. Here `0.5 x (1 + tanh(u))` is computed
//! as the identical `x / (1 + exp(-2u))` with a branch-free `exp` (Cephes' polynomial, about one
//! ulp) that the compiler vectorizes, split across candle's worker threads.

use candle_core::{Device, Tensor};

use crate::error::Result;

/// sqrt(2 / pi), as in the tanh form of GELU.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_CUBIC: f32 = 0.044_715;
/// Elements per work item: large enough that a thread hand-off is cheap beside the work.
const CHUNK: usize = 8192;

/// `gelu_tanh(gate) * up` for tensors of the same shape.
pub(crate) fn gelu_tanh_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !matches!(gate.device(), Device::Cpu) || gate.dtype() != candle_core::DType::F32 {
        return Ok((gate.gelu()? * up)?);
    }
    let gate_values = gate.flatten_all()?.to_vec1::<f32>()?;
    let up_values = up.flatten_all()?.to_vec1::<f32>()?;
    if gate_values.len() != up_values.len() {
        return Ok((gate.gelu()? * up)?);
    }
    let out = in_parallel(&gate_values, &up_values);
    Ok(Tensor::from_vec(out, gate.shape(), gate.device())?)
}

/// `gelu_tanh(gate) * up` (of the same length), split across candle's workers.
fn in_parallel(gate: &[f32], up: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; gate.len()];
    let len = out.len();
    let writes = super::DisjointWrites::new(&mut out);
    candle_core::utils::barrier_pool().execute_chunked(len.div_ceil(CHUNK), |chunks| {
        let start = chunks.start * CHUNK;
        let end = len.min(chunks.end * CHUNK);
        // SAFETY: work items cover disjoint ranges of `out`, inside its length.
        let out = unsafe { writes.slice(start, end - start) };
        gated(&gate[start..end], &up[start..end], out);
    });
    out
}

fn gated(gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the instructions were just detected.
        return unsafe { gated_avx512(gate, up, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the instructions were just detected.
        return unsafe { gated_avx2(gate, up, out) };
    }
    gated_portable(gate, up, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gated_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
    gated_portable(gate, up, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gated_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
    gated_portable(gate, up, out)
}

#[inline(always)]
fn gated_portable(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &x), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = gelu_tanh(x) * u;
    }
}

/// `x = gelu_tanh(x)` over a slice, on the calling thread: the SigLIP vision tower's MLP
/// activation, applied by each worker to the rows it has just computed.
pub(crate) fn gelu_tanh_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the instructions were just detected.
        return unsafe { in_place_avx2(values) };
    }
    in_place_portable(values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn in_place_avx2(values: &mut [f32]) {
    in_place_portable(values)
}

#[inline(always)]
fn in_place_portable(values: &mut [f32]) {
    for x in values.iter_mut() {
        *x = gelu_tanh(*x);
    }
}

/// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, written as `x / (1 + exp(-2u))`.
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
    x / (1.0 + exp(-2.0 * u))
}

/// `e^x` to about one ulp, without branches or library calls (Cephes `expf`): x = n ln2 + r
/// with |r| <= ln2 / 2, a degree-6 polynomial for e^r, then 2^n through the exponent bits.
/// Inputs are clamped to where 2^n is a normal float (e^88 for larger x, e^-87 for smaller).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Adding 1.5 * 2^23 rounds to an integer, which the low mantissa bits then hold.
    const ROUNDER: f32 = 12_582_912.0;
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    let exponent = shifted.to_bits().wrapping_sub(ROUNDER.to_bits()) as i32 + 127;
    e_r * f32::from_bits((exponent as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_gelu(x: f64) -> f64 {
        let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
        0.5 * x * (1.0 + u.tanh())
    }

    #[test]
    fn exp_is_within_two_ulps_over_its_range() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let expected = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(
                ((got - expected) / expected).abs() < 2.5e-7,
                "exp({x}) = {got}, expected {expected}"
            );
            x += 0.0137;
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) > 0.0 && exp(1000.0).is_finite());
    }

    #[test]
    fn gelu_matches_the_tanh_formula_in_f64() {
        let mut worst = 0f64;
        let mut x = -30.0f32;
        while x < 30.0 {
            let expected = reference_gelu(x as f64);
            let got = gelu_tanh(x) as f64;
            // Relative where the value is not tiny, absolute near zero.
            worst = worst.max((got - expected).abs() / expected.abs().max(1e-3));
            x += 0.00731;
        }
        assert!(worst < 1e-6, "worst error {worst}");
        assert_eq!(gelu_tanh(0.0), 0.0);
        assert!(gelu_tanh(-100.0).abs() < 1e-30);
        assert_eq!(gelu_tanh(100.0), 100.0);
    }

    #[test]
    fn gated_product_equals_candles_gelu_times_up() {
        let n = 3 * CHUNK + 17;
        let gate: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 6.0).collect();
        let up: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let gate = Tensor::from_vec(gate, (1, n), &Device::Cpu).unwrap();
        let up = Tensor::from_vec(up, (1, n), &Device::Cpu).unwrap();
        let ours = gelu_tanh_mul(&gate, &up)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let candle = (gate.gelu().unwrap() * &up)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let worst = ours
            .iter()
            .zip(&candle)
            .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
        assert!(worst < 5e-6, "max diff {worst}");
    }

    #[test]
    fn gelu_in_place_equals_candles() {
        let n = 2 * CHUNK + 5;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.29).sin() * 7.0).collect();
        let candle = Tensor::from_vec(x.clone(), (n,), &Device::Cpu)
            .unwrap()
            .gelu()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut ours = x;
        gelu_tanh_in_place(&mut ours);
        let worst = ours
            .iter()
            .zip(&candle)
            .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
        assert!(worst < 5e-6, "max diff {worst}");
    }
}
