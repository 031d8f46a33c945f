//! Transcript files: plain text, JSON, SubRip (.srt) and WebVTT (.vtt).

use std::str::FromStr;

use crate::job::FileTranscript;

/// A transcript file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TranscriptFormat {
    /// The formatted text.
    Txt,
    /// One JSON object: file, duration_s, model, text, raw_text, segments.
    Json,
    /// SubRip subtitles, one cue per segment.
    Srt,
    /// WebVTT subtitles, one cue per segment.
    Vtt,
}

impl TranscriptFormat {
    /// File name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Txt => "txt",
            Self::Json => "json",
            Self::Srt => "srt",
            Self::Vtt => "vtt",
        }
    }
}

impl FromStr for TranscriptFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "txt" | "text" => Ok(Self::Txt),
            "json" => Ok(Self::Json),
            "srt" => Ok(Self::Srt),
            "vtt" | "webvtt" => Ok(Self::Vtt),
            other => Err(format!("unknown format {other:?} (txt, json, srt or vtt)")),
        }
    }
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// `HH:MM:SS<sep>mmm`.
fn timestamp(seconds: f64, separator: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{separator}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The transcript as a file of `format`.
pub fn render(done: &FileTranscript, format: TranscriptFormat) -> String {
    let transcript = &done.transcript;
    match format {
        TranscriptFormat::Txt => {
            if transcript.text.is_empty() {
                String::new()
            } else {
                format!("{}\n", transcript.text)
            }
        }
        TranscriptFormat::Json => {
            let segments: Vec<serde_json::Value> = transcript
                .segments
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "start_s": round_ms(s.start_s),
                        "end_s": round_ms(s.end_s),
                        "text": s.text,
                        "raw_text": s.raw_text,
                    })
                })
                .collect();
            let object = serde_json::json!({
                "file": done.file.display().to_string(),
                "duration_s": round_ms(transcript.duration_s),
                "model": done.model,
                "text": transcript.text,
                "raw_text": transcript.raw_text,
                "segments": segments,
            });
            format!("{object}\n")
        }
        TranscriptFormat::Srt => transcript
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "{}\n{} --> {}\n{}\n\n",
                    i + 1,
                    timestamp(s.start_s, ','),
                    timestamp(s.end_s, ','),
                    s.text.trim()
                )
            })
            .collect(),
        TranscriptFormat::Vtt => {
            let mut out = String::from("WEBVTT\n\n");
            for s in &transcript.segments {
                out.push_str(&format!(
                    "{} --> {}\n{}\n\n",
                    timestamp(s.start_s, '.'),
                    timestamp(s.end_s, '.'),
                    // A cue may not contain an empty line or "-->".
                    s.text.trim().replace("\n\n", "\n").replace("-->", "->")
                ));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medscribe_asr::{Segment, Transcript};

    fn sample() -> FileTranscript {
        FileTranscript {
            file: "a.wav".into(),
            model: "m".into(),
            processing_s: 0.1,
            warnings: Vec::new(),
            transcript: Transcript {
                raw_text: "hello {period} world".into(),
                text: "Hello. World".into(),
                duration_s: 3725.5,
                segments: vec![
                    Segment {
                        start_s: 0.25,
                        end_s: 1.5,
                        raw_text: "hello {period}".into(),
                        text: "Hello.".into(),
                    },
                    Segment {
                        start_s: 3723.0,
                        end_s: 3725.5,
                        raw_text: "world".into(),
                        text: "World".into(),
                    },
                ],
            },
        }
    }

    #[test]
    fn subtitles_have_exact_timestamps() {
        assert_eq!(
            render(&sample(), TranscriptFormat::Srt),
            "1\n00:00:00,250 --> 00:00:01,500\nHello.\n\n2\n01:02:03,000 --> 01:02:05,500\nWorld\n\n"
        );
        assert_eq!(
            render(&sample(), TranscriptFormat::Vtt),
            "WEBVTT\n\n00:00:00.250 --> 00:00:01.500\nHello.\n\n01:02:03.000 --> 01:02:05.500\nWorld\n\n"
        );
    }

    #[test]
    fn json_has_the_documented_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&render(&sample(), TranscriptFormat::Json)).unwrap();
        for key in [
            "file",
            "duration_s",
            "model",
            "text",
            "raw_text",
            "segments",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["segments"][1]["start_s"], 3723.0);
    }

    #[test]
    fn empty_transcripts_render_empty_text_and_valid_subtitles() {
        let mut empty = sample();
        empty.transcript = Transcript::default();
        assert_eq!(render(&empty, TranscriptFormat::Txt), "");
        assert_eq!(render(&empty, TranscriptFormat::Srt), "");
        assert_eq!(render(&empty, TranscriptFormat::Vtt), "WEBVTT\n\n");
    }

    #[test]
    fn formats_parse_with_aliases() {
        assert_eq!(
            "text".parse::<TranscriptFormat>().unwrap(),
            TranscriptFormat::Txt
        );
        assert_eq!(
            "VTT".parse::<TranscriptFormat>().unwrap(),
            TranscriptFormat::Vtt
        );
        assert!("docx".parse::<TranscriptFormat>().is_err());
    }
}
