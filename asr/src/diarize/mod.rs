//! Who spoke when (speaker diarization), the pyannote way as sherpa-onnx does it:
//!
//! 1. pyannote's `segmentation-3.0` (MIT weights, models/manifest.tsv) runs over 10 s windows
//!    every second and labels each 17 ms frame with up to two of three *local* speakers
//!    ([`segmentation`]);
//! 2. each window's local speakers get an embedding of their clean (non-overlapped) frames
//!    ([`SpeakerEmbedder`]);
//! 3. the embeddings are clustered into global speakers ([`cluster`]);
//! 4. the windows' labels, mapped to global speakers, are aggregated frame by frame with the
//!    windows' own count of speakers, and turned into speaker turns, overlap included
//!    ([`reconstruct`]).
//!
//! Callers hand in 16 kHz mono samples.

pub mod campplus;
pub mod cluster;
pub mod fbank;
pub mod metrics;
pub mod reconstruct;
pub mod segmentation;

pub use campplus::CamppEmbedder;
pub use cluster::{cluster, cluster_reliable, Clusters, OnlineClusters};
pub use metrics::{diarization_error, DiarizationError};
pub use reconstruct::{reconstruct, SpeakerTurn, TurnOptions};
pub use segmentation::{LocalSpeaker, Segmentation, SegmentationModel};

use crate::error::Result;

/// Sample rate of everything here.
pub const SAMPLE_RATE: usize = 16_000;
/// Samples of one segmentation window (10 s).
pub const WINDOW: usize = 160_000;
/// Samples between window starts (1 s, pyannote's and sherpa-onnx's 10%).
pub const WINDOW_SHIFT: usize = 16_000;
/// Samples between output frames of the segmentation model (its receptive field's step).
pub const FRAME_SHIFT: usize = 270;
/// Samples one output frame sees (its receptive field).
pub const FRAME_SIZE: usize = 991;
/// Speakers one window can tell apart.
pub const LOCAL_SPEAKERS: usize = 3;
/// Windows the segmentation model reads in one run: about a quarter faster per window than one
/// at a time on one core, for 3 s more audio held.
pub const WINDOWS_AT_ONCE: usize = 4;

/// The clean stretch a local speaker needs (its longest, in one piece) for its embedding to shape
/// the clusters: 2 s, pyannote's `min_active_ratio` of a 10 s window, and enough to hold whole
/// embedding sub-segments. Embeddings of shorter, scattered speech are noisier and would split
/// or join voices; those speakers are given the nearest cluster instead.
pub const MIN_RELIABLE_SAMPLES: usize = WINDOW / 5;

/// Turns a speaker's audio into a vector that is close, by cosine, for the same voice.
pub trait SpeakerEmbedder {
    /// The embedding of `audio` (16 kHz mono, at least a few tenths of a second).
    fn embed(&mut self, audio: &[f32]) -> Result<Vec<f32>>;

    /// One embedding per speaker, each from its sample `ranges` of the recording, of which
    /// `audio` holds the part from sample `offset` on (ranges are in the recording's samples and
    /// lie inside `audio`; parts past its end are clipped). By default the ranges are joined and
    /// embedded; an embedder may share work across speakers and calls instead (overlapping
    /// windows see the same audio again and again).
    fn embed_ranges(
        &mut self,
        audio: &[f32],
        offset: usize,
        ranges: &[Vec<(usize, usize)>],
    ) -> Result<Vec<Vec<f32>>> {
        ranges
            .iter()
            .map(|speaker| self.embed(&joined(audio, offset, speaker)))
            .collect()
    }

    /// A new recording starts: nothing of an earlier one may be reused.
    fn start_recording(&mut self) {}

    /// No later [`Self::embed_ranges`] call of this recording reaches before sample `sample`.
    fn forget_before(&mut self, _sample: usize) {}
}

/// The samples of the recording in `ranges`, one after the other, from `audio` holding the
/// recording from sample `offset` on (ranges outside it clipped).
pub fn joined(audio: &[f32], offset: usize, ranges: &[(usize, usize)]) -> Vec<f32> {
    let mut out = Vec::new();
    for &(start, end) in ranges {
        let end = end.saturating_sub(offset).min(audio.len());
        let start = start.saturating_sub(offset).min(end);
        out.extend_from_slice(&audio[start..end]);
    }
    out
}

/// Diarizes `audio`: segmentation, an embedding per local speaker, clustering, turns.
pub fn diarize(
    model: &mut SegmentationModel,
    embedder: &mut dyn SpeakerEmbedder,
    audio: &[f32],
    clusters: Clusters,
    options: &TurnOptions,
) -> Result<Vec<SpeakerTurn>> {
    let mut diarizer = Diarizer::new(model, embedder);
    diarizer.push(audio)?;
    diarizer.finish(clusters, options)
}

/// Diarization fed audio as it arrives (a file read block by block, a live recording): the
/// segmentation windows are labelled, and their local speakers embedded, as soon as the audio of
/// the next [`WINDOWS_AT_ONCE`] is complete, and only the audio those windows still need is kept
/// (13 s). A two-hour recording needs a few megabytes of labels and embeddings, not its 460 MB of
/// samples. The windows are read in the same groups however the audio is fed, so the result is
/// exactly what [`diarize`] gives for the whole audio at once (it is this, fed once).
pub struct Diarizer<'m> {
    model: &'m mut SegmentationModel,
    embedder: &'m mut dyn SpeakerEmbedder,
    /// The recording from sample `buffer_start` on.
    buffer: Vec<f32>,
    buffer_start: usize,
    samples: usize,
    windows: Vec<Vec<u8>>,
    locals: Vec<LocalSpeaker>,
    embeddings: Vec<Vec<f32>>,
    reliable: Vec<bool>,
    /// Labels while the recording goes on, for the local speakers so far.
    online: OnlineClusters,
    online_labels: Vec<usize>,
}

impl std::fmt::Debug for Diarizer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Diarizer")
            .field("samples", &self.samples)
            .field("windows", &self.windows.len())
            .finish_non_exhaustive()
    }
}

impl<'m> Diarizer<'m> {
    /// A diarizer for one new recording.
    pub fn new(model: &'m mut SegmentationModel, embedder: &'m mut dyn SpeakerEmbedder) -> Self {
        embedder.start_recording();
        Self {
            model,
            embedder,
            buffer: Vec::new(),
            buffer_start: 0,
            samples: 0,
            windows: Vec::new(),
            locals: Vec::new(),
            embeddings: Vec::new(),
            reliable: Vec::new(),
            online: OnlineClusters::default(),
            online_labels: Vec::new(),
        }
    }

    /// Seconds of the recording whose windows are labelled so far.
    pub fn labelled_s(&self) -> f64 {
        self.labelled_samples() as f64 / SAMPLE_RATE as f64
    }

    /// Samples of the recording the labelled windows cover.
    fn labelled_samples(&self) -> usize {
        match self.windows.len() {
            0 => 0,
            n => ((n - 1) * WINDOW_SHIFT + WINDOW).min(self.samples),
        }
    }

    /// The speaker turns of the audio labelled so far ([`Self::labelled_s`]), with each local
    /// speaker given a speaker as it came (an online clustering); [`Self::finish`] clusters
    /// them all again, so the labels may change and their numbers with them.
    pub fn turns_so_far(&mut self, clusters: Clusters, options: &TurnOptions) -> Vec<SpeakerTurn> {
        for index in self.online_labels.len()..self.embeddings.len() {
            let label = self
                .online
                .assign(&self.embeddings[index], self.reliable[index], clusters);
            self.online_labels.push(label);
        }
        let segmentation = Segmentation {
            windows: self.windows.clone(),
            samples: self.labelled_samples(),
        };
        reconstruct(&segmentation, &self.locals, &self.online_labels, options)
    }

    /// Samples received so far.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Takes the next `audio` (16 kHz mono) and labels every window it completes.
    pub fn push(&mut self, audio: &[f32]) -> Result<()> {
        self.buffer.extend_from_slice(audio);
        self.samples += audio.len();
        loop {
            let first = self.windows.len();
            let starts: Vec<usize> = (first..first + WINDOWS_AT_ONCE)
                .map(|index| index * WINDOW_SHIFT)
                .collect();
            if starts.iter().any(|start| start + WINDOW > self.samples) {
                break;
            }
            self.label_windows(&starts)?;
        }
        Ok(())
    }

    /// Labels the last windows (padded with silence), clusters every local speaker and gives the
    /// speaker turns.
    pub fn finish(mut self, clusters: Clusters, options: &TurnOptions) -> Result<Vec<SpeakerTurn>> {
        let starts = segmentation::window_starts(self.samples);
        let rest: Vec<usize> = starts.into_iter().skip(self.windows.len()).collect();
        for group in rest.chunks(WINDOWS_AT_ONCE) {
            self.label_windows(group)?;
        }
        self.embedder.forget_before(usize::MAX);
        let labels = cluster_reliable(&self.embeddings, &self.reliable, clusters);
        let segmentation = Segmentation {
            windows: std::mem::take(&mut self.windows),
            samples: self.samples,
        };
        Ok(reconstruct(&segmentation, &self.locals, &labels, options))
    }

    /// Segments the windows starting at samples `starts` (the next ones, in order) in one run
    /// of the model, embeds their local speakers and drops the audio no later window needs.
    fn label_windows(&mut self, starts: &[usize]) -> Result<()> {
        let offset = self.buffer_start;
        let views: Vec<&[f32]> = starts
            .iter()
            .map(|&start| &self.buffer[start - offset..(start + WINDOW).min(self.samples) - offset])
            .collect();
        let log_probs = self.model.windows_log_probs(&views)?;
        for ((&start, audio), probs) in starts.iter().zip(views).zip(log_probs) {
            let frames: Vec<u8> = probs.iter().map(segmentation::decode_frame).collect();
            let index = self.windows.len();
            let locals = segmentation::window_local_speakers(index, &frames);
            let ranges: Vec<Vec<(usize, usize)>> =
                locals.iter().map(|l| l.samples.clone()).collect();
            self.embeddings
                .extend(self.embedder.embed_ranges(audio, start, &ranges)?);
            self.reliable.extend(ranges.iter().map(|r| {
                r.iter()
                    .map(|(s, e)| e.saturating_sub(*s))
                    .max()
                    .unwrap_or(0)
                    >= MIN_RELIABLE_SAMPLES
            }));
            self.locals.extend(locals);
            self.windows.push(frames);
            self.embedder
                .forget_before(self.windows.len() * WINDOW_SHIFT);
        }
        let next = self.windows.len() * WINDOW_SHIFT;
        let drop = next
            .saturating_sub(self.buffer_start)
            .min(self.buffer.len());
        self.buffer.drain(..drop);
        self.buffer_start += drop;
        Ok(())
    }
}
