//! Checks that make a hostile GGUF file a clear error instead of a crash: the header is scanned
//! for `general.alignment` before candle's parser divides by it, and after parsing every tensor's
//! shape, byte size and offset is computed with checked arithmetic and compared with the bytes the
//! file really holds. Everything that later allocates or reads weights (candle's loaders, the
//! packed kernel) relies on these checks, so they run on every GGUF file medscribe opens.

use std::io::{BufRead, Read, Seek};

use candle_core::quantized::gguf_file;

/// Deepest nesting of arrays inside arrays accepted in metadata (candle's own limit).
const MAX_VALUE_DEPTH: usize = 64;
/// Largest `general.alignment` accepted (llama.cpp writes 32; any power of two up to this works).
const MAX_ALIGNMENT: u64 = 1 << 20;

/// Scans the metadata of a GGUF header at the reader's position (which is left wherever the scan
/// stopped) for a `general.alignment` that candle's parser could not use: 0 divides by zero
/// there, and ggml requires a power of two.
pub(crate) fn check_header<R: BufRead + Seek>(reader: &mut R) -> Result<(), String> {
    let mut magic = [0u8; 4];
    read_exact(reader, &mut magic)?;
    if &magic != b"GGUF" {
        return Err("not a GGUF file (its first bytes are not GGUF)".into());
    }
    let version = read_u32(reader)?;
    let wide = match version {
        1 => false,
        2 | 3 => true,
        other => return Err(format!("GGUF version {other} is not supported")),
    };
    let length = |reader: &mut R| -> Result<u64, String> {
        if wide {
            read_u64(reader)
        } else {
            read_u32(reader).map(u64::from)
        }
    };
    let _tensor_count = length(reader)?;
    let metadata_count = length(reader)?;
    for _ in 0..metadata_count {
        let key_length = length(reader)?;
        let is_alignment = key_length == b"general.alignment".len() as u64 && {
            let mut key = [0u8; 17];
            read_exact(reader, &mut key)?;
            &key == b"general.alignment"
        };
        if key_length != 17 {
            skip(reader, key_length)?;
        }
        let value_type = read_u32(reader)?;
        if is_alignment {
            let alignment = match value_type {
                0 | 1 => u64::from(read_u8(reader)?),
                2 | 3 => u64::from(read_u16(reader)?),
                4 | 5 => u64::from(read_u32(reader)?),
                10 | 11 => read_u64(reader)?,
                // candle ignores an alignment of another type and uses its default.
                other => {
                    skip_value(reader, other, wide, 0)?;
                    continue;
                }
            };
            if alignment == 0 || !alignment.is_power_of_two() || alignment > MAX_ALIGNMENT {
                return Err(format!(
                    "general.alignment {alignment} is not a power of two up to {MAX_ALIGNMENT}"
                ));
            }
            return Ok(());
        }
        skip_value(reader, value_type, wide, 0)?;
    }
    Ok(())
}

/// Skips one metadata value of GGUF type `value_type`.
fn skip_value<R: BufRead + Seek>(
    reader: &mut R,
    value_type: u32,
    wide: bool,
    depth: usize,
) -> Result<(), String> {
    let length = |reader: &mut R| -> Result<u64, String> {
        if wide {
            read_u64(reader)
        } else {
            read_u32(reader).map(u64::from)
        }
    };
    match value_type {
        0 | 1 | 7 => skip(reader, 1),
        2 | 3 => skip(reader, 2),
        4..=6 => skip(reader, 4),
        10..=12 => skip(reader, 8),
        8 => {
            let len = length(reader)?;
            skip(reader, len)
        }
        9 => {
            if depth >= MAX_VALUE_DEPTH {
                return Err("metadata arrays nested too deeply".into());
            }
            let element_type = read_u32(reader)?;
            let count = length(reader)?;
            let fixed = match element_type {
                0 | 1 | 7 => Some(1u64),
                2 | 3 => Some(2),
                4..=6 => Some(4),
                10..=12 => Some(8),
                _ => None,
            };
            match fixed {
                Some(size) => skip(
                    reader,
                    count
                        .checked_mul(size)
                        .ok_or("a metadata array is larger than any file")?,
                ),
                None => {
                    for _ in 0..count {
                        skip_value(reader, element_type, wide, depth + 1)?;
                    }
                    Ok(())
                }
            }
        }
        other => Err(format!("unknown metadata value type {other}")),
    }
}

/// The total bytes of a GGUF tensor of `dims` and type `dtype`, with checked arithmetic.
pub(crate) fn tensor_bytes(
    dims: &[usize],
    dtype: candle_core::quantized::GgmlDType,
) -> Result<usize, String> {
    if dims.is_empty() {
        return Err("has no dimensions".into());
    }
    if dims.contains(&0) {
        return Err(format!("has an empty dimension in {dims:?}"));
    }
    let elements = dims
        .iter()
        .try_fold(1usize, |product, &d| product.checked_mul(d))
        .ok_or_else(|| format!("shape {dims:?} has more elements than any file holds"))?;
    let block = dtype.block_size();
    if !elements.is_multiple_of(block) {
        return Err(format!(
            "shape {dims:?} is not whole {dtype:?} blocks of {block} values"
        ));
    }
    (elements / block)
        .checked_mul(dtype.type_size())
        .filter(|&bytes| bytes <= isize::MAX as usize)
        .ok_or_else(|| format!("shape {dims:?} has more bytes than any file holds"))
}

/// Checks every tensor of a parsed header against a file of `file_len` bytes: a shape with whole
/// blocks and no empty or overflowing dimension, and data that lies inside the file.
pub(crate) fn check_tensors(content: &gguf_file::Content, file_len: u64) -> Result<(), String> {
    if content.tensor_data_offset > file_len {
        return Err("the tensor data would start after the end of the file".into());
    }
    for (name, info) in &content.tensor_infos {
        let bytes = tensor_bytes(info.shape.dims(), info.ggml_dtype)
            .map_err(|reason| format!("tensor {name} {reason}"))?;
        let end = content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|start| start.checked_add(bytes as u64))
            .ok_or_else(|| format!("tensor {name} has an offset beyond any file"))?;
        if end > file_len {
            return Err(format!(
                "tensor {name} needs bytes up to {end}, but the file has {file_len} (is it cut short?)"
            ));
        }
    }
    Ok(())
}

fn read_exact<R: Read>(reader: &mut R, buffer: &mut [u8]) -> Result<(), String> {
    reader
        .read_exact(buffer)
        .map_err(|_| "the header is cut short".to_string())
}

fn read_u8<R: Read>(reader: &mut R) -> Result<u8, String> {
    let mut b = [0u8; 1];
    read_exact(reader, &mut b)?;
    Ok(b[0])
}

fn read_u16<R: Read>(reader: &mut R) -> Result<u16, String> {
    let mut b = [0u8; 2];
    read_exact(reader, &mut b)?;
    Ok(u16::from_le_bytes(b))
}

fn read_u32<R: Read>(reader: &mut R) -> Result<u32, String> {
    let mut b = [0u8; 4];
    read_exact(reader, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64<R: Read>(reader: &mut R) -> Result<u64, String> {
    let mut b = [0u8; 8];
    read_exact(reader, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Skips `count` bytes, failing when the file ends first.
fn skip<R: BufRead + Seek>(reader: &mut R, count: u64) -> Result<(), String> {
    let mut left = count;
    while left > 0 {
        let available = reader
            .fill_buf()
            .map_err(|e| format!("cannot read the header: {e}"))?
            .len();
        if available == 0 {
            return Err("the header is cut short".into());
        }
        let step = available.min(usize::try_from(left).unwrap_or(usize::MAX));
        reader.consume(step);
        left -= step as u64;
        if left > (1 << 20) {
            // Past the buffer, seek instead of reading; the end check comes from the next read.
            let position = reader
                .stream_position()
                .map_err(|e| format!("cannot read the header: {e}"))?;
            let target = position
                .checked_add(left)
                .ok_or("the header is cut short")?;
            let end = reader
                .seek(std::io::SeekFrom::End(0))
                .map_err(|e| format!("cannot read the header: {e}"))?;
            if target > end {
                return Err("the header is cut short".into());
            }
            reader
                .seek(std::io::SeekFrom::Start(target))
                .map_err(|e| format!("cannot read the header: {e}"))?;
            left = 0;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;
    use std::io::Cursor;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    /// A v3 header with the given metadata entries `(key, type, value bytes)` and no tensors.
    fn header(entries: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.extend((entries.len() as u64).to_le_bytes());
        for (key, value_type, value) in entries {
            string(&mut out, key);
            out.extend(value_type.to_le_bytes());
            out.extend(value);
        }
        out
    }

    fn check(bytes: Vec<u8>) -> Result<(), String> {
        check_header(&mut std::io::BufReader::new(Cursor::new(bytes)))
    }

    #[test]
    fn alignment_zero_or_odd_is_refused_before_candle_divides_by_it() {
        let mut names = Vec::new();
        string(&mut names, "a");
        string(&mut names, "bc");
        let array = [
            8u32.to_le_bytes().to_vec(),
            2u64.to_le_bytes().to_vec(),
            names,
        ]
        .concat();
        for (alignment, ok) in [(0u32, false), (3, false), (32, true), (1 << 30, false)] {
            let bytes = header(&[
                ("general.name", 8, {
                    let mut v = Vec::new();
                    string(&mut v, "x");
                    v
                }),
                ("tokenizer.ggml.tokens", 9, array.clone()),
                ("general.alignment", 4, alignment.to_le_bytes().to_vec()),
            ]);
            let result = check(bytes.clone());
            assert_eq!(result.is_ok(), ok, "{alignment}: {result:?}");
            if !ok {
                assert!(result.unwrap_err().contains("general.alignment"));
            } else {
                // candle parses what passed.
                gguf_file::Content::read(&mut Cursor::new(bytes)).unwrap();
            }
        }
        assert!(check(header(&[])).is_ok());
    }

    #[test]
    fn cut_short_and_foreign_headers_are_errors() {
        let full = header(&[("general.alignment", 4, 32u32.to_le_bytes().to_vec())]);
        for len in 0..full.len() - 4 {
            assert!(check(full[..len].to_vec()).is_err(), "{len}");
        }
        assert!(check(b"PK\x03\x04whatever".to_vec()).is_err());
        // An array claiming 2^62 strings in a tiny file ends at the file's end, not in a loop of
        // 2^62 steps or an allocation.
        let huge = [
            8u32.to_le_bytes().as_slice(),
            (1u64 << 62).to_le_bytes().as_slice(),
        ]
        .concat();
        assert!(check(header(&[("x", 9, huge)])).is_err());
    }

    #[test]
    fn tensor_sizes_are_checked_without_overflow() {
        assert_eq!(tensor_bytes(&[2, 64], GgmlDType::Q8_0), Ok(2 * 2 * 34));
        assert_eq!(tensor_bytes(&[3, 5], GgmlDType::F32), Ok(60));
        for dims in [
            vec![64, 1usize << 63],
            vec![1 << 63, 64],
            vec![64, 1 << 58],
            vec![],
            vec![0, 640],
            vec![usize::MAX, usize::MAX],
        ] {
            assert!(tensor_bytes(&dims, GgmlDType::Q8_0).is_err(), "{dims:?}");
        }
        assert!(tensor_bytes(&[3, 33], GgmlDType::Q8_0).is_err());
    }
}
