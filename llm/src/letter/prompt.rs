//! Prompts for letter writing. Instruction-tuned models (MedGemma *-it) get a chat turn with the
//! template's instructions, sections and the transcript; base models (the 270M default) cannot
//! follow instructions, so they get a completion-style prompt: the template's worked example as a
//! transcript followed by its JSON letter, then the real transcript, leaving the model to continue
//! the pattern. Headings the doctor dictated (MedASR's `[FINDINGS]` tags, "Impression:") are
//! matched to sections and named in the instructions as hints.

use super::template::Template;
use crate::chat::{chat_prompt, user_text, IMAGE_MARKER};

/// How the model is prompted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptStyle {
    /// A chat turn with instructions (instruction-tuned models).
    Chat,
    /// Few-shot completion: the model writes the letter after the template's example (base
    /// models; it copies the example's facts, which the fact guard then removes).
    Completion,
    /// Built from the transcript's own statements, each filed under a section by the model
    /// (base models: nothing is written that was not said; see `letter::grounded`).
    Grounded,
}

impl PromptStyle {
    /// The style for a model by its file or directory name: instruction-tuned checkpoints are
    /// named `*-it*` or `*instruct*` (medgemma-4b-it, gemma-3-1b-it-Q4_K_M.gguf).
    pub fn for_model_name(name: &str) -> Self {
        let name = name.to_ascii_lowercase();
        let instruction_tuned = name.contains("instruct")
            || name
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|part| part == "it");
        if instruction_tuned {
            PromptStyle::Chat
        } else {
            PromptStyle::Grounded
        }
    }

    /// [`for_model_name`](Self::for_model_name) of a model file or directory's own name.
    pub fn for_model_path(path: &std::path::Path) -> Self {
        Self::for_model_name(&path.file_name().unwrap_or_default().to_string_lossy())
    }
}

/// Dictated headings found in `transcript` that name a template section: (heading, section key).
pub fn heading_hints(template: &Template, transcript: &str) -> Vec<(String, String)> {
    let normal = |s: &str| {
        s.to_ascii_lowercase()
            .replace(['_', '-'], " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut hints: Vec<(String, String)> = Vec::new();
    let mut consider = |heading: &str| {
        let heading = heading.trim();
        if heading.is_empty() || heading.len() > 40 {
            return;
        }
        let wanted = normal(heading);
        if let Some(section) = template
            .sections
            .iter()
            .find(|s| normal(&s.key) == wanted || normal(&s.title) == wanted)
        {
            if !hints.iter().any(|(h, _)| h == heading) {
                hints.push((heading.to_string(), section.key.clone()));
            }
        }
    };
    // MedASR section tags: [FINDINGS], [IMPRESSION].
    for piece in transcript.split('[').skip(1) {
        if let Some((tag, _)) = piece.split_once(']') {
            consider(tag);
        }
    }
    // Dictated headings: "Findings:" at the start of a line or sentence.
    for line in transcript.split(['\n', '.']) {
        if let Some((head, _)) = line.split_once(':') {
            consider(head);
        }
    }
    hints
}

fn example_json(template: &Template) -> Option<String> {
    // Written by hand to keep the template's key order (what constrained decoding produces).
    let example = template.example.as_ref()?;
    let mut fields = Vec::with_capacity(template.sections.len());
    for section in &template.sections {
        let text = example
            .letter
            .get(&section.key)
            .cloned()
            .unwrap_or_default();
        fields.push(format!(
            "{}:{}",
            serde_json::to_string(&section.key).ok()?,
            serde_json::to_string(&text).ok()?
        ));
    }
    Some(format!("{{{}}}", fields.join(",")))
}

/// What an instruction-tuned model is asked, as the user's turn: the template's instructions,
/// its keys, heading hints, an example and the transcript. Local chat models get it in Gemma's
/// chat format ([`letter_prompt`]); a letter server gets it as the user message.
pub fn chat_instructions(template: &Template, transcript: &str) -> String {
    let transcript = transcript.trim();
    let mut text = String::new();
    text.push_str(&format!("{}\n\nWrite the {} as one JSON object with exactly these keys, in this order, each a string (empty when the transcript says nothing about it):\n", template.instructions, template.title.to_lowercase()));
    for s in &template.sections {
        let need = if s.required { "required" } else { "optional" };
        text.push_str(&format!(
            "- \"{}\" ({}, {need}): {}\n",
            s.key, s.title, s.instructions
        ));
    }
    let hints = heading_hints(template, transcript);
    if !hints.is_empty() {
        let list: Vec<String> = hints
            .iter()
            .map(|(h, k)| format!("\"{h}\" -> \"{k}\""))
            .collect();
        text.push_str(&format!(
            "The dictation marks sections with headings: {}.\n",
            list.join(", ")
        ));
    }
    // No example letter: the JSON's form is enforced while it is written (constrained decoding
    // here, json_schema on a letter server), and an example's findings leaked into letters
    // ("ECG: sinus rhythm" in a letter nobody dictated an ECG for).
    text.push_str(&format!("\nTranscript:\n{transcript}"));
    text
}

/// The prompt text (special tokens written out; encode without adding any). `images` markers go
/// first in the chat turn, as Gemma's template places images before text.
pub fn letter_prompt(
    template: &Template,
    transcript: &str,
    style: PromptStyle,
    images: usize,
) -> String {
    let transcript = transcript.trim();
    match style {
        PromptStyle::Chat => {
            let text = chat_instructions(template, transcript);
            // Template and transcript text are the user's: never control tokens.
            let markers = IMAGE_MARKER.repeat(images);
            chat_prompt(None, &format!("{markers}{}", user_text(&text)))
        }
        PromptStyle::Completion | PromptStyle::Grounded => {
            let mut text = format!(
                "{} written from clinical transcripts as JSON.\n\n",
                template.title
            );
            if let (Some(example), Some(json)) = (&template.example, example_json(template)) {
                text.push_str(&format!(
                    "Transcript: {}\n{} (JSON): {json}\n\n",
                    example.transcript.trim(),
                    template.title
                ));
            }
            // No space after the colon: the constrained letter starts with its own `{`.
            text.push_str(&format!(
                "Transcript: {}\n{} (JSON): ",
                transcript.replace('\n', " "),
                template.title
            ));
            // Template and transcript text are the user's: never control tokens.
            format!("<bos>{}", user_text(&text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::letter::template::find_template;

    #[test]
    fn style_from_model_name() {
        for (name, style) in [
            ("medgemma-4b-it", PromptStyle::Chat),
            ("gemma-3-1b-it-Q4_K_M.gguf", PromptStyle::Chat),
            ("Llama-Instruct", PromptStyle::Chat),
            ("gemma-3-270m-q4_k_m.gguf", PromptStyle::Grounded),
            ("medgemma-4b-pt", PromptStyle::Grounded),
            ("digit-model", PromptStyle::Grounded),
        ] {
            assert_eq!(PromptStyle::for_model_name(name), style, "{name}");
        }
    }

    #[test]
    fn headings_become_hints() {
        let radiology = find_template("radiology", None).unwrap();
        let hints = heading_hints(
            &radiology,
            "[FINDINGS] No consolidation. Impression: normal chest. Patient: fine. [PLAN] x",
        );
        assert_eq!(
            hints,
            vec![
                ("FINDINGS".to_string(), "findings".to_string()),
                ("Impression".to_string(), "impression".to_string())
            ]
        );
    }

    #[test]
    fn golden_prompts() {
        let referral = find_template("referral", None).unwrap();
        let transcript = "Refer this 40 year old woman with migraine.\nFindings: normal exam.";
        for (style, images, golden) in [
            (PromptStyle::Completion, 0, "referral-completion.txt"),
            (PromptStyle::Chat, 1, "referral-chat.txt"),
        ] {
            let prompt = letter_prompt(&referral, transcript, style, images);
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden")
                .join(golden);
            if std::env::var_os("MEDSCRIBE_BLESS").is_some() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &prompt).unwrap();
            }
            let expected = std::fs::read_to_string(&path)
                .unwrap_or_else(|_| panic!("{} (MEDSCRIBE_BLESS=1 writes it)", path.display()));
            assert_eq!(prompt, expected, "{golden}");
        }
    }
}
