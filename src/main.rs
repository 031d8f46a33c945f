//! The `medscribe` command line: wires the library crates together. Every capability lives in a
//! library crate (asr, pipeline, ...); this file only parses arguments, loads what they name and
//! reports results and errors.

mod dictate_cmd;
mod letter_cmd;
mod live_cmd;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use medscribe_asr::vad::SileroVad;
use medscribe_asr::ModelFamily;
use medscribe_llm::letter::facts::DrugLexicon;
use medscribe_pipeline::batch::{run_batch, BatchEvent, BatchRequest, BatchSummary};
use medscribe_pipeline::models::{self, FileStatus};
use medscribe_pipeline::segmenter::SpeechProbability;
use medscribe_pipeline::{render, DataDir, Segmentation, TextCorrector, TranscriptFormat};

/// Local, private speech-to-report for doctors: transcription on ONNX Runtime (Moonshine by
/// default, Google's MedASR when you export it) and text generation with Gemma 3 / MedGemma on
/// candle (letters to come). Nothing leaves this machine.
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
    Transcribe(TranscribeArgs),
    /// List the installed models, check them, and say how to add MedASR.
    Models,
    /// Generate text with a Gemma 3 / MedGemma model (text only for now).
    ///
    /// Prints only the generated text to stdout, as it is produced. By default the prompt is
    /// wrapped in Gemma's chat template (system text folded into the user turn); with --raw it is
    /// used verbatim. The default model, Gemma 3 270M (Q4_K_M GGUF, installed by setup), is a
    /// small base model, not instruction-tuned: it continues text rather than following
    /// instructions, and knows little medicine; MedGemma 4B/27B give the quality.
    Generate(GenerateArgs),
    /// Write a structured doctor's letter from a dictation (WAV) or a transcript.
    ///
    /// Transcribes the audio, then has the letter model fill the template's sections as JSON
    /// under a constraint that guarantees valid output, removes patient identifiers that are not
    /// in the transcript, and renders Markdown, JSON, text or a FHIR R4 document. On a terminal,
    /// progress and the letter as it is written go to stderr. The default model (Gemma 3 270M, a
    /// small base model) shows the machinery; use MedGemma for real letters, and always check a
    /// draft before signing it.
    Letter(letter_cmd::LetterArgs),
    /// List the letter templates (built-in and your own).
    Templates,
    /// Record from a microphone (or a file played as one) and transcribe as it goes, without a
    /// UI: for long case conferences.
    ///
    /// Each recording is a session directory under the data directory (see `sessions`): the
    /// audio is written as it arrives and kept playable (a crash or kill loses at most the last
    /// second), finished segments are appended to transcript.jsonl and printed on stdout.
    /// Ctrl-C stops and finishes the files.
    Record(live_cmd::RecordArgs),
    /// List, show, recover or export recorded sessions.
    Sessions(live_cmd::SessionsArgs),
    /// Dictate in a terminal UI: speak, watch the text appear, correct it, attach images, and
    /// have the letter written.
    ///
    /// Press space to start and pause recording; text appears while you speak and settles when
    /// you pause. ? lists the keys. Everything is kept in a session directory (see `sessions`):
    /// the audio as it is captured, the transcript with your corrections, attachments and saved
    /// letters. --input-file plays a recording as the microphone (for demos).
    Dictate(dictate_cmd::DictateArgs),
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// A model directory (config.json, *.safetensors, tokenizer.json) or a .gguf file with
    /// tokenizer.json beside it. Default: Gemma 3 270M as installed by setup.
    #[arg(long, short, value_name = "PATH")]
    model: Option<PathBuf>,

    /// The prompt; read from stdin when absent.
    #[arg(long, short, value_name = "TEXT")]
    prompt: Option<String>,

    /// System instructions, folded into the user turn as Gemma's template does.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,

    /// Use the prompt verbatim: no chat template, no <bos> added.
    #[arg(long)]
    raw: bool,

    /// The vision tower and projector of a .gguf model: a llama.cpp mmproj file (projector type
    /// gemma3). Default: the only mmproj*.gguf file beside the model, if there is one.
    #[arg(long, value_name = "FILE")]
    mmproj: Option<PathBuf>,

    /// An image (PNG or JPEG) to show the model; repeat for several, in order. Needs a
    /// multimodal model: a MedGemma 4B directory, or a .gguf with its mmproj file. Templated
    /// prompts get one <start_of_image>
    /// per image before the text; with --raw, each <start_of_image> in the prompt takes the next
    /// image.
    #[arg(long, value_name = "IMG")]
    image: Vec<PathBuf>,

    /// Most tokens to generate.
    #[arg(long, default_value_t = 512, value_name = "N")]
    max_new_tokens: usize,

    /// Sampling temperature; 0 is greedy (deterministic).
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    temperature: f32,

    /// Sample only among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0, value_name = "K")]
    top_k: usize,

    /// Sample only among the most likely tokens whose probabilities reach P.
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    top_p: f32,

    /// Penalise tokens already generated (1: off).
    #[arg(long, default_value_t = 1.0, value_name = "R")]
    repetition_penalty: f32,

    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Where the model runs: cpu, or cuda / cuda:N for an NVIDIA GPU (needs a build with
    /// `--features cuda`).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: String,

    /// Print load time and speed on stderr.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, clap::Args)]
struct TranscribeArgs {
    /// Model directory: Moonshine (encoder_model.ort, decoder_model_merged.ort, tokenizer.bin)
    /// or a MedASR ONNX export (model.onnx or model.int8.onnx with tokenizer.json or
    /// tokens.txt). Default: Moonshine base-en as installed by setup.
    #[arg(long, short, value_name = "DIR")]
    model: Option<PathBuf>,

    /// Output formats, comma-separated: txt (formatted text), json (file, duration_s, model,
    /// text, raw_text, segments), srt, vtt. Several formats need --output.
    #[arg(
        long,
        short,
        value_delimiter = ',',
        default_value = "txt",
        value_name = "FORMATS"
    )]
    format: Vec<TranscriptFormat>,

    /// Write one file per recording and format into DIR (NAME.txt, NAME.json, ...; folder
    /// structure kept; readable by you only) instead of printing to stdout.
    #[arg(long, short, value_name = "DIR")]
    output: Option<PathBuf>,

    /// Transcribe again even when the output files exist.
    #[arg(long)]
    force: bool,

    /// How recordings are cut: `vad` (utterances found by voice activity detection; silence
    /// gives no text) or `fixed` (20 s windows overlapping by 2 s, MedASR's reference; CTC models
    /// only). Default: fixed for MedASR, vad otherwise.
    #[arg(long, value_enum, value_name = "HOW")]
    segment: Option<SegmentArg>,

    /// Voice activity model (default: Silero VAD as installed by setup).
    #[arg(long, value_name = "FILE")]
    vad_model: Option<PathBuf>,

    /// ONNX Runtime threads for the speech model.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,

    /// Leave medication names as the speech model wrote them. By default a name the model split
    /// or misspelt ("amla-depine") is written as the drug lexicon installed by setup spells it,
    /// where only one name is that close; json output keeps the model's words in raw_text.
    #[arg(long)]
    no_drug_correction: bool,

    /// WAV files and folders to transcribe.
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    inputs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SegmentArg {
    /// Voice activity detection.
    Vad,
    /// Fixed 20 s windows with 2 s overlap.
    Fixed,
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
        Command::Models => list_models(),
        Command::Generate(args) => generate_text(args),
        Command::Letter(args) => letter_cmd::letter(args, cli.ort_lib.as_deref()),
        Command::Templates => letter_cmd::list_templates(),
        Command::Record(args) => live_cmd::record(args, cli.ort_lib.as_deref()),
        Command::Sessions(args) => live_cmd::sessions(args, cli.ort_lib.as_deref()),
        Command::Dictate(args) => dictate_cmd::dictate(args, cli.ort_lib.as_deref()),
    }
}

fn generate_text(args: GenerateArgs) -> Result<ExitCode> {
    use std::io::Read;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    let sampling = medscribe_llm::Sampling {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
        max_new_tokens: args.max_new_tokens,
    };
    sampling.check().map_err(anyhow::Error::msg)?;
    let path = letter_model_path(args.model.as_deref(), &DataDir::from_env())?;
    let prompt = match args.prompt {
        Some(prompt) => prompt,
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the prompt from stdin")?;
            text
        }
    };
    if prompt.trim().is_empty() {
        bail!("empty prompt: pass --prompt TEXT or write it to stdin");
    }
    let started = Instant::now();
    let device = letter_device(&args.device)?;
    let mut loaded = medscribe_llm::load_with_mmproj(&path, args.mmproj.as_deref(), &device)
        .with_context(|| format!("cannot load letter model {}", path.display()))?;
    let load_s = started.elapsed().as_secs_f64();
    let text = if args.raw {
        prompt
    } else {
        // Gemma's template puts a turn's images before its text. The user's words are text,
        // never control tokens (`--raw` is for writing those).
        let markers = medscribe_llm::IMAGE_MARKER.repeat(args.image.len());
        let system = args.system.as_deref().map(medscribe_llm::user_text);
        medscribe_llm::chat_prompt(
            system.as_deref(),
            &format!("{markers}{}", medscribe_llm::user_text(prompt.trim())),
        )
    };
    let tokens_per_image = loaded.vision.as_ref().map_or(0, |v| v.tokens_per_image());
    let (text, markers) = medscribe_llm::expand_image_markers(&text, tokens_per_image);
    if markers != args.image.len() {
        bail!(
            "the prompt has {markers} {} marker(s) but {} --image was given: they must match",
            medscribe_llm::IMAGE_MARKER,
            args.image.len()
        );
    }
    let images = if args.image.is_empty() {
        None
    } else {
        Some(loaded.encode_images(&args.image)?)
    };
    let ids = loaded.tokenizer.encode(&text)?;
    let stop = [loaded.tokenizer.eos, loaded.tokenizer.end_of_turn];
    let tokenizer = &loaded.tokenizer;
    let mut generated: Vec<u32> = Vec::new();
    let mut printed = String::new();
    let mut out = std::io::stdout().lock();
    let mut write_error: Option<std::io::Error> = None;
    let generation_started = Instant::now();
    let mut first_token_s = None;
    let (_, reason) = medscribe_llm::generate_with_images(
        &mut loaded.model,
        &ids,
        images.as_ref(),
        &stop,
        &sampling,
        &AtomicBool::new(false),
        &mut |id| {
            first_token_s.get_or_insert(generation_started.elapsed().as_secs_f64());
            generated.push(id);
            // Decode the whole continuation so pieces that only make sense together (multi-byte
            // characters split over tokens) print correctly.
            if let Ok(text) = tokenizer.decode(&generated) {
                if let Some(new) = text.strip_prefix(printed.as_str()) {
                    if let Err(e) = out.write_all(new.as_bytes()).and_then(|()| out.flush()) {
                        write_error = Some(e);
                        return false;
                    }
                    printed = text;
                }
            }
            true
        },
    )?;
    if let Some(error) = write_error {
        return Err(error.into());
    }
    writeln!(out)?;
    if args.verbose {
        let total = generation_started.elapsed().as_secs_f64();
        let prefill = first_token_s.unwrap_or(total);
        let decode_tokens = generated.len().saturating_sub(1);
        eprintln!(
            "medscribe: loaded in {load_s:.2} s ({} MB of weights); prompt {} tokens in {prefill:.2} s ({:.0} tok/s); {} tokens generated ({:.1} tok/s); stopped: {reason:?}",
            loaded.model.weight_bytes().div_ceil(1 << 20),
            ids.len(),
            ids.len() as f64 / prefill.max(1e-9),
            generated.len(),
            decode_tokens as f64 / (total - prefill).max(1e-9)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The letter model named by `--model`, or the installed default.
pub(crate) fn letter_model_path(model: Option<&Path>, data: &DataDir) -> Result<PathBuf> {
    if let Some(path) = model {
        return Ok(path.to_path_buf());
    }
    let default = models::default_llm_model(data);
    if !default.is_file() {
        bail!(
            "the default letter model is not installed ({}); run scripts/setup.sh, or pass --model PATH",
            default.display()
        );
    }
    Ok(default)
}

/// The device named by `--device`.
fn letter_device(name: &str) -> Result<medscribe_llm::Device> {
    let ordinal = match name {
        "cpu" => return Ok(medscribe_llm::Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => bail!("--device {other}: expected cpu, cuda or cuda:N"),
        },
    };
    medscribe_llm::Device::new_cuda(ordinal).with_context(|| {
        format!("cannot use GPU {ordinal} (this build has CUDA only with `--features cuda`)")
    })
}

fn load_runtime(ort_lib: Option<&Path>, data: &DataDir) -> Result<()> {
    let lib = medscribe_asr::runtime::locate_runtime(ort_lib, &data.runtime_dir())?;
    medscribe_asr::runtime::init_runtime(&lib)?;
    Ok(())
}

fn transcribe(args: TranscribeArgs, ort_lib: Option<&Path>) -> Result<ExitCode> {
    let data = DataDir::from_env();
    if let Some(dir) = &args.output {
        if !dir.is_dir() {
            bail!("output directory {} does not exist", dir.display());
        }
    } else if args.format.len() > 1 {
        bail!("several formats need --output DIR");
    }
    if args.threads == 0 || args.threads > 256 {
        bail!("--threads must be between 1 and 256");
    }
    let (mut recognizer, segmentation, mut vad) = open_speech(
        args.model.as_deref(),
        args.segment,
        args.vad_model.as_deref(),
        args.threads,
        ort_lib,
        &data,
    )?;
    let request = BatchRequest {
        inputs: args.inputs.clone(),
        output_dir: args.output.clone(),
        formats: args.format.clone(),
        force: args.force,
        segmentation,
        corrector: if args.no_drug_correction {
            None
        } else {
            letter_cmd::drug_lexicon(&data)?
                .map(|drugs| Arc::new(DrugNames(drugs)) as Arc<dyn TextCorrector>)
        },
    };
    let batch_mode =
        args.output.is_some() || args.inputs.len() > 1 || args.inputs.iter().any(|p| p.is_dir());
    let mut reporter = Reporter::new(
        std::io::stderr().is_terminal(),
        args.format[0],
        args.output.is_none(),
    );
    let summary = run_batch(
        &request,
        recognizer.as_mut(),
        vad.as_mut().map(|v| v as &mut dyn SpeechProbability),
        &mut |event| reporter.event(event),
    );
    reporter.clear_progress();
    if let Some(error) = reporter.stdout_error.take() {
        return Err(error.into());
    }
    if batch_mode {
        eprintln!("medscribe: {}", describe_summary(&summary));
    }
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The letter guard's drug lexicon mending transcripts.
#[derive(Debug)]
struct DrugNames(DrugLexicon);

impl TextCorrector for DrugNames {
    fn correct(&self, text: &str) -> String {
        self.0.correct(text).0
    }
}

/// The speech model (given or default), its segmentation, and the VAD it needs.
pub(crate) fn open_speech(
    model: Option<&Path>,
    segment: Option<SegmentArg>,
    vad_model: Option<&Path>,
    threads: usize,
    ort_lib: Option<&Path>,
    data: &DataDir,
) -> Result<(
    Box<dyn medscribe_asr::SpeechRecognizer>,
    Segmentation,
    Option<SileroVad>,
)> {
    let model_dir = match model {
        Some(dir) => dir.to_path_buf(),
        None => {
            let default = models::default_asr_model(data);
            if !default.is_dir() {
                bail!(
                    "the default speech model is not installed ({}); run scripts/setup.sh, or pass --model DIR",
                    default.display()
                );
            }
            default
        }
    };
    load_runtime(ort_lib, data)?;
    let recognizer = medscribe_asr::load_recognizer(&model_dir, threads)
        .with_context(|| format!("cannot load speech model {}", model_dir.display()))?;
    let segmentation = match (segment, recognizer.family()) {
        (Some(SegmentArg::Fixed), ModelFamily::MedAsr) | (None, ModelFamily::MedAsr) => {
            Segmentation::FixedWindows
        }
        (Some(SegmentArg::Fixed), family) => {
            bail!("--segment fixed needs a CTC model (MedASR); {family} models use --segment vad")
        }
        (Some(SegmentArg::Vad), _) | (None, _) => Segmentation::Vad,
    };
    let vad = match segmentation {
        Segmentation::Vad => {
            let path = vad_model
                .map(Path::to_path_buf)
                .unwrap_or_else(|| models::default_vad_model(data));
            Some(
                SileroVad::load(&path)
                    .with_context(|| "cannot load the voice activity model".to_string())?,
            )
        }
        Segmentation::FixedWindows => None,
    };
    Ok((recognizer, segmentation, vad))
}

fn describe_summary(summary: &BatchSummary) -> String {
    let mut text = format!(
        "{} transcribed, {} skipped, {} failed",
        summary.transcribed, summary.skipped, summary.failed
    );
    if summary.audio_s > 0.0 {
        text.push_str(&format!(
            "; {} of audio in {} (real-time factor {:.3})",
            duration(summary.audio_s),
            duration(summary.processing_s),
            summary.real_time_factor()
        ));
    }
    text
}

pub(crate) fn duration(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.2} h", seconds / 3600.0)
    } else if seconds >= 60.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{seconds:.1} s")
    }
}

/// Prints batch events: results to stdout (without --output), errors and progress to stderr.
struct Reporter {
    progress: bool,
    format: TranscriptFormat,
    to_stdout: bool,
    files: usize,
    audio_total_s: f64,
    audio_done_s: f64,
    processing_s: f64,
    current: Option<(usize, String)>,
    printed: usize,
    stdout_error: Option<std::io::Error>,
}

impl Reporter {
    fn new(progress: bool, format: TranscriptFormat, to_stdout: bool) -> Self {
        Self {
            progress,
            format,
            to_stdout,
            files: 0,
            audio_total_s: 0.0,
            audio_done_s: 0.0,
            processing_s: 0.0,
            current: None,
            printed: 0,
            stdout_error: None,
        }
    }

    fn clear_progress(&self) {
        if self.progress {
            eprint!("\r\x1b[K");
        }
    }

    fn event(&mut self, event: BatchEvent<'_>) {
        match event {
            BatchEvent::Started { files, audio_s } => {
                self.files = files;
                self.audio_total_s = audio_s;
            }
            BatchEvent::FileStarted { index, path } => {
                self.current = Some((index, path.display().to_string()));
            }
            BatchEvent::Progress { done_s, total_s } => {
                if let (true, Some((index, name))) = (self.progress, &self.current) {
                    let rtf = if self.audio_done_s > 0.0 {
                        format!(
                            ", real-time factor {:.3}",
                            self.processing_s / self.audio_done_s
                        )
                    } else {
                        String::new()
                    };
                    eprint!(
                        "\r\x1b[K[{}/{}] {} of {} audio done{rtf} | {name} {:.0}%",
                        index + 1,
                        self.files,
                        duration(self.audio_done_s + done_s),
                        duration(self.audio_total_s),
                        if total_s > 0.0 {
                            (done_s / total_s * 100.0).min(100.0)
                        } else {
                            100.0
                        },
                    );
                }
            }
            BatchEvent::FileDone { result, .. } => {
                if !result.warnings.is_empty() {
                    self.clear_progress();
                    for warning in &result.warnings {
                        eprintln!("medscribe: warning: {}: {warning}", result.file.display());
                    }
                }
                self.audio_done_s += result.transcript.duration_s;
                self.processing_s += result.processing_s;
                if self.to_stdout && self.stdout_error.is_none() {
                    self.clear_progress();
                    let mut out = std::io::stdout().lock();
                    let header = if self.files > 1 && self.format == TranscriptFormat::Txt {
                        let separator = if self.printed == 0 { "" } else { "\n" };
                        format!("{separator}==> {} <==\n", result.file.display())
                    } else {
                        String::new()
                    };
                    let written = out
                        .write_all(header.as_bytes())
                        .and_then(|()| out.write_all(render(result, self.format).as_bytes()))
                        .and_then(|()| out.flush());
                    if let Err(error) = written {
                        self.stdout_error = Some(error);
                    }
                    self.printed += 1;
                }
            }
            BatchEvent::Skipped { .. } => {}
            BatchEvent::Failed { path, error } => {
                self.clear_progress();
                // Audio errors already start with the file name.
                let message = error.to_string();
                let name = path.display().to_string();
                if message.starts_with(&name) {
                    eprintln!("medscribe: {message}");
                } else {
                    eprintln!("medscribe: {name}: {message}");
                }
            }
        }
    }
}

fn list_models() -> Result<ExitCode> {
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
