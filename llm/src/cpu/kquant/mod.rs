//! llama.cpp's K-quant weight matrices (Q4_K, Q5_K and Q6_K: 256 values per super-block, the types
//! of every public Q4_K_M / Q5_K_M MedGemma GGUF's large matrices) and their products, with the
//! instructions this CPU has, picked at run time.
//!
//! The arithmetic is ggml's `vec_dot_q{4,5,6}_K_q8_K`: the inputs are quantized per 256 values to
//! signed bytes with an f32 scale and 16-value sums (`quantize_row_q8_K`), each super-block's
//! integer dot product is exact, and the f32 result adds `d_weight * d_input * sum` (minus the
//! Q4_K / Q5_K minimums) block by block. The integer sums are the same whatever the
//! instructions; only the order of the f32 additions differs between kernels and from ggml. The
//! scalar kernel runs on any CPU and is the tests' reference.
//!
//! The rows are regrouped at load into tiles of eight ([`tile`]), the same bytes in another order
//! (Q6_K exactly as large, Q4_K 3% and Q5_K 2% larger for their unpacked 6-bit scales), so that
//! one 32-byte load holds four weights of each of eight rows. A broadcast input then feeds eight outputs at
//! once, with no horizontal sums, for one token as for a prompt. The file's own copy is never
//! held: tiles are built from rows as they are read.
//!
//! The kernels, best first: VNNI (`vpdpbusd`, 256 bits wide, in its AVX-VNNI or AVX-512 form;
//! [`vnni`]), AVX2 ([`avx2`]), plain Rust ([`scalar`]).

#[cfg(target_arch = "x86_64")]
mod avx2;
mod scalar;
#[cfg(test)]
mod tests;
pub(crate) mod tile;
#[cfg(target_arch = "x86_64")]
mod vnni;

use tile::{TileLayout, TILE_ROWS};

/// Values per super-block.
pub(crate) const QK_K: usize = 256;
/// Prompt positions one pass over a tile serves.
const POSITIONS_PER_PASS: usize = 4;
/// Prompt positions whose quantized inputs stay in cache while tiles stream past them.
const POSITION_TILE: usize = 32;
/// Tiles a thread reads from a file at once before tiling them (about 1 MB of a 4B model's rows).
const LOAD_BATCH_TILES: usize = 64;
/// Tiles per work item handed to a thread.
const TILES_PER_ITEM: usize = 2;

/// A K-quant weight type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KQuant {
    /// 4-bit values with 6-bit scales and minimums per 32 (144 bytes per 256 values).
    Q4K,
    /// 5-bit values, scales and minimums as Q4_K (176 bytes per 256 values).
    Q5K,
    /// 6-bit values with 8-bit scales per 16 (210 bytes per 256 values).
    Q6K,
}

impl KQuant {
    /// Bytes of one super-block of one row in a GGUF file.
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            KQuant::Q4K => 144,
            KQuant::Q5K => 176,
            KQuant::Q6K => 210,
        }
    }

    /// The type of a GGUF tensor, if it is one of these.
    pub(crate) fn of(dtype: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType;
        match dtype {
            GgmlDType::Q4K => Some(KQuant::Q4K),
            GgmlDType::Q5K => Some(KQuant::Q5K),
            GgmlDType::Q6K => Some(KQuant::Q6K),
            _ => None,
        }
    }
}

/// The instructions a product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// AVX-512 VNNI with VL, used 256 bits wide (Intel since Ice Lake and Cascade Lake, AMD
    /// Zen 4), with AVX2, FMA and F16C. Preferred to AVX-VNNI where a CPU has both: its 32
    /// registers hold the kernels' sums without spilling them.
    Avx512Vnni,
    /// 256-bit AVX-VNNI (Intel Core since Alder Lake, Xeon since Sapphire Rapids, AMD Zen 5),
    /// with AVX2, FMA and F16C.
    AvxVnni,
    /// AVX2 with FMA and F16C (x86-64-v3: Intel since Haswell, AMD since Zen).
    Avx2,
    /// Plain Rust, any CPU.
    Scalar,
}

/// Proof that this CPU has an instruction set: the field is private to this module, so CPU
/// detection is the only way to get one.
mod detected {
    use super::Isa;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct DetectedIsa(Isa);

    impl DetectedIsa {
        /// Every instruction set this CPU runs, best first (always ending with scalar).
        pub(super) fn all() -> Vec<DetectedIsa> {
            [Isa::Avx512Vnni, Isa::AvxVnni, Isa::Avx2, Isa::Scalar]
                .into_iter()
                .filter(|&isa| present(isa))
                .map(DetectedIsa)
                .collect()
        }

        /// Detected once: every product asks.
        pub(super) fn best() -> DetectedIsa {
            static BEST: std::sync::OnceLock<DetectedIsa> = std::sync::OnceLock::new();
            *BEST.get_or_init(|| {
                Self::all()
                    .into_iter()
                    .next()
                    .unwrap_or(DetectedIsa(Isa::Scalar))
            })
        }

        pub(super) fn isa(self) -> Isa {
            self.0
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn present(isa: Isa) -> bool {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma") && has!("f16c");
        match isa {
            Isa::Scalar => true,
            Isa::Avx2 => avx2,
            Isa::AvxVnni => avx2 && has!("avxvnni"),
            Isa::Avx512Vnni => avx2 && has!("avx512f") && has!("avx512vl") && has!("avx512vnni"),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn present(isa: Isa) -> bool {
        isa == Isa::Scalar
    }
}

use detected::DetectedIsa;

/// A `[rows, cols]` K-quant matrix in tiles of eight rows (the last padded with zero rows).
#[derive(Debug)]
pub(crate) struct KQuantMatrix {
    layout: TileLayout,
    rows: usize,
    cols: usize,
    data: super::TileMemory,
}

impl KQuantMatrix {
    /// Bytes of a `[rows, cols]` matrix in a GGUF file; `None` when `cols` is not whole
    /// super-blocks or the size does not fit the address space (sizes come from files).
    pub(crate) fn file_size(kind: KQuant, rows: usize, cols: usize) -> Option<usize> {
        if cols == 0 || !cols.is_multiple_of(QK_K) {
            return None;
        }
        let bytes = (cols / QK_K)
            .checked_mul(kind.block_bytes())?
            .checked_mul(rows)?;
        (bytes <= isize::MAX as usize).then_some(bytes)
    }

    /// A matrix of the rows of one or more (projections of the same input, such as q, k, v, are
    /// multiplied as one), tiled as `read_rows(part, first, bytes)` supplies each part's GGUF
    /// rows `first..first + bytes.len() / row bytes`. `None` when `cols` is not whole
    /// super-blocks, a part but the last does not fill whole tiles, or the sizes do not fit in
    /// memory. `read_rows` is called from all threads at once.
    pub(crate) fn tile_parts<E: Send>(
        kind: KQuant,
        part_rows: &[usize],
        cols: usize,
        read_rows: impl Fn(usize, usize, &mut [u8]) -> std::result::Result<(), E> + Sync,
    ) -> Option<std::result::Result<Self, E>> {
        let (_, whole) = part_rows.split_last()?;
        if whole.iter().any(|rows| !rows.is_multiple_of(TILE_ROWS)) {
            return None;
        }
        let rows = part_rows
            .iter()
            .try_fold(0usize, |sum, &r| sum.checked_add(r))?;
        Self::file_size(kind, rows, cols)?;
        let layout = TileLayout::new(kind, cols / QK_K);
        let tile_bytes = layout.tile_bytes();
        let total = rows.div_ceil(TILE_ROWS).checked_mul(tile_bytes)?;
        // The file holds the same bytes (Q4_K: 3% fewer), so this is no more than its size.
        if total > isize::MAX as usize / 2 {
            return None;
        }
        let mut data = super::TileMemory::zeroed(total, false);
        let reading = super::TileReading {
            part_rows: part_rows.to_vec(),
            tile_rows: TILE_ROWS,
            row_bytes: layout.blocks * kind.block_bytes(),
            tile_bytes,
            tiles_per_read: LOAD_BATCH_TILES,
        };
        if let Err(e) = reading.fill(data.bytes_mut(), read_rows, |tile, rows| {
            layout.fill(tile, rows)
        }) {
            return Some(Err(e));
        }
        Some(Ok(Self {
            layout,
            rows,
            cols,
            data,
        }))
    }

    /// Tiles the GGUF bytes of a `[rows, cols]` matrix; `None` if the sizes disagree.
    pub(crate) fn from_file_bytes(
        kind: KQuant,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Option<Self> {
        if Some(bytes.len()) != Self::file_size(kind, rows, cols) {
            return None;
        }
        let row_bytes = bytes.len() / rows.max(1);
        Self::tile_parts(kind, &[rows], cols, |_, first, out: &mut [u8]| {
            let start = first * row_bytes;
            out.copy_from_slice(bytes.get(start..start + out.len()).ok_or(())?);
            Ok::<(), ()>(())
        })
        .and_then(|r| r.ok())
    }

    /// Output rows.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Inputs per row.
    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of the weights.
    pub(crate) fn bytes(&self) -> usize {
        self.data.len()
    }

    fn tile(&self, t: usize) -> &[u8] {
        let len = self.layout.tile_bytes();
        &self.data.bytes()[t * len..(t + 1) * len]
    }

    /// Appends the dequantised row `row` (as ggml's `dequantize_row_q{4,5,6}_K`) to `out`; `false`
    /// when the row does not exist.
    pub(crate) fn dequantize_row_into(&self, row: usize, out: &mut Vec<f32>) -> bool {
        if row >= self.rows {
            return false;
        }
        self.layout
            .dequantize_row(self.tile(row / TILE_ROWS), row % TILE_ROWS, out);
        true
    }

    /// `out[m, rows] = x[m, cols] @ self^T`; `None` when the sizes disagree.
    pub(crate) fn matmul(&self, x: &[f32], m: usize) -> Option<Vec<f32>> {
        self.matmul_on(DetectedIsa::best(), x, m)
    }

    /// The instruction sets this CPU runs the kernels on, best first, by name (for benches).
    pub(crate) fn instruction_sets() -> Vec<String> {
        DetectedIsa::all()
            .into_iter()
            .map(|isa| format!("{:?}", isa.isa()).to_lowercase())
            .collect()
    }

    /// As [`KQuantMatrix::matmul`] on the named instruction set; `None` also when this CPU lacks
    /// it.
    pub(crate) fn matmul_named(&self, isa: &str, x: &[f32], m: usize) -> Option<Vec<f32>> {
        let isa = DetectedIsa::all()
            .into_iter()
            .find(|i| format!("{:?}", i.isa()).to_lowercase() == isa)?;
        self.matmul_on(isa, x, m)
    }

    fn matmul_on(&self, isa: DetectedIsa, x: &[f32], m: usize) -> Option<Vec<f32>> {
        if Some(x.len()) != m.checked_mul(self.cols) {
            return None;
        }
        let rows = self.rows;
        let mut out = vec![0f32; m.checked_mul(rows)?];
        let inputs = Q8KInputs::new(x, m, self.cols);
        let blocks = self.layout.blocks;
        let writes = super::DisjointWrites::new(&mut out);
        let tiles = rows.div_ceil(TILE_ROWS);
        let items_per_tile_row = tiles.div_ceil(TILES_PER_ITEM);
        let position_tiles = m.div_ceil(POSITION_TILE);
        let run = |items: std::ops::Range<usize>| {
            let mut sums = [[0f32; TILE_ROWS]; POSITIONS_PER_PASS];
            for item in items {
                let position_tile = item / items_per_tile_row;
                let first_tile = item % items_per_tile_row * TILES_PER_ITEM;
                let positions =
                    position_tile * POSITION_TILE..m.min((position_tile + 1) * POSITION_TILE);
                for t in first_tile..tiles.min(first_tile + TILES_PER_ITEM) {
                    let tile = self.tile(t);
                    let first_row = t * TILE_ROWS;
                    let present = TILE_ROWS.min(rows - first_row);
                    let mut position = positions.start;
                    while position < positions.end {
                        let pass = POSITIONS_PER_PASS.min(positions.end - position);
                        let inputs = inputs.positions(position, pass, blocks);
                        dot_tile(isa, self.layout.kind, tile, &inputs, &mut sums);
                        for (p, row_sums) in sums.iter().enumerate().take(pass) {
                            // SAFETY: each (position, row) is computed by exactly one work item,
                            // and it lies inside `out` (m * rows elements).
                            let cells =
                                unsafe { writes.slice((position + p) * rows + first_row, present) };
                            cells.copy_from_slice(&row_sums[..present]);
                        }
                        position += pass;
                    }
                }
            }
        };
        candle_core::utils::barrier_pool()
            .execute_chunked(position_tiles * items_per_tile_row, run);
        Some(out)
    }
}

/// The products of one tile (eight rows) with up to four quantized inputs.
fn dot_tile(
    isa: DetectedIsa,
    kind: KQuant,
    tile: &[u8],
    inputs: &InputBlocks,
    sums: &mut [[f32; TILE_ROWS]; POSITIONS_PER_PASS],
) {
    match isa.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `DetectedIsa` of AVX2 exists only on CPUs with AVX2, FMA and F16C.
        Isa::Avx2 => unsafe {
            match kind {
                KQuant::Q4K => avx2::q45k::<false>(tile, inputs, sums),
                KQuant::Q5K => avx2::q45k::<true>(tile, inputs, sums),
                KQuant::Q6K => avx2::q6k(tile, inputs, sums),
            }
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `DetectedIsa` of AVX-VNNI exists only on CPUs with it, AVX2, FMA and F16C.
        Isa::AvxVnni => unsafe {
            match kind {
                KQuant::Q4K => vnni::avx_vnni::q45k::<false>(tile, inputs, sums),
                KQuant::Q5K => vnni::avx_vnni::q45k::<true>(tile, inputs, sums),
                KQuant::Q6K => vnni::avx_vnni::q6k(tile, inputs, sums),
            }
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `DetectedIsa` of AVX-512 VNNI exists only on CPUs with it, AVX-512 F and
        // VL, AVX2, FMA and F16C.
        Isa::Avx512Vnni => unsafe {
            match kind {
                KQuant::Q4K => vnni::avx512_vnni::q45k::<false>(tile, inputs, sums),
                KQuant::Q5K => vnni::avx512_vnni::q45k::<true>(tile, inputs, sums),
                KQuant::Q6K => vnni::avx512_vnni::q6k(tile, inputs, sums),
            }
        },
        // Elsewhere `present` reports none of the vector sets; the scalar kernel is right
        // everywhere.
        _ => scalar::tile(kind, tile, inputs, sums),
    }
}

/// Inputs quantized as ggml's `quantize_row_q8_K`, per position and super-block: the f32 scale,
/// 256 signed bytes, the sums of each 16 of them and of each 32.
struct Q8KInputs {
    scales: Vec<f32>,
    values: Vec<i8>,
    sums16: Vec<i16>,
    sums32: Vec<i16>,
}

/// The quantized inputs of consecutive positions, `blocks` super-blocks each.
pub(super) struct InputBlocks<'a> {
    pub(super) count: usize,
    pub(super) blocks: usize,
    pub(super) scales: &'a [f32],
    pub(super) values: &'a [i8],
    pub(super) sums16: &'a [i16],
    pub(super) sums32: &'a [i16],
}

impl InputBlocks<'_> {
    /// Whether the slices hold `blocks` super-blocks of `count` positions, as the kernels read.
    pub(super) fn complete(&self) -> bool {
        let blocks = self.count * self.blocks;
        (1..=POSITIONS_PER_PASS).contains(&self.count)
            && self.scales.len() >= blocks
            && self.values.len() >= blocks * QK_K
            && self.sums16.len() >= blocks * 16
            && self.sums32.len() >= blocks * 8
    }
}

impl Q8KInputs {
    fn new(x: &[f32], m: usize, cols: usize) -> Self {
        let blocks = m * cols / QK_K;
        let mut scales = Vec::with_capacity(blocks);
        let mut values = vec![0i8; blocks * QK_K];
        let mut sums16 = vec![0i16; blocks * 16];
        let mut sums32 = vec![0i16; blocks * 8];
        for (((block, out), sums), pairs) in x
            .chunks_exact(QK_K)
            .zip(values.chunks_exact_mut(QK_K))
            .zip(sums16.chunks_exact_mut(16))
            .zip(sums32.chunks_exact_mut(8))
        {
            scales.push(quantize_q8k(block, out));
            for (sum, sixteen) in sums.iter_mut().zip(out.chunks_exact(16)) {
                // |sum| <= 16 * 127, well inside i16.
                *sum = sixteen.iter().map(|&q| i16::from(q)).sum();
            }
            for (pair, two) in pairs.iter_mut().zip(sums.chunks_exact(2)) {
                *pair = two[0] + two[1];
            }
        }
        Self {
            scales,
            values,
            sums16,
            sums32,
        }
    }

    fn positions(&self, first: usize, count: usize, blocks: usize) -> InputBlocks<'_> {
        let (start, end) = (first * blocks, (first + count) * blocks);
        InputBlocks {
            count,
            blocks,
            scales: &self.scales[start..end],
            values: &self.values[start * QK_K..end * QK_K],
            sums16: &self.sums16[start * 16..end * 16],
            sums32: &self.sums32[start * 8..end * 8],
        }
    }
}

/// ggml's `quantize_row_q8_K_ref` for one super-block: the value of largest magnitude maps to
/// -127 exactly (so the scale is negative when it is positive), rounding to nearest even.
fn quantize_q8k(x: &[f32], out: &mut [i8]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    // Rounding is one instruction with SSE4.1 and a library call per value without it.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the instructions were just detected.
        unsafe { round_scaled_avx2(iscale, x, out) };
        return 1.0 / iscale;
    }
    round_scaled(iscale, x, out);
    1.0 / iscale
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn round_scaled_avx2(scale: f32, x: &[f32], out: &mut [i8]) {
    round_scaled(scale, x, out)
}

/// `scale * x` rounded to nearest even, at most 127.
#[inline(always)]
fn round_scaled(scale: f32, x: &[f32], out: &mut [i8]) {
    for (q, &v) in out.iter_mut().zip(x) {
        *q = (scale * v).round_ties_even().min(127.0) as i8;
    }
}
