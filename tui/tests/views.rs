//! Every view of the dictation screen drawn on ratatui's TestBackend at 80x24 and compared with
//! snapshots in `tests/snapshots/` (regenerate with MEDSCRIBE_BLESS=1 after a deliberate change),
//! and the main key flows driven through `App::key`.

use std::path::{Path, PathBuf};

use medscribe_pipeline::live::LiveEvent;
use medscribe_pipeline::session::TranscriptLine;
use medscribe_tui::app::{Action, App, Capture, Focus, LetterPane, Overlay};
use medscribe_tui::view::draw;
use medscribe_tui::{FinishedLetter, LetterUpdate, TemplateChoice};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;

fn templates() -> Vec<TemplateChoice> {
    [
        ("referral", "Referral letter"),
        ("discharge", "Discharge letter"),
        ("soap", "SOAP note"),
    ]
    .iter()
    .map(|(name, title)| TemplateChoice {
        name: (*name).into(),
        title: (*title).into(),
    })
    .collect()
}

fn app() -> App {
    App::new(
        "USB Microphone",
        "/data/sessions/2026-11-23T10-00-00Z",
        templates(),
        0,
    )
}

fn line(start_s: f64, text: &str) -> TranscriptLine {
    TranscriptLine {
        speaker: None,
        start_s,
        end_s: start_s + 3.0,
        text: text.into(),
        raw_text: text.into(),
    }
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn press(app: &mut App, keys: &str) -> Vec<Action> {
    keys.chars()
        .flat_map(|c| app.key(key(KeyCode::Char(c))))
        .collect()
}

fn render(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| draw(frame, app)).unwrap();
    terminal
}

fn screen_text(terminal: &Terminal<TestBackend>) -> String {
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        let row: String = (0..buffer.area.width)
            .map(|x| buffer[(x, y)].symbol().to_string())
            .collect();
        text.push_str(row.trim_end());
        text.push('\n');
    }
    text
}

/// Compares the 80x24 screen with its snapshot.
fn assert_snapshot(app: &App, name: &str) -> Terminal<TestBackend> {
    let terminal = render(app, 80, 24);
    let text = screen_text(&terminal);
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("MEDSCRIBE_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{}: missing snapshot (MEDSCRIBE_BLESS=1 writes it)",
            path.display()
        )
    });
    assert_eq!(
        text,
        expected,
        "{name}: screen differs from {}",
        path.display()
    );
    terminal
}

fn recording_app() -> App {
    let mut app = app();
    press(&mut app, " ");
    app.apply(LiveEvent::Level {
        dbfs: -18.0,
        recorded_s: 75.0,
    });
    app.apply(LiveEvent::Final(line(1.0, "Referral to cardiology.")));
    app.apply(LiveEvent::Final(line(
        4.5,
        "Mr Jones is a 62-year-old man with exertional chest pain for three weeks.",
    )));
    app.apply(LiveEvent::Partial {
        start_s: 9.0,
        end_s: 11.0,
        text: "He takes amlodipine".into(),
    });
    app
}

fn finished_letter() -> FinishedLetter {
    FinishedLetter {
        markdown: "# Referral letter\n\n## Reason for referral\n\nExertional chest pain for three weeks.\n\n## Plan\n\nPlease assess for stable angina.\n".into(),
        json: "{}".into(),
        fhir: "{}".into(),
        warnings: vec![],
    }
}

#[test]
fn ready_screen() {
    let app = app();
    let terminal = assert_snapshot(&app, "ready");
    let text = screen_text(&terminal);
    assert!(text.contains("PAUSED") && text.contains("Press space and speak."));
}

#[test]
fn recording_screen_shows_finals_and_a_styled_partial() {
    let app = recording_app();
    let terminal = assert_snapshot(&app, "recording");
    let buffer = terminal.backend().buffer();
    let text = screen_text(&terminal);
    let row = text.lines().position(|l| l.contains("He takes")).unwrap() as u16;
    let cell = &buffer[(3, row)];
    assert!(
        cell.modifier.contains(Modifier::ITALIC),
        "partial text is styled apart"
    );
    assert_eq!(buffer[(0, 0)].fg, Color::Red, "REC marker");
}

#[test]
fn editing_a_segment_in_place() {
    let mut app = recording_app();
    press(&mut app, "k");
    assert_eq!(app.selected, Some(0));
    assert!(press(&mut app, "e").is_empty());
    for _ in 0..".".len() {
        app.key(key(KeyCode::Backspace));
    }
    press(&mut app, " letter");
    let mut terminal = assert_snapshot(&app, "editing");
    terminal.backend_mut().assert_cursor_position((36, 2));
    let actions = app.key(key(KeyCode::Enter));
    assert_eq!(
        actions,
        vec![Action::Edit(TranscriptLine {
            text: "Referral to cardiology letter".into(),
            ..line(1.0, "Referral to cardiology.")
        })]
    );
    assert_eq!(app.lines[0].text, "Referral to cardiology letter");
    // Esc drops a correction.
    press(&mut app, "e");
    press(&mut app, "xyz");
    assert!(app.key(key(KeyCode::Esc)).is_empty());
    assert_eq!(app.lines[0].text, "Referral to cardiology letter");
}

#[test]
fn help_overlay_opens_and_any_key_closes_it() {
    let mut app = recording_app();
    press(&mut app, "?");
    assert_eq!(app.overlay, Overlay::Help);
    assert_snapshot(&app, "help");
    assert!(
        press(&mut app, "q").is_empty(),
        "q closes help, does not quit"
    );
    assert_eq!(app.overlay, Overlay::None);
}

#[test]
fn template_picker() {
    let mut app = recording_app();
    press(&mut app, "t");
    app.key(key(KeyCode::Down));
    app.key(key(KeyCode::Down));
    app.key(key(KeyCode::Down));
    assert_eq!(app.overlay, Overlay::Templates(2));
    assert_snapshot(&app, "templates");
    app.key(key(KeyCode::Enter));
    assert_eq!(app.template_title(), "SOAP note");
    assert_eq!(app.message.as_deref(), Some("template: SOAP note"));
}

#[test]
fn attaching_an_image_with_path_completion() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chest-xray.png"), b"png").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
    let mut app = recording_app();
    press(&mut app, "a");
    let typed = format!("{}/ch", dir.path().display());
    press(&mut app, &typed);
    app.key(key(KeyCode::Tab));
    let Overlay::Attach(input) = &app.overlay else {
        panic!("attach overlay open");
    };
    let completed = format!("{}/chest-xray.png", dir.path().display());
    assert_eq!(input.text, completed);
    let terminal = render(&app, 80, 24);
    assert!(screen_text(&terminal).contains("Attach an image"));
    assert_eq!(
        app.key(key(KeyCode::Enter)),
        vec![Action::Attach(PathBuf::from(&completed))]
    );
    app.attachments
        .push(PathBuf::from("/s/attachments/chest-xray.png"));
    app.focus = Focus::Attachments;
    assert_snapshot(&app, "attachments");
    assert_eq!(press(&mut app, "d"), vec![Action::Detach(0)]);
}

#[test]
fn letter_streams_then_saves_and_quit_asks_while_unsaved() {
    let mut app = recording_app();
    let actions = press(&mut app, "g");
    let [Action::Generate(job)] = actions.as_slice() else {
        panic!("{actions:?}");
    };
    assert_eq!(job.template, "referral");
    assert_eq!(job.transcript.len(), 2);
    app.apply_letter(LetterUpdate::Status("read 812 prompt tokens".into()));
    app.apply_letter(LetterUpdate::Section("Reason for referral".into()));
    app.apply_letter(LetterUpdate::Text("Exertional chest".into()));
    app.apply_letter(LetterUpdate::Text(" pain.".into()));
    assert_snapshot(&app, "letter-writing");
    assert_eq!(press(&mut app, "g"), vec![], "one letter at a time");
    assert_eq!(app.key(key(KeyCode::Esc)), vec![Action::CancelLetter]);
    app.apply_letter(LetterUpdate::Done(finished_letter()));
    assert_snapshot(&app, "letter-done");
    assert_eq!(press(&mut app, "q"), vec![], "asks first");
    assert_eq!(app.overlay, Overlay::ConfirmQuit);
    assert_snapshot(&app, "confirm-quit");
    assert_eq!(press(&mut app, "n"), vec![]);
    assert_eq!(press(&mut app, "s"), vec![Action::SaveLetter]);
    if let LetterPane::Done { saved, .. } = &mut app.letter {
        *saved = Some(PathBuf::from("/s/letters/referral.md"));
    }
    assert_eq!(press(&mut app, "q"), vec![Action::Quit]);
}

#[test]
fn removed_facts_are_highlighted_at_the_top_of_the_letter() {
    let mut app = recording_app();
    press(&mut app, "g");
    let mut letter = finished_letter();
    letter.warnings =
        vec!["removed a medication from \"Plan\" that the transcript does not support".into()];
    app.apply_letter(LetterUpdate::Done(letter));
    let terminal = assert_snapshot(&app, "letter-removed-facts");
    let buffer = terminal.backend().buffer();
    // The warning's row is drawn black on yellow in the letter pane.
    let row = (0..buffer.area.height)
        .find(|&y| {
            (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect::<String>()
                .contains("! removed a medication")
        })
        .expect("the warning is on screen");
    let x = (0..buffer.area.width)
        .find(|&x| buffer[(x, row)].symbol() == "!")
        .unwrap();
    assert_eq!(buffer[(x, row)].bg, ratatui::style::Color::Yellow);
}

#[test]
fn space_toggles_capture_and_ctrl_c_quits() {
    let mut app = app();
    assert_eq!(press(&mut app, " "), vec![Action::SetPaused(false)]);
    assert_eq!(app.capture, Capture::Recording);
    assert_eq!(press(&mut app, " "), vec![Action::SetPaused(true)]);
    assert_eq!(press(&mut app, "g"), vec![], "nothing to write from");
    assert!(app.message.as_deref().unwrap().contains("empty"));
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(app.key(ctrl_c), vec![Action::Quit]);
}

#[test]
fn stopped_with_an_error_and_letters_unavailable() {
    let mut app = recording_app();
    app.letter = LetterPane::Unavailable("the default letter model is not installed".into());
    app.apply(LiveEvent::Stopped {
        recorded_s: 80.0,
        error: Some(medscribe_pipeline::live::LiveFailure::Capture(
            "USB Microphone: device unplugged".into(),
        )),
    });
    assert_snapshot(&app, "stopped");
    assert_eq!(press(&mut app, "g"), vec![]);
    assert!(app.message.as_deref().unwrap().contains("not available"));
}

#[test]
fn every_size_draws_without_panicking() {
    let mut app = recording_app();
    app.apply_letter(LetterUpdate::Status("x".into()));
    app.apply_letter(LetterUpdate::Done(finished_letter()));
    for (width, height) in [(80, 24), (120, 40), (40, 12), (20, 8), (1, 1), (200, 3)] {
        for overlay in [
            Overlay::None,
            Overlay::Help,
            Overlay::Templates(1),
            Overlay::ConfirmQuit,
        ] {
            app.overlay = overlay;
            render(&app, width, height);
        }
    }
    // A resize keeps the newest text in view.
    let text = screen_text(&render(&recording_app(), 60, 12));
    assert!(text.contains("He takes"), "{text}");
}

/// Cancelling a letter (Esc) is not a failure: the pane goes back to where it was, and says so.
#[test]
fn a_cancelled_letter_is_not_shown_as_failed() {
    let mut app = recording_app();
    let actions = press(&mut app, "g");
    assert!(
        matches!(actions.as_slice(), [Action::Generate(_)]),
        "{actions:?}"
    );
    app.apply_letter(LetterUpdate::Text("Exertional".into()));
    assert_eq!(app.key(key(KeyCode::Esc)), vec![Action::CancelLetter]);
    app.apply_letter(LetterUpdate::Cancelled);
    assert_eq!(app.letter, LetterPane::Idle);
    assert_eq!(app.message.as_deref(), Some("letter cancelled"));
    let actions = press(&mut app, "g");
    assert!(
        matches!(actions.as_slice(), [Action::Generate(_)]),
        "a new letter can start"
    );
}

#[test]
fn lines_take_their_speakers_while_recording_and_are_named_once_it_stops() {
    let mut app = recording_app();
    // A label for the second line arrives while recording goes on.
    app.apply(LiveEvent::Speaker(TranscriptLine {
        speaker: Some(1),
        ..line(4.5, "ignored: the label is what counts")
    }));
    let text = screen_text(&render(&app, 100, 24));
    assert!(text.contains("S2: Mr Jones is a 62-year-old"), "{text}");
    assert!(!text.contains("S1: Referral"), "{text}");
    // Labels may still change: no naming until recording stops.
    press(&mut app, "n");
    assert_eq!(app.overlay, Overlay::None);
    assert!(
        app.message
            .as_deref()
            .unwrap()
            .contains("once recording stops"),
        "{:?}",
        app.message
    );
    // A later label replaces it.
    app.apply(LiveEvent::Speaker(TranscriptLine {
        speaker: Some(0),
        ..line(4.5, "")
    }));
    let text = screen_text(&render(&app, 100, 24));
    assert!(text.contains("S1: Mr Jones"), "{text}");
}

#[test]
fn a_line_cut_at_a_change_of_speaker_while_recording_shows_its_parts() {
    let mut app = recording_app();
    press(&mut app, "k");
    assert_eq!(app.selected, Some(0));
    let part = |start_s: f64, end_s: f64, text: &str, speaker: usize| TranscriptLine {
        speaker: Some(speaker),
        end_s,
        ..line(start_s, text)
    };
    // The first line is cut in two: the second line moves down, the highlight stays.
    app.apply(LiveEvent::Split {
        start_s: 1.0,
        lines: vec![
            part(1.0, 2.5, "Referral to", 0),
            part(2.5, 4.0, "cardiology.", 1),
        ],
    });
    assert_eq!(app.lines.len(), 3);
    assert_eq!(app.selected, Some(0));
    let text = screen_text(&render(&app, 100, 24));
    assert!(text.contains("S1: Referral to"), "{text}");
    assert!(text.contains("S2: cardiology."), "{text}");
    assert!(text.contains("Mr Jones is a 62-year-old"), "{text}");
    // A line being corrected is not cut under the user's cursor; the correction is kept.
    press(&mut app, "j");
    press(&mut app, "j");
    press(&mut app, "e");
    assert_eq!(app.editing.as_ref().map(|(i, _)| *i), Some(2));
    app.apply(LiveEvent::Split {
        start_s: 4.5,
        lines: vec![part(4.5, 6.0, "Mr Jones", 0), part(6.0, 7.5, "is", 1)],
    });
    assert_eq!(app.lines.len(), 3);
    press(&mut app, " today");
    let actions = app.key(key(KeyCode::Enter));
    let [Action::Edit(edited)] = actions.as_slice() else {
        panic!("{actions:?}");
    };
    assert_eq!((edited.start_s, edited.end_s), (4.5, 7.5));
    assert!(
        edited.text.ends_with("three weeks. today"),
        "{}",
        edited.text
    );
    // A split while another line is corrected keeps that line's place.
    press(&mut app, "e");
    app.apply(LiveEvent::Split {
        start_s: 1.0,
        lines: vec![part(1.0, 2.0, "Referral", 0), part(2.0, 2.5, "to", 1)],
    });
    assert_eq!(app.editing.as_ref().map(|(i, _)| *i), Some(3));
    assert_eq!(
        app.lines[3].text,
        "Mr Jones is a 62-year-old man with exertional chest pain for three weeks. today"
    );
}

#[test]
fn speakers_are_labelled_after_capture_and_named_in_place() {
    let mut app = recording_app();
    // Unlabelled lines have no speaker to name.
    press(&mut app, "n");
    assert_eq!(app.overlay, Overlay::None);
    assert!(app.message.as_deref().unwrap().contains("--speakers"));
    press(&mut app, " ");
    app.apply(LiveEvent::Stopped {
        recorded_s: 12.0,
        error: None,
    });
    app.labelling = true;
    let text = screen_text(&render(&app, 80, 24));
    assert!(text.contains("SPEAKERS"), "{text}");
    // The labelled transcript replaces the lines.
    let labelled = |start_s: f64, text: &str, speaker: usize| TranscriptLine {
        speaker: Some(speaker),
        ..line(start_s, text)
    };
    app.set_speakers(vec![
        labelled(1.0, "What brings you in today?", 0),
        labelled(4.5, "Chest pain when I climb stairs.", 1),
    ]);
    assert!(!app.labelling);
    assert!(app.message.as_deref().unwrap().starts_with("2 speakers"));
    press(&mut app, "k");
    let actions = press(&mut app, "n");
    assert!(actions.is_empty());
    assert!(matches!(&app.overlay, Overlay::Rename(label, _) if label == "S1"));
    press(&mut app, "Dr Patel");
    let terminal = assert_snapshot(&app, "naming-a-speaker");
    let text = screen_text(&terminal);
    assert!(text.contains("Name speaker S1"), "{text}");
    assert_eq!(
        app.key(key(KeyCode::Enter)),
        vec![Action::RenameSpeaker("S1".into(), "Dr Patel".into())]
    );
    // The runner saves it in the session and tells the app.
    app.speaker_names.insert("S1".into(), "Dr Patel".into());
    let text = screen_text(&render(&app, 80, 24));
    assert!(
        text.contains("Dr Patel: What brings you in today?"),
        "{text}"
    );
    assert!(text.contains("S2: Chest pain"), "{text}");
    // Editing a labelled line keeps the cursor after the name.
    press(&mut app, "e");
    let mut terminal = render(&app, 80, 24);
    let row = screen_text(&terminal)
        .lines()
        .position(|l| l.contains("Dr Patel:"))
        .unwrap() as u16;
    let prefix = "│00:01 Dr Patel: What brings you in today?".chars().count() as u16;
    terminal.backend_mut().assert_cursor_position((prefix, row));
    // Esc leaves a name unchanged.
    app.key(key(KeyCode::Esc));
    press(&mut app, "n");
    app.key(key(KeyCode::Esc));
    assert_eq!(app.overlay, Overlay::None);
}
