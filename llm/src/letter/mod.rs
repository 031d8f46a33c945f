//! Structured doctor's letters: templates, prompts for instruction-tuned and base models,
//! schema-constrained generation of the letter as JSON, grounding of patient identifiers against
//! the transcript, and renderers (JSON, Markdown, text, FHIR R4).

pub mod constrain;
pub mod drug_spelling;
pub mod facts;
pub mod grounded;
pub mod grounding;
pub mod prompt;
pub mod remote;
pub mod render;
pub mod template;
mod writer;

pub use writer::{DeviceName, LetterSettings, StyleChoice, Writer};

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::chat::expand_image_markers;
use crate::error::{LlmError, Result};
use crate::generate::{pick, PromptImages, Rng, Sampling};
use crate::loader::LoadedModel;
use constrain::{LetterConstraint, TokenTable};
use facts::{DrugLexicon, TranscriptFacts};
use prompt::{letter_prompt, PromptStyle};
use template::{DocumentType, Template};

/// A piece of the transcript (an utterance of a recording, or a line of a text file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranscriptSegment {
    /// Start in the recording, seconds (none for text input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_s: Option<f64>,
    /// End in the recording, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_s: Option<f64>,
    /// The text.
    pub text: String,
    /// The text as the speech model spelt it, where medscribe changed it (a medication name
    /// mended from the drug lexicon).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_text: Option<String>,
}

impl TranscriptSegment {
    /// A stretch of a recording, `start_s` to `end_s` seconds.
    pub fn timed(start_s: f64, end_s: f64, text: impl Into<String>) -> Self {
        Self {
            start_s: Some(start_s),
            end_s: Some(end_s),
            text: text.into(),
            raw_text: None,
        }
    }

    /// A line of typed text, with no times.
    pub fn untimed(text: impl Into<String>) -> Self {
        Self {
            start_s: None,
            end_s: None,
            text: text.into(),
            raw_text: None,
        }
    }
}

/// A written section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LetterSection {
    /// Template key.
    pub key: String,
    /// Heading.
    pub title: String,
    /// Whether the template requires it.
    pub required: bool,
    /// The text (empty when the model wrote nothing).
    pub text: String,
    /// Indices of the transcript segments it draws on.
    pub sources: Vec<usize>,
}

/// A structured letter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Letter {
    /// Template name.
    pub template: String,
    /// Document title.
    pub title: String,
    /// Document type (LOINC).
    pub document_type: DocumentType,
    /// The model that wrote it.
    pub model: String,
    /// When, RFC 3339 UTC.
    pub created: String,
    /// Sections in template order.
    pub sections: Vec<LetterSection>,
    /// What the reader must know: removed identifiers, truncation.
    pub warnings: Vec<String>,
    /// The transcript it was written from.
    pub transcript: Vec<TranscriptSegment>,
}

/// How to write a letter.
#[derive(Debug, Clone)]
pub struct LetterRequest<'a> {
    /// The template.
    pub template: &'a Template,
    /// The transcript.
    pub transcript: &'a [TranscriptSegment],
    /// Prompt style (chat for instruction-tuned models).
    pub style: PromptStyle,
    /// Images, encoded by [`LoadedModel::encode_images`].
    pub images: Option<&'a PromptImages>,
    /// Sampling; `max_new_tokens` bounds the whole letter.
    pub sampling: Sampling,
    /// Most tokens of one section.
    pub max_section_tokens: usize,
    /// Medication names for the fact guard; without it, medications are not checked (and the
    /// letter says so).
    pub drugs: Option<&'a DrugLexicon>,
    /// When the letter is written, RFC 3339: the caller's clock (a server stamps its request).
    pub created: &'a str,
}

/// Progress while writing.
#[derive(Debug, Clone, PartialEq)]
pub enum LetterEvent {
    /// The model at this path is being loaded (first use of a [`Writer`]).
    Loading(std::path::PathBuf),
    /// The letter is being drafted by this letter server (its URL and model).
    Server(String),
    /// The prompt is being read: its length in tokens.
    Prompt(usize),
    /// A section starts.
    Section(String),
    /// Text of the current section, as generated.
    Text(String),
}

/// Writes a letter with `loaded` (its conversation is reset first). `table` is the tokenizer's
/// [`TokenTable`] (build it once per model). The JSON always parses and has every template key.
///
/// A transcript too long for the model's context (a two-hour case conference) is split at line,
/// then sentence, then word boundaries into parts that fit; a draft is written from each part
/// and their sections are joined in order, with a warning saying so.
///
/// Setting `cancel` stops the writing soon after; that is the [`LetterOutcome::Cancelled`]
/// outcome, not an error.
pub fn write_letter(
    loaded: &mut LoadedModel,
    table: &TokenTable,
    request: &LetterRequest<'_>,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(LetterEvent),
) -> Result<LetterOutcome> {
    outcome(cancel, || {
        compose_letter(loaded, table, request, cancel, on_event)
    })
}

/// Runs `compose` unless `cancel` is already set; cancelling is an outcome, not an error.
fn outcome(cancel: &AtomicBool, compose: impl FnOnce() -> Result<Letter>) -> Result<LetterOutcome> {
    if cancel.load(Ordering::SeqCst) {
        return Ok(LetterOutcome::Cancelled);
    }
    match compose() {
        Ok(letter) => Ok(LetterOutcome::Written(letter)),
        Err(LlmError::Cancelled) => Ok(LetterOutcome::Cancelled),
        Err(error) => Err(error),
    }
}

/// How writing a letter ended, when nothing failed.
#[derive(Debug, Clone, PartialEq)]
// Made once per letter, after minutes of generation: boxing would gain nothing.
#[allow(clippy::large_enum_variant)]
pub enum LetterOutcome {
    /// The letter.
    Written(Letter),
    /// The cancel flag was set before the letter was finished; nothing was written.
    Cancelled,
}

impl LetterOutcome {
    /// The letter, unless writing was cancelled.
    pub fn letter(self) -> Option<Letter> {
        match self {
            Self::Written(letter) => Some(letter),
            Self::Cancelled => None,
        }
    }
}

fn compose_letter(
    loaded: &mut LoadedModel,
    table: &TokenTable,
    request: &LetterRequest<'_>,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(LetterEvent),
) -> Result<Letter> {
    let template = request.template;
    let mended = mend_medication_names(request);
    let request = &LetterRequest {
        transcript: &mended,
        ..request.clone()
    };
    let transcript_text = joined_text(request.transcript)?;
    let mut drafts = Vec::new();
    let mut truncated = false;
    let parts = if request.style == PromptStyle::Grounded {
        // Statements one at a time: any transcript length fits the context.
        let texts = grounded::draft(
            loaded,
            template,
            request.transcript,
            request.drugs,
            cancel,
            on_event,
        )?;
        drafts.push(
            template
                .sections
                .iter()
                .zip(texts)
                .map(|(s, text)| (s.key.clone(), serde_json::Value::String(text)))
                .collect(),
        );
        vec![transcript_text.clone()]
    } else {
        let parts = parts_that_fit(loaded, request, &transcript_text)?;
        for (index, part) in parts.iter().enumerate() {
            // Images go with the first part only: they are read once.
            let images = if index == 0 { request.images } else { None };
            let (values, cut) = draft(loaded, table, request, part, images, cancel, on_event)?;
            truncated |= cut;
            drafts.push(values);
        }
        parts
    };
    let mut warnings: Vec<String> = loaded.chat_template_warning().into_iter().collect();
    if parts.len() > 1 {
        warnings.push(format!(
            "the transcript is longer than the model's context ({} tokens): the letter was \
             written from {} parts in turn and their sections joined",
            loaded.model.config().context_length,
            parts.len()
        ));
    }
    let model = loaded.source.file_name().map_or_else(
        || loaded.source.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(assemble(
        request,
        &drafts,
        &transcript_text,
        warnings,
        truncated,
        model,
    ))
}

/// The transcript with medication names the speech model split ("amla-depine") mended, so that
/// the letter and its transcript read "amlodipine"; the original stays in `raw_text`.
fn mend_medication_names(request: &LetterRequest<'_>) -> Vec<TranscriptSegment> {
    request
        .transcript
        .iter()
        .map(|segment| {
            let Some(drugs) = request.drugs else {
                return segment.clone();
            };
            let (text, corrections) = drugs.correct(&segment.text);
            if corrections.is_empty() {
                return segment.clone();
            }
            TranscriptSegment {
                text,
                raw_text: Some(segment.raw_text.clone().unwrap_or(segment.text.clone())),
                ..segment.clone()
            }
        })
        .collect()
}

/// The transcript's text, one segment per line; an error when there is none.
fn joined_text(transcript: &[TranscriptSegment]) -> Result<String> {
    let text = transcript
        .iter()
        .map(|s| s.text.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    if text.is_empty() {
        return Err(LlmError::Prompt(
            "the transcript is empty: nothing to write a letter from".into(),
        ));
    }
    Ok(text)
}

/// The letter from its drafts' section values, whatever wrote them (a local model or a letter
/// server): sections joined across drafts, then grounded and fact-guarded against the transcript,
/// every removal reported. `warnings` come first; `truncated` says a draft hit its token limit.
fn assemble(
    request: &LetterRequest<'_>,
    drafts: &[serde_json::Map<String, serde_json::Value>],
    transcript_text: &str,
    mut warnings: Vec<String>,
    truncated: bool,
    model: String,
) -> Letter {
    let template = request.template;
    let budget = request.sampling.max_new_tokens;
    let segments: Vec<String> = request.transcript.iter().map(|s| s.text.clone()).collect();
    if request.drugs.is_none() {
        warnings.push(
            "medication names were not checked against the transcript: the drug lexicon is not \
             installed (run scripts/setup.sh)"
                .into(),
        );
    }
    let said = TranscriptFacts::new(transcript_text, request.drugs);
    if truncated {
        warnings.push(format!(
            "the letter reached its token limit ({budget} in all, {} per section): some sections may be cut short",
            request.max_section_tokens
        ));
    }
    let sections = template
        .sections
        .iter()
        .map(|s| {
            let mut texts: Vec<&str> = Vec::new();
            for values in drafts {
                let text = values.get(&s.key).and_then(|v| v.as_str()).unwrap_or("");
                let text = text.trim();
                if !text.is_empty() && !texts.contains(&text) {
                    texts.push(text);
                }
            }
            let raw = texts.join(" ");
            let (text, removed) = grounding::ground(&raw, transcript_text);
            for r in &removed {
                // The removed text itself is patient data: it stays out of messages.
                warnings.push(format!(
                    "removed a {} from \"{}\" that is not in the transcript",
                    r.kind.noun(),
                    s.title
                ));
            }
            // Every number, frequency, medication and side must have been said.
            let (text, unsupported) = facts::guard(&text, &said, request.drugs);
            for fact in &unsupported {
                warnings.push(format!(
                    "removed a {} from \"{}\" that the transcript does not support",
                    fact.kind.noun(),
                    s.title
                ));
            }
            LetterSection {
                key: s.key.clone(),
                title: s.title.clone(),
                required: s.required,
                sources: grounding::sources(&text, &segments),
                text,
            }
        })
        .collect();
    Letter {
        template: template.name.clone(),
        title: template.title.clone(),
        document_type: template.loinc.clone(),
        model,
        created: request.created.to_owned(),
        sections,
        warnings,
        transcript: request.transcript.to_vec(),
    }
}

/// The transcript as parts whose prompts, with the letter's token budget, fit the model's
/// context: the whole transcript when it fits (the usual case), else pieces cut at line, then
/// sentence, then word boundaries.
fn parts_that_fit(
    loaded: &LoadedModel,
    request: &LetterRequest<'_>,
    transcript: &str,
) -> Result<Vec<String>> {
    let context = loaded.model.config().context_length;
    let tokens = |text: &str| -> Result<usize> {
        let image_count = request
            .images
            .map_or(0, |i| i.features.dims().first().copied().unwrap_or(0));
        let prompt = letter_prompt(request.template, text, request.style, image_count);
        let tokens_per_image = loaded.vision.as_ref().map_or(0, |v| v.tokens_per_image());
        let (prompt, _) = expand_image_markers(&prompt, tokens_per_image);
        Ok(loaded.tokenizer.encode(&prompt)?.len())
    };
    let budget = request.sampling.max_new_tokens;
    let overhead = tokens("")?;
    if overhead + budget >= context {
        return Err(LlmError::Template(format!(
            "the model's context of {context} tokens cannot hold this template's prompt \
             ({overhead} tokens) and a letter of {budget} tokens: lower --max-new-tokens"
        )));
    }
    if tokens(transcript)? + budget <= context {
        return Ok(vec![transcript.to_string()]);
    }
    // Room for transcript text in each part, with a margin for tokens that merge differently
    // where pieces are joined.
    let room = (context - budget - overhead).saturating_sub(16).max(1);
    let count = |text: &str| -> Result<usize> { Ok(loaded.tokenizer.encode(text)?.len()) };
    let mut pieces: Vec<String> = Vec::new();
    for line in transcript.lines().filter(|l| !l.trim().is_empty()) {
        if count(line)? <= room {
            pieces.push(line.to_string());
            continue;
        }
        for sentence in line.split_inclusive(['.', '?', '!']) {
            if count(sentence)? <= room {
                pieces.push(sentence.trim().to_string());
                continue;
            }
            // A run-on sentence: by words.
            let mut current = String::new();
            for word in sentence.split_whitespace() {
                let candidate = if current.is_empty() {
                    word.to_string()
                } else {
                    format!("{current} {word}")
                };
                if !current.is_empty() && count(&candidate)? > room {
                    pieces.push(std::mem::replace(&mut current, word.to_string()));
                } else {
                    current = candidate;
                }
            }
            if !current.is_empty() {
                pieces.push(current);
            }
        }
    }
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut current_tokens = 0usize;
    for piece in pieces {
        let piece_tokens = count(&piece)? + 1;
        if !current.is_empty() && current_tokens + piece_tokens > room {
            parts.push(std::mem::take(&mut current));
            current_tokens = 0;
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&piece);
        current_tokens += piece_tokens;
    }
    if !current.is_empty() {
        parts.push(current);
    }
    Ok(parts)
}

/// The section values of one draft written from `transcript_text`, and whether it hit its token
/// limit.
fn draft(
    loaded: &mut LoadedModel,
    table: &TokenTable,
    request: &LetterRequest<'_>,
    transcript_text: &str,
    images: Option<&PromptImages>,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(LetterEvent),
) -> Result<(serde_json::Map<String, serde_json::Value>, bool)> {
    let template = request.template;
    let image_count = images.map_or(0, |i| i.features.dims().first().copied().unwrap_or(0));
    let prompt = letter_prompt(template, transcript_text, request.style, image_count);
    let tokens_per_image = loaded.vision.as_ref().map_or(0, |v| v.tokens_per_image());
    let (prompt, _) = expand_image_markers(&prompt, tokens_per_image);
    let mut input = loaded.tokenizer.encode(&prompt)?;
    on_event(LetterEvent::Prompt(input.len()));

    let keys = template.keys();
    let mut constraint = LetterConstraint::new(table, &keys, request.max_section_tokens)?;
    let budget = request.sampling.max_new_tokens;
    if budget < constraint.minimum_tokens() {
        return Err(LlmError::Template(format!(
            "{budget} tokens cannot hold a {} ({} at least)",
            template.title,
            constraint.minimum_tokens()
        )));
    }
    let mut used = 0usize;
    let forced = constraint.take_forced();
    used += forced.len();
    input.extend(&forced);
    on_event(LetterEvent::Section(template.sections[0].key.clone()));

    let model = &mut loaded.model;
    model.reset();
    let mut logits = match images {
        Some(images) => {
            model.forward_with_images(&input, images.soft_token, &images.features, false)?
        }
        None => model.forward(&input, false)?,
    };
    let mut rng = Rng::new(request.sampling.seed);
    let mut generated: Vec<u32> = Vec::new();
    while !constraint.is_done() {
        if cancel.load(Ordering::Relaxed) {
            return Err(LlmError::Cancelled);
        }
        let remaining = budget.saturating_sub(used);
        let mut row: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        constraint.mask(&mut row, remaining);
        let id = pick(&mut row, &request.sampling, &generated, &mut rng);
        let section = constraint.current_section();
        constraint.accept(id, remaining)?;
        used += 1;
        generated.push(id);
        if let Ok(piece) = loaded.tokenizer.decode(&[id]) {
            // The closing quote is JSON, not letter text.
            let closed = constraint.current_section() != section;
            let piece = if closed {
                piece.trim_end_matches('"').to_string()
            } else {
                piece
            };
            on_event(LetterEvent::Text(piece));
        }
        let mut next = vec![id];
        let forced = constraint.take_forced();
        used += forced.len();
        next.extend(&forced);
        if constraint.is_done() {
            break;
        }
        if let Some(section) = constraint.current_section() {
            if !forced.is_empty() {
                on_event(LetterEvent::Section(template.sections[section].key.clone()));
            }
        }
        logits = model.forward(&next, false)?;
    }

    let json = String::from_utf8_lossy(constraint.text()).into_owned();
    let values: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json)
        .map_err(|e| LlmError::Internal(format!("constrained output is not JSON ({e}): a bug")))?;
    Ok((values, constraint.truncated()))
}
