//! llama.cpp's K-quant weight matrices (Q4_K and Q6_K: 256 values per super-block, the types of
//! every public Q4_K_M / Q5_K_M MedGemma GGUF's large matrices) multiplied straight from the
//! file's bytes, with the instructions this CPU has, picked at run time.
//!
//! The arithmetic is ggml's `vec_dot_q{4,6}_K_q8_K`: the inputs are quantized per 256 values to
//! signed bytes with an f32 scale and 16-value sums (`quantize_row_q8_K`), each super-block's
//! integer dot product is exact, and the f32 result adds `d_weight * d_input * sum` (minus the
//! Q4_K minimums) block by block. The integer sums are the same whatever the instructions; only
//! the order of the f32 additions differs between kernels (the AVX2 Q4_K kernel's is ggml's).
//! The scalar kernel runs on any CPU and is the tests' reference.
//!
//! Nothing is repacked or copied: the matrix is the file's bytes, so the weights cost their file
//! size once. In a prompt, a row's weights are unpacked once for four positions.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(test)]
mod tests;

use half::f16;

/// Values per super-block.
pub(crate) const QK_K: usize = 256;
/// Prompt positions one pass over a weight row serves.
const POSITIONS_PER_PASS: usize = 4;
/// Prompt positions whose quantized inputs stay in cache while rows stream past them.
const POSITION_TILE: usize = 32;
/// Weight rows per work item handed to a thread.
const ROWS_PER_ITEM: usize = 8;

/// A K-quant weight type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KQuant {
    /// 4-bit values with 6-bit scales and minimums per 32 (144 bytes per 256 values).
    Q4K,
    /// 6-bit values with 8-bit scales per 16 (210 bytes per 256 values).
    Q6K,
}

impl KQuant {
    /// Bytes of one super-block.
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            KQuant::Q4K => 144,
            KQuant::Q6K => 210,
        }
    }

    /// The type of a GGUF tensor, if it is one of these.
    pub(crate) fn of(dtype: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType;
        match dtype {
            GgmlDType::Q4K => Some(KQuant::Q4K),
            GgmlDType::Q6K => Some(KQuant::Q6K),
            _ => None,
        }
    }
}

/// The instructions a product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// AVX2 with FMA (x86-64-v3: Intel since Haswell, AMD since Zen).
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
            [Isa::Avx2, Isa::Scalar]
                .into_iter()
                .filter(|&isa| present(isa))
                .map(DetectedIsa)
                .collect()
        }

        pub(super) fn best() -> DetectedIsa {
            Self::all()
                .into_iter()
                .next()
                .unwrap_or(DetectedIsa(Isa::Scalar))
        }

        pub(super) fn isa(self) -> Isa {
            self.0
        }
    }

    fn present(isa: Isa) -> bool {
        match isa {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 => false,
        }
    }
}

use detected::DetectedIsa;

/// A `[rows, cols]` matrix of K-quant super-blocks, row after row, as in the GGUF file.
#[derive(Debug)]
pub(crate) struct KQuantMatrix {
    kind: KQuant,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl KQuantMatrix {
    /// Bytes of a `[rows, cols]` matrix of `kind`; `None` when `cols` is not whole super-blocks or
    /// the size does not fit the address space (sizes come from files).
    pub(crate) fn size_of(kind: KQuant, rows: usize, cols: usize) -> Option<usize> {
        if cols == 0 || !cols.is_multiple_of(QK_K) {
            return None;
        }
        let bytes = (cols / QK_K)
            .checked_mul(kind.block_bytes())?
            .checked_mul(rows)?;
        (bytes <= isize::MAX as usize).then_some(bytes)
    }

    /// The matrix of these bytes; `None` when their length is not that of `[rows, cols]`.
    pub(crate) fn new(kind: KQuant, rows: usize, cols: usize, data: Vec<u8>) -> Option<Self> {
        (Some(data.len()) == Self::size_of(kind, rows, cols)).then_some(Self {
            kind,
            rows,
            cols,
            data,
        })
    }

    /// One matrix with the rows of `parts` in order (their bytes one after another); `None`
    /// unless there are at least two, all of one type and width.
    pub(crate) fn join(parts: &[&KQuantMatrix]) -> Option<Self> {
        let (first, rest) = parts.split_first()?;
        if rest.is_empty()
            || rest
                .iter()
                .any(|p| p.kind != first.kind || p.cols != first.cols)
        {
            return None;
        }
        let rows = parts
            .iter()
            .try_fold(0usize, |sum, p| sum.checked_add(p.rows))?;
        let mut data = Vec::new();
        data.try_reserve_exact(Self::size_of(first.kind, rows, first.cols)?)
            .ok()?;
        for part in parts {
            data.extend_from_slice(&part.data);
        }
        Self::new(first.kind, rows, first.cols, data)
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

    fn blocks(&self) -> usize {
        self.cols / QK_K
    }

    fn row(&self, row: usize) -> &[u8] {
        let len = self.blocks() * self.kind.block_bytes();
        &self.data[row * len..(row + 1) * len]
    }

    /// Appends the dequantised row `row` (as ggml's `dequantize_row_q{4,6}_K`) to `out`; `false`
    /// when the row does not exist.
    pub(crate) fn dequantize_row_into(&self, row: usize, out: &mut Vec<f32>) -> bool {
        if row >= self.rows {
            return false;
        }
        for block in self.row(row).chunks_exact(self.kind.block_bytes()) {
            match self.kind {
                KQuant::Q4K => dequantize_q4k(block, out),
                KQuant::Q6K => dequantize_q6k(block, out),
            }
        }
        true
    }

    /// `out[m, rows] = x[m, cols] @ self^T`; `None` when the sizes disagree.
    pub(crate) fn matmul(&self, x: &[f32], m: usize) -> Option<Vec<f32>> {
        self.matmul_on(DetectedIsa::best(), x, m)
    }

    fn matmul_on(&self, isa: DetectedIsa, x: &[f32], m: usize) -> Option<Vec<f32>> {
        if Some(x.len()) != m.checked_mul(self.cols) {
            return None;
        }
        let rows = self.rows;
        let mut out = vec![0f32; m.checked_mul(rows)?];
        let inputs = Q8KInputs::new(x, m, self.cols);
        let blocks = self.blocks();
        let writes = super::DisjointWrites::new(&mut out);
        let row_items = rows.div_ceil(ROWS_PER_ITEM);
        let position_tiles = m.div_ceil(POSITION_TILE);
        let run = |items: std::ops::Range<usize>| {
            let mut sums = [0f32; POSITIONS_PER_PASS];
            for item in items {
                let tile = item / row_items;
                let first_row = item % row_items * ROWS_PER_ITEM;
                let positions = tile * POSITION_TILE..m.min((tile + 1) * POSITION_TILE);
                for row in first_row..rows.min(first_row + ROWS_PER_ITEM) {
                    let weights = self.row(row);
                    let mut position = positions.start;
                    while position < positions.end {
                        let pass = POSITIONS_PER_PASS.min(positions.end - position);
                        let inputs = inputs.positions(position, pass, blocks);
                        dot_rows(isa, self.kind, weights, &inputs, &mut sums[..pass]);
                        for (p, &sum) in sums[..pass].iter().enumerate() {
                            // SAFETY: each (position, row) is computed by exactly one work item,
                            // and it lies inside `out` (m * rows elements).
                            let cell = unsafe { writes.slice((position + p) * rows + row, 1) };
                            cell[0] = sum;
                        }
                        position += pass;
                    }
                }
            }
        };
        candle_core::utils::barrier_pool().execute_chunked(position_tiles * row_items, run);
        Some(out)
    }
}

/// Dot products of one weight row (whole super-blocks) with up to four quantized inputs.
fn dot_rows(
    isa: DetectedIsa,
    kind: KQuant,
    weights: &[u8],
    inputs: &InputBlocks,
    sums: &mut [f32],
) {
    match isa.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `DetectedIsa` of AVX2 exists only on CPUs with AVX2 and FMA.
        Isa::Avx2 => unsafe {
            match kind {
                KQuant::Q4K => avx2::q4k(weights, inputs, sums),
                KQuant::Q6K => avx2::q6k(weights, inputs, sums),
            }
        },
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2 => unreachable_on_this_arch(kind, weights, inputs, sums),
        Isa::Scalar => match kind {
            KQuant::Q4K => scalar::q4k(weights, inputs, sums),
            KQuant::Q6K => scalar::q6k(weights, inputs, sums),
        },
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn unreachable_on_this_arch(kind: KQuant, weights: &[u8], inputs: &InputBlocks, sums: &mut [f32]) {
    // `present` never reports AVX2 off x86-64; fall back rather than panic.
    match kind {
        KQuant::Q4K => scalar::q4k(weights, inputs, sums),
        KQuant::Q6K => scalar::q6k(weights, inputs, sums),
    }
}

/// Inputs quantized as ggml's `quantize_row_q8_K`, per position and super-block: the f32 scale,
/// 256 signed bytes, and the sums of each 16 of them.
struct Q8KInputs {
    scales: Vec<f32>,
    values: Vec<i8>,
    sums16: Vec<i16>,
}

/// The quantized inputs of consecutive positions, `blocks` super-blocks each.
pub(super) struct InputBlocks<'a> {
    pub(super) count: usize,
    pub(super) blocks: usize,
    pub(super) scales: &'a [f32],
    pub(super) values: &'a [i8],
    pub(super) sums16: &'a [i16],
}

impl Q8KInputs {
    fn new(x: &[f32], m: usize, cols: usize) -> Self {
        let blocks = m * cols / QK_K;
        let mut scales = Vec::with_capacity(blocks);
        let mut values = vec![0i8; blocks * QK_K];
        let mut sums16 = vec![0i16; blocks * 16];
        for ((block, out), sums) in x
            .chunks_exact(QK_K)
            .zip(values.chunks_exact_mut(QK_K))
            .zip(sums16.chunks_exact_mut(16))
        {
            scales.push(quantize_q8k(block, out));
            for (sum, sixteen) in sums.iter_mut().zip(out.chunks_exact(16)) {
                // |sum| <= 16 * 128, well inside i16.
                *sum = sixteen.iter().map(|&q| i16::from(q)).sum();
            }
        }
        Self {
            scales,
            values,
            sums16,
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
    for (q, &v) in out.iter_mut().zip(x) {
        *q = (iscale * v).round_ties_even().min(127.0) as i8;
    }
    1.0 / iscale
}

/// Q4_K's eight 6-bit scales and minimums from its 12 packed bytes (ggml's `get_scale_min_k4`).
pub(super) fn q4k_scales_mins(packed: &[u8]) -> ([u8; 8], [u8; 8]) {
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

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Q4_K block layout: d (f16), dmin (f16), 12 bytes of scales and minimums, 128 bytes of nibbles.
/// Values 64j..64j+32 are the low nibbles of bytes 32j..32j+32, the next 32 their high nibbles.
fn dequantize_q4k(block: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
    let (scales, mins) = q4k_scales_mins(&block[4..16]);
    for (j, bytes) in block[16..].chunks_exact(32).enumerate() {
        let (d1, m1) = (d * f32::from(scales[2 * j]), dmin * f32::from(mins[2 * j]));
        let (d2, m2) = (
            d * f32::from(scales[2 * j + 1]),
            dmin * f32::from(mins[2 * j + 1]),
        );
        out.extend(bytes.iter().map(|&q| d1 * f32::from(q & 0xF) - m1));
        out.extend(bytes.iter().map(|&q| d2 * f32::from(q >> 4) - m2));
    }
}

/// Q6_K block layout: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed scales
/// (one per 16 values), d (f16). Value v is (low | high << 4) - 32 times d * scale[v / 16].
fn dequantize_q6k(block: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(block, 208);
    let start = out.len();
    out.resize(start + QK_K, 0.0);
    let values = &mut out[start..];
    for (v, value) in values.iter_mut().enumerate() {
        let q = q6k_value(block, v);
        *value = d * f32::from(block[192 + v / 16] as i8) * f32::from(q - 32);
    }
}

/// Q6_K's unsigned 6-bit value `v` (0..64) of a block: the 128 values of each half take their
/// low nibbles from 64 bytes (low, then high nibbles of the same bytes for the second 64) and
/// their top two bits from 32 bytes, two bits per 32 values.
pub(super) fn q6k_value(block: &[u8], v: usize) -> i16 {
    let (half, within) = (v / 128, v % 128);
    let (quarter, l) = (within / 32, within % 32);
    let ql = &block[half * 64..half * 64 + 64];
    let qh = block[128 + half * 32 + l];
    let low = match quarter {
        0 => ql[l] & 0xF,
        1 => ql[l + 32] & 0xF,
        2 => ql[l] >> 4,
        _ => ql[l + 32] >> 4,
    };
    i16::from(low | (((qh >> (2 * quarter)) & 3) << 4))
}

/// The kernels in plain Rust: the reference the vector kernels are tested against.
mod scalar {
    use super::{f16_at, q4k_scales_mins, q6k_value, InputBlocks, KQuant, QK_K};

    pub(super) fn q4k(weights: &[u8], inputs: &InputBlocks, sums: &mut [f32]) {
        let bytes = KQuant::Q4K.block_bytes();
        for (p, sum) in sums.iter_mut().enumerate().take(inputs.count) {
            let mut acc = 0f32;
            for (b, block) in weights.chunks_exact(bytes).enumerate().take(inputs.blocks) {
                let at = p * inputs.blocks + b;
                let y = &inputs.values[at * QK_K..(at + 1) * QK_K];
                let y_sums = &inputs.sums16[at * 16..(at + 1) * 16];
                let (scales, mins) = q4k_scales_mins(&block[4..16]);
                let mut dot = 0i32;
                for (j, qs) in block[16..].chunks_exact(32).enumerate() {
                    let low: i32 = qs
                        .iter()
                        .zip(&y[64 * j..64 * j + 32])
                        .map(|(&q, &y)| i32::from(q & 0xF) * i32::from(y))
                        .sum();
                    let high: i32 = qs
                        .iter()
                        .zip(&y[64 * j + 32..64 * j + 64])
                        .map(|(&q, &y)| i32::from(q >> 4) * i32::from(y))
                        .sum();
                    dot += i32::from(scales[2 * j]) * low + i32::from(scales[2 * j + 1]) * high;
                }
                let min_dot: i32 = (0..8)
                    .map(|j| {
                        i32::from(mins[j])
                            * (i32::from(y_sums[2 * j]) + i32::from(y_sums[2 * j + 1]))
                    })
                    .sum();
                let y_scale = inputs.scales[at];
                acc += y_scale * f16_at(block, 0) * dot as f32
                    - y_scale * f16_at(block, 2) * min_dot as f32;
            }
            *sum = acc;
        }
    }

    pub(super) fn q6k(weights: &[u8], inputs: &InputBlocks, sums: &mut [f32]) {
        let bytes = KQuant::Q6K.block_bytes();
        for (p, sum) in sums.iter_mut().enumerate().take(inputs.count) {
            let mut acc = 0f32;
            for (b, block) in weights.chunks_exact(bytes).enumerate().take(inputs.blocks) {
                let at = p * inputs.blocks + b;
                let y = &inputs.values[at * QK_K..(at + 1) * QK_K];
                let dot: i32 = (0..QK_K)
                    .map(|v| {
                        i32::from(block[192 + v / 16] as i8)
                            * i32::from(q6k_value(block, v) - 32)
                            * i32::from(y[v])
                    })
                    .sum();
                acc += inputs.scales[at] * f16_at(block, 208) * dot as f32;
            }
            *sum = acc;
        }
    }
}
