//! What the TUI needs from a letter writer. The front end that starts the TUI supplies one (the
//! binary wires MedGemma in), so this crate never touches model internals.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use medscribe_pipeline::session::TranscriptLine;

/// A template the user can pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateChoice {
    /// The name `medscribe letter --template` takes.
    pub name: String,
    /// What the user reads.
    pub title: String,
}

/// One letter to write.
#[derive(Debug, Clone, PartialEq)]
pub struct LetterJob {
    /// Template name.
    pub template: String,
    /// The transcript as the user corrected it.
    pub transcript: Vec<TranscriptLine>,
    /// Attached images.
    pub images: Vec<PathBuf>,
}

/// Progress of a letter being written, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum LetterUpdate {
    /// What the writer is doing (loading the model, reading the prompt).
    Status(String),
    /// A new section starts (its title).
    Section(String),
    /// More text of the current section.
    Text(String),
    /// The letter is finished.
    Done(FinishedLetter),
    /// Writing failed: why.
    Failed(String),
    /// The user cancelled the letter; nothing was written.
    Cancelled,
}

/// A finished letter, rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedLetter {
    /// Markdown, as shown and saved.
    pub markdown: String,
    /// The structured letter (JSON), saved beside the Markdown.
    pub json: String,
    /// The letter as a FHIR R4 document Bundle (JSON), for the hospital's record system.
    pub fhir: String,
    /// Things the user must know (identifiers removed, letter cut short).
    pub warnings: Vec<String>,
}

/// How writing a letter ended, when nothing failed.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// The letter.
    Finished(FinishedLetter),
    /// `cancel` was set before it was finished.
    Cancelled,
}

/// Why a letter could not be written: the writer's own error, kept with its causes.
pub type WriteError = Box<dyn std::error::Error + Send + Sync>;

/// Writes letters; runs on a worker thread, never on the UI thread.
pub trait LetterWriter: Send {
    /// Writes one letter, reporting progress through `updates`; stops early when `cancel` is set.
    fn write(
        &mut self,
        job: &LetterJob,
        cancel: &AtomicBool,
        updates: &mut dyn FnMut(LetterUpdate),
    ) -> Result<WriteOutcome, WriteError>;
}
