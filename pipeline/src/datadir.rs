//! Where medscribe keeps what setup installs (ONNX Runtime, models) and, later, sessions.

use std::path::{Path, PathBuf};

/// Environment variable that moves the data directory.
pub const HOME_ENV: &str = "MEDSCRIBE_HOME";

/// An environment variable's value as a path, unless unset or empty (XDG says empty means
/// unset).
fn non_empty(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The medscribe data directory: `$MEDSCRIBE_HOME`, else `$XDG_DATA_HOME/medscribe`, else
/// `~/.local/share/medscribe` (the same rule as `scripts/setup.sh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The directory the environment selects.
    pub fn from_env() -> Self {
        let root = non_empty(HOME_ENV).unwrap_or_else(|| {
            non_empty("XDG_DATA_HOME")
                .or_else(|| non_empty("HOME").map(|home| home.join(".local").join("share")))
                .unwrap_or_else(|| PathBuf::from("."))
                .join("medscribe")
        });
        Self { root }
    }

    /// Where the user's own letter templates live: `$XDG_CONFIG_HOME/medscribe/templates`, else
    /// `~/.config/medscribe/templates`.
    pub fn user_templates_dir() -> PathBuf {
        non_empty("XDG_CONFIG_HOME")
            .or_else(|| non_empty("HOME").map(|home| home.join(".config")))
            .unwrap_or_else(|| PathBuf::from("."))
            .join("medscribe")
            .join("templates")
    }

    /// A data directory at an explicit place.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the ONNX Runtime library lives.
    pub fn runtime_dir(&self) -> PathBuf {
        self.root.join("runtime")
    }

    /// Where installed models live.
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }
}
