//! Silero VAD v6 (MIT) on ONNX Runtime: the speech probability of each 32 ms chunk of 16 kHz
//! audio, with the model's recurrent state and 64-sample context carried from chunk to chunk
//! (models/manifest.tsv). Turning probabilities into segments is the pipeline's job.

use std::path::Path;

use ort::session::Session;
use ort::value::Tensor;

use crate::error::{one_line, AsrError, Result};
use crate::runtime::open_session;

/// New samples per call.
pub const CHUNK_SAMPLES: usize = 512;
/// Samples of the previous chunk the model sees again.
const CONTEXT_SAMPLES: usize = 64;
const STATE_LEN: usize = 2 * 128;

/// A loaded Silero VAD with its streaming state.
pub struct SileroVad {
    session: Session,
    state: Vec<f32>,
    context: [f32; CONTEXT_SAMPLES],
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad").finish_non_exhaustive()
    }
}

impl SileroVad {
    /// Loads `silero_vad.onnx` (one thread: it is tiny and runs beside the recogniser).
    pub fn load(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(AsrError::ModelFile {
                path: path.to_path_buf(),
                reason: "voice activity model not found; run scripts/setup.sh".into(),
            });
        }
        let session = open_session(path, 1)?;
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        if names != ["input", "state", "sr"] {
            return Err(AsrError::UnexpectedSignature {
                path: path.to_path_buf(),
                inputs: names.join(", "),
            });
        }
        Ok(Self {
            session,
            state: vec![0.0; STATE_LEN],
            context: [0.0; CONTEXT_SAMPLES],
        })
    }

    /// Forgets everything heard so far (a new recording).
    pub fn reset(&mut self) {
        self.state.fill(0.0);
        self.context = [0.0; CONTEXT_SAMPLES];
    }

    /// Speech probability of the next [`CHUNK_SAMPLES`] samples (a shorter final chunk is padded
    /// with silence).
    pub fn probability(&mut self, chunk: &[f32]) -> Result<f32> {
        let inference = |e: ort::Error| AsrError::Inference(one_line(e));
        let mut input = Vec::with_capacity(CONTEXT_SAMPLES + CHUNK_SAMPLES);
        input.extend_from_slice(&self.context);
        input.extend(
            chunk
                .iter()
                .take(CHUNK_SAMPLES)
                .map(|&x| if x.is_finite() { x } else { 0.0 }),
        );
        input.resize(CONTEXT_SAMPLES + CHUNK_SAMPLES, 0.0);
        self.context.copy_from_slice(&input[CHUNK_SAMPLES..]);
        let input = Tensor::from_array(([1usize, CONTEXT_SAMPLES + CHUNK_SAMPLES], input))
            .map_err(inference)?;
        let state =
            Tensor::from_array(([2usize, 1, 128], self.state.clone())).map_err(inference)?;
        let rate = Tensor::from_array((Vec::<usize>::new(), vec![16_000i64])).map_err(inference)?;
        let outputs = self
            .session
            .run(ort::inputs!["input" => input, "state" => state, "sr" => rate])
            .map_err(inference)?;
        let (_, probability) = outputs
            .get("output")
            .ok_or_else(|| AsrError::Inference("the VAD returned no output".into()))?
            .try_extract_tensor::<f32>()
            .map_err(inference)?;
        let (_, state) = outputs
            .get("stateN")
            .ok_or_else(|| AsrError::Inference("the VAD returned no state".into()))?
            .try_extract_tensor::<f32>()
            .map_err(inference)?;
        if state.len() == STATE_LEN {
            self.state.copy_from_slice(state);
        }
        Ok(probability.first().copied().unwrap_or(0.0))
    }
}
