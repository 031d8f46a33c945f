//! Transcript files: plain text, JSON, SubRip (.srt) and WebVTT (.vtt).

use std::collections::BTreeMap;
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
        TranscriptFormat::Txt if labelled(transcript) => {
            // "S1: ..." at each change of speaker, one line per turn.
            let mut out = String::new();
            let mut current = None;
            for s in &transcript.segments {
                let text = s.text.trim();
                if text.is_empty() {
                    continue;
                }
                if s.speaker != current || out.is_empty() {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(&format!("{}: ", shown_name(done, s.speaker)));
                    current = s.speaker;
                } else {
                    out.push(' ');
                }
                out.push_str(text);
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out
        }
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
                    let mut segment = serde_json::json!({
                        "start_s": round_ms(s.start_s),
                        "end_s": round_ms(s.end_s),
                        "text": s.text,
                        "raw_text": s.raw_text,
                    });
                    if labelled(transcript) {
                        segment["speaker"] = speaker_name(s.speaker).into();
                        if let Some(name) = done.speaker_names.get(&speaker_name(s.speaker)) {
                            segment["speaker_name"] = name.clone().into();
                        }
                    }
                    segment
                })
                .collect();
            let mut object = serde_json::json!({
                "file": done.file.display().to_string(),
                "duration_s": round_ms(transcript.duration_s),
                "model": done.model,
                "text": transcript.text,
                "raw_text": transcript.raw_text,
                "segments": segments,
            });
            if labelled(transcript) {
                let names: Vec<String> = (0..speaker_count(&transcript.segments))
                    .map(|i| speaker_name(Some(i)))
                    .collect();
                object["speakers"] = names.into();
                if !done.speaker_names.is_empty() {
                    object["speaker_names"] = serde_json::json!(done.speaker_names);
                }
            }
            format!("{object}\n")
        }
        TranscriptFormat::Srt => transcript
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "{}\n{} --> {}\n{}{}\n\n",
                    i + 1,
                    timestamp(s.start_s, ','),
                    timestamp(s.end_s, ','),
                    voice_tag(done, s),
                    s.text.trim()
                )
            })
            .collect(),
        TranscriptFormat::Vtt => {
            let mut out = String::from("WEBVTT\n\n");
            for s in &transcript.segments {
                out.push_str(&format!(
                    "{} --> {}\n{}{}\n\n",
                    timestamp(s.start_s, '.'),
                    timestamp(s.end_s, '.'),
                    voice_tag(done, s),
                    // A cue may not contain an empty line or "-->".
                    s.text.trim().replace("\n\n", "\n").replace("-->", "->")
                ));
            }
            out
        }
    }
}

/// Whether speakers were told apart (some segment has one).
fn labelled(transcript: &medscribe_asr::Transcript) -> bool {
    transcript.segments.iter().any(|s| s.speaker.is_some())
}

/// `S1`, `S2`, ... (`S?` for speech no turn covered).
pub fn speaker_name(speaker: Option<usize>) -> String {
    speaker.map_or_else(|| "S?".to_owned(), |s| format!("S{}", s + 1))
}

/// How many speakers `segments` name (labels run S1, S2, ... without gaps).
pub fn speaker_count(segments: &[medscribe_asr::Segment]) -> usize {
    segments
        .iter()
        .filter_map(|s| s.speaker)
        .max()
        .map_or(0, |m| m + 1)
}

/// The name the user gave a speaker (`names`, by label), else its label.
pub fn shown_speaker(names: &BTreeMap<String, String>, speaker: Option<usize>) -> String {
    let label = speaker_name(speaker);
    names.get(&label).cloned().unwrap_or(label)
}

fn shown_name(done: &FileTranscript, speaker: Option<usize>) -> String {
    shown_speaker(&done.speaker_names, speaker)
}

/// WebVTT's voice span opening a labelled cue (`<v S1>`, `<v Dr Patel>`), used in SRT too.
fn voice_tag(done: &FileTranscript, segment: &medscribe_asr::Segment) -> String {
    if labelled(&done.transcript) {
        format!("<v {}>", shown_name(done, segment.speaker))
    } else {
        String::new()
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
            speaker_names: Default::default(),
            transcript: Transcript {
                raw_text: "hello {period} world".into(),
                text: "Hello. World".into(),
                duration_s: 3725.5,
                segments: vec![
                    Segment {
                        speaker: None,
                        start_s: 0.25,
                        end_s: 1.5,
                        raw_text: "hello {period}".into(),
                        text: "Hello.".into(),
                    },
                    Segment {
                        speaker: None,
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
    fn speakers_appear_in_every_format() {
        let mut done = sample();
        done.transcript.segments[0].speaker = Some(0);
        done.transcript.segments[1].speaker = Some(1);
        done.transcript.segments.push(Segment {
            speaker: Some(1),
            start_s: 3726.0,
            end_s: 3727.0,
            raw_text: "again".into(),
            text: "Again.".into(),
        });
        assert_eq!(
            render(&done, TranscriptFormat::Txt),
            "S1: Hello.\nS2: World Again.\n"
        );
        assert!(render(&done, TranscriptFormat::Srt)
            .starts_with("1\n00:00:00,250 --> 00:00:01,500\n<v S1>Hello.\n\n2\n"));
        assert!(render(&done, TranscriptFormat::Vtt)
            .contains("01:02:03.000 --> 01:02:05.500\n<v S2>World\n\n"));
        let v: serde_json::Value =
            serde_json::from_str(&render(&done, TranscriptFormat::Json)).unwrap();
        assert_eq!(v["speakers"], serde_json::json!(["S1", "S2"]));
        assert_eq!(v["segments"][2]["speaker"], "S2");
        // Unlabelled transcripts have no speaker fields at all.
        let v: serde_json::Value =
            serde_json::from_str(&render(&sample(), TranscriptFormat::Json)).unwrap();
        assert!(v.get("speakers").is_none() && v["segments"][0].get("speaker").is_none());
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
