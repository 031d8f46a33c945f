//! Letter renderers: JSON (the letter object itself), Markdown, plain text, and a FHIR R4
//! `Bundle` of type `document` (Composition first, coded with the template's LOINC type, one
//! section per letter section with an XHTML narrative; the author as a Device; the transcript as
//! a DocumentReference with the text attached), using `urn:uuid:` references that resolve inside
//! the bundle.

use serde_json::{json, Value};

use super::Letter;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Markdown.
    Markdown,
    /// The letter as JSON.
    Json,
    /// Plain text.
    Text,
    /// FHIR R4 document Bundle (JSON).
    Fhir,
}

impl Format {
    /// Parses `md`, `json`, `txt` or `fhir`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "md" | "markdown" => Some(Format::Markdown),
            "json" => Some(Format::Json),
            "txt" | "text" => Some(Format::Text),
            "fhir" => Some(Format::Fhir),
            _ => None,
        }
    }
}

/// What a required section says when the transcript gave nothing for it.
const NOT_STATED: &str = "Not stated in the dictation.";

/// The sections to show: those with text, and required ones (marked as not stated).
fn shown(letter: &Letter) -> impl Iterator<Item = (&str, &str)> {
    letter.sections.iter().filter_map(|s| {
        let text = s.text.trim();
        if !text.is_empty() {
            Some((s.title.as_str(), text))
        } else if s.required {
            Some((s.title.as_str(), NOT_STATED))
        } else {
            None
        }
    })
}

fn footer(letter: &Letter) -> String {
    format!(
        "Draft written by {} (medscribe) on {} from a dictation: check every statement before signing.",
        letter.model, letter.created
    )
}

/// Renders `letter` in `format`.
pub fn render(letter: &Letter, format: Format) -> String {
    match format {
        Format::Markdown => markdown(letter),
        Format::Text => text(letter),
        Format::Json => serde_json::to_string_pretty(letter).unwrap_or_default() + "\n",
        Format::Fhir => {
            serde_json::to_string_pretty(&fhir_bundle(letter, &mut random_uuid)).unwrap_or_default()
                + "\n"
        }
    }
}

fn markdown(letter: &Letter) -> String {
    let mut out = format!("# {}\n\n", letter.title);
    for (title, text) in shown(letter) {
        out.push_str(&format!("## {title}\n\n{text}\n\n"));
    }
    if !letter.warnings.is_empty() {
        out.push_str("> **Warnings**\n");
        for warning in &letter.warnings {
            out.push_str(&format!("> - {warning}\n"));
        }
        out.push('\n');
    }
    out.push_str(&format!("---\n*{}*\n", footer(letter)));
    out
}

fn text(letter: &Letter) -> String {
    let mut out = format!(
        "{}\n{}\n\n",
        letter.title.to_uppercase(),
        "=".repeat(letter.title.chars().count())
    );
    for (title, text) in shown(letter) {
        out.push_str(&format!("{title}:\n{text}\n\n"));
    }
    for warning in &letter.warnings {
        out.push_str(&format!("Warning: {warning}\n"));
    }
    out.push_str(&footer(letter));
    out.push('\n');
    out
}

fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A random (version 4) UUID from the operating system's generator.
pub fn random_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The FHIR R4 document Bundle of `letter`; `uuid` makes identifiers.
pub fn fhir_bundle(letter: &Letter, uuid: &mut dyn FnMut() -> String) -> Value {
    let composition_id = uuid();
    let device_id = uuid();
    let transcript_id = uuid();
    let transcript_text: String = letter
        .transcript
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let mut sections: Vec<Value> = shown(letter)
        .map(|(title, text)| {
            json!({
                "title": title,
                "text": {
                    "status": "generated",
                    "div": format!(
                        "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>{}</p></div>",
                        escape_xml(text)
                    ),
                },
            })
        })
        .collect();
    sections.push(json!({
        "title": "Source transcript",
        "text": {
            "status": "generated",
            "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>The dictation transcript this letter was written from.</p></div>",
        },
        "entry": [{"reference": format!("urn:uuid:{transcript_id}")}],
    }));
    let doc_type = json!({
        "coding": [{
            "system": "http://loinc.org",
            "code": letter.document_type.code,
            "display": letter.document_type.display,
        }],
        "text": letter.title,
    });
    json!({
        "resourceType": "Bundle",
        "id": uuid(),
        "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", uuid())},
        "type": "document",
        "timestamp": letter.created,
        "entry": [
            {
                "fullUrl": format!("urn:uuid:{composition_id}"),
                "resource": {
                    "resourceType": "Composition",
                    "id": composition_id,
                    "status": "preliminary",
                    "type": doc_type,
                    "date": letter.created,
                    "author": [{"reference": format!("urn:uuid:{device_id}")}],
                    "title": letter.title,
                    "section": sections,
                },
            },
            {
                "fullUrl": format!("urn:uuid:{device_id}"),
                "resource": {
                    "resourceType": "Device",
                    "id": device_id,
                    "deviceName": [{"name": format!("medscribe with {}", letter.model), "type": "user-friendly-name"}],
                },
            },
            {
                "fullUrl": format!("urn:uuid:{transcript_id}"),
                "resource": {
                    "resourceType": "DocumentReference",
                    "id": transcript_id,
                    "status": "current",
                    "docStatus": "preliminary",
                    "description": "Dictation transcript",
                    "date": letter.created,
                    "content": [{
                        "attachment": {
                            "contentType": "text/plain; charset=utf-8",
                            "data": base64(transcript_text.as_bytes()),
                            "title": "transcript.txt",
                        },
                    }],
                },
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn uuids_are_version_4_and_differ() {
        let (a, b) = (random_uuid(), random_uuid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]));
    }
}
