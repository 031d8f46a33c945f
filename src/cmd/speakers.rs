//! `medscribe speakers`: who spoke when in WAV recordings, without transcribing them.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use medscribe_asr::diarize::Clusters;
use medscribe_pipeline::speakers::Speakers;
use medscribe_pipeline::DataDir;

#[derive(Debug, clap::Args)]
pub struct SpeakersArgs {
    /// `auto` (as many as the voices say) or how many speakers there are (`3`).
    #[arg(long, default_value = "auto", value_name = "auto|N", value_parser = super::transcribe::parse_speakers)]
    speakers: Clusters,

    /// With `auto`: the cosine distance under which two groups of speech are one voice (default
    /// 0.4). Lower finds more speakers, higher fewer.
    #[arg(long, value_name = "D")]
    threshold: Option<f32>,

    /// Print JSON (one object per recording: file, duration_s, seconds taken, speakers, turns
    /// with start_s, end_s and speaker from 0) instead of lines of "START END S1".
    #[arg(long)]
    json: bool,

    /// ONNX Runtime threads.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,

    /// WAV recordings.
    #[arg(required = true, value_name = "FILE")]
    inputs: Vec<PathBuf>,
}

/// `medscribe speakers`.
pub fn speakers(args: SpeakersArgs, ort_lib: Option<PathBuf>) -> Result<ExitCode> {
    let data = DataDir::from_env();
    let clusters = match (args.speakers, args.threshold) {
        (Clusters::Threshold(_), Some(t)) if t.is_finite() && t > 0.0 && t < 2.0 => {
            Clusters::Threshold(t)
        }
        (_, Some(t)) if !(t.is_finite() && t > 0.0 && t < 2.0) => {
            anyhow::bail!("--threshold must be between 0 and 2 (a cosine distance)")
        }
        (Clusters::Count(_), Some(_)) => {
            anyhow::bail!("--threshold applies to --speakers auto only")
        }
        (clusters, _) => clusters,
    };
    let mut speakers = Speakers::open(&data, clusters, args.threads, ort_lib.as_deref())?;
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for path in &args.inputs {
        let started = Instant::now();
        // Every error names the file once.
        let (turns, samples) = match speakers.turns_of_file(path) {
            Ok(found) => found,
            Err(error) => {
                eprintln!("medscribe: {error:#}");
                failed = true;
                continue;
            }
        };
        let count = turns.iter().map(|t| t.speaker + 1).max().unwrap_or(0);
        if args.json {
            let value = serde_json::json!({
                "file": path.display().to_string(),
                "duration_s": samples as f64 / 16_000.0,
                "seconds": started.elapsed().as_secs_f64(),
                "speakers": count,
                "turns": turns.iter().map(|t| serde_json::json!({
                    "start_s": t.start_s, "end_s": t.end_s, "speaker": t.speaker,
                })).collect::<Vec<_>>(),
            });
            writeln!(out, "{value}").context("writing to stdout")?;
        } else {
            if args.inputs.len() > 1 {
                writeln!(out, "# {}", path.display()).context("writing to stdout")?;
            }
            for turn in &turns {
                writeln!(
                    out,
                    "{:.2}\t{:.2}\tS{}",
                    turn.start_s,
                    turn.end_s,
                    turn.speaker + 1
                )
                .context("writing to stdout")?;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
