//! Finishing sessions whose process died while recording (a crash, a kill, a power cut): the
//! WAV header is made to count every frame that reached the disk, the audio after the last
//! transcribed segment is transcribed, and the session is marked complete.

use medscribe_asr::SpeechRecognizer;

use crate::error::{PipelineError, Result};
use crate::job::by_utterance;
use crate::recorder::{repair_wav, Repair};
use crate::segmenter::SpeechProbability;
use crate::session::{Session, SessionState, TranscriptLine};
use crate::wav::{WavSource, TARGET_RATE};

/// What [`recover_session`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    /// The header repair.
    pub repair: Repair,
    /// Seconds of audio in the repaired file.
    pub duration_s: f64,
    /// Seconds of it that the stale header had left out.
    pub restored_s: f64,
    /// Where transcription resumed, seconds.
    pub resumed_at_s: f64,
    /// Segments added to the transcript.
    pub added: Vec<TranscriptLine>,
}

/// Repairs and finishes `session`. Fails if the session is complete or its process is alive.
pub fn recover_session(
    session: &Session,
    recognizer: &mut dyn SpeechRecognizer,
    vad: &mut (dyn SpeechProbability + '_),
) -> Result<Recovered> {
    let mut meta = session.meta()?;
    let refuse = |reason: String| PipelineError::Session {
        path: session.dir().to_path_buf(),
        reason,
    };
    if meta.state == SessionState::Complete {
        return Err(refuse("already complete; nothing to recover".into()));
    }
    if !session.is_interrupted(&meta) {
        return Err(refuse(format!(
            "still being recorded by process {}; stop it first",
            meta.pid
        )));
    }
    // Held until the repair is done: nobody records or recovers this session meanwhile.
    let _lock = session.lock()?;
    let repair = repair_wav(&session.audio_path())?;
    let lines = session.transcript()?;
    let resumed_at_s = lines
        .iter()
        .map(|line| line.end_s)
        .fold(meta.transcribed_s, f64::max);
    let mut source = WavSource::open(&session.audio_path())?;
    let duration_s = source.info().duration_s();
    let skip = (resumed_at_s * f64::from(TARGET_RATE)).round() as usize;
    let transcript = by_utterance(
        &mut source,
        recognizer,
        vad,
        skip,
        duration_s,
        &mut |_, _| {},
    )?;
    let added: Vec<TranscriptLine> = transcript
        .segments
        .into_iter()
        .map(|segment| TranscriptLine {
            speaker: None,
            start_s: segment.start_s,
            end_s: segment.end_s,
            text: segment.text,
            raw_text: segment.raw_text,
        })
        .collect();
    // The torn last line, if any, goes: the file is rewritten whole.
    let mut all = lines;
    all.extend(added.iter().cloned());
    session.write_transcript(&all)?;
    let _ = std::fs::remove_dir_all(session.queue_dir());
    meta.state = SessionState::Complete;
    meta.transcribed_s = duration_s;
    session.write_meta(&meta)?;
    let restored_frames = repair.frames_after.saturating_sub(repair.frames_before);
    Ok(Recovered {
        repair,
        duration_s,
        restored_s: restored_frames as f64 / f64::from(meta.sample_rate.max(1)),
        resumed_at_s,
        added,
    })
}
