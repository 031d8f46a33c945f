//! The tile layout: eight rows of a K-quant matrix, super-block by super-block, arranged so that
//! 32 consecutive bytes hold four weights of each of the eight rows (row r in bytes 4r..4r+4).
//!
//! One Q4_K tile block (all eight rows, 256 values each; 1184 bytes):
//! - `d` and `dmin` of the rows (f16, 16 bytes each);
//! - the 6-bit scales and minimums unpacked to bytes, sub-block by sub-block: `scale[s][r]`,
//!   `min[s][r]` (64 bytes each);
//! - 32 weight vectors: vector `8j + g` holds, for each row, values `64j + 4g ..+4` in its low
//!   nibbles and `64j + 32 + 4g ..+4` in its high nibbles (these are exactly bytes `32j + 4g ..+4`
//!   of the row's GGUF block).
//!
//! One Q5_K tile block (1440 bytes; the file's 8 x 176 is 1408): a Q4_K tile block of the low four
//! bits, then 8 vectors of fifth bits: vector `g` holds, for each row, bytes `4g ..+4` of the row's
//! GGUF `qh`, whose bit `s` is the fifth bit of value `32s + 4g ..+4` (sub-block `s`).
//!
//! One Q6_K tile block (1680 bytes, 8 x 210 like the file):
//! - `d` of the rows (f16, 16 bytes); the signed scales `scale[s][r]` per 16 values (128 bytes);
//! - 32 vectors of low nibbles: vector `g` holds values `4g ..+4` (low nibbles) and
//!   `128 + 4g ..+4` (high nibbles);
//! - 16 vectors of top bits: vector `k`'s bit pairs 0, 1, 2, 3 hold the top two bits of values
//!   `8k ..+4`, `128 + 8k ..+4`, `8k + 4 ..+4` and `128 + 8k + 4 ..+4`.

use half::f16;

use super::{KQuant, QK_K};

/// Rows per tile.
pub(crate) const TILE_ROWS: usize = 8;

pub(super) const Q4K_D: usize = 0;
pub(super) const Q4K_DMIN: usize = 16;
pub(super) const Q4K_SCALES: usize = 32;
pub(super) const Q4K_MINS: usize = 96;
pub(super) const Q4K_QUANTS: usize = 160;
pub(super) const Q4K_TILE_BLOCK: usize = Q4K_QUANTS + 32 * 32;

pub(super) const Q5K_HIGH: usize = Q4K_TILE_BLOCK;
pub(super) const Q5K_TILE_BLOCK: usize = Q5K_HIGH + 8 * 32;

pub(super) const Q6K_D: usize = 0;
pub(super) const Q6K_SCALES: usize = 16;
pub(super) const Q6K_LOW: usize = 144;
pub(super) const Q6K_HIGH: usize = Q6K_LOW + 32 * 32;
pub(super) const Q6K_TILE_BLOCK: usize = Q6K_HIGH + 16 * 32;

const _: () = assert!(Q6K_TILE_BLOCK == TILE_ROWS * KQuant::Q6K.block_bytes());

/// How a matrix's tiles are laid out: its type and super-blocks per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TileLayout {
    pub(crate) kind: KQuant,
    pub(crate) blocks: usize,
}

impl TileLayout {
    pub(super) fn new(kind: KQuant, blocks: usize) -> Self {
        Self { kind, blocks }
    }

    /// Bytes of one tile block (eight rows, one super-block).
    pub(super) const fn block_bytes(kind: KQuant) -> usize {
        match kind {
            KQuant::Q4K => Q4K_TILE_BLOCK,
            KQuant::Q5K => Q5K_TILE_BLOCK,
            KQuant::Q6K => Q6K_TILE_BLOCK,
        }
    }

    /// Bytes of one tile (eight rows, whole width).
    pub(super) fn tile_bytes(self) -> usize {
        self.blocks * Self::block_bytes(self.kind)
    }

    /// Fills a zeroed tile from up to eight GGUF rows (missing rows stay zero: no output).
    pub(super) fn fill(self, tile: &mut [u8], rows: &[u8]) {
        // Interleaving the rows' 4-byte groups is an 8x8 transposition of 32-bit words, which
        // AVX2 does in registers (loading a 4B model's tiles was bound by these byte moves
        // before); builds for the baseline CPU pick it at run time.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the instructions were just detected.
            return self.fill_rows(tile, rows, |out, rows, vectors| unsafe {
                interleave_avx2(out, rows, vectors)
            });
        }
        self.fill_rows(tile, rows, interleave)
    }

    fn fill_rows(
        self,
        tile: &mut [u8],
        rows: &[u8],
        interleave: impl Fn(&mut [u8], &[&[u8]; TILE_ROWS], usize),
    ) {
        const ABSENT: [u8; KQuant::Q6K.block_bytes()] = [0; KQuant::Q6K.block_bytes()];
        let block_bytes = self.kind.block_bytes();
        let row_bytes = self.blocks * block_bytes;
        let present = (rows.len() / row_bytes.max(1)).min(TILE_ROWS);
        for (b, out) in tile
            .chunks_exact_mut(Self::block_bytes(self.kind))
            .take(self.blocks)
            .enumerate()
        {
            let ggml: [&[u8]; TILE_ROWS] = std::array::from_fn(|r| {
                let start = r * row_bytes + b * block_bytes;
                match rows.get(start..start + block_bytes) {
                    Some(block) if r < present => block,
                    _ => &ABSENT[..block_bytes],
                }
            });
            match self.kind {
                KQuant::Q4K => {
                    fill_q4k_header(out, &ggml);
                    interleave(&mut out[Q4K_QUANTS..], &ggml.map(|g| &g[16..144]), 32);
                }
                KQuant::Q5K => {
                    fill_q4k_header(out, &ggml);
                    interleave(&mut out[Q4K_QUANTS..], &ggml.map(|g| &g[48..176]), 32);
                    interleave(&mut out[Q5K_HIGH..], &ggml.map(|g| &g[16..48]), 8);
                }
                KQuant::Q6K => {
                    for (r, g) in ggml.iter().enumerate() {
                        out[Q6K_D + 2 * r..Q6K_D + 2 * r + 2].copy_from_slice(&g[208..210]);
                        for s in 0..16 {
                            out[Q6K_SCALES + 8 * s + r] = g[192 + s];
                        }
                    }
                    let vectors = ggml.map(q6k_row_vectors);
                    // The low-nibble vectors are followed by the top-bit vectors, in the tile as
                    // in each row's 192 bytes.
                    interleave(&mut out[Q6K_LOW..], &vectors.each_ref().map(|v| &v[..]), 48);
                }
            }
        }
    }

    /// Appends row `r` of a tile, dequantised exactly as ggml's `dequantize_row_q{4,5,6}_K`.
    pub(super) fn dequantize_row(self, tile: &[u8], r: usize, out: &mut Vec<f32>) {
        for block in tile
            .chunks_exact(Self::block_bytes(self.kind))
            .take(self.blocks)
        {
            match self.kind {
                KQuant::Q4K | KQuant::Q5K => {
                    let value = |v| match self.kind {
                        KQuant::Q4K => q4k_value(block, r, v),
                        _ => q5k_value(block, r, v),
                    };
                    let (d, dmin) = (q4k_d(block, r), q4k_dmin(block, r));
                    for s in 0..8 {
                        let scale = d * f32::from(q4k_scale(block, r, s));
                        let min = dmin * f32::from(q4k_min(block, r, s));
                        out.extend(
                            (32 * s..32 * s + 32).map(|v| scale * f32::from(value(v)) - min),
                        );
                    }
                }
                KQuant::Q6K => {
                    let d = q6k_d(block, r);
                    out.extend((0..QK_K).map(|v| {
                        d * f32::from(q6k_scale(block, r, v / 16))
                            * f32::from(q6k_value(block, r, v) - 32)
                    }));
                }
            }
        }
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Q4_K's eight 6-bit scales and minimums from its 12 packed bytes (ggml's `get_scale_min_k4`).
#[inline(always)]
fn q4k_scales_mins(packed: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut scales = [0u8; 8];
    let mut mins = [0u8; 8];
    for j in 0..8 {
        if j < 4 {
            scales[j] = packed[j] & 63;
            mins[j] = packed[j + 4] & 63;
        } else {
            scales[j] = (packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4);
            mins[j] = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
        }
    }
    (scales, mins)
}

/// The `d`, `dmin`, scales and minimums of eight GGUF Q4_K (or Q5_K) blocks, one per row.
#[inline(always)]
fn fill_q4k_header(tile: &mut [u8], ggml: &[&[u8]; TILE_ROWS]) {
    for (r, header) in ggml.iter().enumerate() {
        tile[Q4K_D + 2 * r..Q4K_D + 2 * r + 2].copy_from_slice(&header[0..2]);
        tile[Q4K_DMIN + 2 * r..Q4K_DMIN + 2 * r + 2].copy_from_slice(&header[2..4]);
        let (scales, mins) = q4k_scales_mins(&header[4..16]);
        for s in 0..8 {
            tile[Q4K_SCALES + 8 * s + r] = scales[s];
            tile[Q4K_MINS + 8 * s + r] = mins[s];
        }
    }
}

/// Writes `vectors` 32-byte vectors to `out`: vector `v` holds bytes `4v ..+4` of each row, row
/// `r` at bytes `4r ..+4`.
fn interleave(out: &mut [u8], rows: &[&[u8]; TILE_ROWS], vectors: usize) {
    for v in 0..vectors {
        for (r, row) in rows.iter().enumerate() {
            out[32 * v + 4 * r..32 * v + 4 * r + 4].copy_from_slice(&row[4 * v..4 * v + 4]);
        }
    }
}

/// [`interleave`], eight vectors at a time as a transposition of 8x8 32-bit words.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn interleave_avx2(out: &mut [u8], rows: &[&[u8]; TILE_ROWS], vectors: usize) {
    use std::arch::x86_64::*;
    let whole = vectors / 8 * 8;
    if out.len() < 32 * whole || rows.iter().any(|row| row.len() < 4 * whole) {
        return interleave(out, rows, vectors);
    }
    for group in (0..whole).step_by(8) {
        // SAFETY: every row holds the 32 bytes from 4 * group (checked above).
        let load = |r: usize| unsafe {
            _mm256_loadu_si256(rows[r].as_ptr().add(4 * group) as *const __m256i)
        };
        let (r0, r1, r2, r3) = (load(0), load(1), load(2), load(3));
        let (r4, r5, r6, r7) = (load(4), load(5), load(6), load(7));
        // Pairs of rows, then quads, then halves exchanged across the 128-bit lanes.
        let (t0, t1) = (_mm256_unpacklo_epi32(r0, r1), _mm256_unpackhi_epi32(r0, r1));
        let (t2, t3) = (_mm256_unpacklo_epi32(r2, r3), _mm256_unpackhi_epi32(r2, r3));
        let (t4, t5) = (_mm256_unpacklo_epi32(r4, r5), _mm256_unpackhi_epi32(r4, r5));
        let (t6, t7) = (_mm256_unpacklo_epi32(r6, r7), _mm256_unpackhi_epi32(r6, r7));
        let (u0, u1) = (_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2));
        let (u2, u3) = (_mm256_unpacklo_epi64(t1, t3), _mm256_unpackhi_epi64(t1, t3));
        let (u4, u5) = (_mm256_unpacklo_epi64(t4, t6), _mm256_unpackhi_epi64(t4, t6));
        let (u6, u7) = (_mm256_unpacklo_epi64(t5, t7), _mm256_unpackhi_epi64(t5, t7));
        let columns = [
            _mm256_permute2x128_si256(u0, u4, 0x20),
            _mm256_permute2x128_si256(u1, u5, 0x20),
            _mm256_permute2x128_si256(u2, u6, 0x20),
            _mm256_permute2x128_si256(u3, u7, 0x20),
            _mm256_permute2x128_si256(u0, u4, 0x31),
            _mm256_permute2x128_si256(u1, u5, 0x31),
            _mm256_permute2x128_si256(u2, u6, 0x31),
            _mm256_permute2x128_si256(u3, u7, 0x31),
        ];
        for (k, column) in columns.into_iter().enumerate() {
            // SAFETY: vector group + k lies inside `out` (checked above).
            unsafe {
                _mm256_storeu_si256(
                    out.as_mut_ptr().add(32 * (group + k)) as *mut __m256i,
                    column,
                )
            };
        }
    }
    let rest: [&[u8]; TILE_ROWS] = rows.map(|row| &row[4 * whole..]);
    interleave(&mut out[32 * whole..], &rest, vectors - whole);
}

/// One GGUF Q6_K block's 6-bit values as a row of a tile block wants them: 128 bytes whose
/// vector `g` (bytes `4g ..+4`) holds values `4g ..+4` in its low nibbles and `128 + 4g ..+4` in
/// its high nibbles, then 64 bytes of top bits (vector `k`'s bit pairs: values `8k ..+4`,
/// `128 + 8k ..+4`, `8k + 4 ..+4`, `128 + 8k + 4 ..+4`).
///
/// In the GGUF block, byte `l` of `ql` holds the low nibbles of values `l` (l < 64: bits 0-3) and
/// `l + 64` (bits 4-7), each half of 128 values having its own 64 bytes; the top bits of values
/// `32j + l` sit in bits `2j` of `qh[l]`, 32 bytes per half.
#[inline(always)]
fn q6k_row_vectors(ggml: &[u8]) -> [u8; 192] {
    let mut out = [0u8; 192];
    let (ql, qh) = (&ggml[..128], &ggml[128..192]);
    for w in 0..64 {
        // Values w and 128 + w, then 64 + w and 192 + w.
        out[w] = (ql[w] & 0xF) | (ql[64 + w] << 4);
        out[64 + w] = (ql[w] >> 4) | (ql[64 + w] & 0xF0);
    }
    for k in 0..16 {
        let shift = 2 * (k / 4);
        for i in 0..4 {
            let (l0, l1) = (8 * (k % 4) + i, 8 * (k % 4) + 4 + i);
            let top = |l: usize| (qh[l] >> shift) & 3;
            out[128 + 4 * k + i] = top(l0) | top(32 + l0) << 2 | top(l1) << 4 | top(32 + l1) << 6;
        }
    }
    out
}

/// Where value `v` of row `r` lives in a Q6_K tile block: the byte and shift of its low nibble,
/// and of its top two bits.
fn q6k_places(r: usize, v: usize) -> (usize, u8, usize, u8) {
    let (half, within) = (v / 128, v % 128);
    let (g, i) = (within / 4, within % 4);
    let low = Q6K_LOW + 32 * g + 4 * r + i;
    let high = Q6K_HIGH + 32 * (g / 2) + 4 * r + i;
    (low, 4 * half as u8, high, 2 * (2 * (g % 2) + half) as u8)
}

pub(super) fn q4k_d(block: &[u8], r: usize) -> f32 {
    f16_at(block, Q4K_D + 2 * r)
}

pub(super) fn q4k_dmin(block: &[u8], r: usize) -> f32 {
    f16_at(block, Q4K_DMIN + 2 * r)
}

pub(super) fn q4k_scale(block: &[u8], r: usize, s: usize) -> u8 {
    block[Q4K_SCALES + 8 * s + r]
}

pub(super) fn q4k_min(block: &[u8], r: usize, s: usize) -> u8 {
    block[Q4K_MINS + 8 * s + r]
}

/// The 4-bit value `v` (0..256) of row `r`.
pub(super) fn q4k_value(block: &[u8], r: usize, v: usize) -> u8 {
    let (j, within) = (v / 64, v % 64);
    let (high, g, i) = (within / 32, within % 32 / 4, v % 4);
    let byte = block[Q4K_QUANTS + 32 * (8 * j + g) + 4 * r + i];
    if high == 1 {
        byte >> 4
    } else {
        byte & 0xF
    }
}

/// The 5-bit value `v` (0..256) of row `r` of a Q5_K tile block.
pub(super) fn q5k_value(block: &[u8], r: usize, v: usize) -> u8 {
    let (s, l) = (v / 32, v % 32);
    let fifth = (block[Q5K_HIGH + 32 * (l / 4) + 4 * r + l % 4] >> s) & 1;
    q4k_value(block, r, v) | fifth << 4
}

pub(super) fn q6k_d(block: &[u8], r: usize) -> f32 {
    f16_at(block, Q6K_D + 2 * r)
}

pub(super) fn q6k_scale(block: &[u8], r: usize, s: usize) -> i8 {
    block[Q6K_SCALES + 8 * s + r] as i8
}

/// The unsigned 6-bit value `v` (0..256) of row `r` (the weight is this minus 32).
pub(super) fn q6k_value(block: &[u8], r: usize, v: usize) -> i16 {
    let (low, low_shift, high, high_shift) = q6k_places(r, v);
    i16::from(((block[low] >> low_shift) & 0xF) | (((block[high] >> high_shift) & 3) << 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i * 131 + seed * 7 + i / 251) as u8)
            .collect()
    }

    #[test]
    fn interleaving_puts_each_rows_groups_of_four_bytes_in_its_lane() {
        let rows: Vec<Vec<u8>> = (0..TILE_ROWS).map(|r| bytes(4 * 48, r)).collect();
        let rows: [&[u8]; TILE_ROWS] = std::array::from_fn(|r| &rows[r][..]);
        let mut out = vec![0u8; 32 * 48];
        interleave(&mut out, &rows, 48);
        for v in 0..48 {
            for (r, row) in rows.iter().enumerate() {
                assert_eq!(
                    out[32 * v + 4 * r..][..4],
                    row[4 * v..][..4],
                    "vector {v} row {r}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_interleaving_gives_the_plain_one() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        // Whole groups of eight vectors, a remainder, and rows too short for the vectors asked
        // (which must fall back rather than read past them).
        for (vectors, row_len) in [(8, 32), (32, 128), (48, 192), (13, 52), (16, 40)] {
            let rows: Vec<Vec<u8>> = (0..TILE_ROWS).map(|r| bytes(row_len, r + 3)).collect();
            let rows: [&[u8]; TILE_ROWS] = std::array::from_fn(|r| &rows[r][..]);
            let whole = vectors.min(row_len / 4);
            let (mut plain, mut avx2) = (vec![0u8; 32 * whole], vec![0u8; 32 * whole]);
            interleave(&mut plain, &rows, whole);
            // SAFETY: AVX2 was detected above.
            unsafe { interleave_avx2(&mut avx2, &rows, whole) };
            assert_eq!(plain, avx2, "{vectors} vectors of rows of {row_len} bytes");
        }
    }

    #[test]
    fn both_fillings_give_the_same_tiles() {
        for kind in [KQuant::Q4K, KQuant::Q5K, KQuant::Q6K] {
            let layout = TileLayout::new(kind, 3);
            // Whole tiles and a tile of five rows (the rest stays zero).
            for present in [TILE_ROWS, 5] {
                let rows = bytes(present * 3 * kind.block_bytes(), present);
                let mut plain = vec![0u8; layout.tile_bytes()];
                layout.fill_rows(&mut plain, &rows, interleave);
                let mut best = vec![0u8; layout.tile_bytes()];
                layout.fill(&mut best, &rows);
                assert_eq!(plain, best, "{kind:?}, {present} rows");
            }
        }
    }
}
