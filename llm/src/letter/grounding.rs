//! Grounding: a letter may only carry patient identifiers the transcript contains. Names after a
//! title (Mr, Mrs, Dr ...), dates, and record or reference numbers found in a section are checked
//! against the transcript (case, spacing and punctuation ignored); those not found are removed and
//! reported. Each section also records which transcript segments it drew on, by shared words.

use std::sync::OnceLock;

use regex::Regex;

/// Kinds of identifier checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifierKind {
    /// A personal name after a title.
    Name,
    /// A calendar date.
    Date,
    /// A record, reference or other long number.
    RecordNumber,
}

impl IdentifierKind {
    /// Lower-case noun for messages.
    pub fn noun(self) -> &'static str {
        match self {
            IdentifierKind::Name => "name",
            IdentifierKind::Date => "date",
            IdentifierKind::RecordNumber => "record number",
        }
    }
}

/// An identifier removed from a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// What it looked like.
    pub kind: IdentifierKind,
    /// The text removed.
    pub text: String,
}

fn patterns() -> &'static [(IdentifierKind, Regex)] {
    static PATTERNS: OnceLock<Vec<(IdentifierKind, Regex)>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let month = "(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)";
        let day = r"\d{1,2}(?:st|nd|rd|th)?";
        let table = [
            (
                IdentifierKind::Name,
                r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+[A-Z][A-Za-z'\-]+(?:\s+[A-Z][A-Za-z'\-]+)?".to_string(),
            ),
            (
                IdentifierKind::Date,
                format!(
                    r"(?i)\b(?:\d{{1,2}}[/.\-]\d{{1,2}}[/.\-]\d{{2,4}}|\d{{4}}-\d{{2}}-\d{{2}}|{day}\s+(?:of\s+)?{month}\.?,?\s+\d{{4}}|{month}\.?\s+{day},?\s+\d{{4}}|{month}\.?\s+\d{{4}}|{day}\s+(?:of\s+)?{month}|{month}\.?\s+{day})\b"
                ),
            ),
            (
                IdentifierKind::RecordNumber,
                r"(?i)\b(?:(?:MRN|NHS|record|hospital|patient|reference|ID)\s*(?:number|no\.?|#)?\s*[:#]?\s*[A-Z0-9][A-Z0-9\-]{3,}|\d[\d\-]{5,}\d)\b".to_string(),
            ),
        ];
        table
            .into_iter()
            .filter_map(|(kind, pattern)| Regex::new(&pattern).ok().map(|r| (kind, r)))
            .collect()
    })
}

/// Lower-case letters and digits, runs of anything else as one space.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut gap = true;
    for c in text.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
            gap = false;
        } else if !gap {
            out.push(' ');
            gap = true;
        }
    }
    out.trim_end().to_string()
}

/// A date's numbers (ordinal suffixes dropped, month names as numbers), sorted: "3rd of March
/// 1961" and "3 March 1961" and "03/03/1961" compare equal.
fn date_key(date: &str) -> Vec<u32> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let mut key: Vec<u32> = normalise(date)
        .split(|c: char| c == ' ' || !c.is_alphanumeric())
        .filter_map(|word| {
            let digits: String = word.chars().take_while(char::is_ascii_digit).collect();
            if !digits.is_empty() {
                return digits.parse().ok();
            }
            MONTHS
                .iter()
                .position(|m| word.starts_with(m))
                .map(|i| i as u32 + 1)
        })
        .collect();
    key.sort_unstable();
    key
}

/// Number words from zero to nineteen (also the fact guard's).
pub(crate) const UNITS: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
/// The tens from twenty to ninety.
pub(crate) const TENS: [&str; 8] = [
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
const ORDINALS: [&str; 20] = [
    "",
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
    "seventeenth",
    "eighteenth",
    "nineteenth",
];

fn unit(word: &str) -> Option<u32> {
    UNITS.iter().position(|u| *u == word).map(|n| n as u32)
}

fn tens(word: &str) -> Option<u32> {
    TENS.iter()
        .position(|t| *t == word)
        .map(|n| n as u32 * 10 + 20)
}

/// A number 0..99 spelled from `words[at..]` ("sixty one", "oh five", "twelve"): value and words.
fn two_digits(words: &[&str], at: usize) -> Option<(u32, usize)> {
    let word = *words.get(at)?;
    let next = words.get(at + 1).copied();
    if word == "oh" {
        return next.and_then(unit).filter(|&n| n < 10).map(|n| (n, 2));
    }
    if let Some(t) = tens(word) {
        return Some(
            match next.and_then(unit).filter(|&n| (1..10).contains(&n)) {
                Some(n) => (t + n, 2),
                None => (t, 1),
            },
        );
    }
    unit(word).map(|n| (n, 1))
}

/// A day of the month spoken as an ordinal ("third", "twenty first", "thirtieth").
fn spoken_day(words: &[&str], at: usize) -> Option<(u32, usize)> {
    let word = *words.get(at)?;
    if let Some(n) = ORDINALS.iter().position(|o| !o.is_empty() && *o == word) {
        return Some((n as u32, 1));
    }
    match word {
        "twentieth" => return Some((20, 1)),
        "thirtieth" => return Some((30, 1)),
        _ => {}
    }
    let t = tens(word).filter(|&t| t <= 30)?;
    let n = ORDINALS
        .iter()
        .position(|o| !o.is_empty() && Some(*o) == words.get(at + 1).copied())
        .filter(|&n| n < 10)?;
    Some((t + n as u32, 2)).filter(|(day, _)| *day <= 31)
}

/// A year spoken the usual ways: "nineteen sixty one", "twenty twenty four", "nineteen oh five",
/// "two thousand and five", "two thousand".
fn spoken_year(words: &[&str], at: usize) -> Option<(u32, usize)> {
    let word = *words.get(at)?;
    if word == "two" && words.get(at + 1) == Some(&"thousand") {
        let rest = at + 2 + usize::from(words.get(at + 2) == Some(&"and"));
        return Some(match two_digits(words, rest).filter(|(n, _)| *n > 0) {
            Some((n, used)) => (2000 + n, rest - at + used),
            None => (2000, 2),
        });
    }
    let century = match word {
        "eighteen" => 18,
        "nineteen" => 19,
        "twenty" => 20,
        _ => return None,
    };
    if words.get(at + 1) == Some(&"hundred") {
        return Some((century * 100, 2));
    }
    let (n, used) = two_digits(words, at + 1).filter(|(n, _)| *n >= 10 || words[at + 1] == "oh")?;
    Some((century * 100 + n, used + 1))
}

/// `text` with spoken dates' numbers written as digits ("the third of March nineteen sixty
/// one" -> "3 of march 1961"), so they compare with dates written in a letter. MedASR and
/// dictation in general spell numbers out.
fn digits_for_spoken_numbers(text: &str) -> String {
    let normalised = normalise(text);
    let words: Vec<&str> = normalised.split(' ').collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let mut at = 0;
    while at < words.len() {
        if words[at] == "the" && spoken_day(&words, at + 1).is_some() {
            at += 1;
            continue;
        }
        if let Some((year, used)) = spoken_year(&words, at) {
            out.push(year.to_string());
            at += used;
        } else if let Some((day, used)) = spoken_day(&words, at) {
            out.push(day.to_string());
            at += used;
        } else {
            out.push(words[at].to_string());
            at += 1;
        }
    }
    out.join(" ")
}

/// Byte ranges of `text` that look like identifiers (names after a title, dates, record numbers),
/// whether or not the transcript has them.
pub(crate) fn identifier_matches(text: &str) -> Vec<(usize, usize)> {
    patterns()
        .iter()
        .flat_map(|(kind, regex)| {
            regex
                .find_iter(text)
                .filter(|m| is_identifier(*kind, m.as_str()))
                .map(|m| (m.start(), m.end()))
        })
        .collect()
}

/// Whether a pattern's match is really an identifier: a record or reference number has a digit
/// ("patient reports" matches the words of the pattern, not a number).
fn is_identifier(kind: IdentifierKind, text: &str) -> bool {
    kind != IdentifierKind::RecordNumber || text.chars().any(|c| c.is_ascii_digit())
}

/// Removes identifiers of `section` not present in `transcript`; returns the cleaned text and
/// what was removed.
pub fn ground(section: &str, transcript: &str) -> (String, Vec<Removed>) {
    let source = format!(" {} ", normalise(transcript));
    let with_digits = digits_for_spoken_numbers(transcript);
    let spoken_dates: Vec<Vec<u32>> = patterns()
        .iter()
        .filter(|(kind, _)| *kind == IdentifierKind::Date)
        .flat_map(|(_, regex)| {
            regex
                .find_iter(transcript)
                .chain(regex.find_iter(&with_digits))
                .map(|m| date_key(m.as_str()))
        })
        .collect();
    let mut spans: Vec<(usize, usize, IdentifierKind)> = Vec::new();
    for (kind, regex) in patterns() {
        for m in regex.find_iter(section) {
            if !is_identifier(*kind, m.as_str()) {
                continue;
            }
            let needle = format!(" {} ", normalise(m.as_str()));
            let overlaps = spans.iter().any(|&(s, e, _)| m.start() < e && s < m.end());
            let present = source.contains(&needle)
                || (*kind == IdentifierKind::Date && spoken_dates.contains(&date_key(m.as_str())));
            if !overlaps && !present {
                spans.push((m.start(), m.end(), *kind));
            }
        }
    }
    spans.sort_by_key(|&(start, _, _)| start);
    let mut removed = Vec::new();
    let mut cleaned = String::with_capacity(section.len());
    let mut at = 0;
    for (start, end, kind) in spans {
        cleaned.push_str(&section[at..start]);
        removed.push(Removed {
            kind,
            text: section[start..end].to_string(),
        });
        at = end;
    }
    cleaned.push_str(&section[at..]);
    // Tidy what the removal leaves: doubled spaces, a space before punctuation.
    let tidy = cleaned
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" ,", ",")
        .replace(" .", ".");
    (tidy, removed)
}

const STOP_WORDS: [&str; 24] = [
    "this", "that", "with", "from", "have", "been", "were", "will", "they", "their", "there",
    "which", "what", "when", "patient", "about", "also", "into", "some", "your", "does", "than",
    "then", "them",
];

fn content_words(text: &str) -> std::collections::HashSet<String> {
    normalise(text)
        .split(' ')
        .filter(|w| w.chars().count() >= 4 && !STOP_WORDS.contains(w))
        .map(str::to_string)
        .collect()
}

/// Indices of `segments` that `section` draws on: those sharing at least two content words with
/// it, or one when the segment has fewer than four.
pub fn sources(section: &str, segments: &[String]) -> Vec<usize> {
    let words = content_words(section);
    if words.is_empty() {
        return Vec::new();
    }
    segments
        .iter()
        .enumerate()
        .filter(|(_, segment)| {
            let own = content_words(segment);
            let shared = own.intersection(&words).count();
            shared >= 2 || (shared >= 1 && own.len() < 4)
        })
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_after_patient_or_record_are_not_record_numbers() {
        let text = "The patient reports chest pain. Hospital course uneventful. Record keeping.";
        assert_eq!(ground(text, "chest pain").0, text);
        let (_, removed) = ground("Patient ID 4471-22.", "no number here");
        assert_eq!(removed.len(), 1);
    }

    #[test]
    fn invented_identifiers_are_removed_and_spoken_ones_kept() {
        let transcript =
            "This is Mr John Smith, born 3rd of March 1961, MRN 448812. Seen on 12/01/2025.";
        let (text, removed) = ground(
            "Mr John Smith (MRN 448812), seen 12/01/2025, born 3 March 1961. Reviewed by Dr Jones on 14/02/2025, ref 99887766.",
            transcript,
        );
        let kinds: Vec<(IdentifierKind, &str)> =
            removed.iter().map(|r| (r.kind, r.text.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                (IdentifierKind::Name, "Dr Jones"),
                (IdentifierKind::Date, "14/02/2025"),
                (IdentifierKind::RecordNumber, "99887766"),
            ]
        );
        assert!(
            text.contains("Mr John Smith")
                && text.contains("448812")
                && text.contains("12/01/2025")
        );
        assert!(text.contains("3 March 1961"), "{text}");
        assert!(!text.contains("Jones") && !text.contains("14/02") && !text.contains("99887766"));
    }

    #[test]
    fn dates_without_a_year_are_checked_too() {
        // Seen from the 270M model: an admission date nobody dictated.
        let transcript = "Admitted on 14th of December with pneumonia.";
        let (text, removed) = ground(
            "Admitted on December 14th, discharged on 2 January; seen 14 Dec.",
            transcript,
        );
        let dates: Vec<&str> = removed.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(dates, ["2 January"], "{text}");
        assert!(
            text.contains("December 14th") && text.contains("14 Dec"),
            "{text}"
        );
    }

    #[test]
    fn spoken_dates_match_dates_in_digits() {
        let transcript = "Mrs Patel, born on the third of March nineteen sixty-one, seen on \
                          the twenty first of June two thousand and five and March the second \
                          twenty twenty four";
        for kept in [
            "Born 3 March 1961.",
            "Born 03/03/1961.",
            "Seen 21/06/2005.",
            "Seen on 21st June 2005.",
            "Review on 2 March 2024.",
        ] {
            let (text, removed) = ground(kept, transcript);
            assert!(removed.is_empty(), "{kept}: {removed:?}");
            assert_eq!(text, kept);
        }
        for invented in [
            "Born 4 March 1961.",
            "Seen 21/06/2006.",
            "Review 2 May 2024.",
        ] {
            let (_, removed) = ground(invented, transcript);
            assert_eq!(removed.len(), 1, "{invented}");
        }
        assert_eq!(
            digits_for_spoken_numbers("the thirtieth of april eighteen hundred, two thousand"),
            "30 of april 1800 2000"
        );
    }

    #[test]
    fn clinical_numbers_are_not_identifiers() {
        let (text, removed) = ground(
            "Amlodipine 5 mg daily; blood pressure 150/90; CRP 180; review in 6 weeks.",
            "nothing",
        );
        assert!(removed.is_empty(), "{removed:?}");
        assert!(text.starts_with("Amlodipine 5 mg"));
    }

    #[test]
    fn sources_are_segments_sharing_words() {
        let segments = vec![
            "chest pain on exertion for three weeks".to_string(),
            "he takes amlodipine daily".to_string(),
            "the weather is nice".to_string(),
        ];
        assert_eq!(
            sources("Exertional chest pain, three weeks.", &segments),
            vec![0]
        );
        assert_eq!(sources("Amlodipine 5 mg.", &segments), vec![1]);
        assert!(sources("", &segments).is_empty());
    }
}
