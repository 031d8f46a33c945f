//! Opening speech recognition: which model (the one named or the installed default), ONNX
//! Runtime, and how recordings are cut for it. The command line, the terminal UI and a server
//! all open speech here, so they agree on defaults and on what cannot work together.

use std::path::{Path, PathBuf};

use medscribe_asr::vad::SileroVad;
use medscribe_asr::{ModelFamily, SpeechRecognizer};

use crate::datadir::DataDir;
use crate::error::{PipelineError, Result};
use crate::job::{transcribe_wav, Cutting, FileTranscript, Progress};
use crate::models;
use crate::segmenter::SpeechProbability;

/// How recordings should be cut, as a user chooses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segmentation {
    /// Utterances found by voice activity detection (every model; silence gives no text).
    Vad,
    /// 20 s windows overlapping by 2 s, as MedASR's reference pipeline (CTC models only).
    FixedWindows,
}

/// What to open. `Default` is the installed default model, cut as suits it, on one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeechOptions {
    /// Model directory (Moonshine or a MedASR export); `None`: the installed default.
    pub model: Option<PathBuf>,
    /// How to cut recordings; `None`: fixed windows for MedASR, voice activity otherwise.
    pub segmentation: Option<Segmentation>,
    /// Voice activity model; `None`: the installed Silero VAD.
    pub vad_model: Option<PathBuf>,
    /// ONNX Runtime threads for the speech model (1 to 256).
    pub threads: usize,
    /// ONNX Runtime library; `None`: the one setup installed (or `ORT_DYLIB_PATH`).
    pub ort_lib: Option<PathBuf>,
}

impl Default for SpeechOptions {
    fn default() -> Self {
        Self {
            model: None,
            segmentation: None,
            vad_model: None,
            threads: 1,
            ort_lib: None,
        }
    }
}

/// Most ONNX Runtime threads accepted.
pub const MAX_THREADS: usize = 256;

/// A loaded speech model and the cutting it uses.
pub struct Speech {
    /// The recogniser.
    pub recognizer: Box<dyn SpeechRecognizer>,
    /// How recordings are cut for it.
    pub cutting: Cutting,
}

impl std::fmt::Debug for Speech {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speech")
            .field("model", &self.recognizer.model_name())
            .field("cutting", &self.cutting)
            .finish()
    }
}

impl Speech {
    /// Loads ONNX Runtime, the speech model and, when recordings are cut by voice activity, the
    /// voice activity model.
    pub fn open(options: &SpeechOptions, data: &DataDir) -> Result<Self> {
        let recognizer = open_recognizer(options, data)?;
        let cutting = match settle_segmentation(options.segmentation, recognizer.family())? {
            Segmentation::FixedWindows => Cutting::FixedWindows,
            Segmentation::Vad => Cutting::Vad(Box::new(open_vad(options, data)?)),
        };
        Ok(Self {
            recognizer,
            cutting,
        })
    }

    /// Loads speech for live use, which always cuts by voice activity (every model can): the
    /// recogniser and its voice activity detector. `options.segmentation` is not consulted.
    pub fn open_live(
        options: &SpeechOptions,
        data: &DataDir,
    ) -> Result<(Box<dyn SpeechRecognizer>, Box<dyn SpeechProbability + Send>)> {
        let recognizer = open_recognizer(options, data)?;
        Ok((recognizer, Box::new(open_vad(options, data)?)))
    }

    /// Transcribes one WAV file (see [`transcribe_wav`]).
    pub fn transcribe_wav(
        &mut self,
        path: &Path,
        progress: Progress<'_>,
    ) -> Result<FileTranscript> {
        transcribe_wav(path, self.recognizer.as_mut(), &mut self.cutting, progress)
    }
}

/// The segmentation a user's choice (or none) gives for a model family.
pub fn settle_segmentation(
    wanted: Option<Segmentation>,
    family: ModelFamily,
) -> Result<Segmentation> {
    match (wanted, family) {
        (Some(Segmentation::FixedWindows) | None, ModelFamily::MedAsr) => {
            Ok(Segmentation::FixedWindows)
        }
        (Some(Segmentation::FixedWindows), family) => Err(PipelineError::Setting(format!(
            "fixed windows need a CTC model (MedASR); {family} models cut recordings by voice activity"
        ))),
        (Some(Segmentation::Vad) | None, _) => Ok(Segmentation::Vad),
    }
}

/// ONNX Runtime and the speech model the options name (or the installed default).
fn open_recognizer(options: &SpeechOptions, data: &DataDir) -> Result<Box<dyn SpeechRecognizer>> {
    if options.threads == 0 || options.threads > MAX_THREADS {
        return Err(PipelineError::Setting(format!(
            "speech model threads must be between 1 and {MAX_THREADS}"
        )));
    }
    let model_dir = match &options.model {
        Some(dir) => dir.clone(),
        None => {
            let path = models::default_asr_model(data);
            if !path.is_dir() {
                return Err(PipelineError::NotInstalled {
                    what: "speech model",
                    path,
                });
            }
            path
        }
    };
    let runtime =
        medscribe_asr::runtime::locate_runtime(options.ort_lib.as_deref(), &data.runtime_dir())?;
    medscribe_asr::runtime::init_runtime(&runtime)?;
    medscribe_asr::load_recognizer(&model_dir, options.threads).map_err(|source| {
        PipelineError::ModelLoad {
            what: "speech model",
            path: model_dir,
            source,
        }
    })
}

fn open_vad(options: &SpeechOptions, data: &DataDir) -> Result<SileroVad> {
    let path = options
        .vad_model
        .clone()
        .unwrap_or_else(|| models::default_vad_model(data));
    SileroVad::load(&path).map_err(|source| PipelineError::ModelLoad {
        what: "voice activity model",
        path,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medasr_defaults_to_fixed_windows_and_others_to_vad() {
        assert_eq!(
            settle_segmentation(None, ModelFamily::MedAsr).unwrap(),
            Segmentation::FixedWindows
        );
        assert_eq!(
            settle_segmentation(None, ModelFamily::Moonshine).unwrap(),
            Segmentation::Vad
        );
        assert_eq!(
            settle_segmentation(Some(Segmentation::Vad), ModelFamily::MedAsr).unwrap(),
            Segmentation::Vad
        );
    }

    #[test]
    fn fixed_windows_are_refused_for_models_that_need_utterances() {
        let error = settle_segmentation(Some(Segmentation::FixedWindows), ModelFamily::Moonshine)
            .unwrap_err()
            .to_string();
        assert!(error.contains("need a CTC model"), "{error}");
    }

    #[test]
    fn a_missing_default_model_names_where_setup_puts_it() {
        let empty = tempfile::tempdir().unwrap();
        let error = Speech::open(&SpeechOptions::default(), &DataDir::at(empty.path()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("the default speech model is not installed")
                && error.contains("scripts/setup.sh"),
            "{error}"
        );
    }

    #[test]
    fn thread_counts_out_of_range_are_refused_before_loading() {
        for threads in [0, MAX_THREADS + 1] {
            let options = SpeechOptions {
                threads,
                ..SpeechOptions::default()
            };
            let error = Speech::open(&options, &DataDir::at("/nonexistent"))
                .unwrap_err()
                .to_string();
            assert!(error.contains("threads"), "{error}");
        }
    }
}
