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
    /// No template has this name, or the template cannot be written within its limits.
    #[error("{0}")]
    Template(String),
    /// The model's files do not fit together or lack what a feature needs (a tokenizer with no
    /// image token, a vision projector of another width).
    #[error("{0}")]
    Incompatible(String),
    /// Settings that cannot be used (sampling out of range, an unknown device).
    #[error("{0}")]
    Setting(String),
    /// The letter server could not be reached, refused the request, or answered with something
    /// other than the letter.
    #[error("{0}")]
    Server(String),
    /// The work was cancelled. Public entry points that take a cancel flag report cancelling
    /// as an outcome ([`crate::letter::LetterOutcome::Cancelled`]), not as this error.
    #[error("cancelled")]
    Cancelled,
    /// An invariant of medscribe's own code was broken: a bug, to be reported.
    #[error("internal error (a bug in medscribe): {0}")]
    Internal(String),
    /// A tensor operation failed.
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

/// Result alias of the llm crate.
pub type Result<T, E = LlmError> = std::result::Result<T, E>;
