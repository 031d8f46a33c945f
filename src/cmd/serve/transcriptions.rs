//! `POST /v1/audio/transcriptions`, as OpenAI's: a multipart form with `file` (any WAV form the
//! CLI takes), `model`, `response_format` (json, text, srt, vtt, verbose_json) and `language`.
//! The upload streams to a private temporary file (created exclusively, readable by us only,
//! removed when the request ends), so memory stays flat whatever its size.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use medscribe_pipeline::{
    correct_transcript, render, FileTranscript, Speech, TextCorrector, TranscriptFormat,
};

use super::api_error::ApiError;
use super::ServerState;

/// Names by which a client may ask for our speech model besides its own: OpenAI clients send
/// `whisper-1` unless told otherwise.
const MODEL_ALIASES: [&str; 1] = ["whisper-1"];

/// Loaded speech models, one per work slot, so that a request holding a slot always finds one.
pub struct SpeechPool {
    free: Mutex<Vec<Speech>>,
    model_id: String,
}

impl SpeechPool {
    /// The pool of `speech` models, all the same model, listed as `model_id`.
    pub fn new(speech: Vec<Speech>, model_id: String) -> Self {
        Self {
            free: Mutex::new(speech),
            model_id,
        }
    }

    /// The id `GET /v1/models` lists.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    fn take(self: &Arc<Self>) -> Option<PooledSpeech> {
        let speech = self.lock().pop()?;
        Some(PooledSpeech {
            speech: Some(speech),
            pool: Arc::clone(self),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Speech>> {
        // A list of idle models stays valid whatever a panicking holder was doing.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A model taken from the pool; it goes back when dropped, whatever happened meanwhile.
struct PooledSpeech {
    speech: Option<Speech>,
    pool: Arc<SpeechPool>,
}

impl Drop for PooledSpeech {
    fn drop(&mut self) {
        if let Some(speech) = self.speech.take() {
            self.pool.lock().push(speech);
        }
    }
}

/// `response_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl ResponseFormat {
    fn parse(text: &str) -> Result<Self, ApiError> {
        Ok(match text.trim() {
            "json" => Self::Json,
            "text" => Self::Text,
            "srt" => Self::Srt,
            "vtt" => Self::Vtt,
            "verbose_json" => Self::VerboseJson,
            other => {
                return Err(ApiError::invalid(
                    "invalid_response_format",
                    format!(
                        "unknown response_format {other:?}: json, text, srt, vtt or verbose_json"
                    ),
                ))
            }
        })
    }
}

/// What the form asked for.
struct Request {
    upload: tempfile::NamedTempFile,
    upload_name: String,
    format: ResponseFormat,
}

/// The handler.
pub async fn transcriptions(
    State(state): State<Arc<ServerState>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let multipart = multipart.map_err(|rejection| {
        ApiError::invalid(
            "invalid_form",
            format!(
                "the request must be a multipart/form-data form with the recording in 'file': {}",
                rejection.body_text()
            ),
        )
    })?;
    let Some(ticket) = state.admission.try_admit() else {
        discard(multipart).await;
        return Err(ApiError::busy(state.retry_after_s()));
    };
    let request = read_form(&state, multipart).await?;
    let pool = Arc::clone(&state.speech);
    let corrector = state.corrector.clone();
    let work = ticket.run(move || {
        let done = transcribe(
            &pool,
            corrector.as_ref(),
            request.upload.path(),
            &request.upload_name,
        )?;
        Ok((done, request.format))
    });
    let (done, format) = match tokio::time::timeout(state.timeout, work).await {
        Err(_) => return Err(ApiError::timed_out(state.timeout.as_secs())),
        Ok(None) => return Err(ApiError::internal("transcription stopped unexpectedly")),
        Ok(Some(result)) => result?,
    };
    state.metrics.audio(done.transcript.duration_s);
    Ok(respond(&done, format))
}

/// Transcribes a WAV file on a free model of the pool (the caller holds a work slot), mending
/// drug names with `corrector`; errors name the file as `upload_name`.
pub(super) fn transcribe(
    pool: &Arc<SpeechPool>,
    corrector: Option<&Arc<dyn TextCorrector>>,
    path: &std::path::Path,
    upload_name: &str,
) -> Result<FileTranscript, ApiError> {
    let Some(mut speech) = pool.take() else {
        return Err(ApiError::internal(
            "no speech model was free for a request holding a slot (a bug in medscribe)",
        ));
    };
    let model = speech
        .speech
        .as_mut()
        .ok_or_else(|| ApiError::internal("an emptied speech model slot"))?;
    let mut done = model
        .transcribe_wav(path, &mut |_, _| {})
        .map_err(|error| describe_failure(error, upload_name))?;
    if let Some(corrector) = corrector {
        correct_transcript(&mut done.transcript, corrector.as_ref());
    }
    Ok(done)
}

/// Reads the form, streaming the file to disk; only the file and known fields are kept.
async fn read_form(state: &ServerState, multipart: Multipart) -> Result<Request, ApiError> {
    read_or_discard(multipart, async |form| read_fields(state, form).await).await
}

/// Reads a form with `read`; a form refused part way is still read to its end (see
/// [`discard`]).
pub(super) async fn read_or_discard<T>(
    mut multipart: Multipart,
    read: impl AsyncFnOnce(&mut Multipart) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let result = read(&mut multipart).await;
    if result.is_err() {
        discard(multipart).await;
    }
    result
}

/// Reads what is left of a refused request's body and drops it, for at most 10 s: a client
/// still sending its upload then reads the answer (429, 413, 400), where closing on it would
/// reset the connection and lose the answer. Past the body limit the stream simply ends.
pub(super) async fn discard(mut multipart: Multipart) {
    let drain = async {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
    };
    let _ = tokio::time::timeout(super::DRAIN_TIME, drain).await;
}

async fn read_fields(state: &ServerState, multipart: &mut Multipart) -> Result<Request, ApiError> {
    let mut upload = None;
    let mut format = ResponseFormat::Json;
    while let Some(mut field) = multipart.next_field().await.map_err(form_error(state))? {
        match field.name().unwrap_or_default() {
            "file" => {
                let name = upload_name(field.file_name());
                upload = Some((spool(state, &mut field).await?, name));
            }
            "response_format" => format = ResponseFormat::parse(&text(state, field).await?)?,
            "model" => {
                let model = text(state, field).await?;
                let model = model.trim();
                if model != state.speech.model_id() && !MODEL_ALIASES.contains(&model) {
                    return Err(ApiError::invalid(
                        "model_not_found",
                        format!(
                            "unknown model {model:?}: this server transcribes with {:?} (GET /v1/models)",
                            state.speech.model_id()
                        ),
                    ));
                }
            }
            "language" => {
                let language = text(state, field).await?;
                if !matches!(language.trim(), "" | "en" | "english") {
                    return Err(ApiError::invalid(
                        "unsupported_language",
                        format!(
                            "language {:?} is not supported: the speech models transcribe English (en)",
                            language.trim()
                        ),
                    ));
                }
            }
            // OpenAI's other fields (prompt, temperature, timestamp_granularities[]) change
            // nothing here; reading them keeps the form's limits in force.
            _ => {
                text(state, field).await?;
            }
        }
    }
    let Some((upload, upload_name)) = upload else {
        return Err(ApiError::invalid(
            "missing_file",
            "the form has no 'file' field with the recording (multipart/form-data)",
        ));
    };
    Ok(Request {
        upload,
        upload_name,
        format,
    })
}

/// The file's name as the client gave it, for messages only (it never becomes a path): its last
/// component, printable characters, at most 100 of them.
pub(super) fn upload_name(name: Option<&str>) -> String {
    let name = name
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let clean: String = name.chars().filter(|c| !c.is_control()).take(100).collect();
    if clean.is_empty() {
        "the uploaded file".into()
    } else {
        clean
    }
}

/// The file field, written to a private temporary file.
pub(super) async fn spool(
    state: &ServerState,
    field: &mut Field<'_>,
) -> Result<tempfile::NamedTempFile, ApiError> {
    let mut file = tempfile::Builder::new()
        .prefix("medscribe-upload-")
        .suffix(".wav")
        .tempfile()
        .map_err(|e| ApiError::internal(format!("cannot create a temporary file: {e}")))?;
    let mut written: u64 = 0;
    while let Some(chunk) = field.chunk().await.map_err(form_error(state))? {
        written = written.saturating_add(chunk.len() as u64);
        if written > state.max_upload_bytes {
            return Err(ApiError::too_large(state.max_upload_bytes));
        }
        file.write_all(&chunk)
            .map_err(|e| ApiError::internal(format!("cannot write a temporary file: {e}")))?;
    }
    file.flush()
        .map_err(|e| ApiError::internal(format!("cannot write a temporary file: {e}")))?;
    Ok(file)
}

/// A short text field (at most 64 kB).
pub(super) async fn text(state: &ServerState, mut field: Field<'_>) -> Result<String, ApiError> {
    const LIMIT: usize = 64 * 1024;
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(form_error(state))? {
        if bytes.len() + chunk.len() > LIMIT {
            return Err(ApiError::invalid(
                "field_too_large",
                format!(
                    "form field {:?} is over 64 kB",
                    field.name().unwrap_or_default()
                ),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| {
        ApiError::invalid(
            "invalid_field",
            format!(
                "form field {:?} is not UTF-8 text",
                field.name().unwrap_or_default()
            ),
        )
    })
}

pub(super) fn form_error(state: &ServerState) -> impl Fn(MultipartError) -> ApiError + '_ {
    move |error| {
        if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.max_upload_bytes)
        } else {
            ApiError::invalid(
                "invalid_form",
                format!("the multipart form cannot be read: {}", error.body_text()),
            )
        }
    }
}

/// Bad audio is the client's (400, with the CLI's message naming its file); anything else ours.
pub(super) fn describe_failure(
    error: medscribe_pipeline::PipelineError,
    upload_name: &str,
) -> ApiError {
    match error {
        medscribe_pipeline::PipelineError::Audio { reason, .. } => {
            ApiError::invalid("invalid_audio", format!("{upload_name}: {reason}"))
        }
        other => ApiError::internal(format!("transcription failed: {other}")),
    }
}

fn respond(done: &FileTranscript, format: ResponseFormat) -> Response {
    let transcript = &done.transcript;
    let plain =
        |body: String, mime: &'static str| ([(header::CONTENT_TYPE, mime)], body).into_response();
    match format {
        ResponseFormat::Json => {
            axum::Json(serde_json::json!({"text": transcript.text})).into_response()
        }
        ResponseFormat::Text => plain(
            render(done, TranscriptFormat::Txt),
            "text/plain; charset=utf-8",
        ),
        ResponseFormat::Srt => plain(
            render(done, TranscriptFormat::Srt),
            "application/x-subrip; charset=utf-8",
        ),
        ResponseFormat::Vtt => plain(
            render(done, TranscriptFormat::Vtt),
            "text/vtt; charset=utf-8",
        ),
        ResponseFormat::VerboseJson => {
            let segments: Vec<serde_json::Value> = transcript
                .segments
                .iter()
                .enumerate()
                .map(|(id, segment)| {
                    serde_json::json!({
                        "id": id,
                        "seek": 0,
                        "start": segment.start_s,
                        "end": segment.end_s,
                        "text": segment.text,
                    })
                })
                .collect();
            axum::Json(serde_json::json!({
                "task": "transcribe",
                "language": "english",
                "duration": transcript.duration_s,
                "text": transcript.text,
                "segments": segments,
                "model": done.model,
            }))
            .into_response()
        }
    }
}
