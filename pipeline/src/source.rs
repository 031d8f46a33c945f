//! Live audio sources: a sound card through cpal, a WAV file played as if it were a microphone,
//! and a generated test signal. A source hands out blocks of interleaved `f32` samples at its own
//! rate and channel count; the live pipeline records them as they are and converts them to
//! 16 kHz mono afterwards.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::error::{PipelineError, Result};
use crate::wav::{WavSource, TARGET_RATE};

/// How long [`AudioSource::read`] waits for audio before returning an empty block, so the
/// caller can notice a stop request.
pub const READ_TIMEOUT: Duration = Duration::from_millis(100);
/// Frames per block handed out by the file and synthetic sources (100 ms at 16 kHz).
const BLOCK_FRAMES: usize = 1_600;

/// Rate and layout of a source's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    /// Frames per second.
    pub sample_rate: u32,
    /// Interleaved channels per frame.
    pub channels: u16,
}

/// A live stream of audio.
pub trait AudioSource {
    /// What the user knows this source as (device name, file name).
    fn name(&self) -> &str;
    /// Rate and layout of the samples [`read`](Self::read) returns.
    fn format(&self) -> AudioFormat;
    /// The next block of interleaved samples in -1..1. An empty block means nothing arrived
    /// within [`READ_TIMEOUT`]; `None` means the source has ended.
    fn read(&mut self) -> Result<Option<Vec<f32>>>;
    /// Samples the source had to drop because they were not read in time (a device whose
    /// buffer overflowed); always 0 for sources that wait for their reader.
    fn dropped_samples(&self) -> u64 {
        0
    }
    /// Whether audio keeps arriving whether or not it is read (a sound card): such a source is
    /// drained while capture is paused, others are simply not read.
    fn is_live(&self) -> bool {
        false
    }
}

/// Which source to open.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A capture device: by name (or part of it), else the default input device.
    Device(Option<String>),
    /// A WAV file played as a microphone: paced at real time, or as fast as it can be read.
    File {
        /// The recording.
        path: PathBuf,
        /// Deliver at real time (a demo) rather than as fast as possible (a test).
        paced: bool,
    },
    /// A generated signal (quiet noise with tone bursts) of the given length, as fast as
    /// possible: for tests of long recordings.
    Synthetic {
        /// Length, seconds.
        seconds: f64,
        /// Sample rate.
        sample_rate: u32,
        /// Channels.
        channels: u16,
    },
}

impl SourceSpec {
    /// Opens the source. Device sources must be read on the thread that opened them.
    pub fn open(&self) -> Result<Box<dyn AudioSource>> {
        match self {
            SourceSpec::Device(name) => Ok(Box::new(DeviceSource::open(name.as_deref())?)),
            SourceSpec::File { path, paced } => Ok(Box::new(FileSource::open(path, *paced)?)),
            SourceSpec::Synthetic {
                seconds,
                sample_rate,
                channels,
            } => Ok(Box::new(SyntheticSource::new(
                *seconds,
                *sample_rate,
                *channels,
            )?)),
        }
    }
}

/// A WAV file delivered in 100 ms blocks of 16 kHz mono, optionally at real time.
#[derive(Debug)]
pub struct FileSource {
    name: String,
    wav: WavSource,
    pending: Vec<f32>,
    paced_from: Option<Instant>,
    delivered: usize,
    ended: bool,
}

impl FileSource {
    /// Opens `path` (any WAV the batch mode accepts).
    pub fn open(path: &Path, paced: bool) -> Result<Self> {
        let wav = WavSource::open(path)?;
        Ok(Self {
            name: path.display().to_string(),
            wav,
            pending: Vec::new(),
            paced_from: paced.then(Instant::now),
            delivered: 0,
            ended: false,
        })
    }
}

impl AudioSource for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn format(&self) -> AudioFormat {
        AudioFormat {
            sample_rate: TARGET_RATE,
            channels: 1,
        }
    }

    fn read(&mut self) -> Result<Option<Vec<f32>>> {
        while self.pending.len() < BLOCK_FRAMES && !self.ended {
            match self.wav.next_block()? {
                Some(block) => self.pending.extend_from_slice(&block),
                None => self.ended = true,
            }
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        let take = self.pending.len().min(BLOCK_FRAMES);
        let block: Vec<f32> = self.pending.drain(..take).collect();
        if let Some(from) = self.paced_from.as_mut() {
            let due = Duration::from_secs_f64(self.delivered as f64 / f64::from(TARGET_RATE));
            // After a pause (nobody read), carry on at real time rather than catching up.
            if from.elapsed() > due + Duration::from_millis(250) {
                *from = Instant::now().checked_sub(due).unwrap_or_else(Instant::now);
            }
            pace(*from, self.delivered + take, TARGET_RATE);
        }
        self.delivered += take;
        Ok(Some(block))
    }
}

/// Sleeps until `frames` frames would have been captured at `rate` since `from`.
fn pace(from: Instant, frames: usize, rate: u32) {
    let due = Duration::from_secs_f64(frames as f64 / f64::from(rate));
    let elapsed = from.elapsed();
    if due > elapsed {
        std::thread::sleep(due - elapsed);
    }
}

/// A deterministic test signal: quiet noise (-50 dBFS) with a 440 Hz tone burst every few
/// seconds, in any rate and channel count, delivered as fast as it is read.
#[derive(Debug)]
pub struct SyntheticSource {
    name: String,
    format: AudioFormat,
    total_frames: u64,
    frame: u64,
    noise_state: u32,
}

impl SyntheticSource {
    /// `seconds` of signal at `sample_rate` with `channels` channels.
    pub fn new(seconds: f64, sample_rate: u32, channels: u16) -> Result<Self> {
        if !(seconds.is_finite() && seconds >= 0.0) || sample_rate == 0 || channels == 0 {
            return Err(PipelineError::Source(format!(
                "synthetic source: invalid length {seconds} s, rate {sample_rate} Hz or {channels} channels"
            )));
        }
        Ok(Self {
            name: format!("synthetic signal ({seconds} s)"),
            format: AudioFormat {
                sample_rate,
                channels,
            },
            total_frames: (seconds * f64::from(sample_rate)).round() as u64,
            frame: 0,
            noise_state: 0x1234_5678,
        })
    }

    fn next_noise(&mut self) -> f32 {
        // xorshift32: cheap, deterministic, good enough for a noise floor.
        let mut x = self.noise_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.noise_state = x;
        (x as f32 / u32::MAX as f32) * 2.0 - 1.0
    }
}

impl AudioSource for SyntheticSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn format(&self) -> AudioFormat {
        self.format
    }

    fn read(&mut self) -> Result<Option<Vec<f32>>> {
        if self.frame >= self.total_frames {
            return Ok(None);
        }
        let rate = u64::from(self.format.sample_rate);
        let frames = (self.total_frames - self.frame).min(rate / 10 + 1);
        let channels = usize::from(self.format.channels);
        let mut block = Vec::with_capacity(frames as usize * channels);
        for _ in 0..frames {
            let t = self.frame as f64 / rate as f64;
            // A 0.5 s tone every 4 s.
            let tone = if t % 4.0 < 0.5 {
                0.1 * (2.0 * std::f64::consts::PI * 440.0 * t).sin() as f32
            } else {
                0.0
            };
            let value = tone + 0.003 * self.next_noise();
            block.extend(std::iter::repeat_n(value, channels));
            self.frame += 1;
        }
        Ok(Some(block))
    }
}

/// A capture device through cpal. The stream lives as long as this value and must stay on the
/// thread that opened it.
pub struct DeviceSource {
    name: String,
    format: AudioFormat,
    _stream: cpal::Stream,
    blocks: Receiver<Vec<f32>>,
    errors: Receiver<String>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for DeviceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSource")
            .field("name", &self.name)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// One capture device as listed for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The name to pass to `--device`.
    pub name: String,
    /// Whether it is the system's default input.
    pub is_default: bool,
    /// Its default rate and channels, when the device says.
    pub format: Option<AudioFormat>,
}

/// Blocks the device callback may queue before the reader takes them (several seconds of audio
/// at any period size): the callback never waits, and the reader is never that far behind.
const DEVICE_QUEUE_BLOCKS: usize = 4_096;

fn device_error(what: impl std::fmt::Display) -> PipelineError {
    PipelineError::Source(what.to_string())
}

/// ALSA prints its own diagnostics on stderr when probing cards; on machines without a sound
/// card that is a screenful of noise. They are collected on this thread instead (and dropped).
#[cfg(target_os = "linux")]
fn quiet_alsa() -> Option<impl Sized> {
    alsa::Output::local_error_handler().ok()
}

#[cfg(not(target_os = "linux"))]
fn quiet_alsa() -> Option<()> {
    None
}

fn device_name(device: &cpal::Device) -> String {
    use cpal::traits::DeviceTrait;
    device
        .description()
        .map(|d| d.name().to_owned())
        .or_else(|_| device.id().map(|id| id.to_string()))
        .unwrap_or_else(|_| "unknown device".into())
}

fn device_id(device: &cpal::Device) -> Option<String> {
    use cpal::traits::DeviceTrait;
    device.id().ok().map(|id| id.to_string())
}

/// The capture devices the system offers.
pub fn list_input_devices() -> Result<Vec<DeviceInfo>> {
    use cpal::traits::{DeviceTrait, HostTrait};
    let _quiet = quiet_alsa();
    let host = cpal::default_host();
    let default = host.default_input_device().and_then(|d| device_id(&d));
    let devices = host
        .input_devices()
        .map_err(|e| device_error(format!("cannot list audio input devices: {e}")))?;
    Ok(devices
        .map(|device| DeviceInfo {
            name: device_name(&device),
            is_default: default.is_some() && device_id(&device) == default,
            format: device.default_input_config().ok().map(|c| AudioFormat {
                sample_rate: c.sample_rate(),
                channels: c.channels(),
            }),
        })
        .collect())
}

fn find_device(name: Option<&str>) -> Result<cpal::Device> {
    use cpal::traits::HostTrait;
    let host = cpal::default_host();
    let Some(wanted) = name else {
        return host.default_input_device().ok_or_else(|| {
            device_error(
                "no audio input device: this machine has no microphone or sound card \
                 (use --input-file WAV to play a recording instead)",
            )
        });
    };
    let devices: Vec<cpal::Device> = host
        .input_devices()
        .map_err(|e| device_error(format!("cannot list audio input devices: {e}")))?
        .collect();
    let lower = wanted.to_lowercase();
    let exact = devices.iter().position(|d| {
        device_name(d).to_lowercase() == lower
            || device_id(d).is_some_and(|id| {
                let id = id.to_lowercase();
                id == lower || id.split_once(':').is_some_and(|(_, rest)| rest == lower)
            })
    });
    let partial = || {
        devices
            .iter()
            .position(|d| device_name(d).to_lowercase().contains(&lower))
    };
    match exact.or_else(partial) {
        Some(index) => Ok(devices
            .into_iter()
            .nth(index)
            .ok_or_else(|| device_error(format!("audio input device {wanted:?} disappeared")))?),
        None => Err(device_error(format!(
            "no audio input device named {wanted:?} (medscribe record --list-devices shows them)"
        ))),
    }
}

/// 16 kHz mono when the device offers it (what the speech models take, so nothing needs
/// converting), in 16-bit or float samples; otherwise the device's default.
fn preferred_config(
    device: &cpal::Device,
) -> std::result::Result<cpal::SupportedStreamConfig, cpal::Error> {
    use cpal::traits::DeviceTrait;
    use cpal::SampleFormat as F;
    let speech_rate = device.supported_input_configs().ok().and_then(|ranges| {
        ranges
            .filter(|r| r.channels() == 1 && matches!(r.sample_format(), F::I16 | F::F32))
            .filter_map(|r| r.try_with_sample_rate(TARGET_RATE))
            .min_by_key(|c| c.sample_format() != F::I16)
    });
    match speech_rate {
        Some(config) => Ok(config),
        None => device.default_input_config(),
    }
}

impl DeviceSource {
    /// Opens a capture device (by name, else the default) at its default format.
    pub fn open(name: Option<&str>) -> Result<Self> {
        use cpal::traits::{DeviceTrait, StreamTrait};
        use cpal::SampleFormat as F;
        let _quiet = quiet_alsa();
        let device = find_device(name)?;
        let label = device_name(&device);
        let config = preferred_config(&device).map_err(|e| {
            device_error(format!(
                "audio input device {label:?} cannot be used: {e} (use --input-file WAV to play a recording instead)"
            ))
        })?;
        let format = AudioFormat {
            sample_rate: config.sample_rate(),
            channels: config.channels(),
        };
        let (block_tx, blocks) = crossbeam_channel::bounded(DEVICE_QUEUE_BLOCKS);
        let dropped = Arc::new(AtomicU64::new(0));
        let (error_tx, errors) = crossbeam_channel::bounded(16);
        let stream_config = config.config();
        let build = |sample: F| -> std::result::Result<cpal::Stream, cpal::Error> {
            macro_rules! typed {
                ($t:ty) => {{
                    let block_tx = block_tx.clone();
                    let error_tx = error_tx.clone();
                    let dropped = Arc::clone(&dropped);
                    device.build_input_stream::<$t, _, _>(
                        stream_config.clone(),
                        move |data: &[$t], _| {
                            use cpal::Sample;
                            let block: Vec<f32> =
                                data.iter().map(|s| s.to_sample::<f32>()).collect();
                            let samples = block.len() as u64;
                            if block_tx.try_send(block).is_err() {
                                dropped.fetch_add(samples, Ordering::Relaxed);
                            }
                        },
                        move |error| {
                            let _ = error_tx.try_send(error.to_string());
                        },
                        None,
                    )
                }};
            }
            match sample {
                F::I8 => typed!(i8),
                F::I16 => typed!(i16),
                F::I32 => typed!(i32),
                F::U8 => typed!(u8),
                F::U16 => typed!(u16),
                F::F64 => typed!(f64),
                _ => typed!(f32),
            }
        };
        let stream = build(config.sample_format())
            .map_err(|e| device_error(format!("cannot open audio input device {label:?}: {e}")))?;
        stream
            .play()
            .map_err(|e| device_error(format!("cannot start audio input device {label:?}: {e}")))?;
        Ok(Self {
            name: label,
            format,
            _stream: stream,
            blocks,
            errors,
            dropped,
        })
    }
}

impl AudioSource for DeviceSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn format(&self) -> AudioFormat {
        self.format
    }

    fn dropped_samples(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn is_live(&self) -> bool {
        true
    }

    fn read(&mut self) -> Result<Option<Vec<f32>>> {
        if let Ok(error) = self.errors.try_recv() {
            return Err(device_error(format!("{}: {error}", self.name)));
        }
        match self.blocks.recv_timeout(READ_TIMEOUT) {
            Ok(block) => Ok(Some(block)),
            Err(RecvTimeoutError::Timeout) => Ok(Some(Vec::new())),
            Err(RecvTimeoutError::Disconnected) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_source_delivers_exactly_its_length_in_its_layout() {
        let mut source = SyntheticSource::new(1.25, 48_000, 2).unwrap();
        let mut samples = 0;
        while let Some(block) = source.read().unwrap() {
            assert_eq!(block.len() % 2, 0);
            assert!(block.iter().all(|x| x.abs() <= 0.11));
            samples += block.len();
        }
        assert_eq!(samples, 60_000 * 2);
    }

    #[test]
    fn synthetic_source_refuses_nonsense() {
        assert!(SyntheticSource::new(f64::NAN, 16_000, 1).is_err());
        assert!(SyntheticSource::new(1.0, 0, 1).is_err());
        assert!(SyntheticSource::new(1.0, 16_000, 0).is_err());
    }
}
