//! Batch jobs: one recording file through a speech recogniser.

use std::path::{Path, PathBuf};

use medscribe_asr::{SpeechRecognizer, Transcript};

use crate::error::Result;
use crate::wav::WavSource;

/// The transcript of one file, with what produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileTranscript {
    /// The recording.
    pub file: PathBuf,
    /// The model that transcribed it.
    pub model: String,
    /// What was said.
    pub transcript: Transcript,
}

/// Transcribes one WAV file, streaming it through `recognizer` block by block.
/// `progress(done_s, total_s)` is called after each block.
pub fn transcribe_wav(
    path: &Path,
    recognizer: &mut dyn SpeechRecognizer,
    progress: &mut dyn FnMut(f64, f64),
) -> Result<FileTranscript> {
    recognizer.reset();
    let mut source = WavSource::open(path)?;
    let total_s = source.info().duration_s();
    let mut done = 0usize;
    let result = (|| -> Result<Transcript> {
        while let Some(block) = source.next_block()? {
            recognizer.accept(&block)?;
            done += block.len();
            progress(done as f64 / f64::from(crate::wav::TARGET_RATE), total_s);
        }
        Ok(recognizer.finish()?)
    })();
    if result.is_err() {
        recognizer.reset();
    }
    Ok(FileTranscript {
        file: path.to_path_buf(),
        model: recognizer.model_name().to_owned(),
        transcript: result?,
    })
}
