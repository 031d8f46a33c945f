//! Crash-safe recording: 16-bit PCM WAV written as the audio arrives, with the header's sizes
//! brought up to date and the data forced to disk at least once a second, so a crash, a kill or
//! a power cut leaves a playable file missing at most the last second. [`repair_wav`] makes the
//! header of such a file count every whole frame that reached the disk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{PipelineError, Result};
use crate::output::private_file_options;
use crate::source::AudioFormat;

/// Size of the canonical header this module writes.
const HEADER_LEN: u64 = 44;
/// How often the header is updated and the data synced.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// A WAV file being recorded.
#[derive(Debug)]
pub struct WavRecorder {
    path: PathBuf,
    file: File,
    format: AudioFormat,
    frames: u64,
    synced_frames: u64,
    last_sync: Instant,
    bytes: Vec<u8>,
}

fn write_error(path: &Path, source: std::io::Error) -> PipelineError {
    PipelineError::Output {
        path: path.to_path_buf(),
        source,
    }
}

fn header(format: AudioFormat, data_bytes: u32) -> [u8; HEADER_LEN as usize] {
    let channels = format.channels;
    let block_align = channels * 2;
    let byte_rate = format.sample_rate * u32::from(block_align);
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_bytes.saturating_add(36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&format.sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, offset)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    use std::io::Seek;
    let end = file.stream_position()?;
    file.seek(std::io::SeekFrom::Start(offset))?;
    file.write_all(bytes)?;
    file.seek(std::io::SeekFrom::Start(end))?;
    Ok(())
}

impl WavRecorder {
    /// Starts a new recording at `path` (which must not exist), user-only permissions.
    pub fn create(path: &Path, format: AudioFormat) -> Result<Self> {
        if format.channels == 0 || format.sample_rate == 0 {
            return Err(write_error(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty audio format"),
            ));
        }
        // create_new: a recording never overwrites anything.
        let mut file = private_file_options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| write_error(path, e))?;
        file.write_all(&header(format, 0))
            .and_then(|()| file.sync_all())
            .map_err(|e| write_error(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            format,
            frames: 0,
            synced_frames: 0,
            last_sync: Instant::now(),
            bytes: Vec::new(),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Seconds recorded so far.
    pub fn duration_s(&self) -> f64 {
        self.frames as f64 / f64::from(self.format.sample_rate)
    }

    fn data_bytes(&self, frames: u64) -> u64 {
        frames * u64::from(self.format.channels) * 2
    }

    /// Appends interleaved samples (a whole number of frames) and, once a second, makes the
    /// file on disk complete and playable up to here.
    pub fn append(&mut self, samples: &[f32]) -> Result<()> {
        let channels = usize::from(self.format.channels);
        let frames = (samples.len() / channels) as u64;
        if self.data_bytes(self.frames + frames) + HEADER_LEN > u64::from(u32::MAX) {
            return Err(write_error(
                &self.path,
                std::io::Error::other("the recording reached the 4 GiB limit of a WAV file"),
            ));
        }
        self.bytes.clear();
        for &sample in &samples[..frames as usize * channels] {
            // The inverse of reading 16-bit audio as x / 32768, so 16-bit input is kept bit for
            // bit.
            let value = (sample * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
            self.bytes.extend_from_slice(&value.to_le_bytes());
        }
        self.file
            .write_all(&self.bytes)
            .map_err(|e| write_error(&self.path, e))?;
        self.frames += frames;
        if self.last_sync.elapsed() >= SYNC_INTERVAL
            || self.frames - self.synced_frames >= u64::from(self.format.sample_rate)
        {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes the header's sizes for everything appended so far and forces it all to disk.
    pub fn sync(&mut self) -> Result<()> {
        let data = self.data_bytes(self.frames) as u32;
        write_at(&self.file, &header(self.format, data), 0)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| write_error(&self.path, e))?;
        self.synced_frames = self.frames;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Ends the recording: header final, everything on disk. Returns the frames written.
    pub fn finish(mut self) -> Result<u64> {
        self.sync()?;
        Ok(self.frames)
    }
}

/// What [`repair_wav`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repair {
    /// Frames the header announced before.
    pub frames_before: u64,
    /// Frames the file holds now.
    pub frames_after: u64,
}

/// Makes the header of a recording written by [`WavRecorder`] (and cut short by a crash) count
/// every whole frame in the file, and drops a partial frame at the end.
pub fn repair_wav(path: &Path) -> Result<Repair> {
    let bad = |reason: &str| PipelineError::Audio {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| bad(&format!("cannot open: {e}")))?;
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact(&mut h)
        .map_err(|_| bad("too short to be a recording (no complete WAV header)"))?;
    let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if &h[0..4] != b"RIFF"
        || &h[8..16] != b"WAVEfmt "
        || u32_at(16) != 16
        || u16_at(20) != 1
        || u16_at(34) != 16
        || &h[36..40] != b"data"
        || u16_at(22) == 0
        || u32_at(24) == 0
    {
        return Err(bad("not a medscribe recording (unexpected WAV header)"));
    }
    let format = AudioFormat {
        sample_rate: u32_at(24),
        channels: u16_at(22),
    };
    let frame_bytes = u64::from(format.channels) * 2;
    let frames_before = u64::from(u32_at(40)) / frame_bytes;
    let length = file
        .metadata()
        .map_err(|e| bad(&format!("cannot read: {e}")))?
        .len();
    let frames_after = (length - HEADER_LEN).min(u64::from(u32::MAX) - HEADER_LEN) / frame_bytes;
    let data = frames_after * frame_bytes;
    file.set_len(HEADER_LEN + data)
        .and_then(|()| write_at(&file, &header(format, data as u32), 0))
        .and_then(|()| file.sync_all())
        .map_err(|e| write_error(path, e))?;
    Ok(Repair {
        frames_before,
        frames_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONO_16K: AudioFormat = AudioFormat {
        sample_rate: 16_000,
        channels: 1,
    };

    fn frames_hound_sees(path: &Path) -> u32 {
        hound::WavReader::open(path).unwrap().duration()
    }

    #[test]
    fn header_follows_the_audio_once_a_second_without_finishing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        let mut recorder = WavRecorder::create(&path, MONO_16K).unwrap();
        assert_eq!(frames_hound_sees(&path), 0);
        for _ in 0..25 {
            recorder.append(&[0.25; 1_600]).unwrap();
        }
        // 2.5 s appended: the header was brought up to date at 1 s and 2 s.
        assert_eq!(frames_hound_sees(&path), 32_000);
        // A process killed now leaves what hound reads; repair recovers the rest.
        std::mem::forget(recorder);
        let repair = repair_wav(&path).unwrap();
        assert_eq!(repair.frames_before, 32_000);
        assert_eq!(repair.frames_after, 40_000);
        let mut reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.duration(), 40_000);
        assert!(reader.samples::<i16>().all(|s| s.unwrap() == 8_192));
    }

    #[test]
    fn finish_makes_the_file_complete_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.wav");
        let format = AudioFormat {
            sample_rate: 48_000,
            channels: 2,
        };
        let mut recorder = WavRecorder::create(&path, format).unwrap();
        recorder.append(&[1.5, -1.5, 0.0, 0.5]).unwrap();
        assert_eq!(recorder.finish().unwrap(), 2);
        let reader = hound::WavReader::open(&path).unwrap();
        let spec = reader.spec();
        assert_eq!((spec.sample_rate, spec.channels), (48_000, 2));
        let samples: Vec<i16> = reader.into_samples().map(|s| s.unwrap()).collect();
        assert_eq!(samples, vec![32767, -32768, 0, 16384]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            WavRecorder::create(&path, format).is_err(),
            "never overwrites"
        );
    }

    #[test]
    fn repair_drops_a_torn_frame_and_refuses_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wav");
        let format = AudioFormat {
            sample_rate: 8_000,
            channels: 2,
        };
        let mut recorder = WavRecorder::create(&path, format).unwrap();
        recorder.append(&[0.1; 10]).unwrap();
        std::mem::forget(recorder);
        // A write cut in the middle of a frame.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[1, 2, 3]).unwrap();
        let repair = repair_wav(&path).unwrap();
        assert_eq!(repair.frames_after, 5);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 44 + 20);

        let foreign = dir.path().join("d.wav");
        std::fs::write(
            &foreign,
            b"not a wav file at all, but long enough for a header",
        )
        .unwrap();
        let error = repair_wav(&foreign).unwrap_err().to_string();
        assert!(
            error.contains("d.wav") && error.contains("not a medscribe recording"),
            "{error}"
        );
        std::fs::write(&foreign, b"RIFF").unwrap();
        assert!(repair_wav(&foreign)
            .unwrap_err()
            .to_string()
            .contains("too short"));
    }
}
