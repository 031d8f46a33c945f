//! Google MedASR (Conformer + CTC) on ONNX Runtime, for both export signatures
//! (transformers' `models/lasr/`, "ONNX signatures we must accept").

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};

use crate::ctc::argmax_rows;
use crate::error::{one_line, AsrError, Result};
use crate::features::{FrontEnd, MEL_BANDS};
use crate::formatter::format_dictation;
use crate::longform::{ChunkGeometry, CtcModel, LongFormCtc};
use crate::runtime::open_session;
use crate::vocab::Vocabulary;
use crate::{ModelFamily, SpeechRecognizer, Transcript, WindowedRecognizer};

/// Frames needed for one output frame: (T - 5) // 4 - 1 >= 1 (spec, "Subsampling").
pub const MIN_FEATURE_FRAMES: usize = 13;
/// Audio samples per logit frame: hop 160 x subsampling 4.
pub const SAMPLES_PER_LOGIT: usize = 640;
/// The ONNX files a MedASR directory may hold, in order of preference.
pub const MODEL_FILES: [&str; 2] = ["model.onnx", "model.int8.onnx"];

/// Which exporter made the ONNX graph; decided from its input names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportSignature {
    /// `torch.onnx.export` of `LasrForCTC`: `input_features`, `attention_mask` -> `logits`.
    HuggingFace,
    /// sherpa-onnx: `x`, `mask` -> `logits`, `logits_len`.
    SherpaOnnx,
}

impl ExportSignature {
    fn input_names(self) -> (&'static str, &'static str) {
        match self {
            Self::HuggingFace => ("input_features", "attention_mask"),
            Self::SherpaOnnx => ("x", "mask"),
        }
    }
}

/// Options for loading a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MedAsrOptions {
    /// ONNX Runtime intra-op threads (0 lets ONNX Runtime choose).
    pub intra_threads: usize,
}

impl Default for MedAsrOptions {
    fn default() -> Self {
        Self { intra_threads: 1 }
    }
}

/// Raw logits of one window: `[frames, vocab]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    /// Row-major values.
    pub values: Vec<f32>,
    /// Logit frames (40 ms each).
    pub frames: usize,
    /// Outputs per frame.
    pub vocab: usize,
}

/// A loaded MedASR model.
pub struct MedAsr {
    session: Session,
    signature: ExportSignature,
    mask_is_bool: bool,
    vocab: Vocabulary,
    front_end: FrontEnd,
    model_path: PathBuf,
    name: String,
    recording: Option<LongFormCtc>,
}

impl std::fmt::Debug for MedAsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MedAsr")
            .field("model", &self.model_path)
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

/// The ONNX file of a MedASR directory, if it has one.
pub fn find_model_file(dir: &Path) -> Option<PathBuf> {
    MODEL_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

impl MedAsr {
    /// Loads `model.onnx` (or `model.int8.onnx`) and the vocabulary from `dir`. ONNX Runtime
    /// must have been initialised with [`crate::runtime::init_runtime`].
    pub fn load(dir: &Path, options: MedAsrOptions) -> Result<Self> {
        if !dir.is_dir() {
            return Err(AsrError::ModelDirMissing(dir.to_path_buf()));
        }
        let model_path = find_model_file(dir).ok_or_else(|| AsrError::ModelFileMissing {
            dir: dir.to_path_buf(),
            file: MODEL_FILES.join(" or "),
        })?;
        let vocab = Vocabulary::from_dir(dir)?;
        let bad_model = |reason: String| AsrError::ModelFile {
            path: model_path.clone(),
            reason,
        };
        let session = open_session(&model_path, options.intra_threads)?;
        let input_names: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_owned())
            .collect();
        let has = |name: &str| input_names.iter().any(|n| n == name);
        let signature = if has("input_features") && has("attention_mask") {
            ExportSignature::HuggingFace
        } else if has("x") && has("mask") {
            ExportSignature::SherpaOnnx
        } else {
            return Err(AsrError::UnexpectedSignature {
                path: model_path,
                inputs: input_names.join(", "),
            });
        };
        if input_names.len() != 2 {
            return Err(AsrError::UnexpectedSignature {
                path: model_path,
                inputs: input_names.join(", "),
            });
        }
        if !session.outputs().iter().any(|o| o.name() == "logits") {
            return Err(bad_model("the graph has no `logits` output".into()));
        }
        let mask_name = signature.input_names().1;
        let mask_is_bool = session.inputs().iter().any(|i| {
            i.name() == mask_name
                && matches!(
                    i.dtype(),
                    ValueType::Tensor {
                        ty: TensorElementType::Bool,
                        ..
                    }
                )
        });
        let name = format!(
            "medasr:{}",
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        Ok(Self {
            session,
            signature,
            mask_is_bool,
            vocab,
            front_end: FrontEnd::new(),
            model_path,
            name,
            recording: None,
        })
    }

    /// The detected export signature.
    pub fn signature(&self) -> ExportSignature {
        self.signature
    }

    /// The model's vocabulary.
    pub fn vocab(&self) -> &Vocabulary {
        &self.vocab
    }

    /// Raw logits for one window of 16 kHz audio; `None` when it is shorter than the model's
    /// minimum (13 feature frames, 145 ms).
    pub fn logits(&mut self, samples: &[f32]) -> Result<Option<Logits>> {
        let features = self.front_end.compute(samples);
        if features.frames < MIN_FEATURE_FRAMES {
            return Ok(None);
        }
        let frames = features.frames;
        let inference = |e: ort::Error| AsrError::Inference(one_line(e));
        let input = Tensor::from_array(([1usize, frames, MEL_BANDS], features.values))
            .map_err(inference)?;
        let (input_name, mask_name) = self.signature.input_names();
        let outputs = if self.mask_is_bool {
            let mask = Tensor::from_array(([1usize, frames], features.mask)).map_err(inference)?;
            self.session
                .run(ort::inputs![input_name => input, mask_name => mask])
        } else {
            let mask: Vec<i64> = features
                .mask
                .iter()
                .map(|&valid| i64::from(valid))
                .collect();
            let mask = Tensor::from_array(([1usize, frames], mask)).map_err(inference)?;
            self.session
                .run(ort::inputs![input_name => input, mask_name => mask])
        }
        .map_err(inference)?;
        let logits = outputs
            .get("logits")
            .ok_or_else(|| AsrError::Inference("the model returned no `logits`".into()))?;
        let (shape, values) = logits.try_extract_tensor::<f32>().map_err(inference)?;
        let dims: Vec<i64> = shape.iter().copied().collect();
        match dims.as_slice() {
            [1, t, v] if *t >= 0 && *v > 0 => Ok(Some(Logits {
                values: values.to_vec(),
                frames: *t as usize,
                vocab: *v as usize,
            })),
            _ => Err(AsrError::Inference(format!(
                "unexpected logits shape {dims:?}"
            ))),
        }
    }
}

impl CtcModel for MedAsr {
    fn frame_ids(&mut self, samples: &[f32]) -> Result<Vec<u32>> {
        Ok(self
            .logits(samples)?
            .map(|l| argmax_rows(&l.values, l.vocab))
            .unwrap_or_default())
    }

    fn vocabulary(&self) -> &Vocabulary {
        &self.vocab
    }

    fn samples_per_frame(&self) -> usize {
        SAMPLES_PER_LOGIT
    }
}

/// MedASR's longest utterance: its reference pipeline uses 20 s windows.
pub const MAX_SEGMENT_SAMPLES: usize = 20 * 16_000;

impl SpeechRecognizer for MedAsr {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn family(&self) -> ModelFamily {
        ModelFamily::MedAsr
    }

    fn max_segment_samples(&self) -> usize {
        MAX_SEGMENT_SAMPLES
    }

    fn transcribe_segment(&mut self, samples: &[f32]) -> Result<String> {
        let ids = self.frame_ids(samples)?;
        let frames: Vec<usize> = (0..ids.len()).collect();
        let emitted: Vec<u32> = crate::ctc::collapse(&ids, &frames, self.vocab.blank())
            .iter()
            .map(|e| e.id)
            .collect();
        self.vocab.decode(&emitted)
    }

    fn format_text(&self, raw: &str) -> String {
        format_dictation(raw)
    }

    fn windowed(&mut self) -> Option<&mut dyn WindowedRecognizer> {
        Some(self)
    }
}

impl WindowedRecognizer for MedAsr {
    fn accept(&mut self, samples: &[f32]) -> Result<()> {
        let mut recording = self
            .recording
            .take()
            .unwrap_or_else(|| LongFormCtc::new(ChunkGeometry::medasr(SAMPLES_PER_LOGIT)));
        let result = recording.push(samples, self);
        self.recording = Some(recording);
        result
    }

    fn finish(&mut self) -> Result<Transcript> {
        let recording = self
            .recording
            .take()
            .unwrap_or_else(|| LongFormCtc::new(ChunkGeometry::medasr(SAMPLES_PER_LOGIT)));
        recording.finish(self)
    }

    fn reset(&mut self) {
        self.recording = None;
    }
}
