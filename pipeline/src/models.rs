//! What setup installed into the data directory, checked against `models/manifest.tsv` (the
//! same file setup reads): each file's presence, size and SHA-256.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::datadir::DataDir;

/// The manifest, built into the binary so `medscribe models` works from any directory.
pub const MANIFEST: &str = include_str!("../../models/manifest.tsv");

/// One file setup installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Short name.
    pub name: String,
    /// The registry package it comes from (`moonshine-cpp==0.1.4`).
    pub package: String,
    /// Path below the data directory.
    pub destination: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// The state of an installed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Present with the recorded size and hash.
    Verified,
    /// Not there.
    Missing,
    /// Present but different (corrupt or replaced).
    Mismatch,
}

impl std::fmt::Display for FileStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileStatus::Verified => "verified",
            FileStatus::Missing => "missing",
            FileStatus::Mismatch => "CORRUPT (size or SHA-256 differs)",
        })
    }
}

/// Parses the manifest (comment lines start with `#`).
pub fn manifest() -> Vec<ManifestEntry> {
    MANIFEST
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                [name, package, _member, destination, size, sha256] => Some(ManifestEntry {
                    name: (*name).to_owned(),
                    package: (*package).to_owned(),
                    destination: PathBuf::from(destination),
                    size: size.parse().ok()?,
                    sha256: (*sha256).to_owned(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// Checks one installed file.
pub fn check(data: &DataDir, entry: &ManifestEntry) -> FileStatus {
    let path = data.root().join(&entry.destination);
    match std::fs::metadata(&path) {
        Err(_) => FileStatus::Missing,
        Ok(meta) if meta.len() != entry.size => FileStatus::Mismatch,
        Ok(_) => match sha256_of(&path) {
            Some(hash) if hash == entry.sha256 => FileStatus::Verified,
            _ => FileStatus::Mismatch,
        },
    }
}

fn sha256_of(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Some(
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// The default speech model's directory.
pub fn default_asr_model(data: &DataDir) -> PathBuf {
    data.models_dir().join("moonshine-base-en")
}

/// The default letter model (Gemma 3 270M GGUF; setup puts its tokenizer.json beside it).
pub fn default_llm_model(data: &DataDir) -> PathBuf {
    data.models_dir()
        .join("gemma3-270m")
        .join("gemma-3-270m-q4_k_m.gguf")
}

/// The drug lexicon of the letter guard (built by setup from the FDA's UNII names).
pub fn drug_lexicon(data: &DataDir) -> PathBuf {
    data.root().join("lexicon").join("drugs.tsv")
}

/// Where setup installs the speaker segmentation model (pyannote segmentation-3.0).
pub fn speaker_segmentation_model(data: &DataDir) -> PathBuf {
    data.models_dir()
        .join("pyannote-segmentation-3.0")
        .join("segmentation-3.0.onnx")
}

/// Where setup installs the speaker embedding model (CAM++, converted to ONNX at setup).
pub fn speaker_embedding_model(data: &DataDir) -> PathBuf {
    data.models_dir().join("campplus").join("campplus.onnx")
}

/// The voice activity model file.
pub fn default_vad_model(data: &DataDir) -> PathBuf {
    data.models_dir().join("silero-vad").join("silero_vad.onnx")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lists_runtime_and_default_models() {
        let entries = manifest();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        for name in [
            "onnxruntime",
            "moonshine-base-en-encoder",
            "moonshine-base-en-decoder",
            "moonshine-base-en-tokenizer",
            "silero-vad",
        ] {
            assert!(names.contains(&name), "{name}");
        }
        assert!(entries.iter().all(|e| e.sha256.len() == 64 && e.size > 0));
    }

    #[test]
    fn a_changed_file_is_reported_corrupt() {
        let root = std::env::temp_dir().join(format!("medscribe-models-{}", std::process::id()));
        let data = DataDir::at(&root);
        let entry = ManifestEntry {
            name: "x".into(),
            package: "p".into(),
            destination: "models/x.bin".into(),
            size: 5,
            // sha256("hello")
            sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".into(),
        };
        assert_eq!(check(&data, &entry), FileStatus::Missing);
        std::fs::create_dir_all(root.join("models")).unwrap();
        std::fs::write(root.join("models/x.bin"), b"hello").unwrap();
        assert_eq!(check(&data, &entry), FileStatus::Verified);
        std::fs::write(root.join("models/x.bin"), b"hellO").unwrap();
        assert_eq!(check(&data, &entry), FileStatus::Mismatch);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
