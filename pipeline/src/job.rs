//! Batch jobs: one recording file through a speech recogniser, cut into utterances by the voice
//! activity detector or, for CTC models that ask for it, streamed through fixed windows.

use std::path::{Path, PathBuf};
use std::time::Instant;

use medscribe_asr::{Segment, SpeechRecognizer, Transcript};

use crate::error::{PipelineError, Result};
use crate::segmenter::{Segmenter, SegmenterConfig, SpeechProbability, SpeechSegment};
use crate::wav::{WavSource, TARGET_RATE};

/// How a recording is cut for the recogniser, holding what that cutting needs: a voice
/// activity detector cannot be asked for without one.
pub enum Cutting {
    /// Utterances found by this voice activity detector (every model; silence gives no text).
    Vad(Box<dyn SpeechProbability + Send>),
    /// 20 s windows overlapping by 2 s, as MedASR's reference pipeline (CTC models only).
    FixedWindows,
}

impl std::fmt::Debug for Cutting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Vad(_) => "Cutting::Vad",
            Self::FixedWindows => "Cutting::FixedWindows",
        })
    }
}

/// The transcript of one file, with what produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileTranscript {
    /// The recording.
    pub file: PathBuf,
    /// The model that transcribed it.
    pub model: String,
    /// What was said.
    pub transcript: Transcript,
    /// Wall time spent, seconds (for real-time factors).
    pub processing_s: f64,
    /// What was odd about the recording but did not stop it (one line each, without the file).
    pub warnings: Vec<String>,
    /// Names the user gave speakers, by label (`S1` -> `Dr Patel`); shown instead of the label.
    pub speaker_names: std::collections::BTreeMap<String, String>,
}

/// Progress of one file: (audio seconds done, audio seconds in the file).
pub type Progress<'a> = &'a mut dyn FnMut(f64, f64);

/// Transcribes one WAV file, streaming it block by block.
pub fn transcribe_wav(
    path: &Path,
    recognizer: &mut dyn SpeechRecognizer,
    cutting: &mut Cutting,
    progress: Progress<'_>,
) -> Result<FileTranscript> {
    let started = Instant::now();
    let mut source = WavSource::open(path)?;
    let total_s = source.info().duration_s();
    let warnings = source.warnings().to_vec();
    let transcript = match cutting {
        Cutting::FixedWindows => fixed_windows(&mut source, recognizer, total_s, progress)?,
        Cutting::Vad(vad) => by_utterance(&mut source, recognizer, vad, 0, total_s, progress)?,
    };
    Ok(FileTranscript {
        file: path.to_path_buf(),
        model: recognizer.model_name().to_owned(),
        transcript,
        processing_s: started.elapsed().as_secs_f64(),
        warnings,
        speaker_names: Default::default(),
    })
}

fn fixed_windows(
    source: &mut WavSource,
    recognizer: &mut dyn SpeechRecognizer,
    total_s: f64,
    progress: Progress<'_>,
) -> Result<Transcript> {
    let model = recognizer.model_name().to_owned();
    let windowed = recognizer.windowed().ok_or_else(|| PipelineError::Audio {
        path: source.path().to_path_buf(),
        reason: format!("{model} cannot use fixed windows; use voice activity segmentation"),
    })?;
    windowed.reset();
    let mut done = 0usize;
    let result = (|| -> Result<Transcript> {
        while let Some(block) = source.next_block()? {
            windowed.accept(&block)?;
            done += block.len();
            progress(done as f64 / f64::from(TARGET_RATE), total_s);
        }
        Ok(windowed.finish()?)
    })();
    if result.is_err() {
        windowed.reset();
    }
    result
}

/// Transcribes `source` utterance by utterance, from its `skip`-th 16 kHz sample on (segment
/// times stay relative to the start of the file).
pub(crate) fn by_utterance(
    source: &mut WavSource,
    recognizer: &mut dyn SpeechRecognizer,
    vad: &mut (dyn SpeechProbability + '_),
    skip: usize,
    total_s: f64,
    progress: Progress<'_>,
) -> Result<Transcript> {
    let config = SegmenterConfig::for_max_segment(recognizer.max_segment_samples());
    let mut segmenter = Segmenter::new(vad, config);
    let mut segments = Vec::new();
    let mut done = 0usize;
    let mut transcribe =
        |utterances: Vec<SpeechSegment>, segments: &mut Vec<Segment>| -> Result<()> {
            for utterance in utterances {
                let raw = recognizer.transcribe_segment(&utterance.samples)?;
                if raw.trim().is_empty() {
                    continue;
                }
                segments.push(Segment {
                    speaker: None,
                    start_s: (skip + utterance.start) as f64 / f64::from(TARGET_RATE),
                    end_s: (skip + utterance.end) as f64 / f64::from(TARGET_RATE),
                    text: recognizer.format_text(&raw),
                    raw_text: raw,
                });
            }
            Ok(())
        };
    while let Some(block) = source.next_block()? {
        let fresh = skip.saturating_sub(done).min(block.len());
        transcribe(segmenter.push(&block[fresh..])?, &mut segments)?;
        done += block.len();
        progress(done as f64 / f64::from(TARGET_RATE), total_s);
    }
    transcribe(segmenter.finish()?, &mut segments)?;
    let raw_text = segments
        .iter()
        .map(|s| s.raw_text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Transcript {
        text: recognizer.format_text(&raw_text),
        raw_text,
        segments,
        duration_s: done as f64 / f64::from(TARGET_RATE),
    })
}

/// Mends the words of a transcript that a speech model gets wrong in a known way, such as
/// medication names it split or misheard ("amla-depine" -> "amlodipine"). The binary wires in the
/// letter model crate's drug lexicon; pipeline itself knows no drugs.
pub trait TextCorrector: Send + Sync + std::fmt::Debug {
    /// `text` corrected.
    fn correct(&self, text: &str) -> String;
}

/// Applies `corrector` to the whole text and to every segment; `raw_text` keeps what the model
/// wrote.
pub fn correct_transcript(transcript: &mut Transcript, corrector: &dyn TextCorrector) {
    for segment in &mut transcript.segments {
        segment.text = corrector.correct(&segment.text);
    }
    transcript.text = corrector.correct(&transcript.text);
}

macro_rules! forward_speech_probability {
    ($($pointer:ty),*) => {$(
        impl<V: SpeechProbability + ?Sized> SpeechProbability for $pointer {
            fn probability(&mut self, chunk: &[f32]) -> Result<f32> {
                (**self).probability(chunk)
            }

            fn reset(&mut self) {
                (**self).reset();
            }
        }
    )*};
}

forward_speech_probability!(&mut V, Box<V>);
