//! `medscribe models`: what is installed, whether it is intact, and how to add MedASR.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use medscribe_pipeline::models::{self, FileStatus};
use medscribe_pipeline::DataDir;

/// `medscribe models`.
pub fn list_models() -> Result<ExitCode> {
    let data = DataDir::from_env();
    println!("Data directory: {}", data.root().display());
    println!();
    let mut all_verified = true;
    let entries = models::manifest();
    for entry in &entries {
        let status = models::check(&data, entry);
        all_verified &= status == FileStatus::Verified;
        let parts: Vec<&str> = entry.package.split('+').collect();
        let source = match entry.package.strip_prefix("npm:") {
            Some(npm) => format!("npm {npm}"),
            None if parts.len() > 1 => {
                format!("PyPI {} (+{} more parts)", parts[0], parts.len() - 1)
            }
            None => format!("PyPI {}", entry.package),
        };
        println!(
            "  {:<30} {:<10} from {source}\n  {:<30} {}",
            entry.name,
            status.to_string(),
            "",
            data.root().join(&entry.destination).display()
        );
    }
    println!();
    let default = models::default_asr_model(&data);
    let family = medscribe_asr::detect_family(&default)
        .map(|f| f.to_string())
        .unwrap_or_else(|_| "not installed".into());
    println!("Default speech model: {} ({family})", default.display());
    println!(
        "Voice activity model: {}",
        models::default_vad_model(&data).display()
    );
    let embedder = models::speaker_embedding_model(&data);
    println!(
        "Speaker models: {} and {} ({})",
        models::speaker_segmentation_model(&data).display(),
        embedder.display(),
        if embedder.is_file() {
            "CAM++, converted from the checkpoint at setup"
        } else {
            "CAM++ not converted yet: run scripts/setup.sh"
        }
    );
    println!(
        "Default letter model: {} (Gemma 3 270M base, not instruction-tuned)",
        models::default_llm_model(&data).display()
    );
    if let Ok(dirs) = std::fs::read_dir(data.models_dir()) {
        let mut others: Vec<PathBuf> = dirs
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && *p != default)
            .collect();
        others.sort();
        for dir in others {
            if let Ok(family) = medscribe_asr::detect_family(&dir) {
                println!("Also installed: {} ({family})", dir.display());
            }
        }
    }
    println!();
    println!("MedASR (Google's medical dictation model) is gated under the Health AI Developer");
    println!("Foundations terms and never shipped with medscribe. After accepting the terms on");
    println!("Hugging Face, export it on a machine with internet access:");
    println!("    python3 models/scripts/export_medasr_onnx.py --out medasr-onnx");
    println!(
        "then copy the folder to {}/medasr and use",
        data.models_dir().display()
    );
    println!(
        "    medscribe transcribe --model {}/medasr FILE.wav",
        data.models_dir().display()
    );
    if !all_verified {
        println!();
        println!("Some files are missing or damaged: run scripts/setup.sh to install them again.");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
