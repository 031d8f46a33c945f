//! The one error type of the llm crate.

use std::path::PathBuf;

/// What can go wrong loading or running a letter model.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// A file the model needs is missing.
    #[error("model directory {dir} has no {file}")]
    MissingFile {
        /// The model directory.
        dir: PathBuf,
        /// The missing file.
        file: String,
    },
    /// A model file is unreadable or malformed.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The weights lack a tensor the configuration calls for, or have the wrong shape.
    #[error("{path}: {reason}")]
    Weights {
        /// The weight file(s).
        path: PathBuf,
        /// Which tensor and what is wrong.
        reason: String,
    },
    /// An image cannot be used (missing, unsupported format, corrupt).
    #[error("image {path}: {reason}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The prompt cannot be run (too long, empty, unknown token).
    #[error("prompt: {0}")]
    Prompt(String),
    /// A tensor operation failed.
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

/// Result alias of the llm crate.
pub type Result<T, E = LlmError> = std::result::Result<T, E>;
