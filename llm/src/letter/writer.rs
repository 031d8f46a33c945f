//! One letter writer for every front end: the command line, the terminal UI and a server all
//! write letters through [`Writer`], with the same defaults ([`LetterSettings::default`]), device
//! choice, image checks and lazy model loading.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::Device;

use super::constrain::TokenTable;
use super::facts::DrugLexicon;
use super::prompt::PromptStyle;
use super::remote::LetterServer;
use super::template::Template;
use super::{write_letter, LetterEvent, LetterOutcome, LetterRequest, TranscriptSegment};
use crate::error::{LlmError, Result};
use crate::generate::Sampling;
use crate::loader::{load_with_mmproj, LoadedModel};

/// Where a model runs, by the name users type: `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceName {
    /// The processor.
    #[default]
    Cpu,
    /// An NVIDIA GPU by ordinal (needs a build with the `cuda` feature).
    Cuda(usize),
}

impl std::str::FromStr for DeviceName {
    type Err = LlmError;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(ordinal)) => Ok(Self::Cuda(ordinal)),
                _ => Err(LlmError::Setting(format!(
                    "device {other:?}: expected cpu, cuda or cuda:N"
                ))),
            },
        }
    }
}

impl std::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl DeviceName {
    /// The device itself; a GPU needs a build with CUDA and the GPU present.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) => Device::new_cuda(ordinal).map_err(|error| {
                LlmError::Setting(format!(
                    "cannot use GPU {ordinal} ({error}); this build has CUDA only with `--features cuda`"
                ))
            }),
        }
    }
}

/// How the model is prompted, as a user chooses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StyleChoice {
    /// Chat for models named `*-it` / `*instruct*`, grounded otherwise.
    #[default]
    Auto,
    /// This style whatever the model.
    Fixed(PromptStyle),
}

impl StyleChoice {
    /// The style for the model at `path`.
    pub fn for_model(self, path: &Path) -> PromptStyle {
        match self {
            Self::Auto => PromptStyle::for_model_path(path),
            Self::Fixed(style) => style,
        }
    }
}

/// Everything about writing letters except the model file, with the defaults every front end
/// shares.
#[derive(Debug, Clone, PartialEq)]
pub struct LetterSettings {
    /// The vision tower of a `.gguf` model (a llama.cpp mmproj file); `None`: the only
    /// `mmproj*.gguf` beside the model, if there is one.
    pub mmproj: Option<PathBuf>,
    /// Where the model runs.
    pub device: DeviceName,
    /// Prompt style.
    pub style: StyleChoice,
    /// Sampling; `max_new_tokens` bounds the whole letter.
    pub sampling: Sampling,
    /// Most tokens of one section.
    pub max_section_tokens: usize,
}

impl Default for LetterSettings {
    /// Greedy, with a repetition penalty of 1.15 (small models loop without it), 768 tokens a
    /// letter and 160 a section, on the CPU.
    fn default() -> Self {
        Self {
            mmproj: None,
            device: DeviceName::Cpu,
            style: StyleChoice::Auto,
            sampling: Sampling {
                repetition_penalty: 1.15,
                max_new_tokens: 768,
                ..Sampling::default()
            },
            max_section_tokens: 160,
        }
    }
}

impl LetterSettings {
    /// Refuses settings that cannot work, before any model is loaded.
    pub fn check(&self) -> Result<()> {
        self.sampling.check().map_err(LlmError::Setting)?;
        if self.max_section_tokens == 0 {
            return Err(LlmError::Setting(
                "a section needs a budget of at least one token".into(),
            ));
        }
        Ok(())
    }
}

/// Writes letters with one model, loaded on first use and kept for the next letter, or with a
/// letter server ([`LetterServer`]); either way every letter is grounded and fact-guarded here.
#[derive(Debug)]
pub struct Writer {
    model: PathBuf,
    settings: LetterSettings,
    drugs: Option<DrugLexicon>,
    loaded: Option<(LoadedModel, TokenTable)>,
    server: Option<LetterServer>,
}

impl Writer {
    /// A writer for the model at `model` (a Hugging Face directory or a `.gguf` file). `drugs`
    /// are the medication names the fact guard checks; without them medications are not
    /// checked and each letter says so. Settings are checked here; the model loads on first use.
    pub fn new(
        model: PathBuf,
        settings: LetterSettings,
        drugs: Option<DrugLexicon>,
    ) -> Result<Self> {
        settings.check()?;
        Ok(Self {
            model,
            settings,
            drugs,
            loaded: None,
            server: None,
        })
    }

    /// A writer whose drafts come from `server`, checked and guarded here as a local model's
    /// are. Of the settings, sampling and the token limit go to the server.
    pub fn remote(
        server: LetterServer,
        settings: LetterSettings,
        drugs: Option<DrugLexicon>,
    ) -> Result<Self> {
        settings.check()?;
        Ok(Self {
            model: PathBuf::from(server.url()),
            settings,
            drugs,
            loaded: None,
            server: Some(server),
        })
    }

    /// The model file or directory (a letter server's URL for a remote writer).
    pub fn model_path(&self) -> &Path {
        &self.model
    }

    /// The letter server, for a remote writer.
    pub fn server(&self) -> Option<&LetterServer> {
        self.server.as_ref()
    }

    /// The settings it writes with.
    pub fn settings(&self) -> &LetterSettings {
        &self.settings
    }

    /// Loads the model now (it loads on first use otherwise).
    pub fn load(&mut self) -> Result<&mut LoadedModel> {
        let (loaded, _) = self.load_with_table()?;
        Ok(loaded)
    }

    /// The model, loaded now if it is not yet, with its vocabulary classified for constrained
    /// JSON ([`crate::SchemaConstraint`]).
    pub fn load_with_table(&mut self) -> Result<(&mut LoadedModel, &TokenTable)> {
        if let Some(server) = &self.server {
            return Err(LlmError::Setting(format!(
                "the letter model runs on the letter server at {}, not here",
                server.url()
            )));
        }
        let (loaded, table) = loaded_model(&mut self.loaded, &self.model, &self.settings)?;
        Ok((loaded, table))
    }

    /// Whether the model can look at images (loads it). A letter server's model is taken to:
    /// the images are sent, and a server whose model cannot see them says so.
    pub fn sees_images(&mut self) -> Result<bool> {
        if self.server.is_some() {
            return Ok(true);
        }
        Ok(self.load()?.vision.is_some())
    }

    /// Writes a letter from `transcript` with `template`, looking at `images` (which need a
    /// multimodal model), dated `created` (RFC 3339). Reports [`LetterEvent::Loading`] before a
    /// first load. Setting `cancel` ends it with [`LetterOutcome::Cancelled`].
    pub fn write(
        &mut self,
        template: &Template,
        transcript: &[TranscriptSegment],
        images: &[PathBuf],
        created: &str,
        cancel: &AtomicBool,
        on_event: &mut dyn FnMut(LetterEvent),
    ) -> Result<LetterOutcome> {
        let Self {
            model,
            settings,
            drugs,
            loaded,
            server,
        } = self;
        if let Some(server) = server {
            let request = LetterRequest {
                template,
                transcript,
                style: PromptStyle::Chat,
                images: None,
                sampling: settings.sampling.clone(),
                max_section_tokens: settings.max_section_tokens,
                drugs: drugs.as_ref(),
                created,
            };
            return server.write_letter(&request, images, cancel, on_event);
        }
        if loaded.is_none() {
            on_event(LetterEvent::Loading(model.clone()));
        }
        let (loaded, table) = loaded_model(loaded, model, settings)?;
        let images = if images.is_empty() {
            None
        } else if loaded.vision.is_none() {
            return Err(LlmError::Incompatible(format!(
                "{} has no vision tower, so it cannot look at images; write without them or use a multimodal model (MedGemma 4B)",
                model.display()
            )));
        } else {
            Some(loaded.encode_images(images)?)
        };
        let request = LetterRequest {
            template,
            transcript,
            style: settings.style.for_model(model),
            images: images.as_ref(),
            sampling: settings.sampling.clone(),
            max_section_tokens: settings.max_section_tokens,
            drugs: drugs.as_ref(),
            created,
        };
        write_letter(loaded, table, &request, cancel, on_event)
    }
}

/// The model in `slot`, loaded from `model` with `settings` if it is not there yet.
fn loaded_model<'a>(
    slot: &'a mut Option<(LoadedModel, TokenTable)>,
    model: &Path,
    settings: &LetterSettings,
) -> Result<&'a mut (LoadedModel, TokenTable)> {
    let pair = match slot.take() {
        Some(pair) => pair,
        None => {
            let device = settings.device.open()?;
            let loaded = load_with_mmproj(model, settings.mmproj.as_deref(), &device)
                .map_err(|error| with_model(model, error))?;
            let table = TokenTable::new(loaded.tokenizer.text_pieces());
            (loaded, table)
        }
    };
    Ok(slot.insert(pair))
}

/// Load errors that do not already name the model get its path.
fn with_model(model: &Path, error: LlmError) -> LlmError {
    match error {
        LlmError::Compute(error) => LlmError::BadFile {
            path: model.to_path_buf(),
            reason: format!("cannot load: {error}"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_back() {
        for (text, device) in [
            ("cpu", DeviceName::Cpu),
            ("cuda", DeviceName::Cuda(0)),
            ("cuda:3", DeviceName::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceName>().unwrap(), device);
        }
        assert_eq!(
            DeviceName::Cuda(2)
                .to_string()
                .parse::<DeviceName>()
                .unwrap(),
            DeviceName::Cuda(2)
        );
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            let error = bad.parse::<DeviceName>().unwrap_err().to_string();
            assert!(
                error.contains("expected cpu, cuda or cuda:N"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn defaults_are_checked_and_bad_settings_refused_before_loading() {
        LetterSettings::default().check().unwrap();
        let zero_section = LetterSettings {
            max_section_tokens: 0,
            ..LetterSettings::default()
        };
        assert!(Writer::new(PathBuf::from("/nonexistent"), zero_section, None).is_err());
        let mut nan = LetterSettings::default();
        nan.sampling.temperature = f32::NAN;
        let error = Writer::new(PathBuf::from("/nonexistent"), nan, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("temperature"), "{error}");
    }

    #[test]
    fn a_missing_model_is_an_error_when_first_used_not_a_panic() {
        let mut writer = Writer::new(
            PathBuf::from("/nonexistent/model.gguf"),
            LetterSettings::default(),
            None,
        )
        .unwrap();
        assert!(writer.sees_images().is_err());
    }

    #[test]
    fn style_choice_follows_the_model_name_unless_fixed() {
        assert_eq!(
            StyleChoice::Auto.for_model(Path::new("medgemma-4b-it")),
            PromptStyle::Chat
        );
        assert_eq!(
            StyleChoice::Auto.for_model(Path::new("gemma-3-270m.gguf")),
            PromptStyle::Grounded
        );
        assert_eq!(
            StyleChoice::Fixed(PromptStyle::Completion).for_model(Path::new("medgemma-4b-it")),
            PromptStyle::Completion
        );
    }
}
