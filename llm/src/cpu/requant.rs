//! Exact re-encoding of GGUF Q5_0 weights as Q8_0. A Q5_0 block holds 32 five-bit integers
//! (-16..15) and one f16 scale; Q8_0 holds 32 eight-bit integers and the same kind of scale, so
//! every Q5_0 block has a Q8_0 twin with identical values. candle multiplies Q8_0 with SIMD but
//! Q5_0 only with scalar code, and llama.cpp stores every 640-wide matrix of Gemma 3 270M as Q5_0
//! (k-quants need rows of 256): re-encoded at load, those matrices multiply several times faster
//! for 1.5x their memory (34 bytes per block instead of 22), with the same integer arithmetic.

const BLOCK: usize = 32;
const Q5_0_BYTES: usize = 22;
const Q8_0_BYTES: usize = 34;

/// The Q8_0 encoding of Q5_0 data (ggml block layout); `None` if `q5_0` is not whole blocks.
pub(crate) fn q5_0_to_q8_0(q5_0: &[u8]) -> Option<Vec<u8>> {
    if !q5_0.len().is_multiple_of(Q5_0_BYTES) {
        return None;
    }
    let mut out = Vec::with_capacity(q5_0.len() / Q5_0_BYTES * Q8_0_BYTES);
    // The bit shuffling vectorizes with AVX2; builds for the baseline CPU pick it at run time.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the instructions were just detected.
        unsafe { reencode_avx2(q5_0, &mut out) };
        return Some(out);
    }
    reencode(q5_0, &mut out);
    Some(out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn reencode_avx2(q5_0: &[u8], out: &mut Vec<u8>) {
    reencode(q5_0, out)
}

#[inline(always)]
fn reencode(q5_0: &[u8], out: &mut Vec<u8>) {
    for block in q5_0.chunks_exact(Q5_0_BYTES) {
        // d (f16), qh (32 high bits, little endian), qs (low nibbles: j and j + 16).
        out.extend_from_slice(&block[..2]);
        let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
        let qs = &block[6..];
        let value = |j: usize| -> i8 {
            let low = if j < BLOCK / 2 {
                qs[j] & 0x0F
            } else {
                qs[j - BLOCK / 2] >> 4
            };
            let high = (((qh >> j) & 1) << 4) as u8;
            ((low | high) as i8) - 16
        };
        out.extend((0..BLOCK).map(|j| value(j) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
    use candle_core::Device;

    #[test]
    fn q8_0_twin_has_exactly_the_q5_0_values() {
        // Every byte pattern of qh and qs, with scales of both signs and sizes.
        let mut raw = Vec::new();
        let mut state = 0x9E37_79B9u32;
        for block in 0..512u32 {
            let scale = half::f16::from_f32(if block % 2 == 0 { 0.013 } else { -2.5 });
            raw.extend_from_slice(&scale.to_le_bytes());
            for _ in 0..20 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                raw.push((state >> 24) as u8);
            }
        }
        let q8 = q5_0_to_q8_0(&raw).unwrap();
        let dims = vec![16, 1024];
        let five = qtensor_from_ggml(GgmlDType::Q5_0, &raw, dims.clone(), &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let eight = qtensor_from_ggml(GgmlDType::Q8_0, &q8, dims, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let five: Vec<f32> = five.flatten_all().unwrap().to_vec1().unwrap();
        let eight: Vec<f32> = eight.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(five, eight);
        assert!(five.iter().any(|x| *x != 0.0));
        assert!(q5_0_to_q8_0(&raw[..21]).is_none());
    }
}
