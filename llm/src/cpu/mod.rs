//! The CPU kernels behind the model's products: packed Q8_0 with VNNI (`packed`), bf16 weights
//! widened on the fly (`bf16`), the gated GELU (`gelu`), Q5_0 re-encoding (`requant`). Each picks
//! its instructions at run time (`is_x86_feature_detected!`), so one build runs on any x86-64 CPU
//! and uses what this one has. With llm's memory maps, this is where the crate's `unsafe` code
//! lives; every kernel states the slice invariants it relies on as `debug_assert!`s, which the
//! test profile keeps on.

pub(crate) mod attention;
pub(crate) mod bf16;
pub(crate) mod dense;
pub(crate) mod gelu;
pub(crate) mod kquant;
pub(crate) mod packed;
pub(crate) mod requant;

use std::marker::PhantomData;

use candle_core::Tensor;

use crate::error::{LlmError, Result};

/// `x @ w^T` through a CPU kernel taking the activation as `[positions, in_width]` f32 values and
/// giving `[positions, out_width]`; `None` from the kernel means the shapes disagree.
pub(crate) fn cpu_product(
    x: &Tensor,
    in_width: usize,
    out_width: usize,
    kernel: impl FnOnce(&[f32], usize) -> Option<Vec<f32>>,
) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let shape_error = || {
        LlmError::Internal(format!(
            "activation {:?} does not fit a [{out_width}, {in_width}] matrix",
            x.dims()
        ))
    };
    if dims.pop() != Some(in_width) {
        return Err(shape_error());
    }
    let positions = x.elem_count() / in_width.max(1);
    let out = kernel(&x.flatten_all()?.to_vec1::<f32>()?, positions).ok_or_else(shape_error)?;
    dims.push(out_width);
    Ok(Tensor::from_vec(out, dims, x.device())?)
}

/// How a weight matrix's rows are grouped into tiles while they are read from a file.
pub(crate) struct TileReading {
    /// Rows of each part (projections of the same input read as one matrix), in order; all but
    /// the last are whole tiles.
    pub(crate) part_rows: Vec<usize>,
    /// Rows per tile.
    pub(crate) tile_rows: usize,
    /// Bytes of one row in the file.
    pub(crate) row_bytes: usize,
    /// Bytes of one tile in memory.
    pub(crate) tile_bytes: usize,
    /// Tiles one thread reads at once (about a megabyte).
    pub(crate) tiles_per_read: usize,
}

impl TileReading {
    /// The part, first row in it, and rows present of tile `t`.
    fn rows_of(&self, t: usize) -> (usize, usize, usize) {
        let mut first = t * self.tile_rows;
        for (part, &rows) in self.part_rows.iter().enumerate() {
            if first < rows {
                return (part, first, self.tile_rows.min(rows - first));
            }
            first -= rows;
        }
        (self.part_rows.len(), 0, 0)
    }

    /// Fills `out` (whole tiles) tile by tile: `read_rows(part, first, bytes)` supplies a part's
    /// file rows `first..first + bytes.len() / row_bytes`, and `fill(tile, rows)` turns up to
    /// `tile_rows` of them into a zeroed tile. Every thread reads and fills its own runs of
    /// tiles: with one thread reading while the others waited, reading was a third of a 4B
    /// model's load. The first error stops the work and is returned.
    pub(crate) fn fill<E: Send>(
        &self,
        out: &mut [u8],
        read_rows: impl Fn(usize, usize, &mut [u8]) -> std::result::Result<(), E> + Sync,
        fill: impl Fn(&mut [u8], &[u8]) + Sync,
    ) -> std::result::Result<(), E> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let tiles = out.len() / self.tile_bytes.max(1);
        let failure: std::sync::Mutex<Option<E>> = std::sync::Mutex::new(None);
        let failed = AtomicBool::new(false);
        let writes = DisjointWrites::new(out);
        candle_core::utils::barrier_pool().execute_chunked(tiles, |range| {
            let mut source = Vec::new();
            let mut t = range.start;
            while t < range.end && !failed.load(Ordering::Relaxed) {
                // One read for a run of tiles of the same part.
                let (part, first, _) = self.rows_of(t);
                let mut end = t + 1;
                while end < range.end.min(t + self.tiles_per_read) && self.rows_of(end).0 == part {
                    end += 1;
                }
                let (_, last_first, last_present) = self.rows_of(end - 1);
                source.resize((last_first + last_present - first) * self.row_bytes, 0);
                if let Err(e) = read_rows(part, first, &mut source) {
                    failed.store(true, Ordering::Relaxed);
                    if let Ok(mut slot) = failure.lock() {
                        slot.get_or_insert(e);
                    }
                    return;
                }
                for (n, rows) in source.chunks(self.tile_rows * self.row_bytes).enumerate() {
                    // SAFETY: tile `t + n` lies in this worker's range, which no other worker
                    // touches, and inside `out` (`tiles` whole tiles).
                    let tile = unsafe { writes.slice((t + n) * self.tile_bytes, self.tile_bytes) };
                    fill(tile, rows);
                }
                t = end;
            }
        });
        match failure.into_inner().ok().flatten() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// An output buffer that parallel workers fill at disjoint places: the one way the kernels share
/// a buffer across candle's worker threads.
pub(crate) struct DisjointWrites<'a, T> {
    start: *mut T,
    len: usize,
    _buffer: PhantomData<&'a mut [T]>,
}

// SAFETY: it hands out `&mut` access to parts of a buffer it borrows mutably; `slice`'s contract
// keeps those parts disjoint, so sharing it is like sharing the disjoint `&mut` slices.
unsafe impl<T: Send> Send for DisjointWrites<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for DisjointWrites<'_, T> {}

impl<'a, T> DisjointWrites<'a, T> {
    /// Borrows `buffer` for the workers.
    pub(crate) fn new(buffer: &'a mut [T]) -> Self {
        Self {
            start: buffer.as_mut_ptr(),
            len: buffer.len(),
            _buffer: PhantomData,
        }
    }

    /// `len` elements from `offset`.
    ///
    /// # Safety
    /// No two slices handed out while this lives overlap, and `offset + len` is within the buffer.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, offset: usize, len: usize) -> &mut [T] {
        debug_assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "{offset} + {len} is past a buffer of {}",
            self.len
        );
        // SAFETY: in bounds (the caller's contract, asserted above in tests) and not aliased
        // (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.start.add(offset), len) }
    }
}

/// The instruction sets our quantized products run on this CPU, as [`crate::cpu_kernels`] gives
/// them.
pub(crate) fn kernel_summary() -> String {
    let best = |sets: Vec<String>| {
        sets.into_iter()
            .next()
            .unwrap_or_else(|| "none (candle's kernels)".into())
    };
    format!(
        "K-quants {}, Q8_0 {}",
        best(kquant::KQuantMatrix::instruction_sets()),
        best(packed::PackedQ8_0::instruction_sets())
    )
}

/// Zeroed bytes for weight tiles (packed Q8_0, K-quants), from calloc, so the only zeroing is the
/// kernel's, page by page. Large buffers can be aligned to 2 MiB and, on Linux, asked to be
/// backed by transparent huge pages: a decode step of the 270M model streams its whole 178 MB
/// output head, and with 4 KiB pages that is 45,000 TLB misses per token. The price is paid at
/// load when memory is fragmented (the kernel compacts it to find huge pages): a 4B model, whose
/// K-quant tiles did not decode faster on huge pages, loaded in 7.3-7.6 s with them right after
/// another program had freed its memory, and in 4.1-5.1 s without.
#[derive(Debug)]
pub(crate) struct TileMemory {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl TileMemory {
    const HUGE_PAGE: usize = 2 << 20;

    /// `len` zeroed bytes, on huge pages where that is asked for and the buffer is large.
    pub(crate) fn zeroed(len: usize, huge_pages: bool) -> Self {
        if !huge_pages || len < 4 * Self::HUGE_PAGE {
            return Self {
                storage: vec![0; len],
                start: 0,
                len,
            };
        }
        // calloc maps fresh pages for a buffer this size: nothing is touched before the advice.
        let storage = vec![0u8; len + Self::HUGE_PAGE];
        let start = storage
            .as_ptr()
            .align_offset(Self::HUGE_PAGE)
            .min(Self::HUGE_PAGE);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: the range lies inside `storage`; the advice changes no contents, only how the
        // kernel backs the pages, and failure is harmless (it stays on small pages).
        unsafe {
            libc::madvise(
                storage.as_ptr().add(start) as *mut libc::c_void,
                len / Self::HUGE_PAGE * Self::HUGE_PAGE,
                libc::MADV_HUGEPAGE,
            );
        }
        Self {
            storage,
            start,
            len,
        }
    }

    /// Bytes held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// A matrix as a product reads it: its first element and the distance, in elements, from one row
/// to the next and from one column to the next.
#[derive(Clone, Copy)]
pub(crate) struct Strided {
    pub(crate) start: *const f32,
    pub(crate) row_stride: isize,
    pub(crate) column_stride: isize,
}

/// `dst = lhs rhs` (`dst += lhs rhs` when `accumulate`) for `lhs` `m x k`, `rhs` `k x n` and a
/// row-major `dst` `m x n` with rows `dst_row_stride` apart, on the calling thread (gemm, the
/// matrix crate candle uses, without its threads: our callers split the work themselves).
///
/// # Safety
/// Every element the three matrices address, by their starts and strides, is inside a live
/// allocation, and `dst`'s do not overlap `lhs`'s or `rhs`'s.
pub(crate) unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_row_stride: usize,
    accumulate: bool,
    lhs: Strided,
    rhs: Strided,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.start,
            lhs.column_stride,
            lhs.row_stride,
            rhs.start,
            rhs.column_stride,
            rhs.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The largest absolute difference between two tensors of one shape, for tests.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("tensors of one shape on one device")
}
