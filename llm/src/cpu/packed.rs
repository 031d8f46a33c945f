//! Q8_0 weight matrices repacked in 16-row tiles, and their matrix product on VNNI (AVX-512 or
//! 256-bit AVX-VNNI) or plain AVX2, chosen at run time.
//!
//! candle multiplies Q8_0 weights one output row at a time with 256-bit instructions, and its own
//! repacked kernels only take rows that are whole multiples of 256 values, which no 640-wide
//! matrix of Gemma 3 270M is (nor its 262144-row output head, most of the decode time). Here 16
//! output rows are interleaved per tile, so one `vpdpbusd` multiplies four inputs into sixteen
//! outputs, and a tile is read once for up to four prompt positions. Without VNNI, AVX2 does the
//! same in four instructions (`vpsignb`, `vpmaddubsw`, `vpmaddwd`, `vpaddd`): still sixteen
//! outputs side by side with no sums across lanes, where candle's AVX2 kernel sums each row's
//! block horizontally.
//!
//! The arithmetic is ggml's Q8_0 product: inputs are quantized per block of 32 to signed bytes
//! with an f16 scale exactly as `quantize_row_q8_0`, block sums are exact integers, and each block
//! adds `d_weight * d_input * sum` in f32. Only the order of the f32 additions differs from candle.

use half::f16;

/// Output rows per tile.
const TILE_ROWS: usize = 16;
/// Tiles a thread reads from a file at once when packing (0.3-1.4 MB for the 270M and 4B widths).
const LOAD_TILES_PER_READ: usize = 32;
/// Inputs per Q8_0 block.
const BLOCK: usize = 32;
/// Bytes of one ggml Q8_0 block: f16 scale, 32 signed bytes.
const GGML_BLOCK_BYTES: usize = 2 + BLOCK;
/// One block of 32 inputs for the 16 rows of a tile: the 16 f16 scales, then 512 weight bytes
/// ordered [group of 4 inputs][row][4 inputs], each stored as `q + 128` so that VNNI's
/// unsigned-by-signed product takes it as it is.
const TILE_BLOCK_BYTES: usize = TILE_ROWS * 2 + TILE_ROWS * BLOCK;
/// Prompt positions that share one pass over a tile.
const MAX_ROWS_PER_PASS: usize = 4;

/// A `[rows, cols]` Q8_0 matrix in 16-row tiles (rows padded with zero-scale rows).
#[derive(Debug)]
pub(crate) struct PackedQ8_0 {
    rows: usize,
    cols: usize,
    data: super::TileMemory,
}

/// The instructions a packed product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// AVX-512 with VNNI (Intel Xeon since Cascade Lake, AMD Zen 4): 16 rows per instruction.
    Avx512Vnni,
    /// 256-bit AVX-VNNI (Intel Core since Alder Lake, AMD Zen 5), in two halves of 8 rows.
    AvxVnni,
    /// AVX2 with FMA and F16C (x86-64-v3: Intel since Haswell, AMD since Zen), in two halves.
    Avx2,
}

/// Proof that this CPU has a kernel's instructions: its field is private to this module, so
/// the only way to get one is CPU detection, and a product can never run instructions the
/// CPU lacks.
mod detected {
    use super::Kernel;

    /// A kernel whose instructions this CPU was found to have.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct DetectedKernel(Kernel);

    impl DetectedKernel {
        /// Every kernel this CPU runs, best first.
        pub(super) fn all() -> Vec<DetectedKernel> {
            [Kernel::Avx512Vnni, Kernel::AvxVnni, Kernel::Avx2]
                .into_iter()
                .filter(|&k| present(k))
                .map(DetectedKernel)
                .collect()
        }

        /// The best kernel this CPU runs, if any; detected once, as every product asks.
        pub(super) fn best() -> Option<DetectedKernel> {
            static BEST: std::sync::OnceLock<Option<DetectedKernel>> = std::sync::OnceLock::new();
            *BEST.get_or_init(|| Self::all().into_iter().next())
        }

        pub(super) fn kernel(self) -> Kernel {
            self.0
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn present(kernel: Kernel) -> bool {
        use std::arch::is_x86_feature_detected as has;
        match kernel {
            Kernel::Avx512Vnni => has!("avx512f") && has!("avx512bw") && has!("avx512vnni"),
            Kernel::AvxVnni => has!("avx2") && has!("avxvnni") && has!("f16c") && has!("fma"),
            Kernel::Avx2 => has!("avx2") && has!("f16c") && has!("fma"),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn present(_: Kernel) -> bool {
        false
    }
}

use detected::DetectedKernel;

/// Whether this CPU runs the packed kernel (AVX-512 VNNI, AVX-VNNI or AVX2).
pub(crate) fn supported() -> bool {
    DetectedKernel::best().is_some()
}

/// Bytes of the packed tiles of a `[rows, cols]` matrix and of one ggml row; `None` when `cols`
/// is not whole blocks or a size does not fit in memory's address range (sizes come from files).
fn packed_sizes(rows: usize, cols: usize) -> Option<(usize, usize)> {
    if cols == 0 || !cols.is_multiple_of(BLOCK) {
        return None;
    }
    let blocks = cols / BLOCK;
    let row_bytes = blocks.checked_mul(GGML_BLOCK_BYTES)?;
    let tile_bytes = rows
        .div_ceil(TILE_ROWS)
        .checked_mul(blocks)?
        .checked_mul(TILE_BLOCK_BYTES)?;
    // The source buffer of one tile, and the rows' total in the file.
    row_bytes.checked_mul(TILE_ROWS)?;
    row_bytes.checked_mul(rows)?;
    (tile_bytes <= isize::MAX as usize).then_some((tile_bytes, row_bytes))
}

/// Fills one tile from its `present` ggml rows of `row_bytes` each.
fn fill_tile(packed: &mut [u8], source: &[u8], present: usize, row_bytes: usize) {
    // The byte shuffling vectorizes with AVX2 (a fifth of the 270M model's load time without
    // it); builds for the baseline CPU pick it at run time.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the instructions were just detected.
        return unsafe { fill_tile_avx2(packed, source, present, row_bytes) };
    }
    fill_tile_rows(packed, source, present, row_bytes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill_tile_avx2(packed: &mut [u8], source: &[u8], present: usize, row_bytes: usize) {
    fill_tile_rows(packed, source, present, row_bytes)
}

#[inline(always)]
fn fill_tile_rows(packed: &mut [u8], source: &[u8], present: usize, row_bytes: usize) {
    for (block, out) in packed.chunks_exact_mut(TILE_BLOCK_BYTES).enumerate() {
        let (scales, weights) = out.split_at_mut(TILE_ROWS * 2);
        weights.fill(128);
        for row in 0..present {
            let start = row * row_bytes + block * GGML_BLOCK_BYTES;
            let ggml = &source[start..start + GGML_BLOCK_BYTES];
            scales[row * 2..row * 2 + 2].copy_from_slice(&ggml[..2]);
            for (i, &q) in ggml[2..].iter().enumerate() {
                weights[(i / 4 * TILE_ROWS + row) * 4 + i % 4] = q ^ 0x80;
            }
        }
    }
}

impl PackedQ8_0 {
    /// Packs a matrix whose ggml Q8_0 rows are supplied in runs of whole tiles:
    /// `read_rows(first, bytes)` fills `bytes` with rows `first..first + bytes.len() / row_bytes`,
    /// and is called from all threads at once. Returns `None` when `cols` is not whole blocks.
    pub(crate) fn pack_with<E: Send>(
        rows: usize,
        cols: usize,
        read_rows: impl Fn(usize, &mut [u8]) -> std::result::Result<(), E> + Sync,
    ) -> Option<std::result::Result<Self, E>> {
        let (tile_bytes, row_bytes) = packed_sizes(rows, cols)?;
        let blocks = cols / BLOCK;
        let mut data = super::TileMemory::zeroed(tile_bytes, true);
        let reading = super::TileReading {
            part_rows: vec![rows],
            tile_rows: TILE_ROWS,
            row_bytes,
            tile_bytes: blocks * TILE_BLOCK_BYTES,
            tiles_per_read: LOAD_TILES_PER_READ,
        };
        let filled = reading.fill(
            data.bytes_mut(),
            |_, first, bytes| read_rows(first, bytes),
            |packed, source| fill_tile(packed, source, source.len() / row_bytes, row_bytes),
        );
        Some(filled.map(|()| Self { rows, cols, data }))
    }

    /// Packs ggml Q8_0 bytes of a `[rows, cols]` matrix; `None` if the sizes disagree.
    pub(crate) fn pack(bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        let (_, row_bytes) = packed_sizes(rows, cols)?;
        if Some(bytes.len()) != row_bytes.checked_mul(rows) {
            return None;
        }
        let result = Self::pack_with(rows, cols, |first, out: &mut [u8]| {
            let start = first * row_bytes;
            let rows = bytes.get(start..start + out.len()).ok_or(())?;
            out.copy_from_slice(rows);
            Ok::<(), ()>(())
        });
        result.and_then(|r| r.ok())
    }

    /// One matrix with the rows of `parts` in order; `None` unless there are at least two, all
    /// have the same inputs, and all but the last fill whole tiles.
    pub(crate) fn join(parts: &[&PackedQ8_0]) -> Option<Self> {
        let (last, rest) = parts.split_last()?;
        if rest.is_empty()
            || parts.iter().any(|p| p.cols != last.cols)
            || rest.iter().any(|p| !p.rows.is_multiple_of(TILE_ROWS))
        {
            return None;
        }
        let total = parts
            .iter()
            .try_fold(0usize, |sum, p| sum.checked_add(p.data.len()))?;
        let mut data = super::TileMemory::zeroed(total, true);
        let mut start = 0;
        for part in parts {
            data.bytes_mut()[start..start + part.data.len()].copy_from_slice(part.data.bytes());
            start += part.data.len();
        }
        Some(Self {
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: last.cols,
            data,
        })
    }

    /// Bytes of the packed tiles.
    pub(crate) fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Output rows.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Inputs per row.
    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    fn blocks(&self) -> usize {
        self.cols / BLOCK
    }

    /// Appends the dequantised row `row` (scale times byte, as ggml) to `out`; `false` when the
    /// row does not exist.
    pub(crate) fn dequantize_row_into(&self, row: usize, out: &mut Vec<f32>) -> bool {
        if row >= self.rows {
            return false;
        }
        let blocks = self.blocks();
        let tile = &self.data.bytes()[row / TILE_ROWS * blocks * TILE_BLOCK_BYTES..];
        let lane = row % TILE_ROWS;
        for block in tile.chunks_exact(TILE_BLOCK_BYTES).take(blocks) {
            let scale = f16::from_le_bytes([block[lane * 2], block[lane * 2 + 1]]).to_f32();
            let weights = &block[TILE_ROWS * 2..];
            out.extend((0..BLOCK).map(|i| {
                let q = (weights[(i / 4 * TILE_ROWS + lane) * 4 + i % 4] ^ 0x80) as i8;
                f32::from(q) * scale
            }));
        }
        true
    }

    /// `out[m, rows] = x[m, cols] @ self^T`. `None` when the sizes disagree or this CPU lacks the
    /// instructions (see [`supported`]).
    pub(crate) fn matmul(&self, x: &[f32], m: usize) -> Option<Vec<f32>> {
        self.matmul_on(DetectedKernel::best()?, x, m)
    }

    /// The kernels this CPU runs, best first, by name (for benches).
    pub(crate) fn instruction_sets() -> Vec<String> {
        DetectedKernel::all()
            .into_iter()
            .map(|k| format!("{:?}", k.kernel()).to_lowercase())
            .collect()
    }

    /// As [`PackedQ8_0::matmul`] on the named kernel; `None` also when this CPU lacks it.
    pub(crate) fn matmul_named(&self, kernel: &str, x: &[f32], m: usize) -> Option<Vec<f32>> {
        let kernel = DetectedKernel::all()
            .into_iter()
            .find(|k| format!("{:?}", k.kernel()).to_lowercase() == kernel)?;
        self.matmul_on(kernel, x, m)
    }

    fn matmul_on(&self, kernel: DetectedKernel, x: &[f32], m: usize) -> Option<Vec<f32>> {
        let kernel = kernel.kernel();
        #[cfg(not(target_arch = "x86_64"))]
        let _ = kernel;
        let rows = self.rows;
        let blocks = self.blocks();
        let tiles = rows.div_ceil(TILE_ROWS);
        let out_len = m.checked_mul(rows)?;
        if Some(x.len()) != m.checked_mul(self.cols) {
            return None;
        }
        let inputs = QuantizedInputs::new(x, m, self.cols);
        // What the unsafe kernel below reads: `blocks` tile blocks per tile, `blocks` input blocks
        // per position. Checked here, once, whatever built this matrix.
        if Some(self.data.len()) != tiles.checked_mul(blocks)?.checked_mul(TILE_BLOCK_BYTES)
            || inputs.values.len() != m * blocks * BLOCK
            || inputs.scales.len() != m * blocks
            || inputs.offsets.len() != m * blocks
        {
            return None;
        }
        let mut out = vec![0f32; out_len];
        let writes = super::DisjointWrites::new(&mut out);
        let run_tiles = |range: std::ops::Range<usize>| {
            let mut sums = [[0f32; TILE_ROWS]; MAX_ROWS_PER_PASS];
            for tile in range {
                let packed = &self.data.bytes()[tile * blocks * TILE_BLOCK_BYTES..];
                let first_row = tile * TILE_ROWS;
                let present = TILE_ROWS.min(rows - first_row);
                let mut position = 0;
                while position < m {
                    let pass = MAX_ROWS_PER_PASS.min(m - position);
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: a `DetectedKernel` exists only for instructions this CPU has;
                    // `packed` holds `blocks` tile blocks and the inputs `blocks` blocks per
                    // position (both checked above).
                    unsafe {
                        match kernel {
                            Kernel::Avx512Vnni => {
                                simd::tile(packed, blocks, &inputs, position, pass, &mut sums)
                            }
                            Kernel::AvxVnni => {
                                simd::tile_256(packed, blocks, &inputs, position, pass, &mut sums)
                            }
                            Kernel::Avx2 => {
                                simd::tile_avx2(packed, blocks, &inputs, position, pass, &mut sums)
                            }
                        }
                    };
                    for (p, row_sums) in sums.iter().enumerate().take(pass) {
                        // SAFETY: each (position, row) of `out` is written by exactly one tile,
                        // so workers never write the same element, and it is in bounds.
                        unsafe { writes.slice((position + p) * rows + first_row, present) }
                            .copy_from_slice(&row_sums[..present]);
                    }
                    position += pass;
                }
            }
        };
        candle_core::utils::barrier_pool().execute_chunked(tiles, run_tiles);
        Some(out)
    }
}

/// Inputs quantized per block of 32 as ggml's `quantize_row_q8_0`, with each block's byte sum
/// (which undoes the +128 of the stored weights).
struct QuantizedInputs {
    values: Vec<i8>,
    scales: Vec<f32>,
    offsets: Vec<i32>,
}

impl QuantizedInputs {
    /// What a tile kernel reads is there: `tile` holds `blocks` tile blocks, and these inputs
    /// `blocks` blocks for each of the `count <= MAX_ROWS_PER_PASS` positions from `first`.
    fn covers(&self, tile: &[u8], blocks: usize, first: usize, count: usize) -> bool {
        let positions = first + count;
        count <= MAX_ROWS_PER_PASS
            && tile.len() >= blocks * TILE_BLOCK_BYTES
            && self.values.len() >= positions * blocks * BLOCK
            && self.scales.len() >= positions * blocks
            && self.offsets.len() >= positions * blocks
    }

    fn new(x: &[f32], m: usize, cols: usize) -> Self {
        let blocks = m * cols / BLOCK;
        let mut values = Vec::with_capacity(m * cols);
        let mut scales = Vec::with_capacity(blocks);
        let mut offsets = Vec::with_capacity(blocks);
        let mut quantized = [0i8; BLOCK];
        for block in x.chunks_exact(BLOCK) {
            let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
            round_block(block, inverse, &mut quantized);
            values.extend_from_slice(&quantized);
            scales.push(f16::from_f32(d).to_f32());
            offsets.push(128 * quantized.iter().map(|&q| i32::from(q)).sum::<i32>());
        }
        Self {
            values,
            scales,
            offsets,
        }
    }
}

/// `out = round(block * scale)` (half away from zero, as ggml's `roundf`): one vector
/// instruction sequence with AVX2, a library call per value without it.
fn round_block(block: &[f32], scale: f32, out: &mut [i8; BLOCK]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the instructions were just detected.
        return unsafe { round_block_avx2(block, scale, out) };
    }
    round_block_portable(block, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn round_block_avx2(block: &[f32], scale: f32, out: &mut [i8; BLOCK]) {
    round_block_portable(block, scale, out)
}

#[inline(always)]
fn round_block_portable(block: &[f32], scale: f32, out: &mut [i8; BLOCK]) {
    for (q, &v) in out.iter_mut().zip(block) {
        *q = (v * scale).round() as i8;
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{QuantizedInputs, BLOCK, MAX_ROWS_PER_PASS, TILE_BLOCK_BYTES, TILE_ROWS};
    use std::arch::x86_64::*;

    /// Sums of one tile (16 output rows) for prompt positions `first..first + count`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI; `tile` holds `blocks` tile blocks; `inputs` holds
    /// `blocks` blocks for each of those positions; `count <= MAX_ROWS_PER_PASS`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile(
        tile: &[u8],
        blocks: usize,
        inputs: &QuantizedInputs,
        first: usize,
        count: usize,
        sums: &mut [[f32; TILE_ROWS]; MAX_ROWS_PER_PASS],
    ) {
        debug_assert!(inputs.covers(tile, blocks, first, count));
        let mut acc = [_mm512_setzero_ps(); MAX_ROWS_PER_PASS];
        let base = tile.as_ptr();
        let values = inputs.values.as_ptr();
        for block in 0..blocks {
            let packed = base.add(block * TILE_BLOCK_BYTES);
            let weight_scales = _mm512_cvtph_ps(_mm256_loadu_si256(packed as *const __m256i));
            let weights = packed.add(TILE_ROWS * 2);
            let w: [__m512i; 8] =
                std::array::from_fn(|g| _mm512_loadu_si512(weights.add(g * 64) as *const __m512i));
            for (p, acc) in acc.iter_mut().enumerate().take(count) {
                let input_block = (first + p) * blocks + block;
                let x = values.add(input_block * BLOCK) as *const i32;
                // Two chains halve the dependency on vpdpbusd's latency.
                let mut even = _mm512_setzero_si512();
                let mut odd = _mm512_setzero_si512();
                for g in (0..8).step_by(2) {
                    even = _mm512_dpbusd_epi32(
                        even,
                        w[g],
                        _mm512_set1_epi32(x.add(g).read_unaligned()),
                    );
                    odd = _mm512_dpbusd_epi32(
                        odd,
                        w[g + 1],
                        _mm512_set1_epi32(x.add(g + 1).read_unaligned()),
                    );
                }
                let sum = _mm512_sub_epi32(
                    _mm512_add_epi32(even, odd),
                    _mm512_set1_epi32(*inputs.offsets.get_unchecked(input_block)),
                );
                let scale = _mm512_mul_ps(
                    weight_scales,
                    _mm512_set1_ps(*inputs.scales.get_unchecked(input_block)),
                );
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, *acc);
            }
        }
        for (p, acc) in acc.iter().enumerate().take(count) {
            _mm512_storeu_ps(sums[p].as_mut_ptr(), *acc);
        }
    }

    /// [`tile`] with 256-bit AVX-VNNI: each 64-byte group of the tile is two halves of 8 rows.
    ///
    /// # Safety
    /// The CPU has AVX2, AVX-VNNI, F16C and FMA; otherwise as [`tile`].
    #[target_feature(enable = "avx2,avxvnni,f16c,fma")]
    pub(super) unsafe fn tile_256(
        tile: &[u8],
        blocks: usize,
        inputs: &QuantizedInputs,
        first: usize,
        count: usize,
        sums: &mut [[f32; TILE_ROWS]; MAX_ROWS_PER_PASS],
    ) {
        debug_assert!(inputs.covers(tile, blocks, first, count));
        let mut acc = [[_mm256_setzero_ps(); 2]; MAX_ROWS_PER_PASS];
        let base = tile.as_ptr();
        let values = inputs.values.as_ptr();
        for block in 0..blocks {
            let packed = base.add(block * TILE_BLOCK_BYTES);
            let weight_scales = [
                _mm256_cvtph_ps(_mm_loadu_si128(packed as *const __m128i)),
                _mm256_cvtph_ps(_mm_loadu_si128(packed.add(16) as *const __m128i)),
            ];
            let weights = packed.add(TILE_ROWS * 2);
            for (p, acc) in acc.iter_mut().enumerate().take(count) {
                let input_block = (first + p) * blocks + block;
                let x = values.add(input_block * BLOCK) as *const i32;
                let offset = _mm256_set1_epi32(*inputs.offsets.get_unchecked(input_block));
                let input_scale = _mm256_set1_ps(*inputs.scales.get_unchecked(input_block));
                for (half, acc) in acc.iter_mut().enumerate() {
                    let mut sum = _mm256_setzero_si256();
                    for g in 0..8 {
                        let w =
                            _mm256_loadu_si256(weights.add(g * 64 + half * 32) as *const __m256i);
                        sum = _mm256_dpbusd_avx_epi32(
                            sum,
                            w,
                            _mm256_set1_epi32(x.add(g).read_unaligned()),
                        );
                    }
                    let sum = _mm256_sub_epi32(sum, offset);
                    let scale = _mm256_mul_ps(weight_scales[half], input_scale);
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, *acc);
                }
            }
        }
        for (p, acc) in acc.iter().enumerate().take(count) {
            _mm256_storeu_ps(sums[p].as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(sums[p].as_mut_ptr().add(8), acc[1]);
        }
    }

    /// [`tile`] with AVX2 alone. `vpmaddubsw` multiplies unsigned by signed bytes, so each
    /// weight's sign moves onto its input (`vpsignb`) and its magnitude is the unsigned side;
    /// a pair sum is at most 2 * 128 * 127 = 32512 and fits its i16 lane exactly.
    ///
    /// # Safety
    /// The CPU has AVX2, F16C and FMA; otherwise as [`tile`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn tile_avx2(
        tile: &[u8],
        blocks: usize,
        inputs: &QuantizedInputs,
        first: usize,
        count: usize,
        sums: &mut [[f32; TILE_ROWS]; MAX_ROWS_PER_PASS],
    ) {
        debug_assert!(inputs.covers(tile, blocks, first, count));
        // SAFETY: the caller's guarantees, passed on unchanged.
        unsafe {
            match count {
                1 => tile_avx2_positions::<1>(tile, blocks, inputs, first, sums),
                2 => tile_avx2_positions::<2>(tile, blocks, inputs, first, sums),
                3 => tile_avx2_positions::<3>(tile, blocks, inputs, first, sums),
                _ => tile_avx2_positions::<4>(tile, blocks, inputs, first, sums),
            }
        }
    }

    /// [`tile_avx2`] for `P` positions, a count the compiler unrolls.
    ///
    /// # Safety
    /// As [`tile_avx2`], with `P` positions.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile_avx2_positions<const P: usize>(
        tile: &[u8],
        blocks: usize,
        inputs: &QuantizedInputs,
        first: usize,
        sums: &mut [[f32; TILE_ROWS]; MAX_ROWS_PER_PASS],
    ) {
        let ones = _mm256_set1_epi16(1);
        let flip = _mm256_set1_epi8(i8::MIN);
        let mut acc = [[_mm256_setzero_ps(); 2]; P];
        let base = tile.as_ptr();
        let values = inputs.values.as_ptr();
        for block in 0..blocks {
            let packed = base.add(block * TILE_BLOCK_BYTES);
            // Ask for the block two ahead: the matrix then streams from memory while this one
            // is multiplied (a hint; it never faults, past the end or not).
            for line in (0..TILE_BLOCK_BYTES).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(
                    packed.wrapping_add(2 * TILE_BLOCK_BYTES + line) as *const i8
                );
            }
            let weights = packed.add(TILE_ROWS * 2);
            let input_blocks: [usize; P] = std::array::from_fn(|p| (first + p) * blocks + block);
            let x: [*const i32; P] =
                std::array::from_fn(|p| values.add(input_blocks[p] * BLOCK) as *const i32);
            for (half, weight_scale_at) in [(0, packed), (1, packed.add(TILE_ROWS))] {
                let weight_scales =
                    _mm256_cvtph_ps(_mm_loadu_si128(weight_scale_at as *const __m128i));
                let mut dots = [_mm256_setzero_si256(); P];
                for g in 0..8 {
                    let w = _mm256_xor_si256(
                        _mm256_loadu_si256(weights.add(g * 64 + half * 32) as *const __m256i),
                        flip,
                    );
                    let magnitude = _mm256_abs_epi8(w);
                    for p in 0..P {
                        let signed_x =
                            _mm256_sign_epi8(_mm256_set1_epi32(x[p].add(g).read_unaligned()), w);
                        let pairs = _mm256_maddubs_epi16(magnitude, signed_x);
                        dots[p] = _mm256_add_epi32(dots[p], _mm256_madd_epi16(pairs, ones));
                    }
                }
                for p in 0..P {
                    let scale = _mm256_mul_ps(
                        weight_scales,
                        _mm256_set1_ps(*inputs.scales.get_unchecked(input_blocks[p])),
                    );
                    acc[p][half] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots[p]), scale, acc[p][half]);
                }
            }
        }
        for (p, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(sums[p].as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(sums[p].as_mut_ptr().add(8), acc[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul};
    use candle_core::{Device, Module, Tensor};

    /// Random ggml Q8_0 bytes for a `[rows, cols]` matrix (every byte value, varied scales).
    fn random_q8_0(rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        let mut state = seed | 1;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            let scale = (next() % 1000) as f32 / 20_000.0 + 1e-4;
            bytes.extend_from_slice(&f16::from_f32(scale).to_le_bytes());
            bytes.extend((0..BLOCK).map(|_| (next() >> 24) as u8));
        }
        bytes
    }

    fn random_inputs(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn rows_unpack_to_ggml_values() {
        let (rows, cols) = (37, 96);
        let bytes = random_q8_0(rows, cols, 7);
        let packed = PackedQ8_0::pack(&bytes, rows, cols).unwrap();
        let reference = qtensor_from_ggml(GgmlDType::Q8_0, &bytes, vec![rows, cols], &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (row, expected) in reference.iter().enumerate() {
            let mut got = Vec::new();
            assert!(packed.dequantize_row_into(row, &mut got));
            assert_eq!(&got, expected, "row {row}");
        }
        assert!(!packed.dequantize_row_into(rows, &mut Vec::new()));
        assert!(PackedQ8_0::pack(&bytes, rows, cols + 32).is_none());
        assert!(PackedQ8_0::pack(&bytes[1..], rows, cols).is_none());
    }

    #[test]
    fn sizes_that_overflow_are_refused_before_any_allocation() {
        // Shapes from a crafted GGUF whose products wrap to small numbers (issue 15).
        for (rows, cols) in [
            (64usize, 1usize << 63),
            (1 << 63, 64),
            (usize::MAX, 32),
            (1 << 58, 64),
            (64, 1 << 58),
        ] {
            assert!(PackedQ8_0::pack(&[], rows, cols).is_none(), "{rows}x{cols}");
            let called = std::sync::atomic::AtomicBool::new(false);
            let packed = PackedQ8_0::pack_with(rows, cols, |_, _: &mut [u8]| {
                called.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok::<(), ()>(())
            });
            assert!(packed.is_none() && !called.into_inner(), "{rows}x{cols}");
        }
    }

    #[test]
    fn product_matches_candles_q8_0_kernel() {
        let kernels = DetectedKernel::all();
        if kernels.is_empty() {
            eprintln!("skipped: this CPU has no AVX2, the packed kernel is not used");
            return;
        }
        for &kernel in &kernels {
            eprintln!("checking {kernel:?}");
            check_products(kernel);
        }
    }

    fn check_products(kernel: DetectedKernel) {
        // Rows not a multiple of 16, several pass sizes (1, 4 and a remainder of 3).
        for &(rows, cols, m) in &[(50, 640, 1), (16, 64, 4), (33, 2048, 7), (1000, 640, 11)] {
            let bytes = random_q8_0(rows, cols, rows as u32 * 31 + m as u32);
            let packed = PackedQ8_0::pack(&bytes, rows, cols).unwrap();
            let x = random_inputs(m * cols, cols as u32 + 5);
            let got = packed.matmul_on(kernel, &x, m).unwrap();
            let weights =
                qtensor_from_ggml(GgmlDType::Q8_0, &bytes, vec![rows, cols], &Device::Cpu).unwrap();
            let input = Tensor::from_vec(x.clone(), (m, cols), &Device::Cpu).unwrap();
            let candle = QMatMul::from_qtensor(weights)
                .unwrap()
                .forward(&input)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let scale = candle.iter().fold(0f32, |a, v| a.max(v.abs()));
            let worst = got
                .iter()
                .zip(&candle)
                .fold(0f32, |a, (g, c)| a.max((g - c).abs()));
            // Same integers and scales; only the order of f32 additions differs.
            assert!(
                worst <= scale * 1e-5,
                "{rows}x{cols}, m {m}: max diff {worst} (scale {scale})"
            );
        }
        // Joined matrices give the rows of each part.
        let (first, second) = (random_q8_0(32, 64, 3), random_q8_0(20, 64, 4));
        let parts = [
            PackedQ8_0::pack(&first, 32, 64).unwrap(),
            PackedQ8_0::pack(&second, 20, 64).unwrap(),
        ];
        let joined = PackedQ8_0::join(&[&parts[0], &parts[1]]).unwrap();
        let x = random_inputs(2 * 64, 9);
        let (a, b, both) = (
            parts[0].matmul_on(kernel, &x, 2).unwrap(),
            parts[1].matmul_on(kernel, &x, 2).unwrap(),
            joined.matmul_on(kernel, &x, 2).unwrap(),
        );
        for position in 0..2 {
            let row = &both[position * 52..(position + 1) * 52];
            assert_eq!(&row[..32], &a[position * 32..(position + 1) * 32]);
            assert_eq!(&row[32..], &b[position * 20..(position + 1) * 20]);
        }
        assert!(PackedQ8_0::join(&[&parts[1], &parts[0]]).is_none());
        assert!(PackedQ8_0::join(&[&parts[0]]).is_none());
        assert!(PackedQ8_0::pack(&random_q8_0(16, 64, 1), 16, 64)
            .unwrap()
            .matmul_on(kernel, &[0.0; 63], 1)
            .is_none());
    }
}
