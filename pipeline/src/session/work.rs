//! What front ends do with a session once it exists: correct a line, save a letter written from
//! it, export its transcript, say what state it is in. Kept here so that the terminal UI, the
//! command line and a server change session files in one way.

use std::path::PathBuf;

use medscribe_asr::{SpeechRecognizer, Transcript};

use super::{session_error, Session, SessionMeta, SessionState};
use crate::error::Result;
use crate::job::FileTranscript;
use crate::output::write_private_atomically;
use crate::render::{render, speaker_count, speaker_name, TranscriptFormat};
use crate::speakers::Speakers;
use crate::wav::WavSource;

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStatus {
    /// Capture ended and every segment was transcribed.
    Complete,
    /// A process is recording it now.
    Recording,
    /// The process recording it died; `medscribe sessions recover` finishes it.
    Interrupted,
}

impl std::fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Complete => f.write_str("complete"),
            Self::Recording => f.write_str("recording"),
            Self::Interrupted => f.write_str("interrupted (sessions recover)"),
        }
    }
}

/// A session's transcript rendered for export.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// The rendered transcript.
    pub text: String,
    /// Set when the session is not finished, so the export may lack its end.
    pub warning: Option<String>,
}

impl Session {
    /// Where the session stands, by what its `session.json` says (`meta`) and its lock.
    pub fn status(&self, meta: &SessionMeta) -> SessionStatus {
        if meta.state == SessionState::Complete {
            SessionStatus::Complete
        } else if self.is_interrupted(meta) {
            SessionStatus::Interrupted
        } else {
            SessionStatus::Recording
        }
    }

    /// Length of the recorded audio, seconds, from its header (`None` if unreadable).
    pub fn audio_duration_s(&self) -> Option<f64> {
        WavSource::open(&self.audio_path())
            .ok()
            .map(|wav| wav.info().duration_s())
    }

    /// Replaces the text of the line starting at `start_s` with the user's correction (the
    /// model's `raw_text` is kept), rewriting the transcript atomically.
    pub fn correct_line(&self, start_s: f64, text: &str) -> Result<()> {
        let mut lines = self.transcript()?;
        let Some(line) = lines.iter_mut().find(|l| l.start_s == start_s) else {
            return Err(session_error(
                &self.transcript_path(),
                format!("no line starts at {start_s:.2} s"),
            ));
        };
        line.text = text.to_owned();
        self.write_transcript(&lines)
    }

    /// Saves a letter written from this session under `letters/` as `NAME.md`, `NAME.json` and
    /// `NAME.fhir.json` (mode 0600; `NAME-2`... when taken) and returns the Markdown file. `name`
    /// is a template name; anything but letters, digits, `-` and `_` becomes `-`, so it can never
    /// leave the directory.
    pub fn save_letter(
        &self,
        name: &str,
        markdown: &str,
        json: &str,
        fhir: &str,
    ) -> Result<PathBuf> {
        let stem: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let stem = if stem.trim_matches('-').is_empty() {
            "letter".to_string()
        } else {
            stem
        };
        let dir = self.letters_dir();
        let mut n = 1;
        let mut markdown_path = dir.join(format!("{stem}.md"));
        while markdown_path.exists() {
            n += 1;
            markdown_path = dir.join(format!("{stem}-{n}.md"));
        }
        write_private_atomically(&markdown_path, markdown.as_bytes())?;
        write_private_atomically(&markdown_path.with_extension("json"), json.as_bytes())?;
        write_private_atomically(&markdown_path.with_extension("fhir.json"), fhir.as_bytes())?;
        Ok(markdown_path)
    }

    /// The transcript as `format`, with a warning when the session is unfinished.
    pub fn export(&self, format: TranscriptFormat) -> Result<Export> {
        let meta = self.meta()?;
        let warning = (meta.state == SessionState::Recording).then(|| {
            // Its lock says whether anyone is still writing it.
            let why = if self.is_being_recorded(&meta) {
                "is still being recorded"
            } else {
                "was interrupted (medscribe sessions recover finishes it)"
            };
            format!(
                "session {} {why}; the export holds what was transcribed so far",
                self.id()
            )
        });
        let segments = self.transcript()?;
        let join = |pick: fn(&super::TranscriptLine) -> &str| {
            segments.iter().map(pick).collect::<Vec<_>>().join(" ")
        };
        let transcript = Transcript {
            raw_text: join(|l| &l.raw_text),
            text: join(|l| &l.text),
            duration_s: self.audio_duration_s().unwrap_or(meta.transcribed_s),
            segments,
        };
        let text = render(
            &FileTranscript {
                file: self.audio_path(),
                model: meta.asr_model,
                transcript,
                processing_s: 0.0,
                warnings: Vec::new(),
                speaker_names: meta.speaker_names,
            },
            format,
        );
        Ok(Export { text, warning })
    }

    /// Tells the speakers of the recorded audio apart and writes each line's speaker into
    /// `transcript.jsonl`; a line that spans a change of speaker is cut there and its parts
    /// transcribed again with `recognizer`. Returns how many speakers were found. Labels may be
    /// numbered differently from an earlier pass, so names given before are dropped.
    pub fn label_speakers(
        &self,
        speakers: &mut Speakers,
        recognizer: &mut dyn SpeechRecognizer,
    ) -> Result<usize> {
        let mut meta = self.meta()?;
        if self.is_being_recorded(&meta) {
            return Err(session_error(
                self.dir(),
                "is still being recorded; speakers are told apart once it ends",
            ));
        }
        let segments = self.transcript()?;
        let mut transcript = Transcript {
            raw_text: String::new(),
            text: String::new(),
            duration_s: meta.transcribed_s,
            segments,
        };
        speakers.label(&self.audio_path(), &mut transcript, recognizer)?;
        self.write_transcript(&transcript.segments)?;
        if !meta.speaker_names.is_empty() {
            meta.speaker_names.clear();
            self.write_meta(&meta)?;
        }
        Ok(speaker_count(&transcript.segments))
    }

    /// Gives speaker `label` (`S1`, as exports show it) a `name` ("Dr Patel") that every export
    /// and view of the session shows instead.
    pub fn rename_speaker(&self, label: &str, name: &str) -> Result<()> {
        let mut meta = self.meta()?;
        if self.is_being_recorded(&meta) {
            return Err(session_error(
                self.dir(),
                "is still being recorded; rename speakers once it ends",
            ));
        }
        let mut known: Vec<String> = self
            .transcript()?
            .iter()
            .filter_map(|l| l.speaker)
            .map(|s| speaker_name(Some(s)))
            .collect();
        known.sort();
        known.dedup();
        if known.is_empty() {
            return Err(session_error(
                self.dir(),
                "has no speaker labels yet (medscribe sessions speakers tells them apart)",
            ));
        }
        if !known.iter().any(|k| k == label) {
            return Err(session_error(
                self.dir(),
                format!("has no speaker {label} (it has {})", known.join(", ")),
            ));
        }
        let name = valid_speaker_name(name).map_err(|why| session_error(self.dir(), why))?;
        meta.speaker_names.insert(label.to_owned(), name);
        self.write_meta(&meta)
    }
}

/// Longest speaker name kept.
const MAX_SPEAKER_NAME: usize = 60;

/// A speaker's name as given, trimmed; refused when it is empty, too long, or holds what would
/// break a transcript file (line breaks, control characters, the `<` `>` of subtitle voice tags).
fn valid_speaker_name(name: &str) -> std::result::Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("a speaker's name cannot be empty".into());
    }
    if name.chars().count() > MAX_SPEAKER_NAME {
        return Err(format!(
            "a speaker's name is at most {MAX_SPEAKER_NAME} characters"
        ));
    }
    if name.chars().any(|c| c.is_control() || c == '<' || c == '>') {
        return Err("a speaker's name cannot hold line breaks, control characters, < or >".into());
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datadir::DataDir;
    use crate::session::tests::line;
    use crate::session::TranscriptLine;

    #[test]
    fn a_correction_changes_only_that_lines_text() {
        let data = tempfile::tempdir().unwrap();
        let session = Session::create(&DataDir::at(data.path()), "2026-11-25T10:00:00Z").unwrap();
        let misheard = TranscriptLine {
            raw_text: "amla depine 5 mg.".into(),
            ..line(0.0, "Amla depine 5 mg.")
        };
        session.append_transcript(&misheard).unwrap();
        session
            .append_transcript(&line(2.0, "Review in six weeks."))
            .unwrap();
        session.correct_line(0.0, "Amlodipine 5 mg.").unwrap();
        let lines = session.transcript().unwrap();
        assert_eq!(lines[0].text, "Amlodipine 5 mg.");
        assert_eq!(lines[0].raw_text, "amla depine 5 mg.");
        assert_eq!(lines[1], line(2.0, "Review in six weeks."));
        assert!(session.correct_line(7.0, "nothing there").is_err());
    }

    #[test]
    fn letters_are_saved_inside_the_session_under_fresh_names() {
        let data = tempfile::tempdir().unwrap();
        let session = Session::create(&DataDir::at(data.path()), "2026-11-25T10:00:00Z").unwrap();
        let first = session.save_letter("referral", "# A", "{}", "{}").unwrap();
        let second = session.save_letter("referral", "# B", "{}", "{}").unwrap();
        let hostile = session
            .save_letter("../../etc/passwd", "# C", "{}", "{}")
            .unwrap();
        assert_eq!(first, session.letters_dir().join("referral.md"));
        assert_eq!(second, session.letters_dir().join("referral-2.md"));
        assert_eq!(hostile.parent(), Some(session.letters_dir().as_path()));
        assert_eq!(std::fs::read_to_string(&second).unwrap(), "# B");
        assert!(session.letters_dir().join("referral-2.fhir.json").is_file());
    }

    #[test]
    fn a_named_speaker_is_shown_by_name_in_every_export_and_bad_names_are_refused() {
        let data = tempfile::tempdir().unwrap();
        let session = Session::create(&DataDir::at(data.path()), "2026-11-25T10:00:00Z").unwrap();
        session
            .write_meta(&crate::session::tests::complete_meta(&session))
            .unwrap();
        // Unlabelled: nothing to rename.
        session
            .append_transcript(&line(0.0, "Good morning."))
            .unwrap();
        assert!(session.rename_speaker("S1", "Dr Patel").is_err());
        let labelled = |start: f64, text: &str, speaker: usize| TranscriptLine {
            speaker: Some(speaker),
            ..line(start, text)
        };
        session
            .write_transcript(&[
                labelled(0.0, "Good morning.", 0),
                labelled(2.0, "I have a cough.", 1),
            ])
            .unwrap();
        session.rename_speaker("S1", "  Dr Patel ").unwrap();
        let txt = session.export(TranscriptFormat::Txt).unwrap().text;
        assert_eq!(txt, "Dr Patel: Good morning.\nS2: I have a cough.\n");
        let vtt = session.export(TranscriptFormat::Vtt).unwrap().text;
        assert!(vtt.contains("<v Dr Patel>Good morning."), "{vtt}");
        let srt = session.export(TranscriptFormat::Srt).unwrap().text;
        assert!(srt.contains("<v Dr Patel>Good morning."), "{srt}");
        let json: serde_json::Value =
            serde_json::from_str(&session.export(TranscriptFormat::Json).unwrap().text).unwrap();
        assert_eq!(json["segments"][0]["speaker"], "S1");
        assert_eq!(json["segments"][0]["speaker_name"], "Dr Patel");
        assert!(json["segments"][1].get("speaker_name").is_none());
        assert_eq!(json["speaker_names"]["S1"], "Dr Patel");
        // The name is kept in session.json.
        assert_eq!(session.meta().unwrap().speaker_names["S1"], "Dr Patel");
        for bad in ["", "   ", "Dr\nPatel", "<v S2>", &"x".repeat(61)] {
            assert!(session.rename_speaker("S2", bad).is_err(), "{bad:?}");
        }
        let unknown = session
            .rename_speaker("S3", "Nurse")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("S1, S2"), "{unknown}");
    }
}
