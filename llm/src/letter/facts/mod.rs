//! The clinical-fact guard: a letter states only what was said. Whatever wrote a section (our
//! model, MedGemma, a remote server), its clinical facts are found and each is checked against
//! the transcript:
//!
//! - numbers with or without units (vital signs, laboratory values, doses, durations, ages,
//!   scores), blood pressures as `150/90` or `150 over 90`;
//! - dosing frequencies (`twice a day` is BID);
//! - medication names, from a drug lexicon (FDA UNII names, built by setup);
//! - laterality (left, right, bilateral) with the part it qualifies.
//!
//! Spoken forms count on either side: "one fifty over ninety" supports 150/90, "five milligrams"
//! supports 5 mg, "sixty two year old" supports 62-year-old. A fact the transcript does not
//! support is removed with the smallest clause or sentence that carries it, and reported.

use std::collections::HashSet;
use std::path::Path;

use super::drug_spelling::{edit_distance, SoundIndex};
use crate::error::{LlmError, Result};

mod lexicon;
mod spoken;

pub use lexicon::DrugLexicon;
use spoken::*;

/// What kind of fact was removed (the fact itself is patient data and stays out of messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FactKind {
    /// A number: value, dose, duration, age, score.
    Number,
    /// A blood pressure pair.
    BloodPressure,
    /// A dosing frequency.
    Frequency,
    /// A medication name.
    Medication,
    /// Left, right or bilateral.
    Laterality,
}

impl FactKind {
    /// Lower-case noun for messages.
    pub fn noun(self) -> &'static str {
        match self {
            FactKind::Number => "number",
            FactKind::BloodPressure => "blood pressure",
            FactKind::Frequency => "dosing frequency",
            FactKind::Medication => "medication",
            FactKind::Laterality => "side (left/right)",
        }
    }
}

/// A fact removed from a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedFact {
    /// Its kind.
    pub kind: FactKind,
    /// The fact as the letter wrote it.
    pub text: String,
}

/// What a transcript says, ready to check letters against.
#[derive(Debug, Clone, Default)]
pub struct TranscriptFacts {
    numbers: Vec<(f64, Option<Unit>)>,
    pressures: Vec<(f64, f64)>,
    frequencies: HashSet<Frequency>,
    words: Vec<String>,
    word_set: HashSet<String>,
}

impl TranscriptFacts {
    /// The facts of `transcript`.
    pub fn new(transcript: &str, lexicon: Option<&DrugLexicon>) -> Self {
        let tokens = tokens(transcript);
        let mut facts_of = Self::default();
        for found in facts(&tokens, lexicon, true) {
            match found.fact {
                Fact::Number { value, unit } => facts_of.numbers.push((value, unit)),
                Fact::Pressure {
                    systolic,
                    diastolic,
                } => facts_of.pressures.push((systolic, diastolic)),
                Fact::Frequency(f) => {
                    facts_of.frequencies.insert(f);
                }
                Fact::Medication(_) | Fact::Side { .. } => {}
            }
        }
        facts_of.words = tokens.into_iter().map(|t| t.text).collect();
        facts_of.word_set = facts_of.words.iter().cloned().collect();
        facts_of
    }

    fn supports(&self, fact: &Fact) -> bool {
        let same = |a: f64, b: f64| (a - b).abs() < 1e-9;
        match fact {
            Fact::Number { value, unit } => self
                .numbers
                .iter()
                .any(|(v, u)| same(*v, *value) && (u == unit || u.is_none() || unit.is_none())),
            Fact::Pressure {
                systolic,
                diastolic,
            } => self
                .pressures
                .iter()
                .any(|(s, d)| same(*s, *systolic) && same(*d, *diastolic)),
            Fact::Frequency(f) => self.frequencies.contains(f),
            Fact::Medication(name) => {
                self.word_set.contains(name)
                    || self.word_set.contains(&format!("{name}s"))
                    || name
                        .strip_suffix('s')
                        .is_some_and(|singular| self.word_set.contains(singular))
            }
            Fact::Side { side: wanted, part } => {
                let near_part = part.as_ref().filter(|p| self.word_set.contains(*p));
                match near_part {
                    // The part is mentioned: the same side must be said within three words of it.
                    Some(part) => self.words.iter().enumerate().any(|(i, w)| {
                        w == part
                            && self.words[i.saturating_sub(4)..(i + 4).min(self.words.len())]
                                .iter()
                                .any(|w| side(w) == Some(*wanted))
                    }),
                    None => self.words.iter().any(|w| side(w) == Some(*wanted)),
                }
            }
        }
    }
}

/// Byte ranges of `text` holding identifiers (dates, record numbers) that identifier grounding
/// checks already: their digits are not clinical numbers.
fn identifier_spans(text: &str) -> Vec<(usize, usize)> {
    super::grounding::identifier_matches(text)
}

/// The section with every unsupported fact removed (with its clause, or its sentence when the
/// clause is the whole sentence), and what was removed.
pub fn guard(
    section: &str,
    transcript: &TranscriptFacts,
    lexicon: Option<&DrugLexicon>,
) -> (String, Vec<UnsupportedFact>) {
    let tokens = tokens(section);
    let skip = identifier_spans(section);
    let mut unsupported: Vec<(usize, usize, UnsupportedFact)> = Vec::new();
    for found in facts(&tokens, lexicon, false) {
        let (start, end) = (tokens[found.first].start, tokens[found.last].end);
        if skip.iter().any(|&(s, e)| start < e && s < end) {
            continue;
        }
        // A numbered list's markers ("1." at the start of a line) are not facts.
        if matches!(found.fact, Fact::Number { unit: None, .. })
            && found.first + 1 < tokens.len()
            && matches!(tokens[found.first + 1].text.as_str(), "." | ")")
            && section[..start]
                .trim_end_matches([' ', '\t'])
                .ends_with(['\n'])
        {
            continue;
        }
        if section[..start].trim().is_empty()
            && matches!(found.fact, Fact::Number { unit: None, .. })
            && tokens.get(found.first + 1).is_some_and(|t| t.text == ")")
        {
            continue;
        }
        if !transcript.supports(&found.fact) {
            let kind = match found.fact {
                Fact::Number { .. } => FactKind::Number,
                Fact::Pressure { .. } => FactKind::BloodPressure,
                Fact::Frequency(_) => FactKind::Frequency,
                Fact::Medication(_) => FactKind::Medication,
                Fact::Side { .. } => FactKind::Laterality,
            };
            unsupported.push((
                start,
                end,
                UnsupportedFact {
                    kind,
                    text: section[start..end].to_string(),
                },
            ));
        }
    }
    if unsupported.is_empty() {
        return (section.to_string(), Vec::new());
    }
    let spans: Vec<(usize, usize)> = unsupported.iter().map(|(s, e, _)| (*s, *e)).collect();
    let cleaned = remove_clauses(section, &spans);
    (
        cleaned,
        unsupported.into_iter().map(|(_, _, f)| f).collect(),
    )
}

/// Sentences of `text` as byte ranges (terminal punctuation included); a full stop inside a
/// number or after a title does not end one.
fn sentences(text: &str) -> Vec<(usize, usize)> {
    const TITLES: [&str; 8] = ["dr", "mr", "mrs", "ms", "prof", "st", "e.g", "i.e"];
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut at = 0;
    while at < bytes.len() {
        let b = bytes[at];
        let ends = match b {
            b'\n' => true,
            b'.' | b'!' | b'?' => {
                let next_space = bytes.get(at + 1).is_none_or(|c| c.is_ascii_whitespace());
                let word_before = text[start..at]
                    .rsplit(|c: char| !c.is_alphanumeric() && c != '.')
                    .next()
                    .unwrap_or("")
                    .to_lowercase();
                next_space && !TITLES.contains(&word_before.as_str())
            }
            _ => false,
        };
        if ends {
            out.push((start, at + 1));
            start = at + 1;
        }
        at += 1;
    }
    if start < bytes.len() {
        out.push((start, bytes.len()));
    }
    out
}

/// Clauses of a sentence: byte ranges split at `;` and at `, ` (not inside numbers).
fn clauses(text: &str, (start, end): (usize, usize)) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = start;
    let mut depth = 0i32;
    for at in start..end {
        match bytes[at] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b';' if depth <= 0 => {
                out.push((from, at));
                from = at + 1;
            }
            b',' if depth <= 0 && bytes.get(at + 1).is_some_and(|c| *c == b' ') => {
                out.push((from, at));
                from = at + 1;
            }
            _ => {}
        }
    }
    out.push((from, end));
    out
}

/// `text` without the clauses (or whole sentences) that hold any of `spans`, tidied so that it
/// still reads: separators of removed clauses go with them, a sentence starts with a capital
/// and keeps its final punctuation.
fn remove_clauses(text: &str, spans: &[(usize, usize)]) -> String {
    let hit = |(s, e): (usize, usize)| spans.iter().any(|&(a, b)| a < e && s < b);
    let mut out = String::with_capacity(text.len());
    for sentence in sentences(text) {
        if !hit(sentence) {
            out.push_str(&text[sentence.0..sentence.1]);
            continue;
        }
        let parts = clauses(text, sentence);
        let kept: Vec<(usize, usize)> = parts.iter().copied().filter(|&c| !hit(c)).collect();
        let body = &text[sentence.0..sentence.1];
        let leading: String = body.chars().take_while(|c| c.is_whitespace()).collect();
        let ending = body
            .trim_end()
            .chars()
            .last()
            .filter(|c| matches!(c, '.' | '!' | '?'))
            .map(|c| c.to_string())
            .unwrap_or_default();
        let newline = if body.ends_with('\n') { "\n" } else { "" };
        let pieces: Vec<String> = kept
            .iter()
            .map(|&(s, e)| {
                text[s..e]
                    .trim()
                    .trim_end_matches(['.', '!', '?'])
                    .trim()
                    .to_string()
            })
            .filter(|p| !p.is_empty() && p.chars().any(char::is_alphanumeric))
            .collect();
        if pieces.is_empty() {
            out.push_str(newline);
            continue;
        }
        let mut joined = pieces.join(", ");
        if let Some(first) = joined.chars().next() {
            if first.is_lowercase() {
                joined = first.to_uppercase().collect::<String>() + &joined[first.len_utf8()..];
            }
        }
        if !out.is_empty() && !out.ends_with(char::is_whitespace) && leading.is_empty() {
            out.push(' ');
        }
        out.push_str(&leading);
        out.push_str(&joined);
        out.push_str(&ending);
        out.push_str(newline);
    }
    let lines: Vec<String> = out
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    lines.join("\n").trim().to_string()
}

#[cfg(test)]
mod tests;
