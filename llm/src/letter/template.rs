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
}

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

/// The built-in templates and those in `user_dir` (`*.json`; same name overrides).
pub fn all_templates(user_dir: Option<&Path>) -> Result<Vec<Template>> {
    let mut templates: BTreeMap<String, Template> = BTreeMap::new();
    for (name, text) in BUILT_IN {
        let template =
            Template::from_json(text, "built-in").map_err(|reason| LlmError::BadFile {
                path: PathBuf::from(format!("built-in template {name}")),
                reason,
            })?;
        templates.insert(template.name.clone(), template);
    }
    if let Some(dir) = user_dir.filter(|d| d.is_dir()) {
        let entries = std::fs::read_dir(dir).map_err(|e| LlmError::BadFile {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for path in files {
            let bad = |reason: String| LlmError::BadFile {
                path: path.clone(),
                reason,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
            let template = Template::from_json(&text, &path.display().to_string()).map_err(bad)?;
            templates.insert(template.name.clone(), template);
        }
    }
    Ok(templates.into_values().collect())
}

/// The template called `name`.
pub fn find_template(name: &str, user_dir: Option<&Path>) -> Result<Template> {
    let templates = all_templates(user_dir)?;
    let names: Vec<&str> = templates.iter().map(|t| t.name.as_str()).collect();
    let joined = names.join(", ");
    templates
        .iter()
        .find(|t| t.name == name)
        .cloned()
        .ok_or_else(|| LlmError::Prompt(format!("no template {name:?}; templates: {joined}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates_parse_with_their_codes() {
        let templates = all_templates(None).unwrap();
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
        let err = all_templates(Some(&dir)).unwrap_err().to_string();
        assert!(
            err.contains("broken.json") && err.contains("Bad Key"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let err = find_template("letter-to-mum", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("referral"), "{err}");
    }
}
