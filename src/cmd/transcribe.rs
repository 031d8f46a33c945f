//! `medscribe transcribe`: WAV recordings and folders of them to text, with progress.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Result};
use medscribe_asr::diarize::Clusters;
use medscribe_llm::letter::facts::DrugLexicon;
use medscribe_pipeline::batch::{run_batch, BatchEvent, BatchRequest, BatchSummary};
use medscribe_pipeline::speakers::Speakers;
use medscribe_pipeline::{render, DataDir, Speech, SpeechOptions, TextCorrector, TranscriptFormat};

use super::{duration, SegmentArg};

#[derive(Debug, clap::Args)]
pub struct TranscribeArgs {
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

    /// Tell speakers apart: `auto` (as many as the voices say) or how many there are (`3`).
    /// Each segment gets its speaker (S1, S2, ...): json has `speaker` on each segment and a
    /// `speakers` list, txt starts each turn with "S1: ", srt and vtt cues start with <v S1>.
    /// Models: pyannote segmentation-3.0 and CAM++, installed by setup.
    #[arg(long, value_name = "auto|N", value_parser = parse_speakers)]
    speakers: Option<Clusters>,

    /// WAV files and folders to transcribe.
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    inputs: Vec<PathBuf>,
}

/// `auto` or a number of speakers from 1 to 32.
pub fn parse_speakers(text: &str) -> std::result::Result<Clusters, String> {
    medscribe_pipeline::speakers::parse_clusters(text)
        .ok_or_else(|| "expected auto or a number of speakers from 1 to 32".into())
}

/// `medscribe transcribe`.
pub fn transcribe(args: TranscribeArgs, ort_lib: Option<PathBuf>) -> Result<ExitCode> {
    let data = DataDir::from_env();
    if let Some(dir) = &args.output {
        if !dir.is_dir() {
            bail!("output directory {} does not exist", dir.display());
        }
    } else if args.format.len() > 1 {
        bail!("several formats need --output DIR");
    }
    let mut speech = Speech::open(
        &SpeechOptions {
            model: args.model.clone(),
            segmentation: args.segment.map(Into::into),
            vad_model: args.vad_model.clone(),
            threads: args.threads,
            ort_lib: ort_lib.clone(),
        },
        &data,
    )?;
    let request = BatchRequest {
        inputs: args.inputs.clone(),
        output_dir: args.output.clone(),
        formats: args.format.clone(),
        force: args.force,
        corrector: if args.no_drug_correction {
            None
        } else {
            super::drug_lexicon(&data)?
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
    let mut speakers = match args.speakers {
        Some(clusters) => Some(Speakers::open(
            &data,
            clusters,
            args.threads,
            ort_lib.as_deref(),
        )?),
        None => None,
    };
    let summary = run_batch(&request, &mut speech, speakers.as_mut(), &mut |event| {
        reporter.event(event)
    });
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

/// The letter guard's drug lexicon mending transcripts (also the server's).
#[derive(Debug)]
pub struct DrugNames(pub DrugLexicon);

impl TextCorrector for DrugNames {
    fn correct(&self, text: &str) -> String {
        self.0.correct(text).0
    }
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
