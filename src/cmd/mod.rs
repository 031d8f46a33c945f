//! One module per command, each holding its arguments and its printing; what several commands
//! share (speech and letter-model options, the installed defaults) is here.

pub mod dictate;
pub mod generate;
pub mod letter;
pub mod models;
pub mod record;
pub mod serve;
pub mod sessions;
pub mod speakers;
pub mod templates;
pub mod transcribe;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use medscribe_llm::letter::facts::DrugLexicon;
use medscribe_llm::letter::prompt::PromptStyle;
use medscribe_llm::letter::remote::LetterServer;
use medscribe_llm::letter::template::TemplateSet;
use medscribe_llm::letter::{DeviceName, LetterSettings, StyleChoice, Writer};
use medscribe_llm::Sampling;
use medscribe_pipeline::{models as installed, DataDir, Segmentation};

/// `--segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SegmentArg {
    /// Voice activity detection.
    Vad,
    /// Fixed 20 s windows with 2 s overlap.
    Fixed,
}

impl From<SegmentArg> for Segmentation {
    fn from(arg: SegmentArg) -> Self {
        match arg {
            SegmentArg::Vad => Segmentation::Vad,
            SegmentArg::Fixed => Segmentation::FixedWindows,
        }
    }
}

/// `--style`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StyleArg {
    /// Chat for models named *-it / *instruct*, grounded otherwise.
    Auto,
    /// Chat-template instructions (instruction-tuned models such as MedGemma 4B-it).
    Chat,
    /// The transcript's own statements filed under sections by the model (base models such as
    /// the default Gemma 3 270M: nothing is written that was not said).
    Grounded,
    /// Few-shot completion: a base model writes freely after the template's example.
    Completion,
}

impl From<StyleArg> for StyleChoice {
    fn from(arg: StyleArg) -> Self {
        match arg {
            StyleArg::Auto => StyleChoice::Auto,
            StyleArg::Chat => StyleChoice::Fixed(PromptStyle::Chat),
            StyleArg::Grounded => StyleChoice::Fixed(PromptStyle::Grounded),
            StyleArg::Completion => StyleChoice::Fixed(PromptStyle::Completion),
        }
    }
}

fn default_settings() -> LetterSettings {
    LetterSettings::default()
}

/// How letters are written, shared by `letter` and `dictate` so that both write with the same
/// defaults (from [`LetterSettings::default`]). The model path and device are each command's
/// own, because `dictate`'s `--model` and `--device` name the speech model and microphone.
#[derive(Debug, Clone, clap::Args)]
pub struct LetterModelArgs {
    /// The vision part of a .gguf letter model: a llama.cpp mmproj file. Default: the only
    /// mmproj*.gguf beside the model, if there is one.
    #[arg(long, value_name = "FILE")]
    pub mmproj: Option<PathBuf>,

    /// Prompt style.
    #[arg(long, value_enum, default_value = "auto")]
    pub style: StyleArg,

    /// Most tokens of the whole letter.
    #[arg(long, default_value_t = default_settings().sampling.max_new_tokens, value_name = "N")]
    pub max_new_tokens: usize,

    /// Most tokens of one section.
    #[arg(long, default_value_t = default_settings().max_section_tokens, value_name = "N")]
    pub max_section_tokens: usize,

    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = default_settings().sampling.temperature, value_name = "T")]
    pub temperature: f32,

    /// Penalise repeated tokens (1: off); small models loop without it.
    #[arg(long, default_value_t = default_settings().sampling.repetition_penalty, value_name = "R")]
    pub repetition_penalty: f32,

    /// Random seed for sampling.
    #[arg(long, default_value_t = default_settings().sampling.seed)]
    pub seed: u64,
}

impl LetterModelArgs {
    /// The settings these arguments give, with the letter model on `device`.
    pub fn settings(&self, device: DeviceName) -> LetterSettings {
        let defaults = default_settings();
        LetterSettings {
            mmproj: self.mmproj.clone(),
            device,
            style: self.style.into(),
            sampling: Sampling {
                temperature: self.temperature,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
                max_new_tokens: self.max_new_tokens,
                ..defaults.sampling
            },
            max_section_tokens: self.max_section_tokens,
        }
    }
}

/// Where letters are drafted when not on a local model.
#[derive(Debug, clap::Args)]
pub struct LetterServerArgs {
    /// Draft the letter on an OpenAI-compatible inference server instead of a local model: vLLM,
    /// llama.cpp's llama-server, Ollama, TGI or another `medscribe serve`, e.g.
    /// http://gpu.hospital.org:8000/v1 (a bare host gets /v1). The API key, if the server needs
    /// one, is read from MEDSCRIBE_API_KEY. The server is asked for the letter's JSON
    /// (response_format json_schema); the letter is checked, grounded and fact-guarded here as a
    /// local model's is. Only the transcript and images go to the server.
    #[arg(long, value_name = "URL")]
    pub letter_server: Option<String>,

    /// The letter server's model (default: its only model; a server with several needs this).
    #[arg(long, value_name = "NAME", requires = "letter_server")]
    pub letter_server_model: Option<String>,

    /// Trust the CA certificates in this PEM file for an https letter server (a hospital's own
    /// CA), instead of the public roots.
    #[arg(long, value_name = "FILE", requires = "letter_server")]
    pub letter_server_ca: Option<PathBuf>,

    /// Give up on the letter server after this many seconds.
    #[arg(
        long,
        default_value_t = 600,
        value_name = "S",
        requires = "letter_server"
    )]
    pub letter_server_timeout_s: u64,
}

/// The letter writer: on the letter server if one is named, else on the local model at `model`
/// (or the installed default).
pub fn letter_writer(
    server: &LetterServerArgs,
    model: Option<&Path>,
    settings: LetterSettings,
    data: &DataDir,
) -> Result<Writer> {
    let drugs = drug_lexicon(data)?;
    let Some(url) = &server.letter_server else {
        return Ok(Writer::new(
            letter_model_path(model, data)?,
            settings,
            drugs,
        )?);
    };
    if let Some(model) = model {
        bail!(
            "give either a local letter model ({}) or --letter-server, not both",
            model.display()
        );
    }
    if server.letter_server_timeout_s == 0 {
        bail!("--letter-server-timeout-s must be at least 1");
    }
    let api_key = std::env::var("MEDSCRIBE_API_KEY").ok();
    let server = LetterServer::new(
        url,
        server.letter_server_model.clone(),
        api_key,
        server.letter_server_ca.as_deref(),
        std::time::Duration::from_secs(server.letter_server_timeout_s),
    )?;
    Ok(Writer::remote(server, settings, drugs)?)
}

/// The letter model named by `--model`, or the installed default.
pub fn letter_model_path(model: Option<&Path>, data: &DataDir) -> Result<PathBuf> {
    if let Some(path) = model {
        return Ok(path.to_path_buf());
    }
    let default = installed::default_llm_model(data);
    if !default.is_file() {
        bail!(
            "the default letter model is not installed ({}); run scripts/setup.sh, or pass --model PATH",
            default.display()
        );
    }
    Ok(default)
}

/// The letter guard's medication names as setup built them; `None` (and letters say so) when
/// they are not installed, an error when the file is there but unreadable.
pub fn drug_lexicon(data: &DataDir) -> Result<Option<DrugLexicon>> {
    let path = installed::drug_lexicon(data);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(DrugLexicon::load(&path)?))
}

/// The built-in and user templates; user files that cannot be used are reported on stderr, one
/// line each, and skipped.
pub fn load_templates() -> TemplateSet {
    let set = TemplateSet::load(Some(&DataDir::user_templates_dir()));
    for warning in &set.warnings {
        eprintln!("medscribe: warning: {warning}");
    }
    set
}

/// A duration for people: seconds, minutes or hours.
pub fn duration(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.2} h", seconds / 3600.0)
    } else if seconds >= 60.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{seconds:.1} s")
    }
}
