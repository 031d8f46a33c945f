//! The dictation loop: draws the screen, turns keys into actions, and feeds it what the live
//! pipeline and the letter writer report. Model work runs on other threads; this thread never
//! waits on it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};
use medscribe_pipeline::live::LiveSession;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use crate::app::{Action, App, Capture, LetterPane};
use crate::letter::{LetterUpdate, LetterWriter, TemplateChoice, WriteOutcome};
use crate::view::draw;

/// What can stop the TUI.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    /// The terminal could not be set up, read or drawn.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// Everything the dictation screen runs on.
pub struct Dictation {
    /// The live session (started paused).
    pub live: LiveSession,
    /// Templates to choose from.
    pub templates: Vec<TemplateChoice>,
    /// The template chosen at start.
    pub template: usize,
    /// The letter writer, or why there is none.
    pub writer: Result<Box<dyn LetterWriter>, String>,
    /// Set from outside (a SIGTERM handler) to quit as if the user had, unsaved work or not.
    pub terminate: Arc<AtomicBool>,
    /// With speakers to tell apart (the live session must then have been started with speaker
    /// models): run once capture has stopped (on another thread) with those models; it labels
    /// the session's transcript and returns the labelled lines, or why it could not.
    pub label_speakers: Option<SpeakerLabelling>,
}

/// Tells a finished session's speakers apart with the speaker models the live session gives
/// back, returning its labelled transcript.
pub type SpeakerLabelling = Box<
    dyn FnOnce(
            medscribe_pipeline::speakers::Speakers,
        ) -> Result<Vec<medscribe_pipeline::session::TranscriptLine>, String>
        + Send,
>;

/// What the user left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The session directory.
    pub session: PathBuf,
    /// Seconds recorded.
    pub recorded_s: f64,
    /// Final segments.
    pub segments: usize,
    /// Letters saved.
    pub letters: Vec<PathBuf>,
}

struct LetterTask {
    updates: Receiver<LetterUpdate>,
    cancel: Arc<AtomicBool>,
}

/// Runs the dictation screen until the user quits and the session's files are finished.
pub fn run(dictation: Dictation) -> Result<Outcome, TuiError> {
    let Dictation {
        mut live,
        templates,
        template,
        writer,
        terminate,
        mut label_speakers,
    } = dictation;
    let session = live.session().clone();
    let mut app = App::new(
        live.source_name(),
        &session.dir().display().to_string(),
        templates,
        template,
    );
    let writer = match writer {
        Ok(writer) => Some(Arc::new(Mutex::new(writer))),
        Err(reason) => {
            app.letter = LetterPane::Unavailable(reason);
            None
        }
    };
    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(error) => {
            live.stop();
            live.join();
            return Err(error.into());
        }
    };
    let mut letters = Vec::new();
    let mut task: Option<LetterTask> = None;
    let (attached_tx, attached) = crossbeam_channel::unbounded::<Result<PathBuf, String>>();
    let mut quit_requested = false;
    let (labelled_tx, labelled) = crossbeam_channel::bounded(1);
    let result =
        (|| -> Result<(), TuiError> {
            loop {
                while let Ok(event) = live.events().try_recv() {
                    app.apply(event);
                }
                if app.capture == Capture::Stopped {
                    if let Some(labelling) = label_speakers.take() {
                        match live.take_speakers() {
                            Some(models) => {
                                app.labelling = true;
                                app.message = Some("telling speakers apart…".into());
                                let done = labelled_tx.clone();
                                std::thread::spawn(move || {
                                    let _ = done.send(labelling(models));
                                });
                            }
                            None => app.message = Some(
                                "speakers not told apart: the live session had no speaker models"
                                    .into(),
                            ),
                        }
                    }
                }
                if let Ok(result) = labelled.try_recv() {
                    match result {
                        Ok(lines) => app.set_speakers(lines),
                        Err(error) => {
                            app.labelling = false;
                            app.message = Some(format!("speakers not told apart: {error}"));
                        }
                    }
                }
                while let Ok(result) = attached.try_recv() {
                    match result {
                        Ok(target) => {
                            let name = target
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default();
                            app.message = Some(format!("attached {name}"));
                            app.attachments.push(target);
                        }
                        Err(error) => app.message = Some(error),
                    }
                }
                if let Some(running) = &task {
                    loop {
                        match running.updates.try_recv() {
                            Ok(update) => app.apply_letter(update),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                task = None;
                                break;
                            }
                        }
                    }
                }
                if terminate.load(Ordering::SeqCst) && !quit_requested {
                    quit_requested = true;
                    live.stop();
                }
                // Quitting waits for the speakers' labels: they are being written into the session.
                if app.capture == Capture::Stopped && quit_requested && !app.labelling {
                    return Ok(());
                }
                terminal.draw(|frame| draw(frame, &app))?;
                if !event::poll(Duration::from_millis(40))? {
                    continue;
                }
                let key = match event::read()? {
                    Event::Key(key) if key.kind != KeyEventKind::Release => key,
                    _ => continue,
                };
                for action in app.key(key) {
                    match action {
                        Action::SetPaused(paused) => live.set_paused(paused),
                        Action::Edit(line) => {
                            if !live.edit(line.clone()) {
                                write_edit(&session, &line, &mut app);
                            }
                        }
                        Action::RenameSpeaker(label, name) => {
                            match session.rename_speaker(&label, &name) {
                                Ok(()) => {
                                    app.message = Some(format!("{label} is now {name}"));
                                    app.speaker_names.insert(label, name);
                                }
                                Err(error) => app.message = Some(error.to_string()),
                            }
                        }
                        Action::Attach(path) => {
                            app.message = Some(format!("attaching {}…", path.display()));
                            start_attach(&session, path, &attached_tx);
                        }
                        Action::Detach(index) => {
                            let removed = app.attachments.remove(index);
                            let _ = std::fs::remove_file(&removed);
                            app.attachment =
                                app.attachment.min(app.attachments.len().saturating_sub(1));
                        }
                        Action::Generate(job) => match &writer {
                            Some(writer) => task = Some(start_letter(Arc::clone(writer), job)),
                            None => app.letter = LetterPane::Failed("no letter model".into()),
                        },
                        Action::CancelLetter => {
                            if let Some(running) = &task {
                                running.cancel.store(true, Ordering::SeqCst);
                            }
                        }
                        Action::SaveLetter => save_letter(&session, &mut app, &mut letters),
                        Action::Quit => {
                            quit_requested = true;
                            if let Some(running) = &task {
                                running.cancel.store(true, Ordering::SeqCst);
                            }
                            live.stop();
                            if app.capture != Capture::Stopped {
                                app.capture = Capture::Finishing;
                            }
                            app.message = Some("finishing the recording…".into());
                        }
                    }
                }
            }
        })();
    ratatui::try_restore()?;
    result?;
    let segments = app.lines.len();
    let recorded_s = app.recorded_s;
    live.join();
    Ok(Outcome {
        session: session.dir().to_path_buf(),
        recorded_s,
        segments,
        letters,
    })
}

fn write_edit(
    session: &medscribe_pipeline::session::Session,
    line: &medscribe_pipeline::session::TranscriptLine,
    app: &mut App,
) {
    if let Err(error) = session.correct_line(line.start_s, &line.text) {
        app.message = Some(format!("cannot save the correction: {error}"));
    }
}

/// Attaches an image on a worker thread: reading a large file, or a path that turns out to be a
/// FIFO or a slow network share, must never freeze the screen.
fn start_attach(
    session: &medscribe_pipeline::session::Session,
    path: PathBuf,
    done: &crossbeam_channel::Sender<Result<PathBuf, String>>,
) {
    let session = session.clone();
    let done = done.clone();
    let spawned = std::thread::Builder::new()
        .name("medscribe-attach".into())
        .spawn({
            let done = done.clone();
            move || {
                let _ = done.send(session.attach(&path).map_err(|e| e.to_string()));
            }
        });
    if let Err(error) = spawned {
        let _ = done.send(Err(format!("cannot attach: {error}")));
    }
}

fn start_letter(
    writer: Arc<Mutex<Box<dyn LetterWriter>>>,
    job: crate::letter::LetterJob,
) -> LetterTask {
    let (sender, updates) = crossbeam_channel::unbounded();
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&cancel);
    let spawned = std::thread::Builder::new()
        .name("medscribe-letter".into())
        .spawn(move || {
            let result = match writer.lock() {
                Ok(mut writer) => writer.write(&job, &stop, &mut |update| {
                    let _ = sender.send(update);
                }),
                Err(_) => Err("the letter writer failed earlier".into()),
            };
            let _ = sender.send(match result {
                Ok(WriteOutcome::Finished(letter)) => LetterUpdate::Done(letter),
                Ok(WriteOutcome::Cancelled) => LetterUpdate::Cancelled,
                Err(error) => LetterUpdate::Failed(error_chain(error.as_ref())),
            });
        });
    if let Err(error) = spawned {
        let (sender, updates) = crossbeam_channel::unbounded();
        let _ = sender.send(LetterUpdate::Failed(format!(
            "cannot start the letter thread: {error}"
        )));
        return LetterTask { updates, cancel };
    }
    LetterTask { updates, cancel }
}

/// An error and its causes on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

fn save_letter(
    session: &medscribe_pipeline::session::Session,
    app: &mut App,
    saved_letters: &mut Vec<PathBuf>,
) {
    let name = app
        .templates
        .get(app.template)
        .map_or("letter".to_string(), |t| t.name.clone());
    let LetterPane::Done { letter, saved } = &mut app.letter else {
        return;
    };
    match session.save_letter(&name, &letter.markdown, &letter.json, &letter.fhir) {
        Ok(markdown) => {
            app.message = Some(format!("saved {}", markdown.display()));
            *saved = Some(markdown.clone());
            saved_letters.push(markdown);
        }
        Err(error) => app.message = Some(format!("cannot save the letter: {error}")),
    }
}
