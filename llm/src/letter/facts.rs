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

/// Medication names (lower case), one word each: the generic and brand names of the FDA's UNII
/// substance list that are not ordinary English words, plus those that are but carry a drug
/// stem (aspirin, morphine). Built by setup (`models/scripts/build_drug_lexicon.py`).
#[derive(Debug, Clone, Default)]
pub struct DrugLexicon {
    names: HashSet<String>,
    sounds: SoundIndex,
}

/// Largest English word list read (setup's is about 0.6 MB).
const MAX_ENGLISH_BYTES: u64 = 16 << 20;

/// Largest lexicon file read (setup's is about 0.7 MB).
const MAX_LEXICON_BYTES: u64 = 64 << 20;

impl DrugLexicon {
    /// Reads a lexicon file: one name per line (a tab and anything after it is ignored; `#`
    /// starts a comment line).
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::files::read_text_bounded(path, MAX_LEXICON_BYTES).map_err(|e| {
            LlmError::BadFile {
                path: path.to_path_buf(),
                reason: format!("cannot read the drug lexicon: {e}"),
            }
        })?;
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split('\t').collect())
            .collect();
        let mut lexicon = Self::from_names(rows.iter().map(|r| r[0]));
        if lexicon.names.is_empty() {
            return Err(LlmError::BadFile {
                path: path.to_path_buf(),
                reason: "the drug lexicon is empty".into(),
            });
        }
        // Misheard names are mended only towards generic names, and only with the English word
        // list setup writes beside the lexicon (without it, any word could be English).
        let english_path = path.with_file_name("english-words.txt");
        if english_path.exists() {
            let english = crate::files::read_text_bounded(&english_path, MAX_ENGLISH_BYTES)
                .map_err(|e| LlmError::BadFile {
                    path: english_path.clone(),
                    reason: format!("cannot read the English word list: {e}"),
                })?;
            let generic: Vec<String> = rows
                .iter()
                .filter(|r| r.get(2).is_none_or(|kind| kind.trim() != "brand"))
                .map(|r| r[0].trim().to_lowercase())
                .collect();
            lexicon.sounds = SoundIndex::new(
                generic.iter().map(String::as_str),
                english.lines().map(str::trim),
            );
        }
        Ok(lexicon)
    }

    /// The lexicon, able to mend misheard names towards `generic` ones, with `english` the
    /// words a transcript may use freely ([`SoundIndex`]).
    pub fn with_sounds<'a>(
        self,
        generic: impl IntoIterator<Item = &'a str>,
        english: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Self {
            sounds: SoundIndex::new(generic, english),
            ..self
        }
    }

    /// A lexicon of `names` (any case; empty ones skipped).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            names: names
                .into_iter()
                .map(|n| n.trim().to_lowercase())
                .filter(|n| !n.is_empty())
                .collect(),
            sounds: SoundIndex::default(),
        }
    }

    /// Whether `word` (lower case) is a medication name.
    pub fn contains(&self, word: &str) -> bool {
        self.names.contains(word)
    }

    /// `text` with medication names a speech model split or misspelt written as the lexicon
    /// spells them ("amla-depine" -> "amlodipine"), and the corrections made (as written, as
    /// corrected). Words broken by a hyphen, the way speech models write a word they do not
    /// know, are mended when exactly one name is close in spelling (at most one edit in four
    /// letters) and starts with the same letter; with an English word list (setup's, or
    /// [`DrugLexicon::with_sounds`]) so are names heard as other words, under the strict rules
    /// of [`SoundIndex`].
    pub fn correct(&self, text: &str) -> (String, Vec<(String, String)>) {
        let mut out = String::with_capacity(text.len());
        let mut corrections = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(|c: char| c.is_alphabetic()) {
            out.push_str(&rest[..start]);
            let word_len = rest[start..]
                .find(|c: char| !(c.is_alphabetic() || c == '-'))
                .unwrap_or(rest.len() - start);
            let word = rest[start..start + word_len].trim_end_matches('-');
            let consumed = start + word.len();
            match self.correction(word) {
                Some(name) => {
                    corrections.push((word.to_string(), name.clone()));
                    out.push_str(&name);
                }
                None => out.push_str(word),
            }
            rest = &rest[consumed..];
        }
        out.push_str(rest);
        let mut mends = self.sounds.mend(&out, &|word| self.names.contains(word));
        mends.reverse();
        for (start, end, written, name) in mends {
            out.replace_range(start..end, &name);
            corrections.push((written, name));
        }
        (out, corrections)
    }

    fn correction(&self, word: &str) -> Option<String> {
        if !word.contains('-') {
            return None;
        }
        let joined: String = word
            .chars()
            .filter(|c| *c != '-')
            .flat_map(char::to_lowercase)
            .collect();
        if joined.len() < 6 || self.names.contains(&joined) {
            return (self.names.contains(&joined) && joined != word.to_lowercase())
                .then_some(joined);
        }
        let limit = joined.len() / 4;
        let mut best: Option<(usize, &String)> = None;
        let mut ties = 0;
        for name in &self.names {
            if name.len().abs_diff(joined.len()) > limit
                || name.chars().next() != joined.chars().next()
            {
                continue;
            }
            let distance = edit_distance(&joined, name);
            if distance > limit {
                continue;
            }
            match best {
                Some((d, _)) if distance > d => {}
                Some((d, _)) if distance == d => ties += 1,
                _ => {
                    best = Some((distance, name));
                    ties = 0;
                }
            }
        }
        match best {
            Some((_, name)) if ties == 0 => Some(name.clone()),
            _ => None,
        }
    }

    /// Names in the lexicon.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether it has no names.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A word of text: lower-cased, with its byte span in the original.
#[derive(Debug, Clone, PartialEq)]
struct Token {
    text: String,
    start: usize,
    end: usize,
}

/// Splits text into words, numbers (`38.4`, `1,000` as `1000`) and single symbols; a number and
/// the letters glued to it (`5mg`) are two tokens, as are the parts of `62-year-old`.
fn tokens(text: &str) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let c = text[at..].chars().next().unwrap_or(' ');
        let len = c.len_utf8();
        if c.is_ascii_digit() {
            let start = at;
            let mut value = String::new();
            while at < text.len() {
                let b = bytes[at];
                let next_is_digit = bytes.get(at + 1).is_some_and(u8::is_ascii_digit);
                if b.is_ascii_digit() {
                    value.push(b as char);
                } else if b == b'.' && next_is_digit && !value.contains('.') {
                    value.push('.');
                } else if b == b','
                    && bytes
                        .get(at + 1..at + 4)
                        .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
                    && !bytes.get(at + 4).is_some_and(u8::is_ascii_digit)
                {
                    // A thousands separator: 1,000.
                } else {
                    break;
                }
                at += 1;
            }
            out.push(Token {
                text: value,
                start,
                end: at,
            });
        } else if c.is_alphabetic() {
            let start = at;
            while at < text.len() {
                let c = text[at..].chars().next().unwrap_or(' ');
                // Apostrophes inside words (patient's) stay in the word, and so do digits after
                // letters: SpO2, HbA1c and B12 are names, not numbers.
                if c.is_alphanumeric() || (c == '\'' && at > start) {
                    at += c.len_utf8();
                } else {
                    break;
                }
            }
            out.push(Token {
                text: text[start..at].to_lowercase(),
                start,
                end: at,
            });
        } else {
            if !c.is_whitespace() {
                out.push(Token {
                    text: c.to_string(),
                    start: at,
                    end: at + len,
                });
            }
            at += len;
        }
    }
    out
}

use super::grounding::{TENS, UNITS as SMALL};

fn small(word: &str) -> Option<f64> {
    match word {
        "a" | "an" => None,
        "oh" | "o" => Some(0.0),
        "single" => Some(1.0),
        _ => SMALL.iter().position(|w| *w == word).map(|n| n as f64),
    }
}

fn tens(word: &str) -> Option<f64> {
    TENS.iter()
        .position(|w| *w == word)
        .map(|n| (n * 10 + 20) as f64)
}

fn is_number_word(word: &str) -> bool {
    small(word).is_some() || tens(word).is_some() || matches!(word, "hundred" | "thousand")
}

/// A number spelled out from `words[at..]`: its value and the words it used. With `alternative`,
/// the clinical reading of a digit followed by tens ("one fifty" = 150, "one twenty five" = 125)
/// is tried first; without, the words are read separately ("one", then "fifty").
fn spoken_number(words: &[&str], at: usize, hundreds_reading: bool) -> Option<(f64, usize)> {
    let first = *words.get(at)?;
    if !is_number_word(first) || first == "oh" || first == "o" {
        return None;
    }
    if hundreds_reading {
        if let (Some(h), Some(next)) = (small(first), words.get(at + 1)) {
            if (1.0..10.0).contains(&h) {
                if let Some(t) = tens(next).or_else(|| small(next).filter(|&n| n >= 10.0)) {
                    let with_unit = words
                        .get(at + 2)
                        .and_then(|w| small(w))
                        .filter(|&n| (1.0..10.0).contains(&n) && t >= 20.0);
                    return Some(match with_unit {
                        Some(u) => (h * 100.0 + t + u, 3),
                        None => (h * 100.0 + t, 2),
                    });
                }
            }
        }
    }
    let mut total = 0.0;
    let mut current = 0.0;
    let mut used = 0;
    let mut last: Option<&str> = None; // "small", "tens", "big"
    while let Some(&word) = words.get(at + used) {
        if let Some(n) = small(word) {
            if matches!(last, Some("small")) || (matches!(last, Some("tens")) && n >= 10.0) {
                break;
            }
            current += n;
            last = Some("small");
        } else if let Some(t) = tens(word) {
            if matches!(last, Some("small") | Some("tens")) {
                break;
            }
            current += t;
            last = Some("tens");
        } else if word == "hundred" {
            current = if current == 0.0 {
                100.0
            } else {
                current * 100.0
            };
            last = Some("big");
        } else if word == "thousand" {
            total += if current == 0.0 {
                1000.0
            } else {
                current * 1000.0
            };
            current = 0.0;
            last = Some("big");
        } else if word == "and"
            && matches!(last, Some("big"))
            && words.get(at + used + 1).is_some_and(|w| is_number_word(w))
        {
            // "one hundred and twenty"
        } else {
            break;
        }
        used += 1;
    }
    if used == 0 {
        return None;
    }
    let mut value = total + current;
    // "thirty eight point four"
    if words.get(at + used) == Some(&"point") {
        let mut decimals = String::new();
        let mut more = used + 1;
        while let Some(d) = words
            .get(at + more)
            .and_then(|w| small(w))
            .filter(|&d| d < 10.0)
        {
            decimals.push(char::from(b'0' + d as u8));
            more += 1;
        }
        if let Ok(fraction) = format!("0.{decimals}").parse::<f64>() {
            if !decimals.is_empty() {
                value += fraction;
                used = more;
            }
        }
    }
    Some((value, used))
}

/// Units a number can carry, in one spelling each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Unit {
    Milligram,
    Microgram,
    Gram,
    Kilogram,
    Millilitre,
    Litre,
    Units,
    Millimole,
    MillimetreMercury,
    Percent,
    PerMinute,
    Degree,
    Centimetre,
    Millimetre,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
    Tablet,
    Puff,
    Drop,
    Times,
}

/// The unit named by `words[at..]`, and the words it used.
fn unit_at(words: &[&str], at: usize) -> Option<(Unit, usize)> {
    let word = *words.get(at)?;
    let next = words.get(at + 1).copied();
    let two = |second: &str, unit: Unit| (next == Some(second)).then_some((unit, 2));
    if let Some(found) = match word {
        "per" => two("cent", Unit::Percent),
        "beats" | "breaths" => match next {
            Some("per") => Some((Unit::PerMinute, 3)),
            _ => Some((Unit::PerMinute, 1)),
        },
        "mm" => two("hg", Unit::MillimetreMercury).or(Some((Unit::Millimetre, 1))),
        "millimeters" | "millimetres" | "millimeter" | "millimetre" => {
            two("mercury", Unit::MillimetreMercury).or(Some((Unit::Millimetre, 1)))
        }
        "international" => two("units", Unit::Units),
        _ => None,
    } {
        return Some(found);
    }
    let unit = match word {
        "mg" | "mgs" | "milligram" | "milligrams" | "milligramme" | "milligrammes" => {
            Unit::Milligram
        }
        "mcg" | "µg" | "ug" | "microgram" | "micrograms" => Unit::Microgram,
        "g" | "gm" | "gram" | "grams" | "gramme" | "grammes" => Unit::Gram,
        "kg" | "kgs" | "kilo" | "kilos" | "kilogram" | "kilograms" => Unit::Kilogram,
        "ml" | "mls" | "milliliter" | "milliliters" | "millilitre" | "millilitres" | "cc" => {
            Unit::Millilitre
        }
        "l" | "liter" | "liters" | "litre" | "litres" => Unit::Litre,
        "units" | "unit" | "iu" | "u" => Unit::Units,
        "mmol" | "millimole" | "millimoles" | "millimolar" => Unit::Millimole,
        "mmhg" => Unit::MillimetreMercury,
        "%" | "percent" => Unit::Percent,
        "bpm" | "beats" | "breaths" | "rpm" => Unit::PerMinute,
        "°" | "degrees" | "degree" | "°c" | "°f" => Unit::Degree,
        "cm" | "cms" | "centimeter" | "centimeters" | "centimetre" | "centimetres" => {
            Unit::Centimetre
        }
        "min" | "mins" | "minute" | "minutes" => Unit::Minute,
        "h" | "hr" | "hrs" | "hour" | "hours" => Unit::Hour,
        "day" | "days" => Unit::Day,
        "wk" | "wks" | "week" | "weeks" => Unit::Week,
        "month" | "months" | "mo" => Unit::Month,
        "year" | "years" | "yr" | "yrs" | "yo" | "y" => Unit::Year,
        "tablet" | "tablets" | "tab" | "tabs" | "pill" | "pills" | "capsule" | "capsules" => {
            Unit::Tablet
        }
        "puff" | "puffs" => Unit::Puff,
        "drop" | "drops" => Unit::Drop,
        "times" | "x" => Unit::Times,
        _ => return None,
    };
    Some((unit, 1))
}

/// Dosing frequencies, one spelling each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Frequency {
    Daily,
    TwiceDaily,
    ThreeTimesDaily,
    FourTimesDaily,
    EveryHours(u32),
    AtNight,
    Weekly,
    AsNeeded,
}

/// The frequency named by `words[at..]` and the words it used (the longest spelling wins).
fn frequency_at(words: &[&str], at: usize) -> Option<(Frequency, usize)> {
    let word = |i: usize| words.get(at + i).copied().unwrap_or("");
    let per_day = |i: usize| -> Option<usize> {
        match (word(i), word(i + 1)) {
            ("a" | "per" | "each" | "every", "day") => Some(2),
            ("daily", _) => Some(1),
            ("a" | "per", "24") if word(i + 2) == "hours" => Some(3),
            _ => None,
        }
    };
    // "once / twice / two times / 3 times" + "a day / daily".
    let (count, used) = match (word(0), word(1)) {
        ("once", _) => (Some(1), 1),
        ("twice", _) => (Some(2), 1),
        ("thrice", _) => (Some(3), 1),
        (n, "times") => (
            match n {
                "one" | "1" => Some(1),
                "two" | "2" => Some(2),
                "three" | "3" => Some(3),
                "four" | "4" => Some(4),
                _ => None,
            },
            2,
        ),
        _ => (None, 0),
    };
    if let Some(count) = count {
        if let Some(more) = per_day(used) {
            let frequency = match count {
                1 => Frequency::Daily,
                2 => Frequency::TwiceDaily,
                3 => Frequency::ThreeTimesDaily,
                _ => Frequency::FourTimesDaily,
            };
            return Some((frequency, used + more));
        }
        if count == 1 && matches!((word(1), word(2)), ("a" | "per", "week")) {
            return Some((Frequency::Weekly, 3));
        }
    }
    // "every 6 hours", "every six hours", "q6h", "q 6 h"
    if word(0) == "every" || word(0) == "q" {
        let (hours, used) = match word(1).parse::<u32>() {
            Ok(n) => (Some(n), 2),
            Err(_) => spoken_number(words, at + 1, false)
                .map(|(n, used)| (Some(n as u32), used + 1))
                .unwrap_or((None, 1)),
        };
        if let Some(hours) = hours {
            if matches!(word(used), "hours" | "hour" | "h" | "hrs" | "hourly") {
                return Some((Frequency::EveryHours(hours), used + 1));
            }
        }
        if word(0) == "every" && matches!(word(1), "morning" | "day") {
            return Some((Frequency::Daily, 2));
        }
        if word(0) == "every" && word(1) == "night" {
            return Some((Frequency::AtNight, 2));
        }
    }
    let single = match word(0) {
        "daily" | "od" | "qd" => Some(Frequency::Daily),
        "qds" | "qid" => Some(Frequency::FourTimesDaily),
        "bid" | "bd" => Some(Frequency::TwiceDaily),
        "tid" | "tds" => Some(Frequency::ThreeTimesDaily),
        "nightly" | "nocte" | "qhs" => Some(Frequency::AtNight),
        "weekly" => Some(Frequency::Weekly),
        "prn" => Some(Frequency::AsNeeded),
        _ => None,
    };
    if let Some(frequency) = single {
        return Some((frequency, 1));
    }
    // b.i.d. and friends arrive as letters between dots.
    let dotted: String = [word(0), word(2), word(4)].concat();
    if word(1) == "." && word(3) == "." {
        let frequency = match dotted.as_str() {
            "bid" => Some(Frequency::TwiceDaily),
            "tid" => Some(Frequency::ThreeTimesDaily),
            "qid" => Some(Frequency::FourTimesDaily),
            "qhs" => Some(Frequency::AtNight),
            "prn" => Some(Frequency::AsNeeded),
            _ => None,
        };
        if let Some(frequency) = frequency {
            let used = if word(5) == "." { 6 } else { 5 };
            return Some((frequency, used));
        }
    }
    match (word(0), word(1)) {
        ("at", "night" | "bedtime") => Some((Frequency::AtNight, 2)),
        ("as", "needed" | "required") => Some((Frequency::AsNeeded, 2)),
        ("when", "needed" | "required") => Some((Frequency::AsNeeded, 2)),
        ("once", "weekly") => Some((Frequency::Weekly, 2)),
        _ => None,
    }
}

/// Left, right or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    Left,
    Right,
    Both,
}

fn side(word: &str) -> Option<Side> {
    match word {
        "left" | "lt" => Some(Side::Left),
        "right" | "rt" => Some(Side::Right),
        "bilateral" | "bilaterally" => Some(Side::Both),
        _ => None,
    }
}

/// Words that join a side to what it qualifies, skipped when looking for that part.
const SIDE_FILLERS: [&str; 6] = ["sided", "side", "-", "the", "upper", "lower"];

/// A fact found in text, with the token range it spans.
#[derive(Debug, Clone, PartialEq)]
enum Fact {
    Number { value: f64, unit: Option<Unit> },
    Pressure { systolic: f64, diastolic: f64 },
    Frequency(Frequency),
    Medication(String),
    Side { side: Side, part: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
struct Found {
    fact: Fact,
    first: usize,
    last: usize,
}

/// A number at `at`, written or spoken: value, tokens used. `hundreds` asks for the clinical
/// reading of "one fifty".
fn number_at(words: &[&str], at: usize, hundreds: bool) -> Option<(f64, usize)> {
    let word = *words.get(at)?;
    if word.starts_with(|c: char| c.is_ascii_digit()) {
        return word.parse::<f64>().ok().map(|v| (v, 1));
    }
    spoken_number(words, at, hundreds)
}

/// Every fact in `tokens`. `generous` (for the transcript) also records the other readings of
/// ambiguous spoken numbers, so that either reading in a letter counts as said.
fn facts(tokens: &[Token], lexicon: Option<&DrugLexicon>, generous: bool) -> Vec<Found> {
    let words: Vec<&str> = tokens.iter().map(|t| t.text.as_str()).collect();
    let mut found = Vec::new();
    let mut at = 0;
    while at < words.len() {
        if let Some((frequency, used)) = frequency_at(&words, at) {
            found.push(Found {
                fact: Fact::Frequency(frequency),
                first: at,
                last: at + used - 1,
            });
            at += used;
            continue;
        }
        let readings: Vec<(f64, usize)> = if generous {
            [true, false]
                .iter()
                .filter_map(|&h| number_at(&words, at, h))
                .collect()
        } else {
            number_at(&words, at, true).into_iter().collect()
        };
        if let Some(&(value, used)) = readings.first() {
            // A blood pressure: N / N or N over N.
            let after = at + used;
            if matches!(words.get(after), Some(&"/") | Some(&"over")) {
                if let Some((diastolic, more)) = number_at(&words, after + 1, true) {
                    found.push(Found {
                        fact: Fact::Pressure {
                            systolic: value,
                            diastolic,
                        },
                        first: at,
                        last: after + more,
                    });
                    if generous {
                        for (v, _) in readings.iter().skip(1) {
                            found.push(Found {
                                fact: Fact::Number {
                                    value: *v,
                                    unit: None,
                                },
                                first: at,
                                last: at,
                            });
                        }
                        // Each half stands as a number too.
                        for v in [value, diastolic] {
                            found.push(Found {
                                fact: Fact::Number {
                                    value: v,
                                    unit: None,
                                },
                                first: at,
                                last: at,
                            });
                        }
                    }
                    at = after + 1 + more;
                    continue;
                }
            }
            for &(value, used) in &readings {
                let mut next = at + used;
                // "62-year-old", "5-day course"
                if words.get(next) == Some(&"-") {
                    next += 1;
                }
                let unit = unit_at(&words, next);
                let last = unit.map_or(at + used - 1, |(_, n)| next + n - 1);
                found.push(Found {
                    fact: Fact::Number {
                        value,
                        unit: unit.map(|(u, _)| u),
                    },
                    first: at,
                    last,
                });
            }
            at += readings.iter().map(|r| r.1).max().unwrap_or(1);
            continue;
        }
        let word = words[at];
        if let Some(side) = side(word) {
            let part = words[at + 1..]
                .iter()
                .take(4)
                .find(|w| !SIDE_FILLERS.contains(w))
                .filter(|w| w.chars().all(char::is_alphabetic) && w.len() > 2)
                .map(|w| w.to_string());
            found.push(Found {
                fact: Fact::Side { side, part },
                first: at,
                last: at,
            });
        } else if lexicon.is_some_and(|l| l.contains(word)) {
            found.push(Found {
                fact: Fact::Medication(word.to_string()),
                first: at,
                last: at,
            });
        }
        at += 1;
    }
    found
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
mod tests {
    use super::*;

    fn lexicon() -> DrugLexicon {
        DrugLexicon::from_names([
            "amlodipine",
            "aspirin",
            "metformin",
            "lisinopril",
            "atorvastatin",
            "ibuprofen",
        ])
    }

    /// (transcript, section, expected section after the guard, kinds removed)
    fn check(transcript: &str, section: &str, expected: &str, removed: &[FactKind]) {
        let lexicon = lexicon();
        let facts = TranscriptFacts::new(transcript, Some(&lexicon));
        let (text, unsupported) = guard(section, &facts, Some(&lexicon));
        let kinds: Vec<FactKind> = unsupported.iter().map(|u| u.kind).collect();
        assert_eq!(text, expected, "{section:?} against {transcript:?}");
        assert_eq!(kinds, removed, "{section:?}: {unsupported:?}");
    }

    const REFERRAL: &str = "Referral to cardiology. Mister Jones is a sixty two year old man with \
        exertional chest pain for three weeks. He has high blood pressure and takes amlodipine \
        five milligrams daily. His electrocardiogram shows no acute changes. Please assess for \
        stable angina.";

    #[test]
    fn the_samples_invented_facts_are_removed_and_dictated_ones_kept() {
        // What the 270M model wrote for samples/referral-dictation.wav (issue 12).
        check(
            REFERRAL,
            "Known hypertension (150/90). Amlodipine 5 mg daily.",
            "Amlodipine 5 mg daily.",
            &[FactKind::BloodPressure],
        );
        check(
            REFERRAL,
            "Blood pressure 150 over 90, heart sounds normal. ECG: sinus rhythm.",
            "Heart sounds normal. ECG: sinus rhythm.",
            &[FactKind::BloodPressure],
        );
        check(
            REFERRAL,
            "Amlodipine 5 mg daily; aspirin (newly started).",
            "Amlodipine 5 mg daily.",
            &[FactKind::Medication],
        );
        check(REFERRAL, "Aspirin started.", "", &[FactKind::Medication]);
        check(
            REFERRAL,
            "62-year-old man with exertional chest pain for three weeks.",
            "62-year-old man with exertional chest pain for three weeks.",
            &[],
        );
        check(
            REFERRAL,
            "58-year-old man. Chest pain for 3 weeks.",
            "Chest pain for 3 weeks.",
            &[FactKind::Number],
        );
    }

    #[test]
    fn spoken_forms_support_written_ones() {
        let cases: &[(&str, &str)] = &[
            ("blood pressure one fifty over ninety", "BP 150/90."),
            (
                "blood pressure one hundred and fifty over ninety",
                "BP 150/90 mmHg.",
            ),
            ("she takes five milligrams", "5 mg."),
            ("a sixty two year old woman", "62-year-old woman."),
            (
                "temperature thirty eight point four",
                "Temperature 38.4 degrees.",
            ),
            (
                "metformin five hundred milligrams twice a day",
                "Metformin 500 mg BID.",
            ),
            (
                "lisinopril ten mg two times daily",
                "Lisinopril 10 mg twice daily.",
            ),
            ("ibuprofen every six hours as needed", "Ibuprofen q6h PRN."),
            ("pain in the left knee", "Left knee pain."),
            (
                "a one thousand two hundred calorie diet",
                "1,200 calorie diet.",
            ),
            ("heart rate of seventy two", "HR 72 bpm."),
            ("atorvastatin at night", "Atorvastatin nocte."),
            ("saturation ninety eight percent", "SpO2 98%."),
        ];
        for (transcript, section) in cases {
            check(transcript, section, section, &[]);
        }
    }

    #[test]
    fn what_was_not_said_is_removed_with_its_clause() {
        check(
            "metformin five hundred milligrams twice a day",
            "Metformin 500 mg three times a day.",
            "",
            &[FactKind::Frequency],
        );
        check(
            "metformin five hundred milligrams twice a day",
            "Metformin 850 mg BID.",
            "",
            &[FactKind::Number],
        );
        check(
            "pain in the left knee",
            "Right knee pain, worse on stairs.",
            "Worse on stairs.",
            &[FactKind::Laterality],
        );
        check(
            "the cough started five days ago",
            "Cough for 5 weeks.",
            "",
            &[FactKind::Number],
        );
        check(
            "the cough started five days ago",
            "Cough for 5 days. Temperature 38.4, pulse 110. Plan: review.",
            "Cough for 5 days. Plan: review.",
            &[FactKind::Number, FactKind::Number],
        );
        // Dates and record numbers are left to identifier grounding.
        check(
            "seen today",
            "Seen on 12/01/2025.",
            "Seen on 12/01/2025.",
            &[],
        );
    }

    #[test]
    fn spoken_numbers_read_as_clinicians_say_them() {
        let read = |text: &str, hundreds: bool| {
            let words: Vec<&str> = text.split(' ').collect();
            spoken_number(&words, 0, hundreds).map(|(v, _)| v)
        };
        assert_eq!(read("sixty two", false), Some(62.0));
        assert_eq!(read("one fifty", true), Some(150.0));
        assert_eq!(read("one twenty five", true), Some(125.0));
        assert_eq!(read("one fifty", false), Some(1.0));
        assert_eq!(read("two thousand and five", false), Some(2005.0));
        assert_eq!(read("thirty eight point four", false), Some(38.4));
        assert_eq!(read("one hundred and twenty", false), Some(120.0));
        assert_eq!(read("a hundred", false), None);
        assert_eq!(read("twelve", true), Some(12.0));
    }

    #[test]
    fn drug_names_split_by_the_speech_model_are_mended_only_when_unambiguous() {
        let lexicon =
            DrugLexicon::from_names(["amlodipine", "amiodarone", "metformin", "metoprolol"]);
        let (text, corrections) =
            lexicon.correct("He takes amla-depine 5 mg daily and met-formin; a well-known drug.");
        assert_eq!(
            text,
            "He takes amlodipine 5 mg daily and metformin; a well-known drug."
        );
        assert_eq!(corrections.len(), 2);
        // Too far from any name, or plain words: left alone.
        for text in [
            "a follow-up visit",
            "x-ray of the chest",
            "amlo-darone-ish",
            "amlodipine",
        ] {
            assert_eq!(lexicon.correct(text).0, text);
        }
    }

    #[test]
    fn lexicon_files_skip_comments_and_columns() {
        let dir = std::env::temp_dir().join(format!("medscribe-lexicon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("drugs.tsv");
        std::fs::write(
            &path,
            "# comment\nAMLODIPINE\tamlodipine\nnorvasc\tamlodipine\n",
        )
        .unwrap();
        let lexicon = DrugLexicon::load(&path).unwrap();
        assert_eq!(lexicon.len(), 2);
        assert!(lexicon.contains("norvasc") && lexicon.contains("amlodipine"));
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(DrugLexicon::load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
