//! The one error type of the asr crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a speech model. Messages name the file
/// and say what to do, because a doctor or hospital IT reads them, not a developer.
#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    /// No ONNX Runtime shared library was found.
    #[error("ONNX Runtime library not found (looked in {looked_in}); run `scripts/setup.sh` or pass --ort-lib PATH")]
    RuntimeNotFound {
        /// Where we looked, for the message.
        looked_in: String,
    },
    /// The ONNX Runtime shared library exists but could not be loaded.
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    RuntimeLoad {
        /// The library file.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },
    /// The model directory does not exist or is not a directory.
    #[error("model directory {0} does not exist")]
    ModelDirMissing(PathBuf),
    /// A file the model family needs is missing from the model directory.
    #[error("model directory {dir} has no {file}")]
    ModelFileMissing {
        /// The model directory.
        dir: PathBuf,
        /// The missing file name (or alternatives).
        file: String,
    },
    /// A model file exists but cannot be read or parsed.
    #[error("{path}: {reason}")]
    ModelFile {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The ONNX graph does not have the inputs of any export we support.
    #[error("{path}: unexpected model inputs [{inputs}]; expected `input_features` + `attention_mask` (Hugging Face export) or `x` + `mask` (sherpa-onnx export)")]
    UnexpectedSignature {
        /// The ONNX file.
        path: PathBuf,
        /// The input names it has.
        inputs: String,
    },
    /// Running the model failed.
    #[error("speech model failed: {0}")]
    Inference(String),
}

/// Collapses a multi-line message from a library (ONNX Runtime's end in a newline) into one line,
/// so that every error the user sees is a single line.
pub(crate) fn one_line(message: impl std::fmt::Display) -> String {
    message
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Result alias of the asr crate.
pub type Result<T, E = AsrError> = std::result::Result<T, E>;
