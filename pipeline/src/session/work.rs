//! What front ends do with a session once it exists: correct a line, save a letter written from
//! it, export its transcript, say what state it is in. Kept here so that the terminal UI, the
//! command line and a server change session files in one way.

use std::path::PathBuf;

use medscribe_asr::Transcript;

use super::{session_error, Session, SessionMeta, SessionState};
use crate::error::Result;
use crate::job::FileTranscript;
use crate::output::write_private_atomically;
use crate::render::{render, TranscriptFormat};
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
            },
            format,
        );
        Ok(Export { text, warning })
    }
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
}
