//! Speech recognition for medscribe. This crate owns the audio front end (MedASR's log-mel
//! features), ONNX Runtime sessions, CTC decoding, vocabularies, long-audio windowing and the
//! dictation formatter that turns spoken commands into punctuation and sections. It never touches
//! threads, audio devices or files other than model files: callers hand it 16 kHz mono samples.
#![deny(missing_docs)]

pub mod ctc;
pub mod error;
pub mod features;
pub mod formatter;
pub mod longform;
pub mod medasr;
pub mod runtime;
pub mod vocab;

use std::path::Path;

pub use error::{AsrError, Result};
pub use medasr::{MedAsr, MedAsrOptions};

/// Sample rate of everything this crate accepts.
pub const SAMPLE_RATE: u32 = features::SAMPLE_RATE;

/// A stretch of a recording and what was said in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Start, seconds from the beginning of the recording.
    pub start_s: f64,
    /// End, seconds from the beginning of the recording.
    pub end_s: f64,
    /// Decoded text with dictation commands as spoken (`{period}`, `[FINDINGS]`).
    pub raw_text: String,
    /// Formatted text.
    pub text: String,
}

/// The transcript of one recording.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transcript {
    /// Decoded text of the whole recording, special tokens removed, commands as spoken.
    pub raw_text: String,
    /// `raw_text` with dictation commands turned into punctuation, line breaks and headings.
    pub text: String,
    /// Timed pieces of the transcript (empty stretches left out).
    pub segments: Vec<Segment>,
    /// Length of the audio, seconds.
    pub duration_s: f64,
}

/// A speech model that transcribes a recording fed to it in blocks of 16 kHz mono samples.
pub trait SpeechRecognizer {
    /// A short name of the model for reports (`medasr:DIR`).
    fn model_name(&self) -> &str;
    /// Adds the next block of the current recording.
    fn accept(&mut self, samples: &[f32]) -> Result<()>;
    /// Ends the current recording and returns its transcript; the next `accept` starts anew.
    fn finish(&mut self) -> Result<Transcript>;
    /// Drops the current recording (after an error in the audio source, say).
    fn reset(&mut self);
}

/// The model families this crate can run, told apart by the files in a model directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    /// Google MedASR exported to ONNX (either signature).
    MedAsr,
}

/// Decides the family of the model in `dir`, or says which files are missing.
pub fn detect_family(dir: &Path) -> Result<ModelFamily> {
    if !dir.is_dir() {
        return Err(AsrError::ModelDirMissing(dir.to_path_buf()));
    }
    if medasr::find_model_file(dir).is_some() {
        return Ok(ModelFamily::MedAsr);
    }
    Err(AsrError::ModelFileMissing {
        dir: dir.to_path_buf(),
        file: format!(
            "{} (a MedASR ONNX export)",
            medasr::MODEL_FILES.join(" or ")
        ),
    })
}

/// Loads the model in `dir` as a recogniser of the family its files show.
pub fn load_recognizer(
    dir: &Path,
    options: MedAsrOptions,
) -> Result<Box<dyn SpeechRecognizer + Send>> {
    match detect_family(dir)? {
        ModelFamily::MedAsr => Ok(Box::new(MedAsr::load(dir, options)?)),
    }
}
