//! `medscribe dictate`: the terminal UI over a live session, with the letter model wired in.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use medscribe_llm::letter::constrain::TokenTable;
use medscribe_llm::letter::prompt::PromptStyle;
use medscribe_llm::letter::render::{render, Format};
use medscribe_llm::letter::template::find_template;
use medscribe_llm::letter::{write_letter, LetterEvent, LetterRequest, TranscriptSegment};
use medscribe_llm::LoadedModel;
use medscribe_pipeline::live::LiveConfig;
use medscribe_pipeline::DataDir;
use medscribe_tui::{
    Dictation, FinishedLetter, LetterJob, LetterUpdate, LetterWriter, TemplateChoice,
};

use crate::letter_cmd::templates_dir;
use crate::live_cmd::InputArgs;

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

    /// Most tokens the letter model may write.
    #[arg(long, default_value_t = 768, value_name = "N")]
    max_new_tokens: usize,
}

/// Writes letters with a model loaded on first use (on the letter thread, not the UI's).
struct ModelWriter {
    path: PathBuf,
    loaded: Option<(LoadedModel, TokenTable)>,
    max_new_tokens: usize,
    /// The letter guard's medication names (`None` when setup has not built them).
    drugs: Option<medscribe_llm::letter::facts::DrugLexicon>,
}

impl LetterWriter for ModelWriter {
    fn write(
        &mut self,
        job: &LetterJob,
        cancel: &AtomicBool,
        updates: &mut dyn FnMut(LetterUpdate),
    ) -> std::result::Result<FinishedLetter, String> {
        let template =
            find_template(&job.template, Some(&templates_dir())).map_err(|e| e.to_string())?;
        if self.loaded.is_none() {
            updates(LetterUpdate::Status("loading the letter model".into()));
            let loaded = medscribe_llm::load(&self.path, &medscribe_llm::Device::Cpu)
                .map_err(|e| format!("cannot load {}: {e}", self.path.display()))?;
            let table = TokenTable::new(loaded.tokenizer.text_pieces());
            self.loaded = Some((loaded, table));
        }
        let Some((loaded, table)) = self.loaded.as_mut() else {
            return Err("the letter model is not loaded".into());
        };
        let images = if job.images.is_empty() {
            None
        } else if loaded.vision.is_none() {
            return Err(format!(
                "{} cannot look at images; remove the attachments (Tab, d) or use a multimodal model such as MedGemma 4B",
                self.path.display()
            ));
        } else {
            Some(
                loaded
                    .encode_images(&job.images)
                    .map_err(|e| e.to_string())?,
            )
        };
        let transcript: Vec<TranscriptSegment> = job
            .transcript
            .iter()
            .map(|line| TranscriptSegment {
                start_s: Some(line.start_s),
                end_s: Some(line.end_s),
                text: line.text.clone(),
                raw_text: None,
            })
            .collect();
        let request = LetterRequest {
            template: &template,
            transcript: &transcript,
            style: PromptStyle::for_model_path(&self.path),
            images: images.as_ref(),
            sampling: medscribe_llm::Sampling {
                max_new_tokens: self.max_new_tokens,
                repetition_penalty: 1.15,
                ..medscribe_llm::Sampling::default()
            },
            max_section_tokens: 160,
            drugs: self.drugs.as_ref(),
        };
        let letter = write_letter(loaded, table, &request, cancel, &mut |event| match event {
            LetterEvent::Prompt(tokens) => {
                updates(LetterUpdate::Status(format!("read {tokens} prompt tokens")));
            }
            LetterEvent::Section(key) => updates(LetterUpdate::Section(
                template
                    .section(&key)
                    .map_or(key.clone(), |s| s.title.clone()),
            )),
            LetterEvent::Text(text) => updates(LetterUpdate::Text(text)),
        })
        .map_err(|e| e.to_string())?;
        Ok(FinishedLetter {
            markdown: render(&letter, Format::Markdown),
            json: render(&letter, Format::Json),
            fhir: render(&letter, Format::Fhir),
            warnings: letter.warnings.clone(),
        })
    }
}

/// Leaves one core to live transcription while a letter is written (on two cores, both at
/// full width make each other crawl: shared/specs/build.md). Runs before any thread starts.
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
pub fn dictate(args: DictateArgs, ort_lib: Option<&Path>) -> Result<ExitCode> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("medscribe dictate needs a terminal; `medscribe record` transcribes without one");
    }
    share_cores_with_transcription();
    let data = DataDir::from_env();
    let templates: Vec<_> = crate::letter_cmd::load_templates()
        .templates()
        .cloned()
        .collect();
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
    let writer: std::result::Result<Box<dyn LetterWriter>, String> =
        match crate::letter_model_path(args.letter_model.as_deref(), &data) {
            Ok(path) => Ok(Box::new(ModelWriter {
                path,
                loaded: None,
                max_new_tokens: args.max_new_tokens,
                drugs: crate::letter_cmd::drug_lexicon(&data)?,
            })),
            Err(error) => Err(error.to_string()),
        };
    let source = args.input.source();
    let (recognizer, vad) = args.input.speech(ort_lib, &data)?;
    let config = LiveConfig {
        kind: "dictation".into(),
        start_paused: true,
        ..LiveConfig::default()
    };
    let live = crate::live_cmd::start_live(&data, source, (recognizer, vad), config)?;
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
    })?;
    eprintln!(
        "medscribe: session {}: {} recorded, {} segments{}",
        outcome.session.display(),
        crate::duration(outcome.recorded_s),
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
