//! The one error type of the pipeline crate.

use std::path::PathBuf;

use medscribe_asr::AsrError;

/// What can go wrong while reading audio or running a job. Audio errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The audio file is unreadable, malformed or in a form we do not accept.
    #[error("{path}: {reason}")]
    Audio {
        /// The audio file.
        path: PathBuf,
        /// What is wrong, in words a user can act on.
        reason: String,
    },
    /// The speech model failed.
    #[error(transparent)]
    Asr(#[from] AsrError),
    /// The audio source (sound card, device) cannot be opened or failed while capturing.
    #[error("{0}")]
    Source(String),
    /// A session directory or one of its files is missing, unreadable or malformed.
    #[error("{path}: {reason}")]
    Session {
        /// The session directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A model that was not named is not where setup installs it.
    #[error(
        "the default {what} is not installed ({path}); run scripts/setup.sh, or name another one"
    )]
    NotInstalled {
        /// Which model, in words ("speech model").
        what: &'static str,
        /// Where setup puts it.
        path: PathBuf,
    },
    /// A model could not be loaded.
    #[error("cannot load {what} {path}: {source}")]
    ModelLoad {
        /// Which model, in words.
        what: &'static str,
        /// The model file or directory.
        path: PathBuf,
        /// Why.
        source: AsrError,
    },
    /// Settings that cannot work together, such as fixed windows for a model that needs
    /// utterances.
    #[error("{0}")]
    Setting(String),
    /// Writing an output file failed.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The output file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Result alias of the pipeline crate.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
