//! Letter templates: data files naming a document's sections (required or optional, with
//! instructions), its LOINC document type for export, and a short worked example used to prompt
//! base models. Built-in templates are compiled in from `llm/templates/`; a file of the same name
//! in the user's template directory overrides one, and new names add templates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{LlmError, Result};

/// A coded document type (LOINC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentType {
    /// LOINC code, e.g. 57133-1.
    pub code: String,
    /// Its display name.
    pub display: String,
}

/// One section of a letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    /// JSON key: lowercase letters, digits and underscores.
    pub key: String,
    /// Heading shown to readers.
    pub title: String,
    /// Whether the letter must say something here.
    #[serde(default)]
    pub required: bool,
    /// What belongs in the section, for the model.
    #[serde(default)]
    pub instructions: String,
    /// Words and phrases that mark a statement as belonging here ("on examination", "please
    /// arrange"); `{medication}` stands for any medication name. Grounded drafting weighs them
    /// with the model's own judgement, which a small model makes poorly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cues: Vec<String>,
}

/// Most cues one section may have, and the longest cue: a template is a small hand-written file.
const MAX_CUES: usize = 64;
const MAX_CUE_CHARS: usize = 64;

/// A worked example: a short transcript and the letter written from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The transcript.
    pub transcript: String,
    /// Section key -> text.
    pub letter: BTreeMap<String, String>,
}

/// A letter template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// Name used on the command line.
    pub name: String,
    /// Document title.
    pub title: String,
    /// Document type for FHIR export.
    pub loinc: DocumentType,
    /// General instructions for the model.
    pub instructions: String,
    /// Sections in document order.
    pub sections: Vec<Section>,
    /// Worked example for base models.
    pub example: Option<Example>,
    /// Where the template came from (`built-in` or a file path).
    #[serde(skip)]
    pub source: String,
}

const BUILT_IN: [(&str, &str); 5] = [
    ("referral", include_str!("../../templates/referral.json")),
    ("discharge", include_str!("../../templates/discharge.json")),
    ("radiology", include_str!("../../templates/radiology.json")),
    ("soap", include_str!("../../templates/soap.json")),
    (
        "case-conference",
        include_str!("../../templates/case-conference.json"),
    ),
];

impl Template {
    /// Parses and checks a template.
    pub fn from_json(text: &str, source: &str) -> std::result::Result<Self, String> {
        let mut template: Template =
            serde_json::from_str(text).map_err(|e| format!("not a valid template: {e}"))?;
        template.source = source.to_string();
        template.validate()?;
        Ok(template)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        check_name(&self.name)?;
        if self.sections.is_empty() {
            return Err("a template needs at least one section".into());
        }
        let mut seen = std::collections::HashSet::new();
        for section in &self.sections {
            let key_ok = !section.key.is_empty()
                && section
                    .key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !key_ok {
                return Err(format!(
                    "section key {:?}: use lowercase letters, digits and underscores",
                    section.key
                ));
            }
            if !seen.insert(section.key.as_str()) {
                return Err(format!("section key {:?} appears twice", section.key));
            }
            if section.cues.len() > MAX_CUES {
                return Err(format!(
                    "section {:?} has {} cues; at most {MAX_CUES}",
                    section.key,
                    section.cues.len()
                ));
            }
            if let Some(cue) = section.cues.iter().find(|c| {
                c.trim().is_empty()
                    || c.chars().count() > MAX_CUE_CHARS
                    || c.chars().any(char::is_control)
            }) {
                return Err(format!(
                    "section {:?}: cue {cue:?} must be a word or phrase of at most {MAX_CUE_CHARS} characters",
                    section.key
                ));
            }
        }
        if let Some(example) = &self.example {
            if let Some(unknown) = example.letter.keys().find(|k| !seen.contains(k.as_str())) {
                return Err(format!("the example uses unknown section {unknown:?}"));
            }
        }
        Ok(())
    }

    /// Each section's key and whether it is required, in order.
    pub fn keys(&self) -> Vec<(&str, bool)> {
        self.sections
            .iter()
            .map(|s| (s.key.as_str(), s.required))
            .collect()
    }

    /// The section with `key`.
    pub fn section(&self, key: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.key == key)
    }
}

/// Largest template file read (the built-ins are about 3 KB).
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// A template's name becomes a file stem (letters are saved as `NAME.md`), so it must be a plain
/// one: no path separators, no `..`, no leading dot, no control characters.
fn check_name(name: &str) -> std::result::Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.contains("..")
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c == ':' || c.is_control());
    if plain {
        Ok(())
    } else {
        Err(format!(
            "template name {name:?} must be a plain file name (no /, \\, .., leading dot or \
             control characters; at most 64 bytes)"
        ))
    }
}

/// The templates there are: the built-ins, then those in the user's directory, with a warning
/// for each user file that could not be used (the rest still work).
#[derive(Debug, Clone)]
pub struct TemplateSet {
    /// By name.
    templates: BTreeMap<String, Template>,
    /// One line per user template file skipped or overriding another user file.
    pub warnings: Vec<String>,
}

impl TemplateSet {
    /// The built-in templates and those in `user_dir` (`*.json`; same name overrides). A file
    /// that is malformed, unreadable or not a regular file is skipped with a warning naming it.
    pub fn load(user_dir: Option<&Path>) -> Self {
        let mut templates: BTreeMap<String, Template> = BTreeMap::new();
        for (_, text) in BUILT_IN {
            // Built-ins are checked by the tests; one that failed would be a build mistake.
            if let Ok(template) = Template::from_json(text, "built-in") {
                templates.insert(template.name.clone(), template);
            }
        }
        let mut warnings = Vec::new();
        let Some(dir) = user_dir.filter(|d| d.is_dir()) else {
            return Self {
                templates,
                warnings,
            };
        };
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect(),
            Err(e) => {
                warnings.push(format!("{}: cannot read: {e}", dir.display()));
                Vec::new()
            }
        };
        files.sort();
        let mut from_user: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in files {
            let parsed = crate::files::read_text_bounded(&path, MAX_TEMPLATE_BYTES)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|text| Template::from_json(&text, &path.display().to_string()));
            match parsed {
                Ok(template) => {
                    if let Some(earlier) = from_user.insert(template.name.clone(), path.clone()) {
                        warnings.push(format!(
                            "{}: template {:?} is also defined by {}; using {}",
                            path.display(),
                            template.name,
                            earlier.display(),
                            path.display()
                        ));
                    }
                    templates.insert(template.name.clone(), template);
                }
                Err(reason) => warnings.push(format!(
                    "{}: skipped: {}",
                    path.display(),
                    crate::files::one_line(&reason)
                )),
            }
        }
        Self {
            templates,
            warnings,
        }
    }

    /// Every template, by name.
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        self.templates.values()
    }

    /// The template called `name`.
    pub fn find(&self, name: &str) -> Result<&Template> {
        self.templates.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.templates.keys().map(String::as_str).collect();
            let skipped = if self.warnings.is_empty() {
                String::new()
            } else {
                format!(" ({} user template file(s) skipped)", self.warnings.len())
            };
            LlmError::Template(format!(
                "no template {name:?}; templates: {}{skipped}",
                names.join(", ")
            ))
        })
    }
}

/// The built-in templates and those in `user_dir`, without the warnings ([`TemplateSet::load`]).
pub fn all_templates(user_dir: Option<&Path>) -> Vec<Template> {
    TemplateSet::load(user_dir).templates().cloned().collect()
}

/// The template called `name` ([`TemplateSet::find`]).
pub fn find_template(name: &str, user_dir: Option<&Path>) -> Result<Template> {
    TemplateSet::load(user_dir).find(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates_parse_with_their_codes() {
        let templates = all_templates(None);
        assert_eq!(templates.len(), BUILT_IN.len(), "every built-in parses");
        let codes: BTreeMap<&str, &str> = templates
            .iter()
            .map(|t| (t.name.as_str(), t.loinc.code.as_str()))
            .collect();
        assert_eq!(codes["discharge"], "18842-5");
        assert_eq!(codes["referral"], "57133-1");
        assert_eq!(codes["radiology"], "18748-4");
        assert_eq!(codes["soap"], "11506-3");
        assert_eq!(codes["case-conference"], "11488-4");
        for t in &templates {
            assert!(t.sections.iter().any(|s| s.required), "{}", t.name);
            let example = t.example.as_ref().expect("every built-in has an example");
            assert_eq!(example.letter.len(), t.sections.len(), "{}", t.name);
        }
    }

    #[test]
    fn user_templates_override_and_bad_ones_name_the_file() {
        let dir = std::env::temp_dir().join(format!("medscribe-templates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut soap: serde_json::Value = serde_json::from_str(BUILT_IN[3].1).unwrap();
        soap["title"] = "Clinic note".into();
        std::fs::write(dir.join("soap.json"), soap.to_string()).unwrap();
        let found = find_template("soap", Some(&dir)).unwrap();
        assert_eq!(found.title, "Clinic note");
        assert!(found.source.ends_with("soap.json"));
        soap["sections"][0]["key"] = "Bad Key".into();
        std::fs::write(dir.join("broken.json"), soap.to_string()).unwrap();
        // One bad file is skipped with a warning naming it; every other template still works.
        let set = TemplateSet::load(Some(&dir));
        assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
        assert!(
            set.warnings[0].contains("broken.json") && set.warnings[0].contains("Bad Key"),
            "{:?}",
            set.warnings
        );
        assert_eq!(set.find("soap").unwrap().title, "Clinic note");
        assert!(set.find("referral").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
        let err = find_template("letter-to-mum", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("referral"), "{err}");
    }

    #[test]
    fn names_that_are_not_plain_file_stems_are_refused() {
        let mut soap: serde_json::Value = serde_json::from_str(BUILT_IN[3].1).unwrap();
        for name in [
            "../../x", "a/b", "a\\b", "..", ".hidden", "", "x\ny", "C:evil",
        ] {
            soap["name"] = name.into();
            let err = Template::from_json(&soap.to_string(), "test").unwrap_err();
            assert!(err.contains("plain file name"), "{name:?}: {err}");
        }
        soap["name"] = "my-referral_2".into();
        assert!(Template::from_json(&soap.to_string(), "test").is_ok());
    }

    #[test]
    fn cues_are_short_words_or_phrases() {
        let mut referral: serde_json::Value = serde_json::from_str(BUILT_IN[0].1).unwrap();
        assert_eq!(referral["name"], "referral");
        let parsed = Template::from_json(&referral.to_string(), "test").unwrap();
        assert!(parsed
            .sections
            .iter()
            .any(|s| s.cues.iter().any(|c| c == "{medication}")));
        for bad in [
            serde_json::json!([""]),
            serde_json::json!(["  "]),
            serde_json::json!(["a\nb"]),
            serde_json::json!(["x".repeat(65)]),
            serde_json::Value::Array(vec!["cue".into(); 65]),
        ] {
            referral["sections"][0]["cues"] = bad.clone();
            let err = Template::from_json(&referral.to_string(), "test").unwrap_err();
            assert!(err.contains("cue"), "{bad}: {err}");
        }
    }

    #[test]
    #[cfg(unix)]
    fn fifos_and_duplicates_in_the_user_directory_are_warnings_not_hangs() {
        let dir = std::env::temp_dir().join(format!("medscribe-tpl-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = std::ffi::CString::new(dir.join("fifo.json").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let mut soap: serde_json::Value = serde_json::from_str(BUILT_IN[3].1).unwrap();
        soap["name"] = "clinic".into();
        std::fs::write(dir.join("a.json"), soap.to_string()).unwrap();
        std::fs::write(dir.join("b.json"), soap.to_string()).unwrap();
        let set = TemplateSet::load(Some(&dir));
        assert_eq!(set.warnings.len(), 2, "{:?}", set.warnings);
        assert!(set.warnings.iter().any(|w| w.contains("fifo.json")));
        assert!(set
            .warnings
            .iter()
            .any(|w| w.contains("b.json") && w.contains("a.json")));
        assert!(set.find("clinic").unwrap().source.ends_with("b.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
