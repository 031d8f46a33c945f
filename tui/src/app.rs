//! The dictation screen's state and key handling. Pure: keys and pipeline events go in, actions
//! for the runner come out, so every flow is testable without a terminal.

use std::path::{Path, PathBuf};

use medscribe_pipeline::live::LiveEvent;
use medscribe_pipeline::render::{shown_speaker, speaker_count, speaker_name};
use medscribe_pipeline::session::TranscriptLine;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::letter::{FinishedLetter, LetterJob, LetterUpdate, TemplateChoice};

/// Whether audio is being captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// Ready; nothing is recorded (space starts).
    Paused,
    /// Recording and transcribing.
    Recording,
    /// Stopping: the last audio is being transcribed and the files finished.
    Finishing,
    /// Capture ended.
    Stopped,
}

/// Which pane the arrow keys move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// Transcript segments.
    Transcript,
    /// Attached images.
    Attachments,
    /// The letter.
    Letter,
}

/// A one-line text input with a cursor (character index).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LineInput {
    /// The text.
    pub text: String,
    /// Cursor position, in characters.
    pub cursor: usize,
}

impl LineInput {
    /// An input holding `text`, cursor at the end.
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            cursor: text.chars().count(),
        }
    }

    fn byte_at(&self, char_index: usize) -> usize {
        self.text
            .char_indices()
            .nth(char_index)
            .map_or(self.text.len(), |(i, _)| i)
    }

    /// Applies an editing key; returns false for keys it does not handle.
    pub fn key(&mut self, key: KeyEvent) -> bool {
        let length = self.text.chars().count();
        match key.code {
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                let at = self.byte_at(self.cursor);
                self.text.insert(at, c);
                self.cursor += 1;
            }
            KeyCode::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                let at = self.byte_at(self.cursor);
                self.text.remove(at);
            }
            KeyCode::Delete if self.cursor < length => {
                let at = self.byte_at(self.cursor);
                self.text.remove(at);
            }
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(length),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = length,
            KeyCode::Backspace | KeyCode::Delete => {}
            _ => return false,
        }
        true
    }
}

/// A window over the main screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    /// None.
    None,
    /// The key list.
    Help,
    /// Choosing a template (the highlighted row).
    Templates(usize),
    /// Typing the path of an image to attach.
    Attach(LineInput),
    /// Quitting with an unsaved letter.
    ConfirmQuit,
    /// Naming a speaker: its label (`S1`) and the name being typed.
    Rename(String, LineInput),
}

/// The letter pane.
#[derive(Debug, Clone, PartialEq)]
pub enum LetterPane {
    /// No letter yet.
    Idle,
    /// Letters cannot be written (no model): why.
    Unavailable(String),
    /// Being written: what the model has produced so far.
    Writing {
        /// What the writer is doing.
        status: String,
        /// Text so far (Markdown headings per section).
        text: String,
    },
    /// Finished.
    Done {
        /// The letter.
        letter: FinishedLetter,
        /// Where it was saved, once it was.
        saved: Option<PathBuf>,
    },
    /// Writing failed.
    Failed(String),
}

/// What the runner must do after a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Pause or resume capture.
    SetPaused(bool),
    /// The user corrected a segment.
    Edit(TranscriptLine),
    /// The user named a speaker: label (`S1`), name.
    RenameSpeaker(String, String),
    /// Attach this image.
    Attach(PathBuf),
    /// Remove the attachment at this index.
    Detach(usize),
    /// Write a letter.
    Generate(LetterJob),
    /// Stop writing the letter.
    CancelLetter,
    /// Save the finished letter.
    SaveLetter,
    /// Stop capture, finish the files and leave.
    Quit,
}

/// The whole screen's state.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// Capture device or file.
    pub device: String,
    /// The session directory, shown in the help.
    pub session: String,
    /// Capture state.
    pub capture: Capture,
    /// Seconds recorded.
    pub recorded_s: f64,
    /// Input level, dBFS.
    pub level_dbfs: f32,
    /// Final segments (as corrected).
    pub lines: Vec<TranscriptLine>,
    /// The utterance in progress.
    pub partial: Option<String>,
    /// Highlighted segment; `None` follows the newest.
    pub selected: Option<usize>,
    /// The segment being corrected.
    pub editing: Option<(usize, LineInput)>,
    /// Attached images (copies in the session).
    pub attachments: Vec<PathBuf>,
    /// Highlighted attachment.
    pub attachment: usize,
    /// Templates to choose from.
    pub templates: Vec<TemplateChoice>,
    /// The chosen template.
    pub template: usize,
    /// The letter pane.
    pub letter: LetterPane,
    /// Lines the letter pane is scrolled down.
    pub letter_scroll: u16,
    /// Focused pane.
    pub focus: Focus,
    /// Open overlay.
    pub overlay: Overlay,
    /// A message for the footer (warnings, confirmations).
    pub message: Option<String>,
    /// Names given to speakers, by label (`S1` -> `Dr Patel`).
    pub speaker_names: std::collections::BTreeMap<String, String>,
    /// Speakers are being told apart (after capture, with `dictate --speakers`).
    pub labelling: bool,
}

impl App {
    /// A new screen for `device`, writing into `session`.
    pub fn new(
        device: &str,
        session: &str,
        templates: Vec<TemplateChoice>,
        template: usize,
    ) -> Self {
        Self {
            device: device.to_owned(),
            session: session.to_owned(),
            capture: Capture::Paused,
            recorded_s: 0.0,
            level_dbfs: -100.0,
            lines: Vec::new(),
            partial: None,
            selected: None,
            editing: None,
            attachments: Vec::new(),
            attachment: 0,
            template: template.min(templates.len().saturating_sub(1)),
            templates,
            letter: LetterPane::Idle,
            letter_scroll: 0,
            focus: Focus::Transcript,
            overlay: Overlay::None,
            message: None,
            speaker_names: Default::default(),
            labelling: false,
        }
    }

    /// The chosen template's title.
    pub fn template_title(&self) -> &str {
        self.templates
            .get(self.template)
            .map_or("no template", |t| t.title.as_str())
    }

    /// Whether quitting now would lose work (a letter that was not saved).
    pub fn has_unsaved_work(&self) -> bool {
        matches!(self.letter, LetterPane::Done { saved: None, .. })
            || matches!(self.letter, LetterPane::Writing { .. })
    }

    /// Takes in what the live pipeline reports.
    pub fn apply(&mut self, event: LiveEvent) {
        match event {
            LiveEvent::Level { dbfs, recorded_s } => {
                self.level_dbfs = dbfs;
                self.recorded_s = recorded_s;
            }
            LiveEvent::Partial { text, .. } => {
                self.partial = (!text.is_empty()).then_some(text);
            }
            LiveEvent::Final(line) => {
                self.partial = None;
                if !line.text.is_empty() {
                    self.lines.push(line);
                }
            }
            LiveEvent::Speaker(labelled) => {
                // A label while recording goes on; all are told apart again when it stops.
                if let Some(line) = self
                    .lines
                    .iter_mut()
                    .find(|l| l.start_s == labelled.start_s)
                {
                    line.speaker = labelled.speaker;
                }
            }
            LiveEvent::Split { start_s, lines } => self.split_line(start_s, lines),
            LiveEvent::Warning(message) => self.message = Some(message),
            LiveEvent::Stopped { recorded_s, error } => {
                self.capture = Capture::Stopped;
                self.recorded_s = recorded_s;
                self.partial = None;
                self.level_dbfs = -100.0;
                if let Some(error) = error {
                    self.message = Some(error.to_string());
                }
            }
        }
    }

    /// A line cut at a change of speaker while recording: its parts replace it. A line being
    /// corrected stays as it is (the correction, once saved, replaces the parts); the highlight
    /// and the line being corrected keep their place.
    fn split_line(&mut self, start_s: f64, parts: Vec<TranscriptLine>) {
        let Some(index) = self.lines.iter().position(|l| l.start_s == start_s) else {
            return;
        };
        if parts.is_empty() || matches!(self.editing, Some((editing, _)) if editing == index) {
            return;
        }
        let added = parts.len() - 1;
        self.lines.splice(index..=index, parts);
        let shift = |at: usize| if at > index { at + added } else { at };
        self.selected = self.selected.map(shift);
        if let Some((editing, _)) = &mut self.editing {
            *editing = shift(*editing);
        }
    }

    /// The transcript with its speakers told apart (it replaces the lines: segments that
    /// spanned a change of speaker are now cut there).
    pub fn set_speakers(&mut self, lines: Vec<TranscriptLine>) {
        let count = speaker_count(&lines);
        self.lines = lines;
        self.selected = self
            .selected
            .map(|s| s.min(self.lines.len().saturating_sub(1)));
        self.editing = None;
        self.labelling = false;
        self.speaker_names.clear();
        self.message = Some(format!(
            "{count} speakers told apart; n names the highlighted line's speaker"
        ));
    }

    /// What the transcript shows before a line's text: its speaker's name or label and ": ",
    /// or nothing for unlabelled lines.
    pub fn speaker_prefix(&self, line: &TranscriptLine) -> String {
        match line.speaker {
            Some(_) => format!("{}: ", shown_speaker(&self.speaker_names, line.speaker)),
            None => String::new(),
        }
    }

    /// Takes in what the letter writer reports.
    pub fn apply_letter(&mut self, update: LetterUpdate) {
        match update {
            LetterUpdate::Status(status) => match &mut self.letter {
                LetterPane::Writing { status: now, .. } => *now = status,
                _ => {
                    self.letter = LetterPane::Writing {
                        status,
                        text: String::new(),
                    }
                }
            },
            LetterUpdate::Section(title) => {
                if let LetterPane::Writing { text, .. } = &mut self.letter {
                    if !text.is_empty() {
                        text.push_str("\n\n");
                    }
                    text.push_str("## ");
                    text.push_str(&title);
                    text.push('\n');
                }
            }
            LetterUpdate::Text(piece) => {
                if let LetterPane::Writing { text, .. } = &mut self.letter {
                    text.push_str(&piece);
                }
            }
            LetterUpdate::Done(letter) => {
                if let Some(warning) = letter.warnings.first() {
                    self.message = Some(format!("letter: {warning}"));
                }
                self.letter = LetterPane::Done {
                    letter,
                    saved: None,
                };
                self.letter_scroll = 0;
            }
            LetterUpdate::Failed(reason) => self.letter = LetterPane::Failed(reason),
            LetterUpdate::Cancelled => {
                self.letter = LetterPane::Idle;
                self.message = Some("letter cancelled".into());
            }
        }
    }

    /// Handles a key; returns what the runner must do.
    pub fn key(&mut self, key: KeyEvent) -> Vec<Action> {
        let ctrl_c =
            key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
        if let Some((index, mut input)) = self.editing.take() {
            return match key.code {
                KeyCode::Enter => self.finish_edit(index, &input.text),
                KeyCode::Esc => Vec::new(),
                _ if ctrl_c => self.request_quit(),
                _ => {
                    input.key(key);
                    self.editing = Some((index, input));
                    Vec::new()
                }
            };
        }
        match std::mem::replace(&mut self.overlay, Overlay::None) {
            Overlay::None => {}
            Overlay::Help => return Vec::new(),
            Overlay::Templates(row) => {
                match key.code {
                    KeyCode::Up | KeyCode::Char('k') => {
                        self.overlay = Overlay::Templates(row.saturating_sub(1));
                    }
                    KeyCode::Down | KeyCode::Char('j') => {
                        let last = self.templates.len().saturating_sub(1);
                        self.overlay = Overlay::Templates((row + 1).min(last));
                    }
                    KeyCode::Enter => {
                        self.template = row;
                        self.message = Some(format!("template: {}", self.template_title()));
                    }
                    _ => {}
                }
                return Vec::new();
            }
            Overlay::Attach(mut input) => {
                return match key.code {
                    KeyCode::Enter if !input.text.trim().is_empty() => {
                        vec![Action::Attach(expand_home(input.text.trim()))]
                    }
                    KeyCode::Esc | KeyCode::Enter => Vec::new(),
                    KeyCode::Tab => {
                        input = LineInput::new(&complete_path(&input.text));
                        self.overlay = Overlay::Attach(input);
                        Vec::new()
                    }
                    _ => {
                        input.key(key);
                        self.overlay = Overlay::Attach(input);
                        Vec::new()
                    }
                };
            }
            Overlay::ConfirmQuit => {
                return match key.code {
                    KeyCode::Char('y') | KeyCode::Char('Y') => vec![Action::Quit],
                    _ => Vec::new(),
                };
            }
            Overlay::Rename(label, mut input) => {
                return match key.code {
                    KeyCode::Enter if !input.text.trim().is_empty() => {
                        vec![Action::RenameSpeaker(label, input.text.trim().to_owned())]
                    }
                    KeyCode::Esc | KeyCode::Enter => Vec::new(),
                    _ => {
                        input.key(key);
                        self.overlay = Overlay::Rename(label, input);
                        Vec::new()
                    }
                };
            }
        }
        if ctrl_c {
            return self.request_quit();
        }
        self.message = None;
        match key.code {
            KeyCode::Char(' ') => self.toggle_capture(),
            KeyCode::Char('?') | KeyCode::F(1) => {
                self.overlay = Overlay::Help;
                Vec::new()
            }
            KeyCode::Char('q') => self.request_quit(),
            KeyCode::Tab => {
                self.focus = match self.focus {
                    Focus::Transcript => Focus::Attachments,
                    Focus::Attachments => Focus::Letter,
                    Focus::Letter => Focus::Transcript,
                };
                Vec::new()
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.move_selection(-1);
                Vec::new()
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.move_selection(1);
                Vec::new()
            }
            KeyCode::PageUp => {
                self.move_selection(-10);
                Vec::new()
            }
            KeyCode::PageDown => {
                self.move_selection(10);
                Vec::new()
            }
            KeyCode::Char('e') | KeyCode::Enter if self.focus == Focus::Transcript => {
                match self.current_line() {
                    Some(index) => {
                        self.selected = Some(index);
                        self.editing = Some((index, LineInput::new(&self.lines[index].text)));
                    }
                    None => self.message = Some("nothing to edit yet".into()),
                }
                Vec::new()
            }
            KeyCode::Char('n') if self.focus == Focus::Transcript => {
                let label = self
                    .current_line()
                    .and_then(|index| self.lines[index].speaker)
                    .map(|speaker| speaker_name(Some(speaker)));
                match label {
                    // Labels while recording are provisional: all are told apart again when
                    // it stops, and names given now would be lost.
                    Some(_) if self.capture != Capture::Stopped || self.labelling => {
                        self.message = Some(
                            "speakers can be named once recording stops and they are told apart"
                                .into(),
                        )
                    }
                    Some(label) => {
                        let now = self.speaker_names.get(&label).cloned().unwrap_or_default();
                        self.overlay = Overlay::Rename(label, LineInput::new(&now));
                    }
                    None if self.labelling => {
                        self.message = Some("speakers are still being told apart…".into())
                    }
                    None => self.message = Some(
                        "no speaker labels (dictate --speakers labels them when recording stops)"
                            .into(),
                    ),
                }
                Vec::new()
            }
            KeyCode::Char('a') => {
                self.overlay = Overlay::Attach(LineInput::default());
                Vec::new()
            }
            KeyCode::Char('d') | KeyCode::Delete
                if self.focus == Focus::Attachments && !self.attachments.is_empty() =>
            {
                vec![Action::Detach(
                    self.attachment.min(self.attachments.len() - 1),
                )]
            }
            KeyCode::Char('t') => {
                self.overlay = Overlay::Templates(self.template);
                Vec::new()
            }
            KeyCode::Char('g') => self.generate(),
            KeyCode::Esc if matches!(self.letter, LetterPane::Writing { .. }) => {
                vec![Action::CancelLetter]
            }
            KeyCode::Char('s') => match &self.letter {
                LetterPane::Done { .. } => vec![Action::SaveLetter],
                _ => {
                    self.message = Some("no finished letter to save (g writes one)".into());
                    Vec::new()
                }
            },
            _ => Vec::new(),
        }
    }

    fn finish_edit(&mut self, index: usize, text: &str) -> Vec<Action> {
        let text = text.trim();
        match self.lines.get_mut(index) {
            Some(line) if line.text != text && !text.is_empty() => {
                line.text = text.to_owned();
                vec![Action::Edit(line.clone())]
            }
            _ => Vec::new(),
        }
    }

    fn request_quit(&mut self) -> Vec<Action> {
        if self.has_unsaved_work() {
            self.overlay = Overlay::ConfirmQuit;
            Vec::new()
        } else {
            vec![Action::Quit]
        }
    }

    fn toggle_capture(&mut self) -> Vec<Action> {
        match self.capture {
            Capture::Paused => {
                self.capture = Capture::Recording;
                vec![Action::SetPaused(false)]
            }
            Capture::Recording => {
                self.capture = Capture::Paused;
                vec![Action::SetPaused(true)]
            }
            Capture::Finishing | Capture::Stopped => {
                self.message = Some("capture has ended".into());
                Vec::new()
            }
        }
    }

    fn generate(&mut self) -> Vec<Action> {
        if let LetterPane::Unavailable(reason) = &self.letter {
            self.message = Some(format!("letters are not available: {reason}"));
            return Vec::new();
        }
        if matches!(self.letter, LetterPane::Writing { .. }) {
            self.message = Some("a letter is being written (Esc stops it)".into());
            return Vec::new();
        }
        if self.lines.is_empty() {
            self.message = Some("the transcript is empty: dictate first (space)".into());
            return Vec::new();
        }
        let Some(template) = self.templates.get(self.template) else {
            self.message = Some("no letter templates".into());
            return Vec::new();
        };
        let job = LetterJob {
            template: template.name.clone(),
            transcript: self.lines.clone(),
            images: self.attachments.clone(),
        };
        self.letter = LetterPane::Writing {
            status: "starting".into(),
            text: String::new(),
        };
        self.letter_scroll = 0;
        self.focus = Focus::Letter;
        vec![Action::Generate(job)]
    }

    fn current_line(&self) -> Option<usize> {
        if self.lines.is_empty() {
            return None;
        }
        Some(
            self.selected
                .unwrap_or(self.lines.len() - 1)
                .min(self.lines.len() - 1),
        )
    }

    fn move_selection(&mut self, by: isize) {
        match self.focus {
            Focus::Transcript => {
                if let Some(current) = self.current_line() {
                    let last = self.lines.len() - 1;
                    let next = current.saturating_add_signed(by).min(last);
                    // Moving past the newest segment goes back to following new text.
                    self.selected = (next != last || by < 0).then_some(next);
                }
            }
            Focus::Attachments => {
                let last = self.attachments.len().saturating_sub(1);
                self.attachment = self.attachment.saturating_add_signed(by).min(last);
            }
            Focus::Letter => {
                self.letter_scroll = self.letter_scroll.saturating_add_signed(by as i16);
            }
        }
    }
}

fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(rest),
        None => PathBuf::from(path),
    }
}

/// Completes a path as a shell does: to the longest common prefix of the names in its directory
/// that start with what was typed, with a `/` after a lone directory.
pub fn complete_path(typed: &str) -> String {
    let expanded = expand_home(typed);
    let (dir, stem) = if typed.ends_with('/') || typed.is_empty() {
        (expanded.clone(), String::new())
    } else {
        (
            expanded
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            expanded
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    };
    let listing = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir.as_path()
    };
    let Ok(entries) = std::fs::read_dir(listing) else {
        return typed.to_owned();
    };
    let mut matches: Vec<(String, bool)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            (name.starts_with(&stem) && (!name.starts_with('.') || stem.starts_with('.')))
                .then(|| (name, entry.path().is_dir()))
        })
        .collect();
    matches.sort();
    let Some((first, _)) = matches.first() else {
        return typed.to_owned();
    };
    let mut common = first.clone();
    for (name, _) in &matches[1..] {
        let shared = common
            .chars()
            .zip(name.chars())
            .take_while(|(a, b)| a == b)
            .count();
        common = common.chars().take(shared).collect();
    }
    let Some(prefix) = typed.strip_suffix(stem.as_str()) else {
        return typed.to_owned();
    };
    let mut completed = format!("{prefix}{common}");
    if matches.len() == 1 && matches[0].1 {
        completed.push('/');
    }
    completed
}
