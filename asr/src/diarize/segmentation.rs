//! pyannote `segmentation-3.0` on ONNX Runtime: 10 s windows of raw audio in, per frame the
//! log-probabilities of seven *powerset* classes out (nobody; speaker 1, 2 or 3 alone; two of them
//! at once), decoded to which of the window's three local speakers are talking.

use std::path::Path;

use ort::session::Session;
use ort::value::Tensor;

use super::{FRAME_SHIFT, LOCAL_SPEAKERS, WINDOW, WINDOW_SHIFT};
use crate::error::{one_line, AsrError, Result};
use crate::runtime::open_session;

/// Powerset class -> the local speakers it means, as bits (pyannote's order: {}, {1}, {2}, {3},
/// {1,2}, {1,3}, {2,3}).
const POWERSET: [u8; 7] = [0b000, 0b001, 0b010, 0b100, 0b011, 0b101, 0b110];
/// Fewest clean frames a local speaker needs to be embedded (sherpa-onnx's: about 0.17 s).
const MIN_CLEAN_FRAMES: usize = 10;

/// The segmentation model.
pub struct SegmentationModel {
    session: Session,
}

impl std::fmt::Debug for SegmentationModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentationModel").finish_non_exhaustive()
    }
}

/// Which local speakers talk in each frame of each window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segmentation {
    /// Per window (starting every [`WINDOW_SHIFT`] samples), per frame, a bit per local speaker.
    pub windows: Vec<Vec<u8>>,
    /// Samples of the audio.
    pub samples: usize,
}

/// A local speaker of one window, with the audio where it talks alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSpeaker {
    /// The window.
    pub window: usize,
    /// Which of its [`LOCAL_SPEAKERS`].
    pub speaker: usize,
    /// Sample ranges (start, end) of the audio where it, and nobody else, talks.
    pub samples: Vec<(usize, usize)>,
}

impl SegmentationModel {
    /// Loads `segmentation-3.0.onnx` with `threads` threads.
    pub fn load(path: &Path, threads: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(AsrError::ModelFile {
                path: path.to_path_buf(),
                reason: "speaker segmentation model not found; run scripts/setup.sh".into(),
            });
        }
        let session = open_session(path, threads.max(1))?;
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        if inputs != ["input"] || outputs != ["output"] {
            return Err(AsrError::ModelFile {
                path: path.to_path_buf(),
                reason: format!(
                    "not pyannote's segmentation model (inputs [{}], outputs [{}]; expected \
                     input -> output)",
                    inputs.join(", "),
                    outputs.join(", ")
                ),
            });
        }
        Ok(Self { session })
    }

    /// Log-probabilities of the seven powerset classes for each frame of one window
    /// ([`WINDOW`] samples; a shorter one is padded with silence).
    pub fn window_log_probs(&mut self, window: &[f32]) -> Result<Vec<[f32; 7]>> {
        Ok(self.windows_log_probs(&[window])?.pop().unwrap_or_default())
    }

    /// [`Self::window_log_probs`] of several windows in one run of the model, which reads
    /// them about a quarter faster than one by one (its LSTM multiplies matrices instead of
    /// vectors).
    pub fn windows_log_probs(&mut self, windows: &[&[f32]]) -> Result<Vec<Vec<[f32; 7]>>> {
        let inference = |e: ort::Error| AsrError::Inference(one_line(e));
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let mut input = Vec::with_capacity(windows.len() * WINDOW);
        for window in windows {
            let start = input.len();
            input.extend(
                window
                    .iter()
                    .take(WINDOW)
                    .map(|&x| if x.is_finite() { x } else { 0.0 }),
            );
            input.resize(start + WINDOW, 0.0);
        }
        let input = Tensor::from_array(([windows.len(), 1, WINDOW], input)).map_err(inference)?;
        let outputs = self
            .session
            .run(ort::inputs!["input" => input])
            .map_err(inference)?;
        let (shape, values) = outputs
            .get("output")
            .ok_or_else(|| AsrError::Inference("the segmentation model returned nothing".into()))?
            .try_extract_tensor::<f32>()
            .map_err(inference)?;
        let dims: Vec<i64> = shape.iter().copied().collect();
        if dims.len() != 3 || dims[0] != windows.len() as i64 || dims[2] != 7 || dims[1] < 1 {
            return Err(AsrError::Inference(format!(
                "the segmentation model returned shape {dims:?}, expected [{}, frames, 7]",
                windows.len()
            )));
        }
        let frames = dims[1] as usize;
        Ok(values
            .chunks_exact(frames * 7)
            .map(|window| {
                window
                    .chunks_exact(7)
                    .map(|row| {
                        let mut classes = [0.0; 7];
                        classes.copy_from_slice(row);
                        classes
                    })
                    .collect()
            })
            .collect())
    }

    /// Labels `audio` window by window: every [`WINDOW_SHIFT`] samples a [`WINDOW`] (the last
    /// one padded with silence; audio shorter than a window is one padded window), each frame's
    /// most likely powerset class decoded to local speakers.
    pub fn segment(&mut self, audio: &[f32]) -> Result<Segmentation> {
        let mut windows = Vec::new();
        for start in window_starts(audio.len()) {
            let end = (start + WINDOW).min(audio.len());
            let probs = self.window_log_probs(&audio[start..end])?;
            windows.push(probs.iter().map(decode_frame).collect());
        }
        Ok(Segmentation {
            windows,
            samples: audio.len(),
        })
    }
}

/// Where the windows of `samples` of audio start: every [`WINDOW_SHIFT`], plus one more if the
/// last full window leaves audio over; one window for audio shorter than a window.
pub fn window_starts(samples: usize) -> Vec<usize> {
    if samples <= WINDOW {
        return vec![0];
    }
    let full = (samples - WINDOW) / WINDOW_SHIFT + 1;
    let mut starts: Vec<usize> = (0..full).map(|i| i * WINDOW_SHIFT).collect();
    if !(samples - WINDOW).is_multiple_of(WINDOW_SHIFT) {
        starts.push(full * WINDOW_SHIFT);
    }
    starts
}

/// A frame's local speakers: the bits of its most likely powerset class.
pub(crate) fn decode_frame(log_probs: &[f32; 7]) -> u8 {
    let mut best = 0;
    for (class, &p) in log_probs.iter().enumerate() {
        // The first maximum wins, as numpy's and Eigen's argmax do.
        if p > log_probs[best] {
            best = class;
        }
    }
    POWERSET[best]
}

impl Segmentation {
    /// Frames of the whole recording at [`FRAME_SHIFT`] spacing, as the windows cover it.
    pub fn frames(&self) -> usize {
        let frames_per_window = self.windows.first().map_or(0, Vec::len);
        if self.windows.is_empty() {
            return 0;
        }
        self.window_offset(self.windows.len() - 1) + frames_per_window
    }

    /// The frame of the whole recording where window `index` begins.
    pub fn window_offset(&self, index: usize) -> usize {
        // Rounded to the nearest frame, as pyannote and sherpa-onnx align windows.
        (index * WINDOW_SHIFT + FRAME_SHIFT / 2) / FRAME_SHIFT
    }

    /// How many speakers talk in each frame: the windows covering it, each counting its
    /// speakers, averaged and rounded.
    pub fn speakers_per_frame(&self) -> Vec<u8> {
        let frames = self.frames();
        let mut count = vec![0u32; frames];
        let mut weight = vec![0u32; frames];
        for (index, window) in self.windows.iter().enumerate() {
            let offset = self.window_offset(index);
            for (frame, &bits) in window.iter().enumerate() {
                count[offset + frame] += bits.count_ones();
                weight[offset + frame] += 1;
            }
        }
        count
            .iter()
            .zip(&weight)
            .map(|(&c, &w)| {
                if w == 0 {
                    0
                } else {
                    // Round half up: (c / w + 0.5) in integers.
                    ((2 * c + w) / (2 * w)) as u8
                }
            })
            .collect()
    }

    /// Every local speaker with enough clean frames (it and nobody else talking) to embed, with
    /// the sample ranges of those frames.
    pub fn local_speakers(&self) -> Vec<LocalSpeaker> {
        self.windows
            .iter()
            .enumerate()
            .flat_map(|(index, window)| window_local_speakers(index, window))
            .collect()
    }
}

/// The local speakers of window `index` (its frames' speaker bits) with enough clean frames to
/// embed, as [`Segmentation::local_speakers`] lists them.
pub fn window_local_speakers(index: usize, window: &[u8]) -> Vec<LocalSpeaker> {
    let frames = window.len();
    let mut out = Vec::new();
    if frames == 0 {
        return out;
    }
    let sample_at = |frame: usize| index * WINDOW_SHIFT + frame * WINDOW / frames;
    for speaker in 0..LOCAL_SPEAKERS {
        let bit = 1u8 << speaker;
        let clean: Vec<bool> = window.iter().map(|&bits| bits == bit).collect();
        if clean.iter().filter(|&&c| c).count() < MIN_CLEAN_FRAMES {
            continue;
        }
        let mut samples = Vec::new();
        let mut run_start = None;
        for (frame, &on) in clean.iter().enumerate() {
            match (on, run_start) {
                (true, None) => run_start = Some(frame),
                (false, Some(start)) => {
                    samples.push((sample_at(start), sample_at(frame)));
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run_start {
            samples.push((sample_at(start), sample_at(frames - 1)));
        }
        out.push(LocalSpeaker {
            window: index,
            speaker,
            samples,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powerset_classes_decode_to_pyannotes_speaker_sets() {
        let mut row = [-9.0f32; 7];
        for (class, bits) in POWERSET.iter().enumerate() {
            row.fill(-9.0);
            row[class] = -0.1;
            assert_eq!(decode_frame(&row), *bits);
        }
        // Ties go to the first class, as numpy's argmax.
        assert_eq!(decode_frame(&[-1.0, -1.0, -5.0, -5.0, -5.0, -5.0, -5.0]), 0);
    }

    #[test]
    fn windows_cover_the_audio_with_a_padded_last_one() {
        assert_eq!(window_starts(0), [0]);
        assert_eq!(window_starts(WINDOW), [0]);
        assert_eq!(window_starts(WINDOW + 1), [0, WINDOW_SHIFT]);
        assert_eq!(window_starts(WINDOW + WINDOW_SHIFT), [0, WINDOW_SHIFT]);
        assert_eq!(
            window_starts(WINDOW + 2 * WINDOW_SHIFT + 5),
            [0, WINDOW_SHIFT, 2 * WINDOW_SHIFT, 3 * WINDOW_SHIFT]
        );
    }

    /// Two windows of 589 frames with known labels.
    fn two_windows() -> Segmentation {
        let mut first = vec![0u8; 589];
        let mut second = vec![0u8; 589];
        // Speaker 1 of the first window talks alone in frames 0..100, with speaker 2 in
        // 100..120; the second window (59 frames later) sees the same voice as its speaker 3.
        first[..100].fill(0b001);
        first[100..120].fill(0b011);
        second[..41].fill(0b100);
        second[41..61].fill(0b110);
        // A local speaker with too few clean frames is not embedded.
        second[300..305].fill(0b001);
        Segmentation {
            windows: vec![first, second],
            samples: WINDOW + WINDOW_SHIFT,
        }
    }

    #[test]
    fn frame_counts_average_the_windows_and_round() {
        let segmentation = two_windows();
        assert_eq!(segmentation.window_offset(1), 59);
        assert_eq!(segmentation.frames(), 59 + 589);
        let count = segmentation.speakers_per_frame();
        assert_eq!(count[0], 1);
        // Frames 100..120: both windows say two speakers.
        assert_eq!(count[110], 2);
        // Frame 59 + 300: one window says one, the other nobody: 0.5 rounds up.
        assert_eq!(count[359], 1);
        assert_eq!(count[600], 0);
    }

    #[test]
    fn local_speakers_keep_only_clean_frames() {
        let locals = two_windows().local_speakers();
        let keys: Vec<(usize, usize)> = locals.iter().map(|l| (l.window, l.speaker)).collect();
        // Window 0: speaker 1 (100 clean frames); speaker 2 never talks alone. Window 1:
        // speaker 3 (41 clean frames); speaker 1 has only 5.
        assert_eq!(keys, [(0, 0), (1, 2)]);
        assert_eq!(locals[0].samples, [(0, 100 * WINDOW / 589)]);
        assert_eq!(
            locals[1].samples,
            [(WINDOW_SHIFT, WINDOW_SHIFT + 41 * WINDOW / 589)]
        );
    }
}
