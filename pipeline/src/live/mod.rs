//! Live transcription: stages on their own threads joined by bounded channels,
//!
//! capture -> recorder -> resampler -> segmenter (VAD) -> speech model -> transcript -> events.
//!
//! The recorder writes every sample to the session's WAV before anything else looks at it, so
//! nothing said is lost whatever happens downstream. When the speech model falls behind,
//! finished utterances wait on disk in the session's `queue/`, not in memory; partial
//! transcripts of the utterance in progress are made only when the model is idle. Stopping
//! (or the source ending) drains every stage and leaves all files complete.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use medscribe_asr::SpeechRecognizer;

use crate::error::{PipelineError, Result};
use crate::recorder::WavRecorder;
use crate::resample::StreamResampler;
use crate::segmenter::{Segmenter, SegmenterConfig, SpeechProbability, SpeechSegment};
use crate::session::{Session, SessionMeta, SessionState, TranscriptLine};
use crate::source::{AudioFormat, SourceSpec};
use crate::speakers::Speakers;
use crate::wav::TARGET_RATE;

mod capture;
mod recognition;
mod speakers;
mod spill;
mod transcript;

use capture::*;
use recognition::*;
use spill::*;
use transcript::*;

/// Blocks between the fast stages (capture, recorder, resampler, segmenter).
const AUDIO_QUEUE: usize = 64;
/// Utterances waiting in memory for the speech model; more wait on disk.
const ASR_QUEUE: usize = 2;
/// The first problem that ends live transcription early (shared by the stages).
#[derive(Clone, Default)]
struct Fatal(Arc<std::sync::Mutex<Option<LiveFailure>>>);

impl Fatal {
    fn set(&self, problem: LiveFailure) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(problem);
        }
    }

    fn get(&self) -> Option<LiveFailure> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }
}

/// Seconds between two warnings about audio lost by the device.
const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);
/// Level events per second at most.
const LEVELS_PER_SECOND: f64 = 15.0;

/// Settings of a live session.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Utterance detection; `None` picks the batch defaults for the model (1.5 s of silence
    /// ends an utterance: shorter utterances lose context and are transcribed worse, while the
    /// text of a pause shows within a few hundred milliseconds anyway, as a partial).
    pub segmenter: Option<SegmenterConfig>,
    /// Audio (16 kHz samples) between partial transcripts of the utterance in progress.
    pub partial_every: usize,
    /// Stop after this much audio, seconds.
    pub max_duration_s: Option<f64>,
    /// `dictation` or `recording`, for `session.json`.
    pub kind: String,
    /// Start paused (nothing recorded until [`LiveSession::set_paused`]`(false)`).
    pub start_paused: bool,
    /// Speakers to tell apart when the recording ends (`auto` or how many), written to
    /// `session.json` for whoever finishes the session (see [`crate::speakers`]).
    pub speakers: Option<String>,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            segmenter: None,
            partial_every: 8_000,
            max_duration_s: None,
            kind: "recording".into(),
            start_paused: false,
            speakers: None,
        }
    }
}

/// What a live session reports, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveEvent {
    /// Input level of the newest audio, dBFS (RMS), and seconds recorded so far.
    Level {
        /// RMS level, dBFS (-100 for digital silence).
        dbfs: f32,
        /// Seconds recorded.
        recorded_s: f64,
    },
    /// The text of the utterance in progress so far; replaced by later partials and finally by
    /// a [`LiveEvent::Final`].
    Partial {
        /// Start of the utterance, seconds.
        start_s: f64,
        /// End of the audio transcribed, seconds.
        end_s: f64,
        /// Formatted text.
        text: String,
    },
    /// A finished utterance (text may be empty: noise). Already in `transcript.jsonl` when
    /// non-empty.
    Final(TranscriptLine),
    /// A finished line's speaker, as told apart so far while the recording goes on (it may
    /// change again, and every line is labelled anew when the recording ends); already in
    /// `transcript.jsonl`. Only when the session was started with speaker models.
    Speaker(TranscriptLine),
    /// A finished line that spans a change of speaker, cut there while the recording goes on
    /// and its parts transcribed again: `lines` replace the line that started at `start_s`
    /// (already so in `transcript.jsonl`). Only when the session was started with speaker
    /// models, for lines whose audio is labelled before the recording ends (the others are cut
    /// by the final pass).
    Split {
        /// Start of the line replaced, seconds (the first part starts there too).
        start_s: f64,
        /// Its parts, in order, each with its speaker.
        lines: Vec<TranscriptLine>,
    },
    /// Something went wrong but recording goes on.
    Warning(String),
    /// Capture ended (stop, end of source, maximum duration, or a fatal error) and every stage
    /// has finished.
    Stopped {
        /// Seconds recorded.
        recorded_s: f64,
        /// The problem that cut capture or transcription short, if one did.
        error: Option<LiveFailure>,
    },
}

enum Audio {
    Block(Vec<f32>),
    /// Capture was paused: the utterance in progress ends here.
    Gap,
}

enum AsrJob {
    Partial {
        start: usize,
        samples: Vec<f32>,
    },
    Final(SpeechSegment),
    Spilled {
        start: usize,
        end: usize,
        file: PathBuf,
    },
}

/// A finished utterance (16 kHz samples `start..end` of the recording) to cut into `parts`
/// (start, end, speaker) and transcribe again.
struct CutJob {
    start: usize,
    end: usize,
    parts: Vec<(usize, usize, usize)>,
}

/// One part of a cut utterance, transcribed.
struct CutPart {
    start: usize,
    end: usize,
    speaker: usize,
    raw: String,
    text: String,
}

/// What the speech model made of a job: its text as the model wrote it and as shown (the
/// model's own formatting).
enum Recognized {
    Partial {
        start: usize,
        end: usize,
        text: String,
    },
    Final {
        start: usize,
        end: usize,
        raw: String,
        text: String,
    },
    /// The parts of a cut utterance.
    Cut {
        start: usize,
        end: usize,
        parts: Vec<CutPart>,
    },
    Failed(LiveFailure),
}

/// What cut live capture or transcription short. The audio recorded until then is kept.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LiveFailure {
    /// The sound card or file stopped delivering audio.
    #[error("audio capture failed: {0}")]
    Capture(String),
    /// The session's WAV file could not be written.
    #[error("recording failed: {0}")]
    Recording(String),
    /// The source's sample rate cannot be converted to the speech model's.
    #[error(
        "cannot convert {rate} Hz audio for the speech model ({reason}); the audio is recorded"
    )]
    Resampling {
        /// The source's rate.
        rate: u32,
        /// Why.
        reason: String,
    },
    /// Voice activity detection or the spill queue failed.
    #[error("live transcription failed: {0}; the audio is recorded, `medscribe sessions recover` transcribes it")]
    Transcription(String),
    /// The speech model failed on one utterance (the others go on; recovery retries it).
    #[error("the speech model failed on {start_s:.1}-{end_s:.1} s: {reason}")]
    Utterance {
        /// Start of the utterance, seconds.
        start_s: f64,
        /// End, seconds.
        end_s: f64,
        /// The model's error.
        reason: String,
    },
    /// The session's transcript or description could not be written.
    #[error("{0}")]
    Session(String),
}

/// A running live session.
pub struct LiveSession {
    session: Session,
    format: AudioFormat,
    source_name: String,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    events: Receiver<LiveEvent>,
    edits: Sender<TranscriptLine>,
    threads: Vec<JoinHandle<()>>,
    speakers_back: Option<Receiver<Speakers>>,
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("session", &self.session)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

fn seconds(samples: usize) -> f64 {
    samples as f64 / f64::from(TARGET_RATE)
}

fn rms_dbfs(block: &[f32]) -> f32 {
    if block.is_empty() {
        return -100.0;
    }
    let mean_square = block.iter().map(|x| x * x).sum::<f32>() / block.len() as f32;
    (10.0 * mean_square.max(1e-10).log10()).max(-100.0)
}

fn spawn<F: FnOnce() + Send + 'static>(name: &str, body: F) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("medscribe-{name}"))
        .spawn(body)
        .map_err(|e| PipelineError::Source(format!("cannot start the {name} thread: {e}")))
}

impl LiveSession {
    /// Opens the source, creates the session's files in `session` and starts every stage.
    /// Fails before anything is recorded if the source cannot be opened.
    pub fn start(
        spec: SourceSpec,
        recognizer: Box<dyn SpeechRecognizer>,
        vad: Box<dyn SpeechProbability + Send>,
        session: Session,
        config: LiveConfig,
    ) -> Result<Self> {
        Self::start_with_speakers(spec, recognizer, vad, session, config, None)
    }

    /// Like [`Self::start`], and with `speakers`' models the lines get their speakers while the
    /// recording goes on ([`LiveEvent::Speaker`]); [`Self::take_speakers`] gives the models back
    /// for the final labelling.
    pub fn start_with_speakers(
        spec: SourceSpec,
        recognizer: Box<dyn SpeechRecognizer>,
        vad: Box<dyn SpeechProbability + Send>,
        session: Session,
        config: LiveConfig,
        speakers: Option<Speakers>,
    ) -> Result<Self> {
        // Held by the transcript stage, the last to finish, until the session is marked complete:
        // while it is held nobody may recover the session as interrupted.
        let lock = session.lock()?;
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(config.start_paused));
        let fatal = Fatal::default();
        let (events_tx, events) = bounded::<LiveEvent>(1_024);
        let (opened_tx, opened_rx) = bounded::<Result<(String, AudioFormat)>>(1);
        let (capture_tx, capture_rx) = bounded::<Audio>(AUDIO_QUEUE);

        let capture = {
            let stop = Arc::clone(&stop);
            let paused = Arc::clone(&paused);
            let events_tx = events_tx.clone();
            let max_duration_s = config.max_duration_s;
            let fatal = fatal.clone();
            spawn("capture", move || {
                capture_stage(
                    &spec,
                    opened_tx,
                    capture_tx,
                    (&events_tx, &fatal),
                    &stop,
                    &paused,
                    max_duration_s,
                );
            })?
        };
        let (source_name, format) = match opened_rx.recv() {
            Ok(Ok(opened)) => opened,
            Ok(Err(error)) => {
                let _ = capture.join();
                return Err(error);
            }
            Err(_) => {
                let _ = capture.join();
                return Err(PipelineError::Source(
                    "the capture thread ended before opening the source".into(),
                ));
            }
        };
        let fail_early = |error: PipelineError| {
            stop.store(true, Ordering::SeqCst);
            error
        };
        let recorder = WavRecorder::create(&session.audio_path(), format).map_err(&fail_early)?;
        let meta = SessionMeta {
            id: session.id(),
            kind: config.kind.clone(),
            created: crate::session::now_rfc3339(),
            source: source_name.clone(),
            sample_rate: format.sample_rate,
            channels: format.channels,
            asr_model: recognizer.model_name().to_owned(),
            state: SessionState::Recording,
            pid: std::process::id(),
            transcribed_s: 0.0,
            speakers: config.speakers.clone(),
            speaker_names: Default::default(),
        };
        session.write_meta(&meta).map_err(&fail_early)?;

        let (resample_tx, resample_rx) = bounded::<Audio>(AUDIO_QUEUE);
        let (segment_tx, segment_rx) = bounded::<Audio>(AUDIO_QUEUE);
        let (asr_tx, asr_rx) = bounded::<AsrJob>(ASR_QUEUE);
        let (format_tx, format_rx) = bounded::<Recognized>(16);
        let (edits, edits_rx) = bounded::<TranscriptLine>(64);
        let segmenter_config = config
            .segmenter
            .unwrap_or_else(|| SegmenterConfig::for_max_segment(recognizer.max_segment_samples()));
        let mut threads = vec![capture];
        {
            let events_tx = events_tx.clone();
            let stop = Arc::clone(&stop);
            let fatal = fatal.clone();
            threads.push(spawn("recorder", move || {
                recorder_stage(
                    recorder,
                    capture_rx,
                    resample_tx,
                    (&events_tx, &fatal),
                    &stop,
                );
            })?);
        }
        // Unbounded: the speaker stage runs about ten times faster than real time, and must
        // never hold up the audio on its way to the speech model.
        let (speakers_audio, turns_rx, speakers_back) = match speakers {
            Some(mut models) => {
                let (audio_tx, audio_rx) = crossbeam_channel::unbounded::<Vec<f32>>();
                let (turns_tx, turns_rx) = bounded(4);
                let (back_tx, back_rx) = bounded(1);
                let events_tx = events_tx.clone();
                threads.push(spawn("speakers", move || {
                    speakers::speakers_stage(&mut models, audio_rx, turns_tx, &events_tx);
                    let _ = back_tx.send(models);
                })?);
                (Some(audio_tx), Some(turns_rx), Some(back_rx))
            }
            None => (None, None, None),
        };
        // Lines to cut at a change of speaker go back to the speech model; unbounded, so that
        // the transcript stage never waits for it (there is at most one job per line).
        let (cuts_tx, cuts_rx) = match turns_rx {
            Some(_) => {
                let (tx, rx) = crossbeam_channel::unbounded::<CutJob>();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        {
            let fatal = fatal.clone();
            threads.push(spawn("resampler", move || {
                resampler_stage(format, resample_rx, (segment_tx, speakers_audio), &fatal);
            })?);
        }
        {
            let queue_dir = session.queue_dir();
            let partial_every = config.partial_every.max(1);
            let fatal = fatal.clone();
            threads.push(spawn("segmenter", move || {
                let segmenter = Segmenter::new(vad, segmenter_config);
                segmenter_stage(
                    segmenter,
                    segment_rx,
                    asr_tx,
                    &fatal,
                    queue_dir,
                    partial_every,
                );
            })?);
        }
        threads.push(spawn("speech-model", move || {
            asr_stage(recognizer, (asr_rx, cuts_rx), format_tx);
        })?);
        {
            let session = session.clone();
            threads.push(spawn("transcript", move || {
                transcript_stage(
                    TranscriptInputs {
                        recognized: format_rx,
                        edits: edits_rx,
                        turns: turns_rx,
                        cuts: cuts_tx,
                    },
                    (&events_tx, &fatal),
                    &session,
                    (meta, lock),
                );
            })?);
        }
        Ok(Self {
            session,
            format,
            source_name,
            stop,
            paused,
            events,
            edits,
            threads,
            speakers_back,
        })
    }

    /// The session being written.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The native format being recorded.
    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// The source's name.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Events, ending with [`LiveEvent::Stopped`].
    pub fn events(&self) -> &Receiver<LiveEvent> {
        &self.events
    }

    /// A flag that stops capture when set (for a Ctrl-C handler).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Asks capture to stop; the stages then drain and [`LiveEvent::Stopped`] follows.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Pauses (audio is neither recorded nor transcribed) or resumes capture.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Replaces the text of the final segment that starts at `line.start_s` (the user corrected
    /// it); `transcript.jsonl` is rewritten by the stage that appends to it, so nothing races.
    /// Returns false once the session has stopped (then edit the session's files directly).
    pub fn edit(&self, line: TranscriptLine) -> bool {
        self.edits.send(line).is_ok()
    }

    /// Whether capture is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// The speaker models the session was started with, back from the speaker stage once the
    /// audio has ended (this waits for that: call it after [`LiveEvent::Stopped`]); `None`
    /// without models, or on a second call.
    pub fn take_speakers(&mut self) -> Option<Speakers> {
        self.speakers_back.take().and_then(|back| back.recv().ok())
    }

    /// Waits for every stage to finish (after [`stop`](Self::stop) or the end of the source).
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
