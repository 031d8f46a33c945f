//! The CPU kernels behind the model's products: packed Q8_0 with VNNI (`packed`), bf16 weights
//! widened on the fly (`bf16`), the gated GELU (`gelu`), Q5_0 re-encoding (`requant`). Each picks
//! its instructions at run time (`is_x86_feature_detected!`), so one build runs on any x86-64 CPU
//! and uses what this one has. With llm's memory maps, this is where the crate's `unsafe` code
//! lives; every kernel states the slice invariants it relies on as `debug_assert!`s, which the
//! test profile keeps on.

pub(crate) mod attention;
pub(crate) mod bf16;
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
