//! The medscribe terminal UI: the dictation screen's state and key handling (`app`), its views
//! (`view`, ratatui), and the loop that joins them to a live pipeline session and a letter writer
//! (`run`). All model work happens on other threads; the UI thread only draws and reacts.
#![deny(missing_docs)]

pub mod app;
pub mod letter;
pub mod run;
pub mod view;

pub use app::App;
pub use letter::{
    FinishedLetter, LetterJob, LetterUpdate, LetterWriter, TemplateChoice, WriteError, WriteOutcome,
};
pub use run::{run, Dictation, TuiError};
