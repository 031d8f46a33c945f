//! The K-quant kernels on AVX2: ggml's `vec_dot_q{4,6}_K_q8_K` (arch/x86/quants.c), with a
//! row's unpacked weights shared by up to four input positions, and the integer sums reduced per
//! super-block so that the f32 steps are exactly the scalar kernel's.

use std::arch::x86_64::*;

use super::{f16_at, InputBlocks, KQuant, QK_K};

/// `weights`: whole Q4_K super-blocks of one row; `sums[p]` gets its dot product with input
/// position `p` (`inputs.count` of them, at most four).
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn q4k(weights: &[u8], inputs: &InputBlocks, sums: &mut [f32]) {
    match inputs.count {
        1 => q4k_positions::<1>(weights, inputs, sums),
        2 => q4k_positions::<2>(weights, inputs, sums),
        3 => q4k_positions::<3>(weights, inputs, sums),
        _ => q4k_positions::<4>(weights, inputs, sums),
    }
}

/// As [`q4k`] for Q6_K super-blocks.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn q6k(weights: &[u8], inputs: &InputBlocks, sums: &mut [f32]) {
    match inputs.count {
        1 => q6k_positions::<1>(weights, inputs, sums),
        2 => q6k_positions::<2>(weights, inputs, sums),
        3 => q6k_positions::<3>(weights, inputs, sums),
        _ => q6k_positions::<4>(weights, inputs, sums),
    }
}

/// Whether the slices hold what a kernel for `P` positions reads: `inputs.blocks` weight blocks
/// and that many input blocks (values and 16-sums) for each position.
fn covers<const P: usize>(
    kind: KQuant,
    weights: &[u8],
    inputs: &InputBlocks,
    sums: &[f32],
) -> bool {
    let blocks = inputs.blocks;
    (1..=4).contains(&P)
        && inputs.count == P
        && sums.len() >= P
        && weights.len() >= blocks * kind.block_bytes()
        && inputs.scales.len() >= P * blocks
        && inputs.values.len() >= P * blocks * QK_K
        && inputs.sums16.len() >= P * blocks * 16
}

/// The two low bits of each byte, moved up to bits 4 and 5.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn top_bits(bits: __m256i) -> __m256i {
    _mm256_slli_epi16::<4>(_mm256_and_si256(bits, _mm256_set1_epi8(3)))
}

/// Selects i16 lane `i` of each 128-bit half into every lane.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn pick_i16(i: i16) -> __m256i {
    _mm256_set1_epi16(((2 * i + 1) << 8) | (2 * i))
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum_f32(v: __m256) -> f32 {
    hsum_f32_128(_mm_add_ps(
        _mm256_castps256_ps128(v),
        _mm256_extractf128_ps::<1>(v),
    ))
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum_f32_128(x: __m128) -> f32 {
    let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    let x = _mm_add_ss(x, _mm_movehdup_ps(x));
    _mm_cvtss_f32(x)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn q4k_positions<const P: usize>(weights: &[u8], inputs: &InputBlocks, sums: &mut [f32]) {
    if !covers::<P>(KQuant::Q4K, weights, inputs, sums) {
        return super::scalar::q4k(weights, inputs, sums);
    }
    let blocks = inputs.blocks;
    let bytes = KQuant::Q4K.block_bytes();
    let low_nibbles = _mm256_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); P];
    let mut acc_mins = [_mm_setzero_ps(); P];
    for b in 0..blocks {
        let block = &weights[b * bytes..(b + 1) * bytes];
        // ggml's unpacking of the 12 scale bytes: eight 6-bit scales, then eight minimums.
        let mut packed = [0u32; 3];
        for (word, chunk) in packed.iter_mut().zip(block[4..16].chunks_exact(4)) {
            *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        const KMASK1: u32 = 0x3f3f_3f3f;
        const KMASK2: u32 = 0x0f0f_0f0f;
        const KMASK3: u32 = 0x0303_0303;
        let scales_lo = packed[0] & KMASK1;
        let scales_hi = (packed[2] & KMASK2) | (((packed[0] >> 6) & KMASK3) << 4);
        let mins_lo = packed[1] & KMASK1;
        let mins_hi = ((packed[2] >> 4) & KMASK2) | (((packed[1] >> 6) & KMASK3) << 4);
        let scales_and_mins = _mm256_cvtepu8_epi16(_mm_set_epi32(
            mins_hi as i32,
            mins_lo as i32,
            scales_hi as i32,
            scales_lo as i32,
        ));
        let scales128 = _mm256_castsi256_si128(scales_and_mins);
        let scales = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(scales128), scales128);
        let mins = _mm256_extracti128_si256::<1>(scales_and_mins);

        // SAFETY (all `add`s on `y` below): `covers` checked that each position has `blocks`
        // blocks of 256 input bytes.
        let y: [*const u8; P] = std::array::from_fn(|p| unsafe {
            inputs.values.as_ptr().add((p * blocks + b) * QK_K) as *const u8
        });
        let mut dots = [_mm256_setzero_si256(); P];
        for j in 0..4 {
            let scale_low = _mm256_shuffle_epi8(scales, pick_i16(2 * j as i16));
            let scale_high = _mm256_shuffle_epi8(scales, pick_i16(2 * j as i16 + 1));
            // SAFETY: bytes 16 + 32j .. 48 + 32j of a 144-byte block.
            let q4 =
                unsafe { _mm256_loadu_si256(block.as_ptr().add(16 + 32 * j) as *const __m256i) };
            let q4_low = _mm256_and_si256(q4, low_nibbles);
            let q4_high = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), low_nibbles);
            for p in 0..P {
                let (y_low, y_high) = unsafe {
                    (
                        _mm256_loadu_si256(y[p].add(64 * j) as *const __m256i),
                        _mm256_loadu_si256(y[p].add(64 * j + 32) as *const __m256i),
                    )
                };
                let low = _mm256_madd_epi16(scale_low, _mm256_maddubs_epi16(q4_low, y_low));
                let high = _mm256_madd_epi16(scale_high, _mm256_maddubs_epi16(q4_high, y_high));
                dots[p] = _mm256_add_epi32(dots[p], _mm256_add_epi32(low, high));
            }
        }
        let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
        for p in 0..P {
            let at = p * blocks + b;
            // SAFETY: `covers` checked that each position has 16 sums per block.
            let (first, second) = unsafe {
                let y_sums = inputs.sums16.as_ptr().add(at * 16);
                (
                    _mm_loadu_si128(y_sums as *const __m128i),
                    _mm_loadu_si128(y_sums.add(8) as *const __m128i),
                )
            };
            // Sums of each 32 inputs, the span of one minimum.
            let sums32 = _mm_hadd_epi16(first, second);
            let y_scale = inputs.scales[at];
            acc_mins[p] = _mm_fmadd_ps(
                _mm_set1_ps(-y_scale * dmin),
                _mm_cvtepi32_ps(_mm_madd_epi16(mins, sums32)),
                acc_mins[p],
            );
            acc[p] = _mm256_fmadd_ps(
                _mm256_set1_ps(y_scale * d),
                _mm256_cvtepi32_ps(dots[p]),
                acc[p],
            );
        }
    }
    for p in 0..P {
        sums[p] = hsum_f32(acc[p]) + hsum_f32_128(acc_mins[p]);
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn q6k_positions<const P: usize>(weights: &[u8], inputs: &InputBlocks, sums: &mut [f32]) {
    if !covers::<P>(KQuant::Q6K, weights, inputs, sums) {
        return super::scalar::q6k(weights, inputs, sums);
    }
    let blocks = inputs.blocks;
    let bytes = KQuant::Q6K.block_bytes();
    let low_nibbles = _mm256_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); P];
    for b in 0..blocks {
        let block = &weights[b * bytes..(b + 1) * bytes];
        // SAFETY: bytes 192..208 of a 210-byte block.
        let scales = unsafe { _mm_loadu_si128(block.as_ptr().add(192) as *const __m128i) };
        // SAFETY (all `add`s on `y` below): `covers` checked that each position has `blocks`
        // blocks of 256 input bytes.
        let y: [*const u8; P] = std::array::from_fn(|p| unsafe {
            inputs.values.as_ptr().add((p * blocks + b) * QK_K) as *const u8
        });
        let mut dots = [_mm256_setzero_si256(); P];
        for half in 0..2 {
            // SAFETY: bytes 64h..64h+64 (low nibbles) and 128+32h..160+32h (high bits).
            let (ql1, ql2, qh) = unsafe {
                let base = block.as_ptr();
                (
                    _mm256_loadu_si256(base.add(64 * half) as *const __m256i),
                    _mm256_loadu_si256(base.add(64 * half + 32) as *const __m256i),
                    _mm256_loadu_si256(base.add(128 + 32 * half) as *const __m256i),
                )
            };
            let quarters = [
                _mm256_or_si256(_mm256_and_si256(ql1, low_nibbles), top_bits(qh)),
                _mm256_or_si256(
                    _mm256_and_si256(ql2, low_nibbles),
                    top_bits(_mm256_srli_epi16::<2>(qh)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low_nibbles),
                    top_bits(_mm256_srli_epi16::<4>(qh)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql2), low_nibbles),
                    top_bits(_mm256_srli_epi16::<6>(qh)),
                ),
            ];
            for (quarter, q6) in quarters.iter().enumerate() {
                // 16 i16 lanes: the first 8 cover values of scale 2i, the next 8 of 2i + 1.
                let i = (8 * half + 2 * quarter) as i8;
                let pick = _mm_set_epi8(
                    i + 1,
                    i + 1,
                    i + 1,
                    i + 1,
                    i + 1,
                    i + 1,
                    i + 1,
                    i + 1,
                    i,
                    i,
                    i,
                    i,
                    i,
                    i,
                    i,
                    i,
                );
                let scale = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
                for p in 0..P {
                    let y = unsafe {
                        _mm256_loadu_si256(y[p].add(128 * half + 32 * quarter) as *const __m256i)
                    };
                    let products = _mm256_madd_epi16(scale, _mm256_maddubs_epi16(*q6, y));
                    dots[p] = _mm256_add_epi32(dots[p], products);
                }
            }
        }
        // The stored values are q + 32: take 32 * scale * (sum of inputs) back off, per 16.
        let scales16 = _mm256_cvtepi8_epi16(scales);
        let d = f16_at(block, 208);
        for p in 0..P {
            let at = p * blocks + b;
            // SAFETY: `covers` checked that each position has 16 sums per block.
            let y_sums = unsafe {
                _mm256_loadu_si256(inputs.sums16.as_ptr().add(at * 16) as *const __m256i)
            };
            let offsets = _mm256_slli_epi32::<5>(_mm256_madd_epi16(scales16, y_sums));
            let dot = _mm256_sub_epi32(dots[p], offsets);
            acc[p] = _mm256_fmadd_ps(
                _mm256_set1_ps(inputs.scales[at] * d),
                _mm256_cvtepi32_ps(dot),
                acc[p],
            );
        }
    }
    for p in 0..P {
        sums[p] = hsum_f32(acc[p]);
    }
}
