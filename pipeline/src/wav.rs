//! WAV files as a stream of 16 kHz mono blocks: PCM 8/16/24/32-bit integer and 32-bit float,
//! any channel count (averaged) and any sample rate (resampled). Read block by block so memory
//! stays flat however long the recording is.

use std::fs::File;
use std::io::{BufReader, Chain, Cursor, Read, Seek, SeekFrom, Take};
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavReader};

use crate::error::{PipelineError, Result};
use crate::resample::StreamResampler;

/// Samples per second that leave this module.
pub const TARGET_RATE: u32 = 16_000;
/// Input frames read per block (about 0.1-1 s of audio at common rates).
const BLOCK_FRAMES: usize = 16_384;
/// Sample rates outside this range are refused: they are corrupt headers, not recordings.
const RATE_RANGE: std::ops::RangeInclusive<u32> = 1_000..=768_000;
/// Channel counts above this are refused as corrupt headers.
const MAX_CHANNELS: u16 = 64;

/// What the header of a WAV file says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WavInfo {
    /// Native sample rate.
    pub sample_rate: u32,
    /// Channels per frame.
    pub channels: u16,
    /// Bits per sample.
    pub bits_per_sample: u16,
    /// Whether samples are IEEE floats.
    pub float: bool,
    /// Frames (samples per channel) in the data chunk.
    pub frames: u64,
}

impl WavInfo {
    /// Length of the recording, seconds.
    pub fn duration_s(&self) -> f64 {
        self.frames as f64 / f64::from(self.sample_rate)
    }
}

/// What hound reads: a canonical header (the file's own `fmt ` chunk, a `data` chunk header with
/// the size found by [`riff_layout`]) followed by the audio bytes of the file.
type CanonicalWav = BufReader<Chain<Cursor<Vec<u8>>, Take<File>>>;

/// Where a WAV file's format and audio are, found by walking its RIFF chunks (hound neither
/// honours the pad byte after an odd-sized chunk nor reads past a data size of 0 or 0xFFFFFFFF,
/// the placeholders streaming writers leave).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RiffLayout {
    /// The body of the `fmt ` chunk.
    format: Vec<u8>,
    /// Where the audio bytes start.
    data_offset: u64,
    /// How many audio bytes to read.
    data_len: u64,
    /// Set when the data size in the header was a placeholder and the audio runs to the end of
    /// the file instead.
    warning: Option<String>,
}

/// Header errors in the words `describe_hound_error` uses for the same faults.
const ENDS_IN_HEADER: &str = "truncated or not a valid WAV file: it ends inside its header";

/// Walks the RIFF chunks of a WAV file of `file_len` bytes up to its `data` chunk.
fn riff_layout(file: &mut File, file_len: u64) -> std::result::Result<RiffLayout, String> {
    let read = |file: &mut File, buf: &mut [u8]| {
        file.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ENDS_IN_HEADER.to_string(),
            _ => format!("cannot read: {e}"),
        })
    };
    let mut riff = [0u8; 12];
    read(file, &mut riff)?;
    if &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
        return Err("not a valid WAV file (no RIFF/WAVE header)".into());
    }
    let mut position = 12u64;
    let mut format: Option<Vec<u8>> = None;
    loop {
        let mut header = [0u8; 8];
        read(file, &mut header)?;
        position += 8;
        let size = u64::from(u32::from_le_bytes([
            header[4], header[5], header[6], header[7],
        ]));
        let remaining = file_len.saturating_sub(position);
        match &header[0..4] {
            b"fmt " => {
                if !(16..=1024).contains(&size) {
                    return Err(format!(
                        "not a valid WAV file (format chunk of {size} bytes)"
                    ));
                }
                let mut body = vec![0u8; size as usize];
                read(file, &mut body)?;
                format = Some(body);
            }
            b"data" => {
                let format = format.ok_or("not a valid WAV file (audio data before its format)")?;
                let block_align = u64::from(u16::from_le_bytes([format[12], format[13]])).max(1);
                let whole = |bytes: u64| bytes / block_align * block_align;
                let (data_len, warning) = match size {
                    0 | 0xFFFF_FFFF if remaining < block_align => (0, None),
                    // Streaming writers leave 0 or 0xFFFFFFFF until they finish; what follows
                    // the header is the recording.
                    0 | 0xFFFF_FFFF => (
                        whole(remaining),
                        Some(format!(
                            "the header gives the audio length as {size:#x} (left by a \
                             recorder that did not finish); reading the {} bytes to the end of \
                             the file",
                            whole(remaining)
                        )),
                    ),
                    _ => (size, None),
                };
                return Ok(RiffLayout {
                    format,
                    data_offset: position,
                    data_len,
                    warning,
                });
            }
            _ => {}
        }
        if &header[0..4] != b"fmt " {
            if size > remaining {
                return Err(ENDS_IN_HEADER.into());
            }
            file.seek(SeekFrom::Current(size as i64))
                .map_err(|e| format!("cannot read: {e}"))?;
        }
        // RIFF chunks are word aligned: an odd-sized chunk is followed by a pad byte.
        position += size + (size & 1);
        if size & 1 == 1 {
            file.seek(SeekFrom::Start(position))
                .map_err(|e| format!("cannot read: {e}"))?;
        }
    }
}

/// The canonical stream hound reads for `layout`.
fn canonical_wav(mut file: File, layout: &RiffLayout) -> std::io::Result<CanonicalWav> {
    let fmt_len = layout.format.len() as u32;
    let data_len = u32::try_from(layout.data_len).unwrap_or(u32::MAX);
    let mut header = Vec::with_capacity(28 + layout.format.len());
    header.extend_from_slice(b"RIFF");
    let riff_len = 4u32
        .saturating_add(8 + fmt_len + (fmt_len & 1))
        .saturating_add(8)
        .saturating_add(data_len);
    header.extend_from_slice(&riff_len.to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&fmt_len.to_le_bytes());
    header.extend_from_slice(&layout.format);
    if fmt_len & 1 == 1 {
        header.push(0);
    }
    header.extend_from_slice(b"data");
    header.extend_from_slice(&data_len.to_le_bytes());
    file.seek(SeekFrom::Start(layout.data_offset))?;
    Ok(BufReader::new(
        Cursor::new(header).chain(file.take(u64::from(data_len))),
    ))
}

/// A WAV file being read as 16 kHz mono blocks.
pub struct WavSource {
    path: PathBuf,
    reader: WavReader<CanonicalWav>,
    warnings: Vec<String>,
    info: WavInfo,
    scale: f32,
    frames_read: u64,
    resampler: Option<StreamResampler>,
    finished: bool,
}

impl std::fmt::Debug for WavSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSource")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn audio_error(path: &Path, reason: impl Into<String>) -> PipelineError {
    PipelineError::Audio {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// hound's errors in words a user understands.
fn describe_hound_error(error: hound::Error) -> String {
    match error {
        hound::Error::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "truncated WAV file: it ends before the audio data the header announces".into()
        }
        // hound's own short-read error while parsing chunks.
        hound::Error::IoError(e) if e.to_string().contains("Failed to read enough bytes") => {
            "truncated or not a valid WAV file: it ends inside its header".into()
        }
        hound::Error::IoError(e) => format!("cannot read: {e}"),
        // A well-formed header with a sample width we cannot read is an encoding we do not
        // support, not a broken file.
        hound::Error::FormatError(what) if what.starts_with("bits per sample is not") => {
            format!(
                "unsupported WAV encoding ({what}); use PCM 8/16/24/32-bit integer or 32-bit float"
            )
        }
        hound::Error::FormatError(what) => format!("not a valid WAV file ({what})"),
        hound::Error::TooWide => {
            "sample values wider than their declared bit depth (corrupt file)".into()
        }
        hound::Error::UnfinishedSample => {
            "truncated WAV file: the data ends inside a sample".into()
        }
        hound::Error::Unsupported => {
            "unsupported WAV encoding: use PCM 8/16/24/32-bit integer or 32-bit float".into()
        }
        hound::Error::InvalidSampleFormat => {
            "unsupported WAV encoding: use PCM 8/16/24/32-bit integer or 32-bit float".into()
        }
    }
}

impl WavSource {
    /// Opens and checks a WAV file. Everything that can be known from the header is checked
    /// here, so a bad file fails before any work starts.
    pub fn open(path: &Path) -> Result<Self> {
        let metadata =
            std::fs::metadata(path).map_err(|e| audio_error(path, format!("cannot open: {e}")))?;
        if metadata.is_dir() {
            return Err(audio_error(path, "is a directory, not a WAV file"));
        }
        if metadata.len() == 0 {
            return Err(audio_error(path, "empty file"));
        }
        if !metadata.is_file() {
            return Err(audio_error(path, "not a regular file"));
        }
        let mut file =
            File::open(path).map_err(|e| audio_error(path, format!("cannot open: {e}")))?;
        let layout = riff_layout(&mut file, metadata.len()).map_err(|e| audio_error(path, e))?;
        if layout.data_len == 0 {
            return Err(audio_error(
                path,
                "no audio samples (the recording is empty)",
            ));
        }
        let reader = canonical_wav(file, &layout)
            .map_err(|e| audio_error(path, format!("cannot read: {e}")))
            .and_then(|stream| {
                WavReader::new(stream).map_err(|e| audio_error(path, describe_hound_error(e)))
            })?;
        let spec = reader.spec();
        if !RATE_RANGE.contains(&spec.sample_rate) {
            return Err(audio_error(
                path,
                format!(
                    "unsupported sample rate {} Hz (corrupt header?)",
                    spec.sample_rate
                ),
            ));
        }
        if spec.channels == 0 || spec.channels > MAX_CHANNELS {
            return Err(audio_error(
                path,
                format!(
                    "unsupported channel count {} (corrupt header?)",
                    spec.channels
                ),
            ));
        }
        let float = spec.sample_format == SampleFormat::Float;
        let scale = match (spec.sample_format, spec.bits_per_sample) {
            (SampleFormat::Float, 32) => 1.0,
            // int16 / 32768 as HF, ffmpeg and soundfile do (transformers' `models/lasr/`).
            (SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => 1.0 / (1u64 << (bits - 1)) as f32,
            (format, bits) => {
                return Err(audio_error(
                    path,
                    format!(
                        "unsupported WAV encoding ({bits}-bit {}); use PCM 8/16/24/32-bit integer or 32-bit float",
                        if format == SampleFormat::Float { "float" } else { "integer" }
                    ),
                ))
            }
        };
        let frames = u64::from(reader.duration());
        // The data chunk cannot be longer than the file: catch truncation and absurd chunk sizes
        // before doing any work.
        let data_bytes = frames * u64::from(spec.channels) * u64::from(spec.bits_per_sample / 8);
        if layout.data_offset + data_bytes > metadata.len() {
            return Err(audio_error(
                path,
                format!(
                    "truncated or corrupt WAV file: the header announces {data_bytes} bytes of audio but the file has {} bytes",
                    metadata.len()
                ),
            ));
        }
        let resampler = if spec.sample_rate == TARGET_RATE {
            None
        } else {
            Some(
                StreamResampler::new(spec.sample_rate, TARGET_RATE).map_err(|e| {
                    audio_error(
                        path,
                        format!("cannot resample from {} Hz: {e}", spec.sample_rate),
                    )
                })?,
            )
        };
        Ok(Self {
            path: path.to_path_buf(),
            info: WavInfo {
                sample_rate: spec.sample_rate,
                channels: spec.channels,
                bits_per_sample: spec.bits_per_sample,
                float,
                frames,
            },
            reader,
            warnings: layout.warning.into_iter().collect(),
            scale,
            frames_read: 0,
            resampler,
            finished: false,
        })
    }

    /// The header facts.
    pub fn info(&self) -> WavInfo {
        self.info
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What was odd about the file but did not stop it being read (a placeholder audio length),
    /// one line each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The next block of 16 kHz mono samples, or `None` at the end.
    pub fn next_block(&mut self) -> Result<Option<Vec<f32>>> {
        if self.finished {
            return Ok(None);
        }
        let channels = usize::from(self.info.channels);
        let remaining = self.info.frames - self.frames_read;
        let frames = (BLOCK_FRAMES as u64).min(remaining) as usize;
        let mut mono = vec![0.0f32; frames];
        let path = &self.path;
        let read_error = |e| audio_error(path, describe_hound_error(e));
        if self.info.float {
            let mut samples = self.reader.samples::<f32>();
            for value in mono.iter_mut() {
                let mut sum = 0.0f32;
                for _ in 0..channels {
                    let sample = samples
                        .next()
                        .ok_or_else(|| read_error(truncated()))?
                        .map_err(read_error)?;
                    sum += if sample.is_finite() { sample } else { 0.0 };
                }
                *value = sum / channels as f32;
            }
        } else {
            let scale = self.scale;
            let mut samples = self.reader.samples::<i32>();
            for value in mono.iter_mut() {
                let mut sum = 0.0f64;
                for _ in 0..channels {
                    let sample = samples
                        .next()
                        .ok_or_else(|| read_error(truncated()))?
                        .map_err(read_error)?;
                    sum += f64::from(sample);
                }
                *value = if channels == 1 {
                    sum as f32 * scale
                } else {
                    (sum / channels as f64) as f32 * scale
                };
            }
        }
        self.frames_read += frames as u64;
        let at_end = self.frames_read >= self.info.frames;
        let block = match &mut self.resampler {
            None => mono,
            Some(resampler) => {
                let mut out = Vec::with_capacity(mono.len() * 2);
                resampler.push(&mono, &mut out);
                if at_end {
                    resampler.finish(&mut out);
                }
                out
            }
        };
        if at_end {
            self.finished = true;
        }
        Ok(Some(block))
    }

    /// Reads the whole file into memory (for short clips and tests).
    pub fn read_all(mut self) -> Result<Vec<f32>> {
        let mut all = Vec::new();
        while let Some(block) = self.next_block()? {
            all.extend_from_slice(&block);
        }
        Ok(all)
    }
}

fn truncated() -> hound::Error {
    hound::Error::IoError(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16 kHz mono 16-bit WAV: `extra` chunks before the audio, the data size as `declared`.
    fn wav(extra: &[(&[u8; 4], &[u8], bool)], declared: Option<u32>, samples: &[i16]) -> Vec<u8> {
        let mut out = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        out.extend(16u32.to_le_bytes());
        out.extend(1u16.to_le_bytes());
        out.extend(1u16.to_le_bytes());
        out.extend(16_000u32.to_le_bytes());
        out.extend(32_000u32.to_le_bytes());
        out.extend(2u16.to_le_bytes());
        out.extend(16u16.to_le_bytes());
        for (id, body, pad) in extra {
            out.extend(*id);
            out.extend((body.len() as u32).to_le_bytes());
            out.extend(*body);
            if *pad && body.len() % 2 == 1 {
                out.push(0);
            }
        }
        out.extend(b"data");
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        out.extend(declared.unwrap_or(bytes.len() as u32).to_le_bytes());
        out.extend(bytes);
        out
    }

    fn open(bytes: &[u8]) -> Result<WavSource> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.wav");
        std::fs::write(&path, bytes).unwrap();
        WavSource::open(&path)
    }

    fn tone() -> Vec<i16> {
        (0..16_000)
            .map(|i| ((i % 100) * 300 - 15_000) as i16)
            .collect()
    }

    #[test]
    fn placeholder_lengths_of_streaming_writers_read_to_the_end_with_a_warning() {
        let expected = open(&wav(&[], None, &tone())).unwrap();
        assert!(expected.warnings().is_empty());
        let expected = expected.read_all().unwrap();
        for declared in [0u32, 0xFFFF_FFFF] {
            let source = open(&wav(&[], Some(declared), &tone())).unwrap();
            assert_eq!(source.info().frames, 16_000, "{declared:#x}");
            assert_eq!(source.warnings().len(), 1);
            assert!(source.warnings()[0].contains("end of the file"));
            assert_eq!(source.read_all().unwrap(), expected, "{declared:#x}");
        }
    }

    #[test]
    fn a_header_without_audio_is_an_error_saying_so() {
        for declared in [None, Some(0), Some(0xFFFF_FFFF)] {
            let err = open(&wav(&[], declared, &[])).unwrap_err().to_string();
            assert!(err.contains("no audio samples"), "{declared:?}: {err}");
        }
    }

    #[test]
    fn odd_sized_chunks_are_followed_by_their_pad_byte() {
        let note: &[u8] = b"INFOabc"; // 7 bytes: a pad byte follows
        let padded = open(&wav(&[(b"LIST", note, true)], None, &tone())).unwrap();
        assert_eq!(padded.info().frames, 16_000);
        assert_eq!(
            padded.read_all().unwrap(),
            open(&wav(&[], None, &tone())).unwrap().read_all().unwrap()
        );
        // Without its pad byte the chunks after it are misaligned: refused, not misread.
        assert!(open(&wav(&[(b"LIST", note, false)], None, &tone())).is_err());
    }
}
