//! Reading llama.cpp GGUF files: the header, the vocabulary, and tensors checked against the
//! configuration, quantized weights kept quantized (or packed for our Q8_0 kernels).

use super::*;

/// Reads tensors of one GGUF file, checking their shapes.
pub(super) struct GgufReader<'a> {
    pub(super) content: &'a gguf_file::Content,
    pub(super) reader: std::io::BufReader<std::fs::File>,
    pub(super) path: &'a Path,
    pub(super) device: &'a Device,
    pub(super) weights: GgufWeights,
}

impl GgufReader<'_> {
    pub(super) fn weights_error(&self, reason: String) -> LlmError {
        LlmError::Weights {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    pub(super) fn qtensor(&mut self, name: &str) -> Result<candle_core::quantized::QTensor> {
        self.qtensor_on(name, self.device)
    }

    /// A tensor read onto `device`, which may differ from the model's (lookup tables kept in
    /// host memory beside a GPU).
    pub(super) fn qtensor_on(
        &mut self,
        name: &str,
        device: &Device,
    ) -> Result<candle_core::quantized::QTensor> {
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| self.weights_error(format!("tensor {name}: {e}")))
    }

    pub(super) fn matrix(&mut self, name: &str, shape: [usize; 2]) -> Result<Matrix> {
        if let Some(k_quant) = self.k_quant_from_file(&[(name, shape)])? {
            return Ok(Matrix::KQuant(std::sync::Arc::new(k_quant)));
        }
        let q = self.qtensor(name)?;
        if q.shape().dims() != shape {
            return Err(self.weights_error(format!(
                "tensor {name} has shape {:?}, the metadata needs {shape:?}",
                q.shape().dims()
            )));
        }
        if self.weights == GgufWeights::Dequantized {
            return Ok(Matrix::Float(q.dequantize(self.device)?));
        }
        // Q5_0 is re-encoded exactly as Q8_0, which both kernels multiply faster.
        let q8_0: std::borrow::Cow<[u8]> = match q.dtype() {
            GgmlDType::Q8_0 if self.packs() => q.data()?,
            GgmlDType::Q5_0 => q5_0_to_q8_0(&q.data()?)
                .ok_or_else(|| self.weights_error(format!("tensor {name}: torn Q5_0 data")))?
                .into(),
            _ => return Ok(Matrix::Quantized(QMatMul::from_qtensor(q)?)),
        };
        if self.packs() {
            let packed = PackedQ8_0::pack(&q8_0, shape[0], shape[1]).ok_or_else(|| {
                self.weights_error(format!("tensor {name}: Q8_0 data of the wrong size"))
            })?;
            return Ok(Matrix::Packed(std::sync::Arc::new(packed)));
        }
        Ok(Matrix::Quantized(QMatMul::from_qtensor(
            qtensor_from_ggml(GgmlDType::Q8_0, &q8_0, shape.to_vec(), self.device)?,
        )?))
    }

    /// Whether Q8_0 (and re-encoded Q5_0) matrices go to the packed kernel.
    pub(super) fn packs(&self) -> bool {
        self.weights == GgufWeights::Quantized
            && self.device.is_cpu()
            && crate::cpu::packed::supported()
    }

    /// Where tensor `name`'s data starts in the file, after checking its shape.
    fn tensor_start(&self, name: &str, shape: [usize; 2]) -> Result<u64> {
        let Some(info) = self.content.tensor_infos.get(name) else {
            return Err(self.weights_error(format!("tensor {name} is missing")));
        };
        if info.shape.dims() != shape {
            return Err(self.weights_error(format!(
                "tensor {name} has shape {:?}, the metadata needs {shape:?}",
                info.shape.dims()
            )));
        }
        // Both checked against the file's length when the header was read (gguf_check).
        Ok(self.content.tensor_data_offset + info.offset)
    }

    fn tensor_dtype(&self, name: &str) -> Result<GgmlDType> {
        self.content
            .tensor_infos
            .get(name)
            .map(|info| info.ggml_dtype)
            .ok_or_else(|| self.weights_error(format!("tensor {name} is missing")))
    }

    /// Q4_K or Q6_K matrices of one type and width (one, or projections of the same input), read
    /// from the file straight into one tiled matrix for our K-quant kernels (CPU). `None` when
    /// they are of other or mixed types, the weights are not kept quantized here, or the parts
    /// do not tile as one (they are then read one by one).
    pub(super) fn k_quant_from_file(
        &mut self,
        parts: &[(&str, [usize; 2])],
    ) -> Result<Option<KQuantMatrix>> {
        let Some(&(first_name, [_, cols])) = parts.first() else {
            return Ok(None);
        };
        if self.weights != GgufWeights::Quantized || !self.device.is_cpu() {
            return Ok(None);
        }
        let Some(kind) = KQuant::of(self.tensor_dtype(first_name)?) else {
            return Ok(None);
        };
        for &(name, shape) in parts {
            if KQuant::of(self.tensor_dtype(name)?) != Some(kind) || shape[1] != cols {
                return Ok(None);
            }
            if KQuantMatrix::file_size(kind, shape[0], cols).is_none() {
                return Err(self
                    .weights_error(format!("tensor {name}: rows are not whole {kind:?} blocks")));
            }
        }
        let widths: Vec<usize> = parts.iter().map(|(_, shape)| shape[0]).collect();
        let starts = parts
            .iter()
            .map(|&(name, shape)| self.tensor_start(name, shape))
            .collect::<Result<Vec<u64>>>()?;
        let row_bytes = KQuantMatrix::file_size(kind, 1, cols).unwrap_or(0) as u64;
        let file = self.reader.get_ref();
        let tiled =
            KQuantMatrix::tile_parts(kind, &widths, cols, |part, first, rows: &mut [u8]| {
                let offset = starts[part] + first as u64 * row_bytes;
                read_exact_at(file, rows, offset).map_err(|e| (part, e))
            });
        tiled
            .transpose()
            .map_err(|(part, e)| self.weights_error(format!("tensor {}: {e}", parts[part].0)))
    }

    /// A Q8_0 matrix packed while it is read from the file, 16 rows at a time; `None` when the
    /// tensor is of another type or the packed kernel is not used here.
    pub(super) fn packed_from_file(
        &mut self,
        name: &str,
        shape: [usize; 2],
    ) -> Result<Option<PackedQ8_0>> {
        if !self.packs() || self.tensor_dtype(name)? != GgmlDType::Q8_0 {
            return Ok(None);
        }
        let start = self.tensor_start(name, shape)?;
        let row_bytes = (shape[1] / Q8_0_BLOCK_VALUES * Q8_0_BLOCK_BYTES) as u64;
        let file = self.reader.get_ref();
        let packed = PackedQ8_0::pack_with(shape[0], shape[1], |first, rows: &mut [u8]| {
            read_exact_at(file, rows, start + first as u64 * row_bytes)
        })
        .ok_or_else(|| {
            self.weights_error(format!("tensor {name}: rows are not whole Q8_0 blocks"))
        })?
        .map_err(|e| self.weights_error(format!("tensor {name}: {e}")))?;
        Ok(Some(packed))
    }

    /// A norm gain (llama.cpp stores 1 + w already).
    pub(super) fn gain(&mut self, name: &str, size: usize) -> Result<Tensor> {
        let t = self.qtensor(name)?.dequantize(self.device)?;
        if t.dims() != [size] {
            return Err(self.weights_error(format!(
                "norm {name} has shape {:?}, expected [{size}]",
                t.dims()
            )));
        }
        Ok(t)
    }
}

/// Opens a GGUF file and parses its header (metadata and tensor table).
pub(crate) fn read_gguf(
    path: &Path,
) -> Result<(gguf_file::Content, std::io::BufReader<std::fs::File>)> {
    let bad = |reason: String| LlmError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = crate::files::open_regular(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let file_len = file
        .metadata()
        .map_err(|e| bad(format!("cannot open: {e}")))?
        .len();
    // The header holds the whole vocabulary as ~800,000 small fields: unbuffered, each would be
    // a system call (most of the load time).
    let mut file = std::io::BufReader::with_capacity(1 << 20, file);
    crate::gguf_check::check_header(&mut file)
        .map_err(|e| bad(format!("not a readable GGUF file: {e}")))?;
    std::io::Seek::rewind(&mut file).map_err(|e| bad(format!("cannot read: {e}")))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| bad(format!("not a readable GGUF file: {e}")))?;
    crate::gguf_check::check_tensors(&content, file_len).map_err(bad)?;
    Ok((content, file))
}

/// The vocabulary stored in a GGUF header (`tokenizer.ggml.tokens`), to check a tokenizer against.
pub(crate) fn gguf_vocabulary(content: &gguf_file::Content, path: &Path) -> Result<Vec<String>> {
    let tokens = content
        .metadata
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok())
        .ok_or_else(|| LlmError::BadFile {
            path: path.to_path_buf(),
            reason: "no tokenizer.ggml.tokens in the metadata".into(),
        })?;
    Ok(tokens
        .iter()
        .map(|t| t.to_string().cloned().unwrap_or_default())
        .collect())
}

/// Fills `buf` from `file` at `offset`, without moving the file's position, so that several
/// threads can read one file at once.
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut buf, mut offset) = (buf, offset);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(file, buf, offset) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
