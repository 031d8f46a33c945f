//! The tile products on AVX2. Each 32-byte weight vector holds four weights of each of eight
//! rows; four input bytes broadcast across it make `vpmaddubsw` give every row its pair sums,
//! so eight outputs accumulate side by side and nothing is summed across lanes.
//!
//! i16 partial sums stay exact: a Q4_K product pair is at most 2 * 15 * 127 = 3810, and eight
//! of them (one 32-value sub-block) 30480; a Q5_K pair at most 2 * 31 * 127 = 7874, so a
//! sub-block is summed in two halves of four (31496); a Q6_K pair at most 2 * 63 * 127 = 16002,
//! and two of them 32004. They widen to i32 when multiplied by the sub-block scales
//! (`vpmaddwd`).

use std::arch::x86_64::*;

use super::tile::{
    TileLayout, Q4K_D, Q4K_DMIN, Q4K_MINS, Q4K_QUANTS, Q4K_SCALES, Q4K_TILE_BLOCK, Q5K_HIGH,
    Q5K_TILE_BLOCK, Q6K_D, Q6K_HIGH, Q6K_LOW, Q6K_SCALES, Q6K_TILE_BLOCK, TILE_ROWS,
};
use super::{InputBlocks, KQuant, POSITIONS_PER_PASS, QK_K};

/// Tile blocks ahead that the kernels ask memory for (one, three or four were no faster on Zen 3).
const AHEAD: usize = 2;

pub(super) type Sums = [[f32; TILE_ROWS]; POSITIONS_PER_PASS];

/// `sums[p][r]`: row `r` of a Q4_K tile (or with `FIFTH` a Q5_K tile) times input position `p`
/// (`inputs.count` of them).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q45k<const FIFTH: bool>(tile: &[u8], inputs: &InputBlocks, sums: &mut Sums) {
    let kind = if FIFTH { KQuant::Q5K } else { KQuant::Q4K };
    if !covers(kind, tile, inputs) {
        return super::scalar::tile(kind, tile, inputs, sums);
    }
    // SAFETY: `covers` checked the lengths the kernels read.
    unsafe {
        match inputs.count {
            1 => q45k_positions::<1, FIFTH>(tile, inputs, sums),
            2 => q45k_positions::<2, FIFTH>(tile, inputs, sums),
            3 => q45k_positions::<3, FIFTH>(tile, inputs, sums),
            _ => q45k_positions::<4, FIFTH>(tile, inputs, sums),
        }
    }
}

/// As [`q45k`] for a Q6_K tile.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6k(tile: &[u8], inputs: &InputBlocks, sums: &mut Sums) {
    if !covers(KQuant::Q6K, tile, inputs) {
        return super::scalar::tile(KQuant::Q6K, tile, inputs, sums);
    }
    // SAFETY: `covers` checked the lengths the kernels read.
    unsafe {
        match inputs.count {
            1 => q6k_positions::<1>(tile, inputs, sums),
            2 => q6k_positions::<2>(tile, inputs, sums),
            3 => q6k_positions::<3>(tile, inputs, sums),
            _ => q6k_positions::<4>(tile, inputs, sums),
        }
    }
}

/// Whether the tile holds `inputs.blocks` tile blocks and the inputs are complete.
pub(super) fn covers(kind: KQuant, tile: &[u8], inputs: &InputBlocks) -> bool {
    inputs.complete() && tile.len() >= inputs.blocks * TileLayout::block_bytes(kind)
}

/// Four input bytes (or two i16) at `at`, in every 32-bit lane.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn broadcast4<T>(at: *const T) -> __m256i {
    // SAFETY: the caller's pointer has four readable bytes.
    _mm256_set1_epi32(unsafe { (at as *const i32).read_unaligned() })
}

/// Eight bytes at `at` (one per row) as 16 i16 lanes, each row's value twice: the multipliers of
/// `vpmaddwd` for one sub-block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn row_bytes_twice(at: *const u8, signed: bool) -> __m256i {
    // SAFETY: the caller's pointer has eight readable bytes.
    let eight = unsafe { _mm_loadl_epi64(at as *const __m128i) };
    let twice = _mm_unpacklo_epi8(eight, eight);
    if signed {
        _mm256_cvtepi8_epi16(twice)
    } else {
        _mm256_cvtepu8_epi16(twice)
    }
}

/// Two sub-blocks' bytes (eight rows each, at `first` and `second`) interleaved per row as 16 i16
/// lanes `[first[r], second[r]]`: the multipliers of `vpmaddwd` against a pair of input sums.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn row_byte_pairs(first: *const u8, second: *const u8, signed: bool) -> __m256i {
    // SAFETY: the caller's pointers have eight readable bytes each.
    let (a, b) = unsafe {
        (
            _mm_loadl_epi64(first as *const __m128i),
            _mm_loadl_epi64(second as *const __m128i),
        )
    };
    let pairs = _mm_unpacklo_epi8(a, b);
    if signed {
        _mm256_cvtepi8_epi16(pairs)
    } else {
        _mm256_cvtepu8_epi16(pairs)
    }
}

/// Asks for part `part` of `parts` of the tile block two ahead of `block` (`len` bytes each),
/// so that a matrix streams from memory at the rate the kernel computes instead of waiting for
/// every block; a hint, harmless past the end of a tile (the next tile's bytes, or nothing).
///
/// For one position (`P == 1`: a token being generated) the kernels ask for a few lines per
/// sub-block rather than a whole block at once. A Q6_K tile block is 27 cache lines, more than a
/// core keeps in flight (some 20 to 24 misses on Zen cores, 12 to 16 on Intel's), and a burst
/// that fills them stalls the kernel until the first lines arrive: spread over the block, one
/// token through Q6_K matrices ran 1.3-1.5x faster (Zen 3), the 4B model's decode 1.2-1.4x.
/// With several positions a block takes several times as long to compute, and the whole of it
/// is asked for with the first part (spread there, Q4_K prompts ran slower).
#[inline(always)]
pub(super) fn prefetch_ahead<const P: usize>(
    block: *const u8,
    len: usize,
    part: usize,
    parts: usize,
) {
    let (part, parts) = match (P, part) {
        (1, _) => (part, parts),
        (_, 0) => (0, 1),
        _ => return,
    };
    let lines = len.div_ceil(64);
    let per_part = lines.div_ceil(parts);
    let first = part * per_part;
    for line in first..lines.min(first + per_part) {
        // SAFETY: SSE is part of x86_64, and a prefetch never faults, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(block.wrapping_add(AHEAD * len + 64 * line) as *const i8)
        };
    }
}

/// The eight rows' f16 scales at `at` as f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn row_scales(at: *const u8) -> __m256 {
    // SAFETY: the caller's pointer has 16 readable bytes.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(at as *const __m128i) })
}

/// Q4_K tiles, or with `FIFTH` Q5_K tiles (the same layout followed by the fifth bits).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q45k_positions<const P: usize, const FIFTH: bool>(
    tile: &[u8],
    inputs: &InputBlocks,
    sums: &mut Sums,
) {
    let blocks = inputs.blocks;
    let block_bytes = if FIFTH {
        Q5K_TILE_BLOCK
    } else {
        Q4K_TILE_BLOCK
    };
    // Four-bit values sum eight vectors per sub-block inside i16; five-bit ones four.
    let vectors_per_sum = if FIFTH { 4 } else { 8 };
    let low_nibbles = _mm256_set1_epi8(0xF);
    let ones = _mm256_set1_epi8(1);
    let mut acc = [_mm256_setzero_ps(); P];
    for b in 0..blocks {
        // SAFETY (every pointer below): the tile has `blocks` tile blocks and the inputs
        // `blocks` super-blocks per position (`covers`); offsets stay inside one of each.
        unsafe {
            let block = tile.as_ptr().add(b * block_bytes);
            let y: [*const i8; P] =
                std::array::from_fn(|p| inputs.values.as_ptr().add((p * blocks + b) * QK_K));
            let mut dots = [_mm256_setzero_si256(); P];
            for s in 0..8 {
                prefetch_ahead::<P>(block, block_bytes, s, 8);
                // Sub-block s: the low nibbles of vectors 8(s/2).. for even s, high for odd;
                // Q5_K's fifth bits are bit s of its eight high vectors.
                let (j, high) = (s / 2, s % 2);
                let scale = row_bytes_twice(block.add(Q4K_SCALES + 8 * s), false);
                let bit = _mm_cvtsi32_si128(s as i32);
                for first in (0..8).step_by(vectors_per_sum) {
                    let mut pairs = [_mm256_setzero_si256(); P];
                    for g in first..first + vectors_per_sum {
                        let w = _mm256_loadu_si256(
                            block.add(Q4K_QUANTS + 32 * (8 * j + g)) as *const __m256i
                        );
                        let mut w = if high == 1 {
                            _mm256_and_si256(_mm256_srli_epi16::<4>(w), low_nibbles)
                        } else {
                            _mm256_and_si256(w, low_nibbles)
                        };
                        if FIFTH {
                            // 16-bit shifts move bits between bytes only above bit 0, which the
                            // mask drops.
                            let h =
                                _mm256_loadu_si256(block.add(Q5K_HIGH + 32 * g) as *const __m256i);
                            let fifth = _mm256_and_si256(_mm256_srl_epi16(h, bit), ones);
                            w = _mm256_or_si256(w, _mm256_slli_epi16::<4>(fifth));
                        }
                        for p in 0..P {
                            let x = broadcast4(y[p].add(32 * s + 4 * g));
                            pairs[p] = _mm256_add_epi16(pairs[p], _mm256_maddubs_epi16(w, x));
                        }
                    }
                    for p in 0..P {
                        dots[p] = _mm256_add_epi32(dots[p], _mm256_madd_epi16(pairs[p], scale));
                    }
                }
            }
            q45k_block_end(block, inputs, b, &dots, &mut acc);
        }
    }
    // SAFETY: this function's instructions.
    unsafe { store_sums(&acc, sums) };
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_positions<const P: usize>(tile: &[u8], inputs: &InputBlocks, sums: &mut Sums) {
    let blocks = inputs.blocks;
    let mut acc = [_mm256_setzero_ps(); P];
    for b in 0..blocks {
        // SAFETY (every pointer below): as in the Q4_K kernel.
        unsafe {
            let block = tile.as_ptr().add(b * Q6K_TILE_BLOCK);
            let y: [*const i8; P] =
                std::array::from_fn(|p| inputs.values.as_ptr().add((p * blocks + b) * QK_K));
            let mut dots = [_mm256_setzero_si256(); P];
            for sub in 0..8 {
                prefetch_ahead::<P>(block, Q6K_TILE_BLOCK, sub, 8);
                // Sub-blocks `sub` (values 16 sub..+16) and `8 + sub` (128 + 16 sub..+16): two
                // top-bit vectors, four low-nibble vectors.
                let scale_first = row_bytes_twice(block.add(Q6K_SCALES + 8 * sub), true);
                let scale_second = row_bytes_twice(block.add(Q6K_SCALES + 8 * (8 + sub)), true);
                for k in 2 * sub..2 * sub + 2 {
                    let [first0, second0, first1, second1] = q6k_weights(block, k);
                    for p in 0..P {
                        let first = _mm256_add_epi16(
                            _mm256_maddubs_epi16(first0, broadcast4(y[p].add(8 * k))),
                            _mm256_maddubs_epi16(first1, broadcast4(y[p].add(8 * k + 4))),
                        );
                        let second = _mm256_add_epi16(
                            _mm256_maddubs_epi16(second0, broadcast4(y[p].add(128 + 8 * k))),
                            _mm256_maddubs_epi16(second1, broadcast4(y[p].add(128 + 8 * k + 4))),
                        );
                        dots[p] = _mm256_add_epi32(
                            dots[p],
                            _mm256_add_epi32(
                                _mm256_madd_epi16(first, scale_first),
                                _mm256_madd_epi16(second, scale_second),
                            ),
                        );
                    }
                }
            }
            q6k_block_end(block, inputs, b, &dots, &mut acc);
        }
    }
    // SAFETY: this function's instructions.
    unsafe { store_sums(&acc, sums) };
}

/// The end of one Q4_K / Q5_K tile block `b`: `acc[p] += d * y_scale * dots[p]` less the
/// minimums' share, `dmin * y_scale * (min[s][r] * sums32[s] over the sub-blocks)`.
///
/// Always inlined, without a `target_feature` of its own, so that it becomes part of each
/// kernel that calls it (a `target_feature` function may not be `inline(always)`, and LLVM left
/// one of these as a call per block).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `block` is tile block `b` of a tile the inputs cover.
#[inline(always)]
pub(super) unsafe fn q45k_block_end<const P: usize>(
    block: *const u8,
    inputs: &InputBlocks,
    b: usize,
    dots: &[__m256i; P],
    acc: &mut [__m256; P],
) {
    // SAFETY (every pointer): the caller's tile block, and the inputs' super-block `b` of each
    // position.
    unsafe {
        let mins: [__m256i; 4] = std::array::from_fn(|k| {
            row_byte_pairs(
                block.add(Q4K_MINS + 16 * k),
                block.add(Q4K_MINS + 16 * k + 8),
                false,
            )
        });
        let d = row_scales(block.add(Q4K_D));
        let dmin = row_scales(block.add(Q4K_DMIN));
        for p in 0..P {
            let at = p * inputs.blocks + b;
            let sums32 = inputs.sums32.as_ptr().add(at * 8);
            let mut min_dot = _mm256_setzero_si256();
            for (k, pair) in mins.iter().enumerate() {
                let x = broadcast4(sums32.add(2 * k));
                min_dot = _mm256_add_epi32(min_dot, _mm256_madd_epi16(*pair, x));
            }
            let y_scale = _mm256_set1_ps(inputs.scales[at]);
            acc[p] = _mm256_fmadd_ps(
                _mm256_mul_ps(d, y_scale),
                _mm256_cvtepi32_ps(dots[p]),
                acc[p],
            );
            acc[p] = _mm256_fnmadd_ps(
                _mm256_mul_ps(dmin, y_scale),
                _mm256_cvtepi32_ps(min_dot),
                acc[p],
            );
        }
    }
}

/// The end of one Q6_K tile block `b`: `acc[p] += d * y_scale * dots[p]`, once the stored
/// values' offset of 32 is taken back off (32 * scale * the sum of each 16 inputs).
///
/// # Safety
/// As [`q45k_block_end`], for a Q6_K tile.
#[inline(always)]
pub(super) unsafe fn q6k_block_end<const P: usize>(
    block: *const u8,
    inputs: &InputBlocks,
    b: usize,
    dots: &[__m256i; P],
    acc: &mut [__m256; P],
) {
    // SAFETY (every pointer): as in `q45k_block_end`.
    unsafe {
        let scale_pairs: [__m256i; 8] = std::array::from_fn(|m| {
            row_byte_pairs(
                block.add(Q6K_SCALES + 16 * m),
                block.add(Q6K_SCALES + 16 * m + 8),
                true,
            )
        });
        let d = row_scales(block.add(Q6K_D));
        for p in 0..P {
            let at = p * inputs.blocks + b;
            let sums16 = inputs.sums16.as_ptr().add(at * 16);
            let mut offset = _mm256_setzero_si256();
            for (m, pair) in scale_pairs.iter().enumerate() {
                let x = broadcast4(sums16.add(2 * m));
                offset = _mm256_add_epi32(offset, _mm256_madd_epi16(*pair, x));
            }
            let dot = _mm256_sub_epi32(dots[p], _mm256_slli_epi32::<5>(offset));
            let y_scale = _mm256_set1_ps(inputs.scales[at]);
            acc[p] = _mm256_fmadd_ps(_mm256_mul_ps(d, y_scale), _mm256_cvtepi32_ps(dot), acc[p]);
        }
    }
}

/// Stores each position's eight row sums.
///
/// # Safety
/// The CPU has AVX2 (inlined as [`q45k_block_end`]).
#[inline(always)]
pub(super) unsafe fn store_sums<const P: usize>(acc: &[__m256; P], sums: &mut Sums) {
    for p in 0..P {
        // SAFETY: a row of `sums` holds eight f32; the caller's CPU has AVX.
        unsafe { _mm256_storeu_ps(sums[p].as_mut_ptr(), acc[p]) };
    }
}

/// Q6_K tile block `block`'s weights for vector pair `k` as four vectors of 6-bit values (four
/// per row each): values `8k..8k+4`, `128 + 8k..+4`, `8k + 4..+4` and `128 + 8k + 4..+4`, that is
/// the low nibble vectors with each top-bit pair moved to bits 4 and 5 (16-bit shifts carry bits
/// across bytes only where the mask drops them).
///
/// # Safety
/// The CPU has AVX2 (always inlined, as [`q45k_block_end`]); `block` is a whole Q6_K tile block
/// and `k < 16`.
#[inline(always)]
pub(super) unsafe fn q6k_weights(block: *const u8, k: usize) -> [__m256i; 4] {
    // SAFETY: the caller's block holds these vectors; its CPU has AVX2.
    unsafe {
        let low_nibbles = _mm256_set1_epi8(0xF);
        let bits45 = _mm256_set1_epi8(0x30);
        let top = _mm256_loadu_si256(block.add(Q6K_HIGH + 32 * k) as *const __m256i);
        let low0 = _mm256_loadu_si256(block.add(Q6K_LOW + 64 * k) as *const __m256i);
        let low1 = _mm256_loadu_si256(block.add(Q6K_LOW + 64 * k + 32) as *const __m256i);
        [
            _mm256_or_si256(
                _mm256_and_si256(low0, low_nibbles),
                _mm256_and_si256(_mm256_slli_epi16::<4>(top), bits45),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(low0), low_nibbles),
                _mm256_and_si256(_mm256_slli_epi16::<2>(top), bits45),
            ),
            _mm256_or_si256(
                _mm256_and_si256(low1, low_nibbles),
                _mm256_and_si256(top, bits45),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(low1), low_nibbles),
                _mm256_and_si256(_mm256_srli_epi16::<2>(top), bits45),
            ),
        ]
    }
}
