//! `POST /v1/letters`: a transcript or a dictation and a template name in, the letter out, written
//! by the same `llm::letter::Writer` as `medscribe letter`, so the same fact guard and grounding
//! apply. The body is JSON (`template`, `transcript` as text or timed segments, `images` as data
//! URLs) or a multipart form (`file` a WAV dictation, `template`, `image` files). The answer is
//! the letter's JSON, or with `Accept: application/fhir+json` its FHIR R4 document Bundle.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use medscribe_llm::letter::constrain::TokenTable;
use medscribe_llm::letter::render::{render, Format};
use medscribe_llm::letter::template::{Template, TemplateSet};
use medscribe_llm::letter::{LetterOutcome, TranscriptSegment, Writer};
use medscribe_llm::LlmError;

use super::api_error::ApiError;
use super::transcriptions::{read_or_discard, spool, text, SpeechPool};
use super::ServerState;

/// The letter model (one, written with in turn) and the templates.
pub struct Letters {
    writer: Mutex<Writer>,
    templates: TemplateSet,
    model_id: String,
}

impl Letters {
    /// Letters by `writer` (already loaded) from `templates`.
    pub fn new(writer: Writer, templates: TemplateSet) -> Self {
        let model_id = writer
            .model_path()
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            writer: Mutex::new(writer),
            templates,
            model_id,
        }
    }

    /// Runs `work` on the loaded letter model, once no other letter or reply is using it.
    pub fn with_model<T>(
        &self,
        work: impl FnOnce(&mut medscribe_llm::LoadedModel, &TokenTable) -> T,
    ) -> Result<T, ApiError> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (loaded, table) = writer
            .load_with_table()
            .map_err(|e| ApiError::internal(format!("the letter model failed to load: {e}")))?;
        Ok(work(loaded, table))
    }

    /// The id `GET /v1/models` lists for the letter model.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }
}

/// The JSON form of a request.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LetterJson {
    template: String,
    transcript: TranscriptJson,
    #[serde(default)]
    images: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum TranscriptJson {
    /// Plain text, one statement per line as `medscribe letter --transcript` reads it.
    Text(String),
    /// Timed segments as `transcribe --format json` or `verbose_json` give them.
    Segments(Vec<SegmentJson>),
}

#[derive(Debug, serde::Deserialize)]
struct SegmentJson {
    #[serde(alias = "start_s")]
    start: Option<f64>,
    #[serde(alias = "end_s")]
    end: Option<f64>,
    text: String,
}

/// What the letter is written from.
enum Source {
    Transcript(Vec<TranscriptSegment>),
    Dictation {
        upload: tempfile::NamedTempFile,
        name: String,
    },
}

/// A request, read.
struct LetterRequest {
    template: String,
    source: Source,
    /// Images as private temporary files (removed when the request ends).
    images: Vec<tempfile::NamedTempFile>,
}

/// The handler.
pub async fn letters(
    State(state): State<Arc<ServerState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let fhir = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/fhir+json"));
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let Some(ticket) = state.admission.try_admit() else {
        super::discard_request(&state, request).await;
        return Err(ApiError::busy(state.retry_after_s()));
    };
    let letter = if multipart {
        let form = Multipart::from_request(request, &state)
            .await
            .map_err(|rejection| ApiError::invalid("invalid_form", rejection.body_text()))?;
        read_form(&state, form).await?
    } else {
        let axum::Json(body) = axum::Json::<LetterJson>::from_request(request, &state)
            .await
            .map_err(|rejection| {
                ApiError::invalid(
                    "invalid_json",
                    format!(
                        "the body must be JSON {{\"template\", \"transcript\", \"images\"}} or a multipart form: {}",
                        rejection.body_text()
                    ),
                )
            })?;
        from_json(body)?
    };
    // Before any work is queued: an unknown template must not cost a transcription first.
    let template = state
        .letters
        .templates
        .find(letter.template.trim())
        .map_err(|e| ApiError::invalid("unknown_template", e.to_string()))?
        .clone();
    let cancel = Arc::new(AtomicBool::new(false));
    let work = ticket.run({
        let state = Arc::clone(&state);
        let cancel = Arc::clone(&cancel);
        move || write(&state, letter, &template, &cancel)
    });
    let letter = match tokio::time::timeout(state.timeout, work).await {
        Err(_) => {
            // The writer stops at its next token and frees the model for the next letter.
            cancel.store(true, Ordering::Relaxed);
            return Err(ApiError::timed_out(state.timeout.as_secs()));
        }
        Ok(None) => return Err(ApiError::internal("the letter stopped unexpectedly")),
        Ok(Some(result)) => result?,
    };
    let (format, mime) = if fhir {
        (Format::Fhir, "application/fhir+json")
    } else {
        (Format::Json, "application/json")
    };
    Ok(([(header::CONTENT_TYPE, mime)], render(&letter, format)).into_response())
}

fn from_json(body: LetterJson) -> Result<LetterRequest, ApiError> {
    let segments = match body.transcript {
        TranscriptJson::Text(text) => text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(TranscriptSegment::untimed)
            .collect(),
        TranscriptJson::Segments(segments) => segments
            .into_iter()
            .map(|s| match (s.start, s.end) {
                (Some(start), Some(end)) => TranscriptSegment::timed(start, end, s.text.trim()),
                _ => TranscriptSegment::untimed(s.text.trim()),
            })
            .collect(),
    };
    let images = body
        .images
        .iter()
        .enumerate()
        .map(|(i, url)| image_from_data_url(i, url))
        .collect::<Result<_, _>>()?;
    Ok(LetterRequest {
        template: body.template,
        source: Source::Transcript(segments),
        images,
    })
}

/// A `data:image/...;base64,` URL written to a private temporary file.
pub(super) fn image_from_data_url(
    index: usize,
    url: &str,
) -> Result<tempfile::NamedTempFile, ApiError> {
    let bad = |why: &str| {
        ApiError::invalid(
            "invalid_image",
            format!("images[{index}]: {why} (a data:image/png or image/jpeg URL, base64)"),
        )
    };
    let rest = url
        .strip_prefix("data:")
        .ok_or_else(|| bad("not a data URL"))?;
    let (kind, data) = rest.split_once(',').ok_or_else(|| bad("no data"))?;
    if !kind.ends_with(";base64") {
        return Err(bad("not base64"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| bad("the base64 data is broken"))?;
    private_file(&bytes)
}

fn private_file(bytes: &[u8]) -> Result<tempfile::NamedTempFile, ApiError> {
    let mut file = tempfile::Builder::new()
        .prefix("medscribe-image-")
        .tempfile()
        .map_err(|e| ApiError::internal(format!("cannot create a temporary file: {e}")))?;
    file.write_all(bytes)
        .and_then(|()| file.flush())
        .map_err(|e| ApiError::internal(format!("cannot write a temporary file: {e}")))?;
    Ok(file)
}

async fn read_form(state: &ServerState, form: Multipart) -> Result<LetterRequest, ApiError> {
    read_or_discard(form, async |form| read_fields(state, form).await).await
}

async fn read_fields(state: &ServerState, form: &mut Multipart) -> Result<LetterRequest, ApiError> {
    let (mut template, mut dictation, mut images) = (None, None, Vec::new());
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(super::transcriptions::form_error(state))?
    {
        match field.name().unwrap_or_default() {
            "file" => {
                let name = super::transcriptions::upload_name(field.file_name());
                dictation = Some((spool(state, &mut field).await?, name));
            }
            "image" => images.push(spool(state, &mut field).await?),
            "template" => template = Some(text(state, field).await?),
            _ => {
                text(state, field).await?;
            }
        }
    }
    let Some(template) = template else {
        return Err(ApiError::invalid(
            "missing_template",
            "the form has no 'template' field (see `medscribe templates`)",
        ));
    };
    let Some((upload, name)) = dictation else {
        return Err(ApiError::invalid(
            "missing_file",
            "the form has no 'file' field with the dictation (or send JSON with a transcript)",
        ));
    };
    Ok(LetterRequest {
        template,
        source: Source::Dictation { upload, name },
        images,
    })
}

/// Transcribes a dictation if there is one, then writes the letter (on a blocking thread).
fn write(
    state: &ServerState,
    request: LetterRequest,
    template: &Template,
    cancel: &AtomicBool,
) -> Result<medscribe_llm::letter::Letter, ApiError> {
    let letters = &state.letters;
    let transcript = match request.source {
        Source::Transcript(segments) => segments,
        Source::Dictation { upload, name } => dictation(&state.speech, state, &upload, &name)?,
    };
    if transcript.iter().all(|s| s.text.trim().is_empty()) {
        return Err(ApiError::invalid(
            "empty_transcript",
            "the transcript is empty: no speech was recognised, so there is nothing to write",
        ));
    }
    let images: Vec<PathBuf> = request
        .images
        .iter()
        .map(|f| f.path().to_path_buf())
        .collect();
    // One letter at a time on the one model; a request waits here for the one before.
    let mut writer = letters.writer.lock().unwrap_or_else(|p| p.into_inner());
    let outcome = writer
        .write(
            template,
            &transcript,
            &images,
            &medscribe_pipeline::timestamp::now_rfc3339(),
            cancel,
            &mut |_| {},
        )
        .map_err(|error| match error {
            LlmError::Image { reason, .. } => ApiError::invalid("invalid_image", reason),
            LlmError::Incompatible(message) | LlmError::Template(message) => {
                ApiError::invalid("unsupported", message)
            }
            other => ApiError::internal(format!("the letter failed: {other}")),
        })?;
    match outcome {
        LetterOutcome::Written(letter) => Ok(letter),
        LetterOutcome::Cancelled => Err(ApiError::timed_out(state.timeout.as_secs())),
    }
}

/// The dictation transcribed as the letter writer takes it: as the speech model wrote it, since
/// the writer mends drug names itself and keeps the model's spelling beside them (`raw_text`),
/// as `medscribe letter --audio` does.
fn dictation(
    pool: &Arc<SpeechPool>,
    state: &ServerState,
    upload: &tempfile::NamedTempFile,
    name: &str,
) -> Result<Vec<TranscriptSegment>, ApiError> {
    let done = super::transcriptions::transcribe(pool, None, upload.path(), name)?;
    state.metrics.audio(done.transcript.duration_s);
    Ok(done
        .transcript
        .segments
        .iter()
        .map(|s| super::super::letter::letter_segment(s, 0.0))
        .collect())
}
