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
pub use cluster::{cluster, cluster_reliable, Clusters};
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

/// The clean stretch a local speaker needs (its longest, in one piece) for its embedding to shape
/// the clusters: 2 s, pyannote's `min_active_ratio` of a 10 s window, and enough to hold whole
/// embedding sub-segments. Embeddings of shorter, scattered speech are noisier and would split
/// or join voices; those speakers are given the nearest cluster instead.
pub const MIN_RELIABLE_SAMPLES: usize = WINDOW / 5;

/// Turns a speaker's audio into a vector that is close, by cosine, for the same voice.
pub trait SpeakerEmbedder {
    /// The embedding of `audio` (16 kHz mono, at least a few tenths of a second).
    fn embed(&mut self, audio: &[f32]) -> Result<Vec<f32>>;

    /// One embedding per speaker of `recording`, each from its sample `ranges`. By default the
    /// ranges are joined and embedded; an embedder may share work across speakers instead
    /// (overlapping windows see the same audio again and again).
    fn embed_ranges(
        &mut self,
        recording: &[f32],
        ranges: &[Vec<(usize, usize)>],
    ) -> Result<Vec<Vec<f32>>> {
        ranges
            .iter()
            .map(|speaker| self.embed(&joined(recording, speaker)))
            .collect()
    }
}

/// The samples of `recording` in `ranges`, one after the other (ranges past its end clipped).
pub fn joined(recording: &[f32], ranges: &[(usize, usize)]) -> Vec<f32> {
    let mut out = Vec::new();
    for &(start, end) in ranges {
        let end = end.min(recording.len());
        out.extend_from_slice(&recording[start.min(end)..end]);
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
    let segmentation = model.segment(audio)?;
    let locals = segmentation.local_speakers();
    let ranges: Vec<Vec<(usize, usize)>> = locals.iter().map(|l| l.samples.clone()).collect();
    let embeddings = embedder.embed_ranges(audio, &ranges)?;
    let reliable: Vec<bool> = ranges
        .iter()
        .map(|r| {
            r.iter()
                .map(|(s, e)| e.saturating_sub(*s))
                .max()
                .unwrap_or(0)
                >= MIN_RELIABLE_SAMPLES
        })
        .collect();
    let labels = cluster_reliable(&embeddings, &reliable, clusters);
    Ok(reconstruct(&segmentation, &locals, &labels, options))
}
