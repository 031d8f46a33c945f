//! Live transcription: stages on their own threads joined by bounded channels,
//!
//! capture -> recorder -> resampler -> segmenter (VAD) -> speech model -> formatter -> events.
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
use crate::wav::TARGET_RATE;

/// Blocks between the fast stages (capture, recorder, resampler, segmenter).
const AUDIO_QUEUE: usize = 64;
/// Utterances waiting in memory for the speech model; more wait on disk.
const ASR_QUEUE: usize = 2;
/// The first problem that ends live transcription early (shared by the stages).
#[derive(Clone, Default)]
struct Fatal(Arc<std::sync::Mutex<Option<String>>>);

impl Fatal {
    fn set(&self, problem: String) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(problem);
        }
    }

    fn get(&self) -> Option<String> {
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
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            segmenter: None,
            partial_every: 8_000,
            max_duration_s: None,
            kind: "recording".into(),
            start_paused: false,
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
    /// Something went wrong but recording goes on.
    Warning(String),
    /// Capture ended (stop, end of source, maximum duration, or a fatal error) and every stage
    /// has finished.
    Stopped {
        /// Seconds recorded.
        recorded_s: f64,
        /// The problem that cut capture or transcription short, if one did.
        error: Option<String>,
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
    Failed(String),
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
        // Held by the formatter stage, the last to finish, until the session is marked complete:
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
        {
            let fatal = fatal.clone();
            threads.push(spawn("resampler", move || {
                resampler_stage(format, resample_rx, segment_tx, &fatal);
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
            asr_stage(recognizer, asr_rx, format_tx);
        })?);
        {
            let session = session.clone();
            threads.push(spawn("formatter", move || {
                formatter_stage((format_rx, edits_rx), (&events_tx, &fatal), &session, meta);
                drop(lock);
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

    /// Waits for every stage to finish (after [`stop`](Self::stop) or the end of the source).
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn capture_stage(
    spec: &SourceSpec,
    opened: Sender<Result<(String, AudioFormat)>>,
    out: Sender<Audio>,
    (events, fatal): (&Sender<LiveEvent>, &Fatal),
    stop: &AtomicBool,
    paused: &AtomicBool,
    max_duration_s: Option<f64>,
) {
    let mut source = match spec.open() {
        Ok(source) => source,
        Err(error) => {
            let _ = opened.send(Err(error));
            return;
        }
    };
    let format = source.format();
    if opened.send(Ok((source.name().to_owned(), format))).is_err() {
        return;
    }
    let channels = usize::from(format.channels);
    let rate = f64::from(format.sample_rate);
    let max_frames = max_duration_s.map(|s| (s * rate).round() as usize);
    let mut frames = 0usize;
    let mut was_paused = false;
    let mut reported_dropped = 0;
    let mut last_drop_warning: Option<Instant> = None;
    let mut last_level = Instant::now() - Duration::from_secs(1);
    while !stop.load(Ordering::SeqCst) {
        if paused.load(Ordering::SeqCst) && !source.is_live() {
            if !was_paused && out.send(Audio::Gap).is_err() {
                break;
            }
            was_paused = true;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let mut block = match source.read() {
            Ok(Some(block)) => block,
            Ok(None) => break,
            Err(error) => {
                stop.store(true, Ordering::SeqCst);
                fatal.set(format!("audio capture failed: {error}"));
                break;
            }
        };
        if paused.load(Ordering::SeqCst) {
            if !was_paused && out.send(Audio::Gap).is_err() {
                break;
            }
            was_paused = true;
            continue;
        }
        was_paused = false;
        let dropped = source.dropped_samples();
        if dropped > reported_dropped
            && last_drop_warning.is_none_or(|at| at.elapsed() >= DROP_WARNING_EVERY)
        {
            reported_dropped = dropped;
            last_drop_warning = Some(Instant::now());
            let _ = events.send(LiveEvent::Warning(format!(
                "the audio device delivered faster than it was read: {:.1} s of audio lost so far",
                dropped as f64 / channels as f64 / rate
            )));
        }
        block.truncate(block.len() / channels * channels);
        // A misbehaving driver must not poison the recording or the models downstream.
        for sample in &mut block {
            *sample = if sample.is_finite() {
                sample.clamp(-1.0, 1.0)
            } else {
                0.0
            };
        }
        if let Some(max) = max_frames {
            block.truncate((max - frames.min(max)) * channels);
        }
        if block.is_empty() {
            if max_frames.is_some_and(|max| frames >= max) {
                break;
            }
            continue;
        }
        frames += block.len() / channels;
        if last_level.elapsed().as_secs_f64() >= 1.0 / LEVELS_PER_SECOND {
            last_level = Instant::now();
            let _ = events.try_send(LiveEvent::Level {
                dbfs: rms_dbfs(&block),
                recorded_s: frames as f64 / rate,
            });
        }
        if out.send(Audio::Block(block)).is_err() {
            break;
        }
    }
}

fn recorder_stage(
    mut recorder: WavRecorder,
    input: Receiver<Audio>,
    out: Sender<Audio>,
    (events, fatal): (&Sender<LiveEvent>, &Fatal),
    stop: &AtomicBool,
) {
    let mut failed = None;
    for message in input {
        if let Audio::Block(block) = &message {
            if failed.is_none() {
                if let Err(error) = recorder.append(block) {
                    // Without the recording nothing is safe: stop capturing.
                    stop.store(true, Ordering::SeqCst);
                    failed = Some(error.to_string());
                    continue;
                }
            } else {
                continue;
            }
        }
        let _ = out.send(message);
    }
    let duration = recorder.duration_s();
    let finished = recorder.finish().err().map(|e| e.to_string());
    if let Some(error) = failed.or(finished) {
        fatal.set(format!("recording failed: {error}"));
    }
    let _ = events.send(LiveEvent::Level {
        dbfs: -100.0,
        recorded_s: duration,
    });
}

fn resampler_stage(format: AudioFormat, input: Receiver<Audio>, out: Sender<Audio>, fatal: &Fatal) {
    let channels = usize::from(format.channels);
    let mut resampler = if format.sample_rate == TARGET_RATE {
        None
    } else {
        match StreamResampler::new(format.sample_rate, TARGET_RATE) {
            Ok(resampler) => Some(resampler),
            Err(error) => {
                fatal.set(format!(
                    "cannot convert {} Hz audio for the speech model ({error}); the audio is recorded",
                    format.sample_rate
                ));
                for _ in input {}
                return;
            }
        }
    };
    let mut mono = Vec::new();
    for message in input {
        let block = match message {
            Audio::Gap => {
                if out.send(Audio::Gap).is_err() {
                    return;
                }
                continue;
            }
            Audio::Block(block) => block,
        };
        mono.clear();
        mono.extend(
            block
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() / channels as f32),
        );
        let converted = match resampler.as_mut() {
            Some(resampler) => {
                let mut converted = Vec::with_capacity(mono.len());
                resampler.push(&mono, &mut converted);
                converted
            }
            None => std::mem::take(&mut mono),
        };
        if !converted.is_empty() && out.send(Audio::Block(converted)).is_err() {
            return;
        }
    }
    if let Some(resampler) = resampler.as_mut() {
        let mut tail = Vec::new();
        resampler.finish(&mut tail);
        if !tail.is_empty() {
            let _ = out.send(Audio::Block(tail));
        }
    }
}

/// Utterances for the speech model, in order: in the channel while it has room, then on disk.
struct AsrQueue {
    out: Sender<AsrJob>,
    spilled: VecDeque<AsrJob>,
    dir: PathBuf,
}

impl AsrQueue {
    fn push(&mut self, segment: SpeechSegment) -> Result<()> {
        self.drain();
        if self.spilled.is_empty() {
            match self.out.try_send(AsrJob::Final(segment)) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Ok(()),
                Err(TrySendError::Full(AsrJob::Final(segment))) => return self.spill(segment),
                Err(TrySendError::Full(_)) => return Ok(()),
            }
        }
        self.spill(segment)
    }

    fn spill(&mut self, segment: SpeechSegment) -> Result<()> {
        crate::output::own_private_dir(&self.dir).map_err(|source| PipelineError::Output {
            path: self.dir.clone(),
            source,
        })?;
        let file = self
            .dir
            .join(format!("{:012}-{:012}.f32", segment.start, segment.end));
        let bytes: Vec<u8> = segment
            .samples
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        crate::output::write_private_atomically(&file, &bytes)?;
        self.spilled.push_back(AsrJob::Spilled {
            start: segment.start,
            end: segment.end,
            file,
        });
        Ok(())
    }

    /// Moves waiting utterances into the channel as far as it has room.
    fn drain(&mut self) {
        while let Some(job) = self.spilled.pop_front() {
            match self.out.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(job)) => {
                    self.spilled.push_front(job);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.spilled.clear();
                    return;
                }
            }
        }
    }

    /// Waits until every utterance is in the channel.
    fn finish(mut self) {
        while let Some(job) = self.spilled.pop_front() {
            if self.out.send(job).is_err() {
                return;
            }
        }
    }

    /// Offers a partial transcript job; dropped when the model is busy.
    fn offer_partial(&mut self, start: usize, samples: &[f32]) -> bool {
        self.spilled.is_empty()
            && self.out.is_empty()
            && self
                .out
                .try_send(AsrJob::Partial {
                    start,
                    samples: samples.to_vec(),
                })
                .is_ok()
    }
}

fn segmenter_stage(
    mut segmenter: Segmenter<Box<dyn SpeechProbability + Send>>,
    input: Receiver<Audio>,
    out: Sender<AsrJob>,
    fatal: &Fatal,
    queue_dir: PathBuf,
    partial_every: usize,
) {
    let mut queue = AsrQueue {
        out,
        spilled: VecDeque::new(),
        dir: queue_dir,
    };
    // (start, end, made during a pause) of the newest partial job.
    let mut last_partial: Option<(usize, usize, bool)> = None;
    let warn = |error: PipelineError| {
        fatal.set(format!(
            "live transcription failed: {error}; the audio is recorded, `medscribe sessions recover` transcribes it"
        ));
    };
    loop {
        let message = match input.recv_timeout(Duration::from_millis(50)) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => {
                queue.drain();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let finished = match message {
            Audio::Block(block) => segmenter.push(&block),
            Audio::Gap => segmenter.finish(),
        };
        match finished {
            Ok(segments) => {
                for segment in segments {
                    if let Err(error) = queue.push(segment) {
                        warn(error);
                    }
                }
            }
            Err(error) => warn(error),
        }
        if let Some(open) = segmenter.open_utterance() {
            let end = open.start + open.samples.len();
            // Partials every `partial_every` of speech, one as soon as a pause begins (the text
            // shows quickly), and one on exactly the audio the utterance will have if the pause
            // lasts (its text is then reused for the final).
            let due = match last_partial {
                Some((start, last_end, was_pausing)) if start == open.start => {
                    if open.settled {
                        end != last_end
                    } else {
                        (open.pausing && !was_pausing) || end >= last_end + partial_every
                    }
                }
                _ => open.samples.len() >= partial_every || open.pausing,
            };
            if due && queue.offer_partial(open.start, open.samples) {
                last_partial = Some((open.start, end, open.pausing));
            }
        }
    }
    match segmenter.finish() {
        Ok(segments) => {
            for segment in segments {
                if let Err(error) = queue.push(segment) {
                    warn(error);
                }
            }
        }
        Err(error) => warn(error),
    }
    queue.finish();
}

fn asr_stage(
    mut recognizer: Box<dyn SpeechRecognizer>,
    jobs: Receiver<AsrJob>,
    out: Sender<Recognized>,
) {
    // The newest partial transcript: when an utterance ends exactly where a settled partial
    // did, its text is already known.
    let mut last_partial: Option<(usize, usize, String)> = None;
    for job in jobs.iter() {
        let result = match job {
            AsrJob::Partial { start, samples } => {
                if !jobs.is_empty() {
                    continue;
                }
                let end = start + samples.len();
                match recognizer.transcribe_segment(&samples) {
                    Ok(raw) => {
                        let text = recognizer.format_text(&raw);
                        last_partial = Some((start, end, raw));
                        Recognized::Partial { start, end, text }
                    }
                    Err(_) => continue,
                }
            }
            AsrJob::Final(segment) => {
                let (start, end) = (segment.start, segment.end);
                let raw = transcribe_final(&mut *recognizer, &mut last_partial, start, end, || {
                    Ok(segment.samples)
                });
                final_text(&*recognizer, start, end, raw)
            }
            AsrJob::Spilled { start, end, file } => {
                let raw = transcribe_final(&mut *recognizer, &mut last_partial, start, end, || {
                    let bytes = std::fs::read(&file).map_err(|e| e.to_string())?;
                    Ok(bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect())
                });
                // Taken back whether it was read or its text was already known.
                let _ = std::fs::remove_file(&file);
                final_text(&*recognizer, start, end, raw)
            }
        };
        if out.send(result).is_err() {
            return;
        }
    }
}

/// The model's text of a finished utterance: the settled partial's when it covered exactly
/// this audio, else a fresh transcription.
fn transcribe_final(
    recognizer: &mut dyn SpeechRecognizer,
    last_partial: &mut Option<(usize, usize, String)>,
    start: usize,
    end: usize,
    samples: impl FnOnce() -> std::result::Result<Vec<f32>, String>,
) -> std::result::Result<String, String> {
    if let Some((_, _, raw)) = last_partial
        .take()
        .filter(|(s, e, _)| (*s, *e) == (start, end))
    {
        return Ok(raw);
    }
    samples().and_then(|samples| {
        recognizer
            .transcribe_segment(&samples)
            .map_err(|e| e.to_string())
    })
}

fn final_text(
    recognizer: &dyn SpeechRecognizer,
    start: usize,
    end: usize,
    raw: std::result::Result<String, String>,
) -> Recognized {
    match raw {
        Ok(raw) => Recognized::Final {
            start,
            end,
            text: recognizer.format_text(&raw),
            raw,
        },
        Err(error) => Recognized::Failed(format!(
            "the speech model failed on {:.1}-{:.1} s: {error}",
            seconds(start),
            seconds(end)
        )),
    }
}

fn formatter_stage(
    (input, edits): (Receiver<Recognized>, Receiver<TranscriptLine>),
    (events, fatal): (&Sender<LiveEvent>, &Fatal),
    session: &Session,
    mut meta: SessionMeta,
) {
    // The session's transcript so far, to rewrite it when the user corrects a segment.
    let mut lines: Vec<TranscriptLine> = Vec::new();
    loop {
        let recognized = crossbeam_channel::select! {
            recv(input) -> message => match message {
                Ok(recognized) => recognized,
                Err(_) => break,
            },
            recv(edits) -> edit => {
                if let Ok(edit) = edit {
                    if let Some(line) = lines.iter_mut().find(|l| l.start_s == edit.start_s) {
                        line.text = edit.text;
                        if let Err(e) = session.write_transcript(&lines) {
                            let _ = events.send(LiveEvent::Warning(e.to_string()));
                        }
                    }
                }
                continue;
            }
        };
        match recognized {
            Recognized::Partial { start, end, text } => {
                let _ = events.try_send(LiveEvent::Partial {
                    start_s: seconds(start),
                    end_s: seconds(end),
                    text,
                });
            }
            Recognized::Final {
                start,
                end,
                raw,
                text,
            } => {
                let line = TranscriptLine {
                    start_s: seconds(start),
                    end_s: seconds(end),
                    text,
                    raw_text: raw,
                };
                if !line.text.is_empty() {
                    if let Err(e) = session.append_transcript(&line) {
                        fatal.set(e.to_string());
                    }
                    lines.push(line.clone());
                }
                meta.transcribed_s = line.end_s;
                let _ = events.send(LiveEvent::Final(line));
            }
            Recognized::Failed(message) => {
                let _ = events.send(LiveEvent::Warning(message.clone()));
                fatal.set(message);
            }
        }
    }
    // Every stage has drained: the recording is complete.
    let recorded_s = crate::wav::WavSource::open(&session.audio_path())
        .map(|wav| wav.info().duration_s())
        .unwrap_or(meta.transcribed_s);
    if fatal.get().is_none() {
        meta.transcribed_s = recorded_s;
        meta.state = SessionState::Complete;
    }
    if let Err(e) = session.write_meta(&meta) {
        fatal.set(e.to_string());
    }
    let _ = events.send(LiveEvent::Stopped {
        recorded_s,
        error: fatal.get(),
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::datadir::DataDir;
    use crate::recover::recover_session;
    use crate::session::SessionState;
    use medscribe_asr::ModelFamily;

    /// A VAD that hears speech wherever the chunk is loud.
    pub(crate) struct Loudness;

    impl SpeechProbability for Loudness {
        fn probability(&mut self, chunk: &[f32]) -> Result<f32> {
            let mean = chunk.iter().map(|x| x.abs()).sum::<f32>() / chunk.len().max(1) as f32;
            Ok(if mean > 0.03 { 0.9 } else { 0.05 })
        }
        fn reset(&mut self) {}
    }

    /// A speech model that "transcribes" an utterance as its length, slowly if asked.
    pub(crate) struct Counter {
        pub delay: Duration,
    }

    impl SpeechRecognizer for Counter {
        fn model_name(&self) -> &str {
            "counter"
        }
        fn family(&self) -> ModelFamily {
            ModelFamily::Moonshine
        }
        fn max_segment_samples(&self) -> usize {
            30 * 16_000
        }
        fn transcribe_segment(&mut self, samples: &[f32]) -> medscribe_asr::Result<String> {
            std::thread::sleep(self.delay);
            Ok(format!("utterance  of {} samples", samples.len()))
        }
        fn format_text(&self, raw: &str) -> String {
            // As Moonshine does: whitespace tidied.
            raw.split_whitespace().collect::<Vec<_>>().join(" ")
        }
    }

    fn run(seconds: f64, rate: u32, channels: u16, delay_ms: u64) -> (Session, Vec<LiveEvent>) {
        let root = tempfile::tempdir().unwrap().keep();
        let session = Session::create(&DataDir::at(&root), "2026-11-23T12:00:00Z").unwrap();
        let live = LiveSession::start(
            SourceSpec::Synthetic {
                seconds,
                sample_rate: rate,
                channels,
            },
            Box::new(Counter {
                delay: Duration::from_millis(delay_ms),
            }),
            Box::new(Loudness),
            session.clone(),
            LiveConfig::default(),
        )
        .unwrap();
        let events: Vec<LiveEvent> = live.events().iter().collect();
        live.join();
        (session, events)
    }

    fn finals(events: &[LiveEvent]) -> Vec<&TranscriptLine> {
        events
            .iter()
            .filter_map(|e| match e {
                LiveEvent::Final(line) => Some(line),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_stage_runs_and_leaves_complete_files() {
        let (session, events) = run(10.0, 48_000, 2, 0);
        let lines = finals(&events);
        // Tone bursts at 0, 4 and 8 s, each a separate utterance.
        let starts: Vec<i64> = lines.iter().map(|l| l.start_s.round() as i64).collect();
        assert_eq!(starts, vec![0, 4, 8], "{lines:?}");
        assert!(lines.iter().all(|l| l.text.starts_with("utterance of ")));
        assert!(matches!(
            events.last(),
            Some(LiveEvent::Stopped { error: None, recorded_s }) if (*recorded_s - 10.0).abs() < 1e-9
        ));
        let wav = hound::WavReader::open(session.audio_path()).unwrap();
        assert_eq!((wav.spec().sample_rate, wav.spec().channels), (48_000, 2));
        assert_eq!(wav.duration(), 480_000);
        assert_eq!(session.transcript().unwrap().len(), 3);
        let meta = session.meta().unwrap();
        assert_eq!(meta.state, SessionState::Complete);
        assert_eq!(meta.transcribed_s, 10.0);
        assert_eq!(meta.asr_model, "counter");
    }

    #[test]
    fn a_slow_model_makes_utterances_wait_on_disk_in_order() {
        // Ten utterances delivered at once to a model that needs 150 ms for each.
        let (session, events) = run(40.0, 16_000, 1, 150);
        let starts: Vec<i64> = finals(&events)
            .iter()
            .map(|l| l.start_s.round() as i64)
            .collect();
        assert_eq!(starts, (0..10).map(|i| i * 4).collect::<Vec<_>>());
        let queue = session.queue_dir();
        assert!(queue.is_dir(), "utterances were spilled to disk");
        assert_eq!(
            std::fs::read_dir(queue).unwrap().count(),
            0,
            "and taken back"
        );
    }

    #[test]
    fn a_paused_start_records_nothing_until_resumed_and_edits_reach_the_file() {
        let root = tempfile::tempdir().unwrap();
        let session = Session::create(&DataDir::at(root.path()), "2026-11-23T12:00:00Z").unwrap();
        let live = LiveSession::start(
            SourceSpec::Synthetic {
                seconds: 10.0,
                sample_rate: 16_000,
                channels: 1,
            },
            Box::new(Counter {
                delay: Duration::from_millis(200),
            }),
            Box::new(Loudness),
            session.clone(),
            LiveConfig {
                start_paused: true,
                ..LiveConfig::default()
            },
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            live.events().try_recv().is_err(),
            "nothing captured while paused"
        );
        assert_eq!(
            hound::WavReader::open(session.audio_path())
                .unwrap()
                .duration(),
            0
        );
        live.set_paused(false);
        let mut edited = false;
        for event in live.events().iter() {
            if let LiveEvent::Final(line) = event {
                if !edited {
                    edited = live.edit(TranscriptLine {
                        text: "corrected by the doctor".into(),
                        ..line
                    });
                }
            }
        }
        live.join();
        assert!(edited);
        let lines = session.transcript().unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].text, "corrected by the doctor");
        assert!(lines[1].text.starts_with("utterance of"));
    }

    #[test]
    fn a_spilled_utterance_is_taken_back_even_when_its_text_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("000-100.f32");
        std::fs::write(&file, [0u8; 400]).unwrap();
        let (jobs, jobs_rx) = bounded(4);
        let (out_tx, out) = bounded(4);
        let stage = std::thread::spawn(move || {
            asr_stage(
                Box::new(Counter {
                    delay: Duration::ZERO,
                }),
                jobs_rx,
                out_tx,
            )
        });
        jobs.send(AsrJob::Partial {
            start: 0,
            samples: vec![0.0; 100],
        })
        .unwrap();
        assert!(matches!(
            out.recv().unwrap(),
            Recognized::Partial { end: 100, .. }
        ));
        jobs.send(AsrJob::Spilled {
            start: 0,
            end: 100,
            file: file.clone(),
        })
        .unwrap();
        let Recognized::Final { raw, .. } = out.recv().unwrap() else {
            panic!("a final");
        };
        assert_eq!(raw, "utterance  of 100 samples");
        drop(jobs);
        stage.join().unwrap();
        assert!(!file.exists());
    }

    #[test]
    fn a_source_that_cannot_open_records_nothing() {
        let root = tempfile::tempdir().unwrap();
        let session = Session::create(&DataDir::at(root.path()), "2026-11-23T12:00:00Z").unwrap();
        let error = LiveSession::start(
            SourceSpec::File {
                path: root.path().join("missing.wav"),
                paced: false,
            },
            Box::new(Counter {
                delay: Duration::ZERO,
            }),
            Box::new(Loudness),
            session.clone(),
            LiveConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("missing.wav"), "{error}");
        assert!(!session.audio_path().exists());
    }

    #[test]
    fn a_killed_session_is_recovered_from_its_files() {
        let (session, _) = run(13.0, 16_000, 1, 0);
        // As a kill -9 after the first utterance would leave it: header stale, transcript
        // cut short with a torn line, state still recording by a process that is gone.
        let lines = session.transcript().unwrap();
        session.write_transcript(&lines[..1]).unwrap();
        let mut torn = std::fs::OpenOptions::new()
            .append(true)
            .open(session.transcript_path())
            .unwrap();
        std::io::Write::write_all(&mut torn, b"{\"start_s\":4.").unwrap();
        let mut meta = session.meta().unwrap();
        meta.state = SessionState::Recording;
        meta.transcribed_s = 0.0;
        meta.pid = u32::MAX - 1;
        session.write_meta(&meta).unwrap();
        let audio = std::fs::OpenOptions::new()
            .write(true)
            .open(session.audio_path())
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&audio, &16_000u32.to_le_bytes(), 40).unwrap();

        let mut model = Counter {
            delay: Duration::ZERO,
        };
        let recovered = recover_session(&session, &mut model, &mut Loudness).unwrap();
        assert_eq!(recovered.repair.frames_before, 8_000);
        assert_eq!(recovered.repair.frames_after, 13 * 16_000);
        assert_eq!(recovered.resumed_at_s, lines[0].end_s);
        let starts: Vec<i64> = session
            .transcript()
            .unwrap()
            .iter()
            .map(|l| l.start_s.round() as i64)
            .collect();
        assert_eq!(starts, vec![0, 4, 8, 12]);
        assert_eq!(session.meta().unwrap().state, SessionState::Complete);
        let again = recover_session(&session, &mut model, &mut Loudness).unwrap_err();
        assert!(again.to_string().contains("already complete"), "{again}");
    }
}
