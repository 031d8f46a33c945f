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
        // The byte shuffling vectorizes several times better with AVX2 (a third of a 4B
        // model's load time without it); builds for the baseline CPU pick it at run time.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the instructions were just detected.
            return unsafe { self.fill_avx2(tile, rows) };
        }
        self.fill_rows(tile, rows)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fill_avx2(self, tile: &mut [u8], rows: &[u8]) {
        self.fill_rows(tile, rows)
    }

    #[inline(always)]
    fn fill_rows(self, tile: &mut [u8], rows: &[u8]) {
        let block_bytes = self.kind.block_bytes();
        let row_bytes = self.blocks * block_bytes;
        for (r, row) in rows.chunks_exact(row_bytes).enumerate().take(TILE_ROWS) {
            for (b, ggml) in row.chunks_exact(block_bytes).enumerate() {
                let out = &mut tile[b * Self::block_bytes(self.kind)..];
                match self.kind {
                    KQuant::Q4K => fill_q4k(out, r, &ggml[..16], &ggml[16..144]),
                    KQuant::Q5K => fill_q5k(out, r, ggml),
                    KQuant::Q6K => fill_q6k(out, r, ggml),
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

/// A GGUF Q4_K block, given as its 16 header bytes (d, dmin, 12 scale bytes) and its 128 nibble
/// bytes, as row `r` of a tile block.
#[inline(always)]
fn fill_q4k(tile: &mut [u8], r: usize, header: &[u8], nibbles: &[u8]) {
    tile[Q4K_D + 2 * r..Q4K_D + 2 * r + 2].copy_from_slice(&header[0..2]);
    tile[Q4K_DMIN + 2 * r..Q4K_DMIN + 2 * r + 2].copy_from_slice(&header[2..4]);
    let (scales, mins) = q4k_scales_mins(&header[4..16]);
    for s in 0..8 {
        tile[Q4K_SCALES + 8 * s + r] = scales[s];
        tile[Q4K_MINS + 8 * s + r] = mins[s];
    }
    for (vector, four) in nibbles[..128].chunks_exact(4).enumerate() {
        let at = Q4K_QUANTS + 32 * vector + 4 * r;
        tile[at..at + 4].copy_from_slice(four);
    }
}

/// A GGUF Q5_K block (d, dmin, 12 scale bytes, 32 fifth-bit bytes, 128 nibble bytes) as row `r`.
#[inline(always)]
fn fill_q5k(tile: &mut [u8], r: usize, ggml: &[u8]) {
    fill_q4k(tile, r, &ggml[..16], &ggml[48..176]);
    for (vector, four) in ggml[16..48].chunks_exact(4).enumerate() {
        let at = Q5K_HIGH + 32 * vector + 4 * r;
        tile[at..at + 4].copy_from_slice(four);
    }
}

/// A GGUF Q6_K block (128 low-nibble bytes, 64 top-bit bytes, 16 scales, d) as row `r`.
#[inline(always)]
fn fill_q6k(tile: &mut [u8], r: usize, ggml: &[u8]) {
    tile[Q6K_D + 2 * r..Q6K_D + 2 * r + 2].copy_from_slice(&ggml[208..210]);
    for s in 0..16 {
        tile[Q6K_SCALES + 8 * s + r] = ggml[192 + s];
    }
    let q = ggml_q6k_values(ggml);
    for g in 0..32 {
        for i in 0..4 {
            let (first, second) = (q[4 * g + i], q[128 + 4 * g + i]);
            tile[Q6K_LOW + 32 * g + 4 * r + i] = (first & 0xF) | (second << 4);
        }
    }
    for k in 0..16 {
        for i in 0..4 {
            let top = |v: usize| q[v] >> 4;
            tile[Q6K_HIGH + 32 * k + 4 * r + i] = top(8 * k + i)
                | top(128 + 8 * k + i) << 2
                | top(8 * k + 4 + i) << 4
                | top(128 + 8 * k + 4 + i) << 6;
        }
    }
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

/// The unsigned 6-bit values of a GGUF Q6_K block, in ggml's `dequantize_row_q6_K` order: each
/// half of 128 values takes its low nibbles from 64 bytes (low nibbles for the first 64 values,
/// high nibbles for the next) and its top bits from 32 bytes, two bits per 32 values.
#[inline(always)]
fn ggml_q6k_values(block: &[u8]) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for half in 0..2 {
        let ql = &block[64 * half..64 * half + 64];
        let qh = &block[128 + 32 * half..160 + 32 * half];
        let out = &mut q[128 * half..128 * half + 128];
        for l in 0..32 {
            out[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
            out[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
            out[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            out[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    q
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
