//! Mending medication names that a speech model misheard. A general English speech model writes
//! a drug it does not know as it sounds: "Gavapentin", "Pridness alone", "Gabay pent in". Such a
//! word, or two or three words run together, is written as the lexicon spells the name when:
//!
//! - it stands where a medication stands: after "takes", "started", "continue"... or before a
//!   dose unit ("milligrams", "inhaler");
//! - it is not English and names no medication already (a transcript's "continue" is never
//!   mended to "canthine", nor "the omeprazole" to "timoprazole");
//! - exactly one generic name sounds the same (a phonetic key of merged voicing, vowels and
//!   doubled letters, at most one step apart for long names) and is close in spelling (vowels
//!   count half); a single word, a real spelling of something, must be closer still.
//!
//! Wrong is worse than unmended: a transcript naming the wrong drug misleads the letter's fact
//! guard too, so every rule errs towards leaving a word alone.

use std::collections::{HashMap, HashSet};

use super::grounding::{TENS, UNITS};

fn is_number_word(word: &str) -> bool {
    UNITS.contains(&word) || TENS.contains(&word)
}

/// Words before a medication name in dictation.
const VERBS_BEFORE: [&str; 22] = [
    "takes",
    "taking",
    "take",
    "took",
    "started",
    "start",
    "starting",
    "continue",
    "continued",
    "given",
    "uses",
    "using",
    "prescribed",
    "stop",
    "stopped",
    "increase",
    "increased",
    "reduce",
    "reduced",
    "commenced",
    "add",
    "added",
];

/// Words after a medication name (within [`AFTER_WINDOW`] words): its dose or its form.
const UNITS_AFTER: [&str; 19] = [
    "mg",
    "milligrams",
    "milligram",
    "micrograms",
    "microgram",
    "mcg",
    "grams",
    "gram",
    "units",
    "ml",
    "milliliters",
    "millilitres",
    "inhaler",
    "tablets",
    "tablet",
    "capsules",
    "capsule",
    "puffs",
    "patch",
];

/// How many words after a name may come before its dose unit ("gabapentin, three hundred
/// milligrams").
const AFTER_WINDOW: usize = 4;

/// Words that never open a misheard name: a run-together "the omeprazole" or "so logan is"
/// starts with one.
const FUNCTION_WORDS: [&str; 45] = [
    "a", "an", "the", "of", "to", "in", "on", "at", "by", "is", "are", "was", "were", "be", "so",
    "and", "or", "but", "your", "my", "me", "his", "her", "its", "our", "their", "this", "that",
    "for", "with", "from", "as", "it", "he", "she", "we", "they", "you", "i", "send", "if", "not",
    "no", "take", "takes",
];

/// The sound of a word, roughly: voicing merged (b/p, d/t, g/k, v/f), c/s/z/x by their sound,
/// silent h dropped, each run of vowels one `a`, doubled letters single: "prednisolone" and
/// the "pridness alone" a speech model heard are both `pratnasalana`.
pub fn sound_key(word: &str) -> String {
    let mut w: String = word
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    for (from, to) in [
        ("ph", "f"),
        ("th", "t"),
        ("sh", "s"),
        ("ch", "k"),
        ("ck", "k"),
        ("qu", "kw"),
        ("x", "ks"),
        ("wh", "w"),
    ] {
        w = w.replace(from, to);
    }
    let letters: Vec<char> = w.chars().collect();
    let mut out = String::with_capacity(letters.len());
    for (i, &c) in letters.iter().enumerate() {
        let next = letters.get(i + 1).copied();
        let mapped = match c {
            'c' if matches!(next, Some('e' | 'i' | 'y')) => 's',
            'c' | 'q' | 'g' => 'k',
            'z' => 's',
            'b' => 'p',
            'd' => 't',
            'v' => 'f',
            'h' => continue,
            'a' | 'e' | 'i' | 'o' | 'u' | 'y' => 'a',
            other => other,
        };
        if out.ends_with(mapped) {
            continue;
        }
        out.push(mapped);
    }
    out
}

/// Levenshtein distance of two lower-case words (characters).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            current[j + 1] = (previous[j] + usize::from(ca != cb))
                .min(previous[j + 1] + 1)
                .min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Edit distance in which one vowel for another costs half: misheard names keep their
/// consonants better than their vowels.
fn lenient_distance(a: &str, b: &str) -> f32 {
    let vowel = |c: char| matches!(c, 'a' | 'e' | 'i' | 'o' | 'u' | 'y');
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<f32> = (0..=b.len()).map(|j| j as f32).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![(i + 1) as f32; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitute = if ca == cb {
                0.0
            } else if vowel(ca) && vowel(cb) {
                0.5
            } else {
                1.0
            };
            current[j + 1] = (previous[j] + substitute)
                .min(previous[j + 1] + 1.0)
                .min(current[j] + 1.0);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Generic medication names by sound, and the English words a transcript may use freely.
#[derive(Debug, Clone, Default)]
pub struct SoundIndex {
    /// Sound key -> the names with it.
    by_key: HashMap<String, Vec<String>>,
    english: HashSet<String>,
}

/// Shortest name (letters) worth mending: shorter ones sound like too many words.
const MIN_NAME_LETTERS: usize = 6;

impl SoundIndex {
    /// An index of `generic` names (lower case; names with other than letters are left out)
    /// and `english` words. Without English words nothing is mended: every word could be one.
    pub fn new<'a>(
        generic: impl IntoIterator<Item = &'a str>,
        english: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        for name in generic {
            if name.len() >= MIN_NAME_LETTERS && name.chars().all(|c| c.is_ascii_lowercase()) {
                by_key
                    .entry(sound_key(name))
                    .or_default()
                    .push(name.to_string());
            }
        }
        Self {
            by_key,
            english: english.into_iter().map(str::to_lowercase).collect(),
        }
    }

    /// Whether it can mend anything.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty() || self.english.is_empty()
    }

    /// The one generic name that `joined` (a word, or words run together, lower case) sounds
    /// and is spelt like; `single` when it is one word as written.
    fn name_for(&self, joined: &str, single: bool) -> Option<&str> {
        let key = sound_key(joined);
        if key.len() < 4 {
            return None;
        }
        let allowed = usize::from(key.len() >= 8);
        let mut best: Option<usize> = None;
        let mut candidates: Vec<&str> = Vec::new();
        for (other, names) in &self.by_key {
            if other.len().abs_diff(key.len()) > allowed
                || other.chars().next() != key.chars().next()
            {
                continue;
            }
            let distance = edit_distance(&key, other);
            if distance > allowed {
                continue;
            }
            match best {
                Some(b) if distance > b => {}
                Some(b) if distance == b => candidates.extend(names.iter().map(String::as_str)),
                _ => {
                    best = Some(distance);
                    candidates = names.iter().map(String::as_str).collect();
                }
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut spelt: Vec<(f32, &str)> = candidates
            .into_iter()
            .map(|name| (lenient_distance(joined, name), name))
            .collect();
        spelt.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
        let (distance, name) = *spelt.first()?;
        if spelt.get(1).is_some_and(|(second, _)| *second == distance) {
            return None; // two names as close: ambiguous
        }
        if distance > name.len() as f32 / 3.0 {
            return None;
        }
        if single && edit_distance(joined, name) > (name.len() / 5).max(1) {
            return None;
        }
        Some(name)
    }

    /// Spans of `text` to mend: (byte start, byte end, as written, name). `is_name` tells a
    /// medication name already in the lexicon.
    pub fn mend(
        &self,
        text: &str,
        is_name: &dyn Fn(&str) -> bool,
    ) -> Vec<(usize, usize, String, String)> {
        if self.is_empty() {
            return Vec::new();
        }
        // Words and numbers with their byte spans; `gap_is_space` says the word follows the one
        // before with only white space between (a misheard name is not split by punctuation).
        struct Word {
            lower: String,
            start: usize,
            end: usize,
            alphabetic: bool,
            gap_is_space: bool,
        }
        let mut words: Vec<Word> = Vec::new();
        let mut at = 0;
        let mut last_end = 0;
        for (i, c) in text.char_indices() {
            if i < at {
                continue;
            }
            if !c.is_alphanumeric() {
                continue;
            }
            let alphabetic = c.is_alphabetic();
            let len = text[i..]
                .find(|ch: char| {
                    if alphabetic {
                        !(ch.is_alphabetic() || ch == '\'')
                    } else {
                        !(ch.is_ascii_digit() || ch == '.')
                    }
                })
                .unwrap_or(text.len() - i);
            let end = i + len;
            words.push(Word {
                lower: text[i..end].to_lowercase(),
                start: i,
                end,
                alphabetic,
                gap_is_space: text[last_end..i].chars().all(char::is_whitespace),
            });
            at = end;
            last_end = end;
        }
        let english = |w: &str| w.chars().count() <= 2 || self.english.contains(w);
        let mut out = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let mut mended = 0;
            for span in (1..=3).rev() {
                let Some(run) = words.get(i..i + span) else {
                    continue;
                };
                if !run.iter().all(|w| w.alphabetic)
                    || run.iter().skip(1).any(|w| !w.gap_is_space)
                    || run.iter().all(|w| english(&w.lower))
                    || run.iter().any(|w| is_name(&w.lower))
                    // A number word is a dose, never part of a name.
                    || run.iter().any(|w| is_number_word(&w.lower))
                    || (span > 1 && FUNCTION_WORDS.contains(&run[0].lower.as_str()))
                {
                    continue;
                }
                let joined: String = run.iter().map(|w| w.lower.as_str()).collect();
                if joined.len() < MIN_NAME_LETTERS
                    || !joined.chars().all(|c| c.is_ascii_lowercase())
                {
                    continue;
                }
                let before = words[i.saturating_sub(2)..i]
                    .iter()
                    .any(|w| VERBS_BEFORE.contains(&w.lower.as_str()));
                let after = words
                    .iter()
                    .skip(i + span)
                    .take(AFTER_WINDOW)
                    .any(|w| UNITS_AFTER.contains(&w.lower.as_str()));
                if !(before || after) {
                    continue;
                }
                if let Some(name) = self.name_for(&joined, span == 1) {
                    let (start, end) = (run[0].start, run[span - 1].end);
                    out.push((start, end, text[start..end].to_string(), name.to_string()));
                    mended = span;
                    break;
                }
            }
            i += mended.max(1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> SoundIndex {
        SoundIndex::new(
            [
                "gabapentin",
                "prednisolone",
                "tiotropium",
                "montelukast",
                "apixaban",
                "timoprazole",
                "omeprazole",
                "canthine",
                "jacoline",
                "oxedrine",
                "microbin",
            ],
            [
                "he", "takes", "continue", "alone", "epic", "the", "care", "take", "try", "bent",
                "in", "to", "inhaler", "uses", "and", "at", "night",
            ],
        )
    }

    fn mended(text: &str) -> Vec<String> {
        let names = ["omeprazole"];
        index()
            .mend(text, &|w| names.contains(&w))
            .into_iter()
            .map(|(_, _, _, name)| name)
            .collect()
    }

    #[test]
    fn sound_keys_merge_what_speech_models_confuse() {
        assert_eq!(sound_key("gabapentin"), "kapapantan");
        assert_eq!(edit_distance(&sound_key("Gavapentin"), "kapapantan"), 1);
        assert_eq!(sound_key("pridnessalone"), "pratnasalana");
        assert_eq!(sound_key("prednisolone"), "pratnasalana");
        // Why English words are never mended: "continue" sounds like the substance canthine.
        assert_eq!(sound_key("continue"), sound_key("canthine"));
    }

    #[test]
    fn misheard_names_in_a_medication_context_are_mended() {
        assert_eq!(mended("He takes Gavapentin at night."), ["gabapentin"]);
        assert_eq!(
            mended("Pridness alone thirty milligrams for five days."),
            ["prednisolone"]
        );
        assert_eq!(
            mended("Gabay pent in three hundred milligrams."),
            ["gabapentin"]
        );
        assert_eq!(mended("He uses a turtropium inhaler."), ["tiotropium"]);
        assert_eq!(
            mended("and takes Monte Lucas to the aide."),
            ["montelukast"]
        );
        assert_eq!(
            mended("Epic Saban five milligrams twice daily."),
            ["apixaban"]
        );
    }

    #[test]
    fn english_names_known_drugs_and_bare_mentions_are_left_alone() {
        for text in [
            // English words, however close a name sounds.
            "Continue the tablets.",
            // A known drug is never turned into another.
            "we had you on the omeprazole 20 mg",
            // A person, after "take care": not close enough as one word.
            "take care jacqueline",
            // Real brand names the lexicon lacks: one word must be one edit from a name.
            "I take Excedrin 500 mg",
            "You were taking the Macrobid",
            // No medication context.
            "Gavapentin is a word here.",
            // A dose is not part of a name.
            "Flovent one puff twice daily",
        ] {
            assert!(mended(text).is_empty(), "{text}: {:?}", mended(text));
        }
        // Any text, any script: no panic, and spans fall on character boundaries.
        for text in [
            "",
            "takes",
            "takes Gavapentin",
            "takes Gävapëntin 5 mg",
            "takes 😀 Gavapentin 😀 mg",
            "İstanbul takes ﬁgabapentin mg",
            "takes Gava-pentin, 5mg",
        ] {
            for (start, end, _, _) in index().mend(text, &|_| false) {
                assert!(text.is_char_boundary(start) && text.is_char_boundary(end));
            }
        }
        // Without an English word list nothing is mended: every word could be one.
        let bare = SoundIndex::new(["gabapentin"], []);
        assert!(bare
            .mend("He takes Gavapentin at night.", &|_| false)
            .is_empty());
    }
}
