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

pub mod cluster;
pub mod dvector;
pub mod metrics;
pub mod reconstruct;
pub mod segmentation;

pub use cluster::{cluster, Clusters};
pub use dvector::DVectorEmbedder;
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

/// Turns a speaker's audio into a vector that is close, by cosine, for the same voice.
pub trait SpeakerEmbedder {
    /// The embedding of `audio` (16 kHz mono, at least a few tenths of a second).
    fn embed(&mut self, audio: &[f32]) -> Result<Vec<f32>>;
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
    let mut embeddings = Vec::with_capacity(locals.len());
    let mut clean = Vec::new();
    for local in &locals {
        clean.clear();
        for &(start, end) in &local.samples {
            clean.extend_from_slice(&audio[start.min(audio.len())..end.min(audio.len())]);
        }
        embeddings.push(embedder.embed(&clean)?);
    }
    let labels = cluster(&embeddings, clusters);
    Ok(reconstruct(&segmentation, &locals, &labels, options))
}
