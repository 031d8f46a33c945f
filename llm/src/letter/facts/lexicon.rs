//! The drug lexicon: medication names (FDA UNII names, generic or brand) and the English words
//! they must not be confused with, as setup builds them.

use super::*;

/// Medication names (lower case), one word each: the generic and brand names of the FDA's UNII
/// substance list that are not ordinary English words, plus those that are but carry a drug
/// stem (aspirin, morphine). Built by setup (`models/scripts/build_drug_lexicon.py`).
#[derive(Debug, Clone, Default)]
pub struct DrugLexicon {
    names: HashSet<String>,
    sounds: SoundIndex,
}

/// Largest English word list read (setup's is about 0.6 MB).
pub(super) const MAX_ENGLISH_BYTES: u64 = 16 << 20;

/// Largest lexicon file read (setup's is about 0.7 MB).
pub(super) const MAX_LEXICON_BYTES: u64 = 64 << 20;

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

    pub(super) fn correction(&self, word: &str) -> Option<String> {
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
