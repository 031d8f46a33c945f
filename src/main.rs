//! The `medscribe` command line: wires the library crates together. Every capability lives in a
//! library crate (asr, pipeline, ...); this file only parses arguments, loads what they name and
//! reports results and errors.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use medscribe_asr::MedAsrOptions;
use medscribe_pipeline::{
    output::write_private_atomically, transcribe_wav, DataDir, FileTranscript,
};

/// Local, private speech-to-report for doctors: MedASR transcription on ONNX Runtime and, later,
/// letters written by MedGemma. Nothing leaves this machine.
#[derive(Debug, Parser)]
#[command(name = "medscribe", version, propagate_version = true)]
struct Cli {
    /// ONNX Runtime shared library to load (default: the one `scripts/setup.sh` installed in the
    /// data directory; the ORT_DYLIB_PATH variable also works).
    #[arg(long, global = true, value_name = "PATH")]
    ort_lib: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Transcribe WAV recordings.
    ///
    /// Each file is transcribed on its own; a bad file is reported on stderr as
    /// `medscribe: FILE: reason` and the others still run. The exit status is non-zero if any
    /// file failed. WAV files may be PCM 8/16/24/32-bit or 32-bit float, at any sample rate, with
    /// any number of channels (mixed to mono and resampled to 16 kHz). Recordings longer than
    /// 20 s are transcribed in 20 s windows overlapping by 2 s, as MedASR's reference does.
    Transcribe(TranscribeArgs),
}

#[derive(Debug, clap::Args)]
struct TranscribeArgs {
    /// Model directory: a MedASR ONNX export (`model.onnx` or `model.int8.onnx` with
    /// `tokenizer.json` or `tokens.txt`). See README.md for exporting the official weights.
    #[arg(long, short, value_name = "DIR")]
    model: Option<PathBuf>,

    /// What to print: formatted text, or one JSON object per file (file, duration_s, model,
    /// text, raw_text, segments).
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Write one file per recording into DIR (NAME.txt or NAME.json, readable by you only)
    /// instead of printing to stdout.
    #[arg(long, short, value_name = "DIR")]
    output: Option<PathBuf>,

    /// ONNX Runtime threads for the speech model.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,

    /// WAV files to transcribe.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Formatted text: spoken commands turned into punctuation, paragraphs and headings.
    Text,
    /// One JSON object per file.
    Json,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Text => "txt",
            Format::Json => "json",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("medscribe: {}", chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line.
fn chain(error: &anyhow::Error) -> String {
    error
        .chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Transcribe(args) => transcribe(args, cli.ort_lib.as_deref()),
    }
}

fn load_runtime(ort_lib: Option<&Path>) -> Result<()> {
    let data = DataDir::from_env();
    let lib = medscribe_asr::runtime::locate_runtime(ort_lib, &data.runtime_dir())?;
    medscribe_asr::runtime::init_runtime(&lib)?;
    Ok(())
}

fn transcribe(args: TranscribeArgs, ort_lib: Option<&Path>) -> Result<ExitCode> {
    let Some(model_dir) = args.model.as_deref() else {
        bail!(
            "no speech model given: pass --model DIR with a MedASR ONNX export \
             (README.md, \"MedASR\", says how to export the official weights)"
        );
    };
    if let Some(dir) = &args.output {
        if !dir.is_dir() {
            bail!("output directory {} does not exist", dir.display());
        }
    }
    if args.threads == 0 || args.threads > 256 {
        bail!("--threads must be between 1 and 256");
    }
    load_runtime(ort_lib)?;
    let options = MedAsrOptions {
        intra_threads: args.threads,
    };
    let mut recognizer = medscribe_asr::load_recognizer(model_dir, options)
        .with_context(|| format!("cannot load speech model {}", model_dir.display()))?;

    let show_progress = std::io::stderr().is_terminal();
    let mut failed = 0usize;
    let stdout = std::io::stdout();
    for (index, file) in args.files.iter().enumerate() {
        let mut progress = |done: f64, total: f64| {
            if show_progress && total > 30.0 {
                eprint!(
                    "\r{}: {:3.0}%",
                    file.display(),
                    (done / total * 100.0).min(100.0)
                );
            }
        };
        let result = transcribe_wav(file, recognizer.as_mut(), &mut progress);
        if show_progress {
            eprint!("\r\x1b[K");
        }
        match result {
            Ok(done) => {
                let rendered = render(&done, args.format)?;
                match &args.output {
                    Some(dir) => {
                        let path = output_path(dir, file, args.format);
                        write_private_atomically(&path, rendered.as_bytes())?;
                    }
                    None => {
                        let mut out = stdout.lock();
                        if args.format == Format::Text && args.files.len() > 1 {
                            let separator = if index == 0 { "" } else { "\n" };
                            writeln!(out, "{separator}==> {} <==", file.display())?;
                        }
                        out.write_all(rendered.as_bytes())?;
                        out.flush()?;
                    }
                }
            }
            Err(error) => {
                failed += 1;
                // Audio errors already start with the file name.
                let message = error.to_string();
                let file_name = file.display().to_string();
                if message.starts_with(&file_name) {
                    eprintln!("medscribe: {message}");
                } else {
                    eprintln!("medscribe: {file_name}: {message}");
                }
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `DIR/NAME.txt` for `.../NAME.wav`.
fn output_path(dir: &Path, file: &Path, format: Format) -> PathBuf {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "transcript".into());
    dir.join(format!("{stem}.{}", format.extension()))
}

fn render(done: &FileTranscript, format: Format) -> Result<String> {
    let transcript = &done.transcript;
    Ok(match format {
        Format::Text => {
            if transcript.text.is_empty() {
                String::new()
            } else {
                format!("{}\n", transcript.text)
            }
        }
        Format::Json => {
            let segments: Vec<serde_json::Value> = transcript
                .segments
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "start_s": round_ms(s.start_s),
                        "end_s": round_ms(s.end_s),
                        "text": s.text,
                        "raw_text": s.raw_text,
                    })
                })
                .collect();
            let object = serde_json::json!({
                "file": done.file.display().to_string(),
                "duration_s": round_ms(transcript.duration_s),
                "model": done.model,
                "text": transcript.text,
                "raw_text": transcript.raw_text,
                "segments": segments,
            });
            format!("{}\n", serde_json::to_string(&object)?)
        }
    })
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}
