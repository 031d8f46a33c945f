//! WAV files as a stream of 16 kHz mono blocks: PCM 8/16/24/32-bit integer and 32-bit float,
//! any channel count (averaged) and any sample rate (resampled). Read block by block so memory
//! stays flat however long the recording is.

use std::fs::File;
use std::io::BufReader;
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

/// A WAV file being read as 16 kHz mono blocks.
pub struct WavSource {
    path: PathBuf,
    reader: WavReader<BufReader<File>>,
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
        let reader =
            WavReader::open(path).map_err(|e| audio_error(path, describe_hound_error(e)))?;
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
            // int16 / 32768 as HF, ffmpeg and soundfile do (shared/specs/medasr.md).
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
        if data_bytes > metadata.len() {
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
