//! `medscribe dictate`: the terminal UI over a live session, with the letter model wired in.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use medscribe_llm::letter::render::{render, Format};
use medscribe_llm::letter::template::find_template;
use medscribe_llm::letter::{DeviceName, LetterEvent, LetterOutcome, Writer};
use medscribe_pipeline::live::LiveConfig;
use medscribe_pipeline::speakers::Speakers;
use medscribe_pipeline::{DataDir, Speech};
use medscribe_tui::run::SpeakerLabelling;
use medscribe_tui::{
    Dictation, FinishedLetter, LetterJob, LetterUpdate, LetterWriter, TemplateChoice, WriteError,
    WriteOutcome,
};

use super::record::InputArgs;
use super::{LetterModelArgs, LetterServerArgs};

#[derive(Debug, clap::Args)]
pub struct DictateArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Letter template chosen at start (t changes it): see `medscribe templates`.
    #[arg(long, default_value = "referral", value_name = "NAME")]
    template: String,

    /// Letter model: a model directory or a .gguf file (default: Gemma 3 270M as installed by
    /// setup; MedGemma 4B writes real letters and can look at attached images).
    #[arg(long, value_name = "PATH")]
    letter_model: Option<PathBuf>,

    /// Where the letter model runs: cpu, cuda, cuda:N (`medscribe letter --device`).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    letter_device: DeviceName,

    /// The same letter settings as `medscribe letter`.
    #[command(flatten)]
    writing: LetterModelArgs,

    #[command(flatten)]
    server: LetterServerArgs,

    /// Tell speakers apart when recording stops (`auto` or how many there are), for a
    /// consultation or a meeting: lines show S1, S2, ... and n names the highlighted line's
    /// speaker, for the session's every export.
    #[arg(long, value_name = "auto|N", value_parser = super::transcribe::parse_speakers)]
    speakers: Option<medscribe_asr::diarize::Clusters>,
}

/// The TUI's letters, written by the same [`Writer`] as `medscribe letter` (on the letter
/// thread, not the UI's; the model loads on first use).
struct TuiWriter(Writer);

impl LetterWriter for TuiWriter {
    fn write(
        &mut self,
        job: &LetterJob,
        cancel: &AtomicBool,
        updates: &mut dyn FnMut(LetterUpdate),
    ) -> std::result::Result<WriteOutcome, WriteError> {
        let template = find_template(&job.template, Some(&DataDir::user_templates_dir()))?;
        let transcript: Vec<_> = job
            .transcript
            .iter()
            .map(|line| super::letter::letter_segment(line, 0.0))
            .collect();
        let outcome = self.0.write(
            &template,
            &transcript,
            &job.images,
            &medscribe_pipeline::timestamp::now_rfc3339(),
            cancel,
            &mut |event| match event {
                LetterEvent::Loading(_) => {
                    updates(LetterUpdate::Status("loading the letter model".into()));
                }
                LetterEvent::Server(server) => {
                    updates(LetterUpdate::Status(format!("drafting on {server}")));
                }
                LetterEvent::Prompt(tokens) => {
                    updates(LetterUpdate::Status(format!("read {tokens} prompt tokens")));
                }
                LetterEvent::Section(key) => updates(LetterUpdate::Section(
                    template
                        .section(&key)
                        .map_or(key.clone(), |s| s.title.clone()),
                )),
                LetterEvent::Text(text) => updates(LetterUpdate::Text(text)),
            },
        )?;
        Ok(match outcome {
            LetterOutcome::Written(letter) => WriteOutcome::Finished(FinishedLetter {
                markdown: render(&letter, Format::Markdown),
                json: render(&letter, Format::Json),
                fhir: render(&letter, Format::Fhir),
                warnings: letter.warnings.clone(),
            }),
            LetterOutcome::Cancelled => WriteOutcome::Cancelled,
        })
    }
}

impl DictateArgs {
    /// The letter writer these arguments give (the model is not loaded yet).
    fn writer(&self, data: &DataDir) -> Result<Writer> {
        super::letter_writer(
            &self.server,
            self.letter_model.as_deref(),
            self.writing.settings(self.letter_device),
            data,
        )
    }
}

/// Leaves one core to live transcription while a letter is written (on two cores, both at
/// full width make each other crawl: decoding fell to a fraction of its speed when we measured).
/// Runs before any thread starts.
fn share_cores_with_transcription() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        std::env::set_var(
            "RAYON_NUM_THREADS",
            cores.saturating_sub(1).max(1).to_string(),
        );
    }
}

/// `medscribe dictate`.
pub fn dictate(args: DictateArgs, ort_lib: Option<PathBuf>) -> Result<ExitCode> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("medscribe dictate needs a terminal; `medscribe record` transcribes without one");
    }
    share_cores_with_transcription();
    let data = DataDir::from_env();
    let templates: Vec<_> = super::load_templates().templates().cloned().collect();
    let template = templates
        .iter()
        .position(|t| t.name == args.template)
        .with_context(|| {
            format!(
                "no template {:?} (medscribe templates lists them)",
                args.template
            )
        })?;
    let choices = templates
        .iter()
        .map(|t| TemplateChoice {
            name: t.name.clone(),
            title: t.title.clone(),
        })
        .collect();
    let writer: std::result::Result<Box<dyn LetterWriter>, String> = match args.writer(&data) {
        Ok(writer) => Ok(Box::new(TuiWriter(writer))),
        Err(error) => Err(format!("{error:#}")),
    };
    let source = args.input.source();
    let speakers = args
        .input
        .speakers(args.speakers, ort_lib.as_deref(), &data)?;
    let speech_options = args.input.speech_options(ort_lib.clone());
    let (recognizer, vad) = args.input.speech(ort_lib, &data)?;
    let config = LiveConfig {
        kind: "dictation".into(),
        start_paused: true,
        speakers: args
            .speakers
            .map(medscribe_pipeline::speakers::clusters_text),
        ..LiveConfig::default()
    };
    // The speaker models label lines while recording goes on, then come back from the live
    // session to label them all when it stops.
    let labelling_wanted = speakers.is_some();
    let live = super::record::start_live(&data, source, (recognizer, vad), config, speakers)?;
    let label_speakers = labelling_wanted.then(|| {
        let session = live.session().clone();
        let data = data.clone();
        Box::new(move |mut speakers: Speakers| {
            // The speech model again, for lines cut at a change of speaker.
            let (mut recognizer, _) =
                Speech::open_live(&speech_options, &data).map_err(|e| e.to_string())?;
            session
                .label_speakers(&mut speakers, &mut *recognizer)
                .map_err(|e| e.to_string())?;
            session.transcript().map_err(|e| e.to_string())
        }) as SpeakerLabelling
    });
    // SIGTERM or SIGHUP (a closed terminal): finish the files and leave. Ctrl-C is a key here.
    let terminate = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&terminate);
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let outcome = medscribe_tui::run(Dictation {
        live,
        templates: choices,
        template,
        writer,
        terminate,
        label_speakers,
    })?;
    eprintln!(
        "medscribe: session {}: {} recorded, {} segments{}",
        outcome.session.display(),
        super::duration(outcome.recorded_s),
        outcome.segments,
        if outcome.letters.is_empty() {
            String::new()
        } else {
            format!(
                ", letters: {}",
                outcome
                    .letters
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("medscribe").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    /// The terminal UI once wrote letters with its own hard-coded settings, on the CPU only and
    /// without GGUF vision; now both commands build the same settings from the same options.
    #[test]
    fn the_tui_writes_letters_with_the_same_settings_and_device_as_the_letter_command() {
        let data = medscribe_pipeline::DataDir::at("/nonexistent");
        let options = [
            "--mmproj",
            "/m/mmproj.gguf",
            "--style",
            "chat",
            "--max-new-tokens",
            "300",
            "--max-section-tokens",
            "50",
            "--temperature",
            "0.4",
            "--repetition-penalty",
            "1.3",
            "--seed",
            "7",
        ];
        let mut letter = vec!["letter", "--template", "referral", "--transcript", "t.txt"];
        letter.extend(["--model", "/m/medgemma-4b-it.gguf", "--device", "cuda:1"]);
        letter.extend(options);
        let mut dictate = vec!["dictate", "--letter-model", "/m/medgemma-4b-it.gguf"];
        dictate.extend(["--letter-device", "cuda:1"]);
        dictate.extend(options);
        let (Command::Letter(letter), Command::Dictate(dictate)) =
            (parse(&letter), parse(&dictate))
        else {
            panic!("parsed as other commands");
        };
        let from_letter = letter.writer_settings();
        let writer = dictate.writer(&data).unwrap();
        assert_eq!(writer.settings(), &from_letter);
        assert_eq!(
            from_letter.device,
            medscribe_llm::letter::DeviceName::Cuda(1)
        );
        assert_eq!(
            from_letter.mmproj.as_deref(),
            Some(std::path::Path::new("/m/mmproj.gguf"))
        );
        assert_eq!(from_letter.sampling.temperature, 0.4);

        // And with no options at all, both write with the library's defaults.
        let (Command::Letter(letter), Command::Dictate(dictate)) = (
            parse(&["letter", "--template", "referral", "--transcript", "t.txt"]),
            parse(&["dictate", "--letter-model", "/m/x.gguf"]),
        ) else {
            panic!("parsed as other commands");
        };
        let defaults = medscribe_llm::letter::LetterSettings::default();
        assert_eq!(letter.writer_settings(), defaults);
        assert_eq!(dictate.writer(&data).unwrap().settings(), &defaults);
    }
}
