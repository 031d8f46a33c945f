//! A transcript as statements: sentences with speaker tags, fillers and pleasantries taken out,
//! the patient's first person turned into the third.

use super::*;

/// Who spoke a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// The clinician (or a dictation: the clinician's own letter voice).
    Clinician,
    /// The patient or someone with them.
    Patient,
}

/// A clean statement of the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The sentence as a letter states it.
    pub text: String,
    /// The transcript segment it came from.
    pub segment: usize,
    /// Who said it.
    pub speaker: Speaker,
    /// Whether it comes from a conversation (speaker-tagged lines) rather than a dictation.
    pub conversation: bool,
}

/// Words that carry no content: fillers, discourse markers and the commonest function words.
pub(super) const FILLERS: [&str; 12] = [
    "um", "uh", "uhm", "umm", "er", "erm", "hmm", "mm", "mm-hmm", "uh-huh", "ah", "oh",
];
pub(super) const OPENERS: [&str; 16] = [
    "so", "okay", "ok", "alright", "well", "yeah", "yes", "yep", "no", "now", "and", "but",
    "right", "sure", "great", "perfect",
];
pub(super) const STOPWORDS: [&str; 48] = [
    "a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "is", "are",
    "was", "were", "be", "been", "it", "its", "it's", "that", "this", "i", "you", "he", "she",
    "we", "they", "my", "your", "me", "do", "did", "does", "have", "has", "had", "so", "just",
    "like", "know", "get", "got", "go", "going", "there",
];
/// Phrases of talk, not of record: a sentence holding one is left out.
pub(super) const PLEASANTRIES: [&str; 31] = [
    "how are you",
    "good to see you",
    "nice to see you",
    "nice to meet you",
    "thank you",
    "thanks",
    "bye",
    "see you",
    "you're welcome",
    "have a good",
    "take care",
    "let me know if you have",
    "any questions",
    "sounds good",
    "does that sound",
    "take a look",
    "take a listen",
    "for a second",
    "come with me",
    "finalize the report",
    "finalize the note",
    "order the medications",
    "show me the",
    "my name is",
    "i'm dr",
    "i am dr",
    "i'm doctor",
    "go ahead and examine",
    "let's go ahead and do",
    "what we talked about",
    "tell dax",
];
/// How a sentence opens when it is only a greeting or a call to a voice assistant.
pub(super) const GREETINGS: [&str; 7] = [
    "hi",
    "hello",
    "hey",
    "dragon",
    "dax",
    "morning",
    "afternoon",
];

/// A speaker tag at the start of a line: `[doctor]`, `Patient:`, `DR:` ...; the rest of the line.
pub(super) fn speaker_tag(line: &str) -> (Option<Speaker>, &str) {
    let trimmed = line.trim_start();
    let (tag, rest) = if let Some(inner) = trimmed.strip_prefix('[') {
        match inner.split_once(']') {
            Some((tag, rest)) => (tag, rest),
            None => return (None, line),
        }
    } else {
        match trimmed.split_once(':') {
            Some((tag, rest)) if tag.len() <= 20 && !tag.contains(' ') || tag == "Guest family" => {
                (tag, rest)
            }
            _ => return (None, line),
        }
    };
    let tag = tag.trim().to_ascii_lowercase();
    let speaker = if tag.starts_with("doctor")
        || tag.starts_with("dr")
        || tag.starts_with("clinician")
        || tag.starts_with("nurse")
        || tag == "physician"
    {
        Speaker::Clinician
    } else if tag.starts_with("patient") || tag.starts_with("pt") || tag.starts_with("guest") {
        Speaker::Patient
    } else {
        return (None, line);
    };
    (Some(speaker), rest)
}

/// Undoes the tokenised spacing of some corpora (`do n't`, `hi , brian .`).
pub(super) fn tidy_spacing(text: &str) -> String {
    let mut out = text
        .replace(" n't", "n't")
        .replace(" 's", "'s")
        .replace(" 're", "'re")
        .replace(" 've", "'ve")
        .replace(" 'm", "'m")
        .replace(" 'll", "'ll")
        .replace(" 'd", "'d");
    for mark in [",", ".", "?", "!", ";", ":"] {
        out = out.replace(&format!(" {mark}"), mark);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Sentences of a line (terminal punctuation kept).
pub(super) fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        current.push(c);
        let boundary = matches!(c, '.' | '?' | '!')
            && chars.get(i + 1).is_none_or(|n| n.is_whitespace())
            && !current
                .trim_end_matches(['.', '?', '!'])
                .rsplit(' ')
                .next()
                .is_some_and(|w| {
                    matches!(
                        w.to_ascii_lowercase().as_str(),
                        "dr" | "mr" | "mrs" | "ms" | "st"
                    )
                });
        if boundary {
            out.push(std::mem::take(&mut current).trim().to_string());
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

/// The sentence without fillers, leading discourse markers and immediate repeats ("i, i just").
pub(super) fn strip_talk(sentence: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    for raw in sentence.split_whitespace() {
        let bare = raw
            .trim_matches(|c: char| !c.is_alphanumeric() && c != '-' && c != '\'')
            .to_ascii_lowercase();
        if FILLERS.contains(&bare.as_str()) {
            // Keep the punctuation the filler carried only when it ends the sentence.
            if let Some(last) = words.last_mut() {
                if raw.ends_with(['.', '?', '!']) {
                    last.push_str(&raw[raw.len() - 1..]);
                }
            }
            continue;
        }
        let previous = words.last().map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
                .to_ascii_lowercase()
        });
        if previous.as_deref() == Some(bare.as_str()) && !bare.is_empty() {
            // "i, i" / "the the": keep the later one (it carries the sentence on).
            words.pop();
        }
        words.push(raw.to_string());
    }
    // Leading "so, okay, well, and ...", greetings and calls to a voice assistant ("hey
    // dragon,") go.
    while let Some(first) = words.first() {
        let bare = first
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_ascii_lowercase();
        if GREETINGS.contains(&bare.as_str()) && words.len() > 1 {
            words.remove(0);
            continue;
        }
        let two = words.get(1).map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_ascii_lowercase()
        });
        if bare == "all" && two.as_deref() == Some("right") {
            words.drain(..2);
        } else if OPENERS.contains(&bare.as_str()) && words.len() > 1 {
            words.remove(0);
        } else {
            break;
        }
    }
    let joined = words.join(" ");
    joined
        .trim_start_matches([',', ' ', ';', '.'])
        .replace(" ,", ",")
        .replace(",,", ",")
        .trim()
        .to_string()
}

/// A patient's sentence in the third person: "i feel tired" -> "The patient reports feeling
/// tired"... kept simple and grammatical: "The patient reports that they feel tired."
pub(super) fn third_person(sentence: &str) -> String {
    let mut out = Vec::new();
    let mut changed = false;
    for word in sentence.split_whitespace() {
        let (core, tail) = match word.find(|c: char| !(c.is_alphanumeric() || c == '\'')) {
            Some(at) if at > 0 => (&word[..at], &word[at..]),
            _ => (word, ""),
        };
        let lower = core.to_ascii_lowercase();
        let replaced = match lower.as_str() {
            "i" => Some("they"),
            "me" => Some("them"),
            "my" => Some("their"),
            "mine" => Some("theirs"),
            "myself" => Some("themselves"),
            "i'm" | "im" => Some("they're"),
            "i've" | "ive" => Some("they've"),
            "i'd" => Some("they'd"),
            "i'll" => Some("they'll"),
            "am" => Some("are"),
            "was" if out.last().is_some_and(|w: &String| w == "they") => Some("were"),
            "wasn't" if out.last().is_some_and(|w: &String| w == "they") => Some("weren't"),
            _ => None,
        };
        match replaced {
            Some(new) => {
                changed = true;
                out.push(format!("{new}{tail}"));
            }
            None => out.push(word.to_string()),
        }
    }
    let text = out.join(" ");
    if changed {
        format!("The patient reports that {text}")
    } else {
        text
    }
}

/// A clinician speaking to the patient: "you" is the patient.
pub(super) fn second_to_third(sentence: &str) -> String {
    sentence
        .split_whitespace()
        .map(|word| {
            let (core, tail) = match word.find(|c: char| !(c.is_alphanumeric() || c == '\'')) {
                Some(at) if at > 0 => (&word[..at], &word[at..]),
                _ => (word, ""),
            };
            let new = match core.to_ascii_lowercase().as_str() {
                "you" => "the patient",
                "your" => "the patient's",
                "you're" => "the patient is",
                "you've" => "the patient has",
                "yourself" => "themselves",
                _ => return word.to_string(),
            };
            format!("{new}{tail}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn content_words(text: &str) -> usize {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
                .to_ascii_lowercase()
        })
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(&w.as_str()))
        .count()
}

/// The clean statements of a transcript, in order.
pub fn statements(transcript: &[TranscriptSegment]) -> Vec<Statement> {
    // Lines with the segment they start in. A voice activity detector cuts a dictation at
    // pauses, mid-sentence too ("Her C reactive protein | was 96"): an untagged line that does
    // not end a sentence runs on into the next segment's untagged first line.
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (index, segment) in transcript.iter().enumerate() {
        for (n, line) in segment.text.lines().enumerate() {
            if let Some((_, previous)) = lines.last_mut() {
                let runs_on = n == 0
                    && speaker_tag(line).0.is_none()
                    && speaker_tag(previous).0.is_none()
                    && !previous.trim_end().ends_with(['.', '?', '!', ':'])
                    && !previous.trim().is_empty()
                    && line.starts_with(|c: char| !c.is_whitespace());
                if runs_on {
                    previous.push(' ');
                    previous.push_str(line);
                    continue;
                }
            }
            lines.push((index, line.to_string()));
        }
    }
    let mut out = Vec::new();
    for (index, line) in &lines {
        let index = *index;
        {
            let (speaker, rest) = speaker_tag(line);
            let speaker = speaker.unwrap_or(Speaker::Clinician);
            let dialogue = speaker_tag(line).0.is_some();
            for sentence in split_sentences(&tidy_spacing(rest)) {
                if sentence.ends_with('?') {
                    continue; // a question is not a statement of fact
                }
                let lower = sentence.to_ascii_lowercase();
                // "Thank you for seeing this 45-year-old woman": talk that carries a number
                // carries a fact, and stays.
                if PLEASANTRIES.iter().any(|p| lower.contains(p)) && !carries_fact(&lower, None) {
                    continue;
                }
                let clean = strip_talk(&sentence);
                // Talk has short acknowledgements ("yes, i am"); a dictation's short sentences
                // ("Referral to cardiology.") are content.
                if content_words(&clean) < if dialogue { 3 } else { 2 } {
                    continue;
                }
                let voiced = match (dialogue, speaker) {
                    (true, Speaker::Patient) => third_person(&clean),
                    (true, Speaker::Clinician) => second_to_third(&clean),
                    _ => clean,
                };
                let mut text = voiced.trim().to_string();
                if let Some(first) = text.chars().next() {
                    text = first.to_uppercase().collect::<String>() + &text[first.len_utf8()..];
                }
                // "i" left alone in a clinician's sentence reads as the clinician: capitalised.
                text = text
                    .split(' ')
                    .map(|w| match w {
                        "i" => "I",
                        "i'm" => "I'm",
                        "i've" => "I've",
                        "i'll" => "I'll",
                        "i'd" => "I'd",
                        other => other,
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                if !text.ends_with(['.', '!']) {
                    text = text.trim_end_matches([',', ';', ':']).to_string() + ".";
                }
                out.push(Statement {
                    text,
                    segment: index,
                    speaker,
                    conversation: dialogue,
                });
            }
        }
    }
    out
}
