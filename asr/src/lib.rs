//! Speech recognition for medscribe. This crate owns the audio front end (MedASR's log-mel
//! features), ONNX Runtime sessions, CTC decoding, vocabularies, long-audio windowing and the
//! dictation formatter that turns spoken commands into punctuation and sections. It never touches
//! threads, audio devices or files other than model files: callers hand it 16 kHz mono samples.
#![deny(missing_docs)]

pub mod ctc;
pub mod diarize;
pub mod error;
pub mod features;
pub mod formatter;
pub mod longform;
pub mod medasr;
pub mod moonshine;
pub mod runtime;
pub mod vad;
pub mod vocab;

use std::path::Path;

pub use error::{AsrError, Result};
pub use medasr::{MedAsr, MedAsrOptions};

/// Sample rate of everything this crate accepts.
pub const SAMPLE_RATE: u32 = features::SAMPLE_RATE;

/// A stretch of a recording and what was said in it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    /// Start, seconds from the beginning of the recording.
    pub start_s: f64,
    /// End, seconds from the beginning of the recording.
    pub end_s: f64,
    /// Decoded text with dictation commands as spoken (`{period}`, `[FINDINGS]`).
    pub raw_text: String,
    /// Formatted text.
    pub text: String,
    /// Who said it (from 0), when speakers were told apart. Absent from session files written
    /// without speakers, so they read and write as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<usize>,
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

/// Transcription of a whole recording streamed in blocks, in fixed overlapping windows (CTC
/// models, following MedASR's reference pipeline).
pub trait WindowedRecognizer {
    /// Adds the next block of the current recording.
    fn accept(&mut self, samples: &[f32]) -> Result<()>;
    /// Ends the current recording and returns its transcript; the next `accept` starts anew.
    fn finish(&mut self) -> Result<Transcript>;
    /// Drops the current recording (after an error in the audio source, say).
    fn reset(&mut self);
}

/// A speech model. Every model transcribes one utterance at a time (the pipeline cuts recordings
/// into utterances with a voice activity detector); CTC models can also stream whole recordings
/// through fixed windows.
pub trait SpeechRecognizer: Send {
    /// A short name of the model for reports (`medasr:DIR`, `moonshine:DIR`).
    fn model_name(&self) -> &str;
    /// The model family.
    fn family(&self) -> ModelFamily;
    /// The longest utterance the model transcribes well, in 16 kHz samples.
    fn max_segment_samples(&self) -> usize;
    /// Transcribes one utterance; returns the text as the model writes it (MedASR: with spoken
    /// commands such as `{period}`).
    fn transcribe_segment(&mut self, samples: &[f32]) -> Result<String>;
    /// Turns the model's text into the text shown to the user.
    fn format_text(&self, raw: &str) -> String;
    /// The fixed-window streaming mode, for models that have one.
    fn windowed(&mut self) -> Option<&mut dyn WindowedRecognizer> {
        None
    }
}

/// The model families this crate can run, told apart by the files in a model directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    /// Google MedASR exported to ONNX (either signature): CTC, dictation commands as text.
    MedAsr,
    /// Moonshine (encoder + merged decoder in ONNX Runtime format): written English.
    Moonshine,
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelFamily::MedAsr => "MedASR",
            ModelFamily::Moonshine => "Moonshine",
        })
    }
}

/// Decides the family of the model in `dir`, or says which files are missing.
pub fn detect_family(dir: &Path) -> Result<ModelFamily> {
    if !dir.is_dir() {
        return Err(AsrError::ModelDirMissing(dir.to_path_buf()));
    }
    if medasr::find_model_file(dir).is_some() {
        return Ok(ModelFamily::MedAsr);
    }
    if moonshine::is_moonshine_dir(dir) {
        return Ok(ModelFamily::Moonshine);
    }
    Err(AsrError::ModelFileMissing {
        dir: dir.to_path_buf(),
        file: format!(
            "{} (a MedASR ONNX export) or {} + {} + {} (Moonshine)",
            medasr::MODEL_FILES.join(" or "),
            moonshine::ENCODER_FILES[1],
            moonshine::DECODER_FILES[1],
            moonshine::TOKENIZER_FILE
        ),
    })
}

/// Loads the model in `dir` as a recogniser of the family its files show, with `threads`
/// ONNX Runtime threads.
pub fn load_recognizer(dir: &Path, threads: usize) -> Result<Box<dyn SpeechRecognizer>> {
    match detect_family(dir)? {
        ModelFamily::MedAsr => Ok(Box::new(MedAsr::load(
            dir,
            MedAsrOptions {
                intra_threads: threads,
            },
        )?)),
        ModelFamily::Moonshine => Ok(Box::new(moonshine::Moonshine::load(dir, threads)?)),
    }
}

impl SpeechRecognizer for moonshine::Moonshine {
    fn model_name(&self) -> &str {
        self.name()
    }

    fn family(&self) -> ModelFamily {
        ModelFamily::Moonshine
    }

    fn max_segment_samples(&self) -> usize {
        moonshine::MAX_SEGMENT_SAMPLES
    }

    fn transcribe_segment(&mut self, samples: &[f32]) -> Result<String> {
        self.transcribe(samples)
    }

    fn format_text(&self, raw: &str) -> String {
        // Moonshine writes punctuated English already; only whitespace is tidied.
        raw.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}
