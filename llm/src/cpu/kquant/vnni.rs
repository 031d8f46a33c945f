//! The tile products with VNNI's `vpdpbusd`: four unsigned weight bytes times four signed input
//! bytes, summed into each 32-bit lane in one instruction, where AVX2 needs `vpmaddubsw` and an
//! i16 addition per vector and a `vpmaddwd` per sub-block.
//!
//! The tiles are the AVX2 kernels' (32 bytes: four weights of each of eight rows), so both VNNI
//! forms are 256 bits wide: the VEX one of AVX-VNNI (Intel Core since Alder Lake, AMD Zen 5) and
//! the EVEX one of AVX-512 VNNI with VL (Intel since Ice Lake and Cascade Lake, AMD Zen 4). Each
//! sub-block's sums are exact i32 (at most 32 * 31 * 127 per row), multiplied by the rows' scales
//! (`vpmulld`); the integer dot products are the AVX2 kernels' exactly, and the end of each block
//! is theirs ([`super::avx2::q45k_block_end`]), so the results are the AVX2 kernels' bit for bit.
//!
//! One kernel body, written once in `vnni_kernels!`, is compiled for each form, and in the tests
//! once more with `vpdpbusd` spelt in AVX2 instructions (exact for these weights, whose pair
//! sums fit i16), so that the body is checked on any AVX2 machine, not only where VNNI runs.

/// The kernels `q45k::<FIFTH>` and `q6k` in a module `$module`, compiled for `$features` with
/// `$dpbusd(acc, unsigned_bytes, signed_bytes)` as the four-byte dot product.
macro_rules! vnni_kernels {
    ($(#[$meta:meta])* $module:ident, $features:literal, $dpbusd:path) => {
        $(#[$meta])*
        pub(super) mod $module {
            use std::arch::x86_64::*;

            use super::super::avx2::{
                broadcast4, covers, prefetch_ahead, q45k_block_end, q6k_block_end, q6k_weights,
                store_sums, Sums,
            };
            use super::super::tile::{
                Q4K_QUANTS, Q4K_SCALES, Q4K_TILE_BLOCK, Q5K_HIGH, Q5K_TILE_BLOCK, Q6K_SCALES,
                Q6K_TILE_BLOCK,
            };
            use super::super::{InputBlocks, KQuant, QK_K};

            /// As [`super::super::avx2::q45k`].
            ///
            /// # Safety
            #[doc = concat!("The CPU has ", $features, ".")]
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn q45k<const FIFTH: bool>(
                tile: &[u8],
                inputs: &InputBlocks,
                sums: &mut Sums,
            ) {
                let kind = if FIFTH { KQuant::Q5K } else { KQuant::Q4K };
                if !covers(kind, tile, inputs) {
                    return super::super::scalar::tile(kind, tile, inputs, sums);
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

            /// As [`super::super::avx2::q6k`].
            ///
            /// # Safety
            #[doc = concat!("The CPU has ", $features, ".")]
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn q6k(tile: &[u8], inputs: &InputBlocks, sums: &mut Sums) {
                if !covers(KQuant::Q6K, tile, inputs) {
                    return super::super::scalar::tile(KQuant::Q6K, tile, inputs, sums);
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

            /// Eight bytes at `at` (one per row) as eight i32 lanes.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn row_bytes(at: *const u8, signed: bool) -> __m256i {
                // SAFETY: the caller's pointer has eight readable bytes.
                let eight = unsafe { _mm_loadl_epi64(at as *const __m128i) };
                if signed {
                    _mm256_cvtepi8_epi32(eight)
                } else {
                    _mm256_cvtepu8_epi32(eight)
                }
            }

            #[target_feature(enable = $features)]
            unsafe fn q45k_positions<const P: usize, const FIFTH: bool>(
                tile: &[u8],
                inputs: &InputBlocks,
                sums: &mut Sums,
            ) {
                let blocks = inputs.blocks;
                let block_bytes = if FIFTH { Q5K_TILE_BLOCK } else { Q4K_TILE_BLOCK };
                let low_nibbles = _mm256_set1_epi8(0xF);
                let fifth = _mm256_set1_epi8(0x10);
                let mut acc = [_mm256_setzero_ps(); P];
                for b in 0..blocks {
                    // SAFETY (every pointer below): the tile has `blocks` tile blocks and the
                    // inputs `blocks` super-blocks per position (`covers`); offsets stay inside
                    // one of each.
                    unsafe {
                        let block = tile.as_ptr().add(b * block_bytes);
                        let y: [*const i8; P] = std::array::from_fn(|p| {
                            inputs.values.as_ptr().add((p * blocks + b) * QK_K)
                        });
                        let mut dots = [_mm256_setzero_si256(); P];
                        for j in 0..4 {
                            prefetch_ahead::<P>(block, block_bytes, j, 4);
                            // Vector 8j + g holds sub-block 2j in its low nibbles and 2j + 1 in
                            // its high ones: one load feeds both, each its own chain per
                            // position (two chains also halve the wait on vpdpbusd's latency).
                            // Q5_K's fifth bits are bits 2j and 2j + 1 of its eight high vectors.
                            let shift = _mm_cvtsi32_si128(2 * j as i32);
                            let mut low = [_mm256_setzero_si256(); P];
                            let mut high = [_mm256_setzero_si256(); P];
                            for g in 0..8 {
                                let w = _mm256_loadu_si256(
                                    block.add(Q4K_QUANTS + 32 * (8 * j + g)) as *const __m256i,
                                );
                                let mut w_low = _mm256_and_si256(w, low_nibbles);
                                let mut w_high =
                                    _mm256_and_si256(_mm256_srli_epi16::<4>(w), low_nibbles);
                                if FIFTH {
                                    // 16-bit shifts move bits across bytes only where the mask
                                    // drops them.
                                    let h = _mm256_srl_epi16(
                                        _mm256_loadu_si256(
                                            block.add(Q5K_HIGH + 32 * g) as *const __m256i
                                        ),
                                        shift,
                                    );
                                    w_low = _mm256_or_si256(
                                        w_low,
                                        _mm256_and_si256(_mm256_slli_epi16::<4>(h), fifth),
                                    );
                                    w_high = _mm256_or_si256(
                                        w_high,
                                        _mm256_and_si256(_mm256_slli_epi16::<3>(h), fifth),
                                    );
                                }
                                for p in 0..P {
                                    let x = y[p].add(64 * j + 4 * g);
                                    low[p] = $dpbusd(low[p], w_low, broadcast4(x));
                                    high[p] = $dpbusd(high[p], w_high, broadcast4(x.add(32)));
                                }
                            }
                            let scale_low = row_bytes(block.add(Q4K_SCALES + 16 * j), false);
                            let scale_high = row_bytes(block.add(Q4K_SCALES + 16 * j + 8), false);
                            for p in 0..P {
                                dots[p] = _mm256_add_epi32(
                                    dots[p],
                                    _mm256_add_epi32(
                                        _mm256_mullo_epi32(low[p], scale_low),
                                        _mm256_mullo_epi32(high[p], scale_high),
                                    ),
                                );
                            }
                        }
                        q45k_block_end(block, inputs, b, &dots, &mut acc);
                    }
                }
                // SAFETY: this function's instructions.
                unsafe { store_sums(&acc, sums) };
            }

            #[target_feature(enable = $features)]
            unsafe fn q6k_positions<const P: usize>(
                tile: &[u8],
                inputs: &InputBlocks,
                sums: &mut Sums,
            ) {
                let blocks = inputs.blocks;
                let mut acc = [_mm256_setzero_ps(); P];
                for b in 0..blocks {
                    // SAFETY (every pointer below): as in the Q4_K kernel.
                    unsafe {
                        let block = tile.as_ptr().add(b * Q6K_TILE_BLOCK);
                        let y: [*const i8; P] = std::array::from_fn(|p| {
                            inputs.values.as_ptr().add((p * blocks + b) * QK_K)
                        });
                        let mut dots = [_mm256_setzero_si256(); P];
                        for sub in 0..8 {
                            prefetch_ahead::<P>(block, Q6K_TILE_BLOCK, sub, 8);
                            // Sub-blocks `sub` and `8 + sub`, unpacked as in the AVX2 kernel.
                            let mut first = [_mm256_setzero_si256(); P];
                            let mut second = [_mm256_setzero_si256(); P];
                            for k in 2 * sub..2 * sub + 2 {
                                let [first0, second0, first1, second1] =
                                    q6k_weights(block, k);
                                for p in 0..P {
                                    let low = y[p].add(8 * k);
                                    let high = y[p].add(128 + 8 * k);
                                    first[p] = $dpbusd(first[p], first0, broadcast4(low));
                                    first[p] = $dpbusd(first[p], first1, broadcast4(low.add(4)));
                                    second[p] = $dpbusd(second[p], second0, broadcast4(high));
                                    second[p] =
                                        $dpbusd(second[p], second1, broadcast4(high.add(4)));
                                }
                            }
                            let scale_first = row_bytes(block.add(Q6K_SCALES + 8 * sub), true);
                            let scale_second =
                                row_bytes(block.add(Q6K_SCALES + 8 * (8 + sub)), true);
                            for p in 0..P {
                                dots[p] = _mm256_add_epi32(
                                    dots[p],
                                    _mm256_add_epi32(
                                        _mm256_mullo_epi32(first[p], scale_first),
                                        _mm256_mullo_epi32(second[p], scale_second),
                                    ),
                                );
                            }
                        }
                        q6k_block_end(block, inputs, b, &dots, &mut acc);
                    }
                }
                // SAFETY: this function's instructions.
                unsafe { store_sums(&acc, sums) };
            }
        }
    };
}

vnni_kernels!(
    /// The 256-bit VEX form of AVX-VNNI.
    avx_vnni,
    "avx2,fma,f16c,avxvnni",
    _mm256_dpbusd_avx_epi32
);

vnni_kernels!(
    /// The 256-bit EVEX form of AVX-512 VNNI.
    avx512_vnni,
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    _mm256_dpbusd_epi32
);

vnni_kernels!(
    /// The same body with `vpdpbusd` spelt in AVX2, for the tests on machines without VNNI.
    #[cfg(test)]
    emulated,
    "avx2,fma,f16c",
    super::dpbusd_in_avx2
);

/// `vpdpbusd` in AVX2: exact where each pair of byte products fits i16, as it does for every
/// K-quant weight (at most 63) times an input byte (at most 127 in magnitude).
#[cfg(test)]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dpbusd_in_avx2(
    acc: std::arch::x86_64::__m256i,
    unsigned: std::arch::x86_64::__m256i,
    signed: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let pairs = _mm256_maddubs_epi16(unsigned, signed);
    _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}
