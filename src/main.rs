//! The `medscribe` command line: argument parsing, dispatch and error printing. Every capability
//! lives in a library crate (asr, pipeline, llm, tui); `cmd/` holds one module per command with
//! its arguments and its printing.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use cmd::{
    dictate, generate, letter, models, record, serve, sessions, speakers, templates, transcribe,
};

/// Local, private speech-to-report for doctors: transcription on ONNX Runtime (Moonshine by
/// default, Google's MedASR when you export it) and text generation with Gemma 3 / MedGemma on
/// candle, which writes structured letters. Nothing leaves this machine.
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
    /// Transcribe WAV recordings, or whole folders of them.
    ///
    /// Each file is transcribed on its own; a bad file is reported on stderr as
    /// `medscribe: FILE: reason` and the others still run. The exit status is non-zero if any
    /// file failed. WAV files may be PCM 8/16/24/32-bit or 32-bit float, at any sample rate, with
    /// any number of channels (mixed to mono and resampled to 16 kHz). Folders are searched
    /// recursively for *.wav. With --output, existing outputs are skipped (so an interrupted
    /// batch resumes) unless --force is given.
    Transcribe(transcribe::TranscribeArgs),
    /// Who spoke when: speaker turns of WAV recordings, without transcribing them.
    ///
    /// pyannote's segmentation-3.0 finds up to three local speakers in 10 s windows every
    /// second, CAM++ embeds each one's clean speech, and the embeddings are clustered into the
    /// recording's speakers (`--speakers auto`, or the number you give). Prints "START END S1"
    /// per turn, or JSON with --json. `transcribe --speakers` labels a transcript the same way.
    Speakers(speakers::SpeakersArgs),
    /// List the installed models, check them, and say how to add MedASR.
    Models,
    /// Generate text with a Gemma 3 / MedGemma model (text only for now).
    ///
    /// Prints only the generated text to stdout, as it is produced. By default the prompt is
    /// wrapped in Gemma's chat template (system text folded into the user turn); with --raw it is
    /// used verbatim. The default model, Gemma 3 270M (Q4_K_M GGUF, installed by setup), is a
    /// small base model, not instruction-tuned: it continues text rather than following
    /// instructions, and knows little medicine; MedGemma 4B/27B give the quality.
    Generate(generate::GenerateArgs),
    /// Write a structured doctor's letter from a dictation (WAV) or a transcript.
    ///
    /// Transcribes the audio, then has the letter model fill the template's sections as JSON
    /// under a constraint that guarantees valid output, removes patient identifiers that are not
    /// in the transcript, and renders Markdown, JSON, text or a FHIR R4 document. On a terminal,
    /// progress and the letter as it is written go to stderr. The default model (Gemma 3 270M, a
    /// small base model) shows the machinery; use MedGemma for real letters, and always check a
    /// draft before signing it.
    Letter(letter::LetterArgs),
    /// List the letter templates (built-in and your own).
    Templates,
    /// Record from a microphone (or a file played as one) and transcribe as it goes, without a
    /// UI: for long case conferences.
    ///
    /// Each recording is a session directory under the data directory (see `sessions`): the
    /// audio is written as it arrives and kept playable (a crash or kill loses at most the last
    /// second), finished segments are appended to transcript.jsonl and printed on stdout.
    /// Ctrl-C stops and finishes the files.
    Record(record::RecordArgs),
    /// List, show, recover or export recorded sessions.
    Sessions(sessions::SessionsArgs),
    /// Dictate in a terminal UI: speak, watch the text appear, correct it, attach images, and
    /// have the letter written.
    ///
    /// Press space to start and pause recording; text appears while you speak and settles when
    /// you pause. ? lists the keys. Everything is kept in a session directory (see `sessions`):
    /// the audio as it is captured, the transcript with your corrections, attachments and saved
    /// letters. --input-file plays a recording as the microphone (for demos).
    Dictate(dictate::DictateArgs),
    /// Serve transcription, letters and chat over HTTP with OpenAI's API shapes, for many users
    /// behind a load balancer.
    ///
    /// Endpoints: POST /v1/audio/transcriptions (OpenAI's multipart form: file, model,
    /// response_format json|text|srt|vtt|verbose_json, language), POST /v1/letters (JSON with a
    /// template and a transcript, or a form with a WAV dictation; the letter as JSON, or FHIR with
    /// Accept: application/fhir+json), POST /v1/chat/completions (on the letter model; stream:
    /// true for server-sent events), GET /v1/models, GET /healthz, GET /metrics (Prometheus).
    /// Models are loaded once: one speech model per work slot, one letter model. Requests beyond
    /// the slots and queue get 429 with Retry-After, bodies over the limit 413, errors are
    /// OpenAI-style JSON. Any address but loopback needs --token-file, and clients then send
    /// `Authorization: Bearer TOKEN`. SIGTERM or Ctrl-C: the server stops accepting, answers what
    /// it has, and exits. Logs hold no patient text.
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    if let Some(problem) = unsupported_cpu() {
        eprintln!("medscribe: {problem}");
        return ExitCode::FAILURE;
    }
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

/// The default build runs on any x86-64 CPU and picks its kernels' instructions at run time. A
/// build asked for x86-64-v3 or newer (`RUSTFLAGS="-C target-cpu=..."`) may use AVX2 and FMA
/// anywhere, and would die of an illegal instruction on an older CPU at some later point: checked
/// first, with nothing but std's feature detection, so such a CPU gets a sentence instead.
fn unsupported_cpu() -> Option<&'static str> {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
    {
        return Some(
            "this build was made for CPUs with AVX2 and FMA (Intel since 2013 except Pentium/Celeron, AMD since 2015), which this one lacks; build it without a target-cpu in RUSTFLAGS (the default build runs on any x86-64 CPU)",
        );
    }
    None
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
    let ort_lib = cli.ort_lib;
    match cli.command {
        Command::Transcribe(args) => transcribe::transcribe(args, ort_lib),
        Command::Speakers(args) => speakers::speakers(args, ort_lib),
        Command::Models => models::list_models(),
        Command::Generate(args) => generate::generate(args),
        Command::Letter(args) => letter::letter(args, ort_lib),
        Command::Templates => templates::list_templates(),
        Command::Record(args) => record::record(args, ort_lib),
        Command::Sessions(args) => sessions::sessions(args, ort_lib),
        Command::Dictate(args) => dictate::dictate(args, ort_lib),
        Command::Serve(args) => serve::serve(args, ort_lib).map(|()| ExitCode::SUCCESS),
    }
}
