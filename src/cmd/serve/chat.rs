//! `POST /v1/chat/completions`, as OpenAI's, on the letter model (Gemma 3 / MedGemma): messages
//! with text and `image_url` parts (data URLs), `temperature`, `top_p`, `max_tokens`, `seed`, and
//! `stream: true` as server-sent events. Conversations are written in Gemma's own chat format
//! (`llm::conversation_prompt`); user text can never become a control token.
//!
//! `response_format: {"type": "json_schema", "json_schema": {"schema": ...}}` holds the reply to
//! the schema by constrained decoding (`llm::JsonSchema`): it always parses and validates. A
//! schema part that cannot be enforced is a 400 naming it, never ignored.
//!
//! Unlike OpenAI, `temperature` defaults to 0 (greedy, the same answer every time). Not
//! supported (a 400, not ignored): `response_format` `json_object`, tools, `n` > 1.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use medscribe_llm::{ChatPart, ChatRole, JsonSchema, Sampling, SchemaConstraint, StopReason};
use serde::Deserialize;

use super::api_error::ApiError;
use super::letters::image_from_data_url;
use super::ServerState;

/// Most tokens a reply may ask for.
const MAX_TOKENS_LIMIT: usize = 8192;

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    seed: Option<u64>,
    n: Option<usize>,
    response_format: Option<ResponseFormat>,
    tools: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum ResponseFormat {
    #[serde(rename = "text")]
    Text,
    #[serde(rename = "json_object")]
    JsonObject,
    #[serde(rename = "json_schema")]
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Debug, Deserialize)]
struct JsonSchemaFormat {
    schema: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum Part {
    #[serde(rename = "text")]
    Text { text: String },
    #[serde(rename = "image_url")]
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Deserialize)]
struct ImageUrl {
    url: String,
}

/// A request checked and ready to run.
struct Conversation {
    model: String,
    /// The conversation in Gemma's chat format, image markers not yet expanded.
    prompt: String,
    images: Vec<tempfile::NamedTempFile>,
    sampling: Sampling,
    /// The schema the reply is held to, if any.
    schema: Option<JsonSchema>,
    stream: bool,
}

/// What the generation reports as it goes.
enum Progress {
    Text(String),
    Done {
        prompt_tokens: usize,
        completion_tokens: usize,
        reason: StopReason,
    },
    Failed(ApiError),
}

/// The handler.
pub async fn chat_completions(
    State(state): State<Arc<ServerState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let Some(ticket) = state.admission.try_admit() else {
        super::discard_request(&state, request).await;
        return Err(ApiError::busy(state.retry_after_s()));
    };
    let axum::Json(body) = axum::Json::<ChatRequest>::from_request(request, &state)
        .await
        .map_err(|rejection| ApiError::invalid("invalid_json", rejection.body_text()))?;
    let conversation = check(&state, body)?;
    let stream = conversation.stream;
    let reply = Reply {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: conversation.model.clone(),
    };
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Progress>(256);
    let cancel = Arc::new(AtomicBool::new(false));
    let work = ticket.run({
        let state = Arc::clone(&state);
        let cancel = Arc::clone(&cancel);
        let sender = sender.clone();
        move || run(&state, &conversation, &cancel, &sender)
    });
    let timeout = state.timeout;
    tokio::spawn(async move {
        let failure = match tokio::time::timeout(timeout, work).await {
            Ok(Some(())) => return,
            Ok(None) => ApiError::internal("the reply stopped unexpectedly"),
            Err(_) => {
                // The generation stops at its next token and frees the model.
                cancel.store(true, Ordering::Relaxed);
                ApiError::timed_out(timeout.as_secs())
            }
        };
        let _ = sender.send(Progress::Failed(failure)).await;
    });
    if stream {
        return Ok(stream_events(reply, receiver));
    }
    let mut text = String::new();
    while let Some(progress) = receiver.recv().await {
        match progress {
            Progress::Text(piece) => text.push_str(&piece),
            Progress::Failed(error) => return Err(error),
            Progress::Done {
                prompt_tokens,
                completion_tokens,
                reason,
            } => {
                return Ok(axum::Json(serde_json::json!({
                    "id": reply.id,
                    "object": "chat.completion",
                    "created": reply.created,
                    "model": reply.model,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish_reason(reason),
                    }],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }))
                .into_response());
            }
        }
    }
    Err(ApiError::internal("the reply ended without finishing"))
}

/// What every chunk of one reply repeats.
struct Reply {
    id: String,
    created: u64,
    model: String,
}

impl Reply {
    /// One server-sent event of a `chat.completion.chunk` with `delta` and `finish_reason`.
    fn chunk(&self, delta: serde_json::Value, finish_reason: Option<&str>) -> String {
        let chunk = serde_json::json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        });
        format!("data: {chunk}\n\n")
    }
}

/// The reply as server-sent events, as OpenAI streams it: the role, the text as it comes, the
/// finish reason, then `[DONE]`. A failure after the stream began is an `error` event.
fn stream_events(reply: Reply, receiver: tokio::sync::mpsc::Receiver<Progress>) -> Response {
    let first = reply.chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
    );
    let events = futures_util::stream::unfold(
        (Some(first), receiver, reply, false),
        |(first, mut receiver, reply, finished)| async move {
            if let Some(first) = first {
                return Some((Ok::<_, Infallible>(first), (None, receiver, reply, false)));
            }
            if finished {
                return None;
            }
            let event = match receiver.recv().await? {
                Progress::Text(piece) => {
                    let event = reply.chunk(serde_json::json!({"content": piece}), None);
                    return Some((Ok(event), (None, receiver, reply, false)));
                }
                Progress::Done { reason, .. } => {
                    let last = reply.chunk(serde_json::json!({}), Some(finish_reason(reason)));
                    format!("{last}data: [DONE]\n\n")
                }
                Progress::Failed(error) => format!("data: {}\n\n", error.body()),
            };
            Some((Ok(event), (None, receiver, reply, true)))
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

fn finish_reason(reason: StopReason) -> &'static str {
    match reason {
        StopReason::Length => "length",
        StopReason::EndOfTurn | StopReason::Cancelled => "stop",
    }
}

/// Checks the request against what this server can do, and writes the turns.
fn check(state: &ServerState, body: ChatRequest) -> Result<Conversation, ApiError> {
    let model = state.letters.model_id();
    if body.model.trim() != model {
        return Err(ApiError::invalid(
            "model_not_found",
            format!(
                "unknown model {:?}: this server chats with {model:?} (GET /v1/models)",
                body.model
            ),
        ));
    }
    let schema = match body.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => {
            return Err(ApiError::invalid(
                "unsupported_parameter",
                "response_format json_object is not supported: give a json_schema",
            ))
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => Some(
            JsonSchema::compile(&json_schema.schema)
                .map_err(|why| ApiError::invalid("invalid_schema", why))?,
        ),
    };
    if body.tools.is_some() || body.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(
            "unsupported_parameter",
            "tools and n other than 1 are not supported",
        ));
    }
    let max_new_tokens = body
        .max_completion_tokens
        .or(body.max_tokens)
        .unwrap_or(512);
    if max_new_tokens == 0 || max_new_tokens > MAX_TOKENS_LIMIT {
        return Err(ApiError::invalid(
            "invalid_max_tokens",
            format!("max_tokens must be between 1 and {MAX_TOKENS_LIMIT}"),
        ));
    }
    if let Some(minimum) = schema.as_ref().map(JsonSchema::minimum_len) {
        if max_new_tokens < minimum {
            return Err(ApiError::invalid(
                "invalid_max_tokens",
                format!(
                    "max_tokens {max_new_tokens} cannot hold a reply of this schema ({minimum} at least)"
                ),
            ));
        }
    }
    let sampling = Sampling {
        temperature: body.temperature.unwrap_or(0.0),
        top_p: body.top_p.unwrap_or(1.0),
        seed: body.seed.unwrap_or(0),
        max_new_tokens,
        ..Sampling::default()
    };
    sampling.check().map_err(|_| {
        ApiError::invalid(
            "invalid_sampling",
            "temperature must be 0-100 and top_p 0-1",
        )
    })?;
    let mut system = Vec::new();
    let mut turns: Vec<(ChatRole, Vec<ChatPart>)> = Vec::new();
    let mut images = Vec::new();
    for (index, message) in body.messages.into_iter().enumerate() {
        let role = match message.role.as_str() {
            "system" | "developer" if turns.is_empty() => None,
            "system" | "developer" => {
                return Err(ApiError::invalid(
                    "invalid_messages",
                    format!("message {index}: system messages must come before the conversation"),
                ))
            }
            "user" => Some(ChatRole::User),
            "assistant" => Some(ChatRole::Model),
            other => {
                return Err(ApiError::invalid(
                    "invalid_messages",
                    format!(
                    "message {index}: role {other:?} is not supported (system, user, assistant)"
                ),
                ))
            }
        };
        let mut parts = Vec::new();
        match message.content {
            None => {}
            Some(Content::Text(text)) => parts.push(ChatPart::Text(text)),
            Some(Content::Parts(items)) => {
                for item in items {
                    match item {
                        Part::Text { text } => parts.push(ChatPart::Text(text)),
                        Part::ImageUrl { image_url } => {
                            if role != Some(ChatRole::User) {
                                return Err(ApiError::invalid(
                                    "invalid_messages",
                                    format!("message {index}: only user messages may hold images"),
                                ));
                            }
                            images.push(image_from_data_url(images.len(), &image_url.url)?);
                            parts.push(ChatPart::Image);
                        }
                    }
                }
            }
        }
        match role {
            None => system.extend(parts.into_iter().filter_map(|part| match part {
                ChatPart::Text(text) => Some(text),
                ChatPart::Image => None,
            })),
            Some(role) => turns.push((role, parts)),
        }
    }
    // Written here, once, so that a bad conversation is a 400 before any work is queued.
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    let prompt = medscribe_llm::conversation_prompt(system.as_deref(), &turns)
        .map_err(|why| ApiError::invalid("invalid_messages", why))?;
    Ok(Conversation {
        model: model.to_owned(),
        prompt,
        images,
        sampling,
        schema,
        stream: body.stream,
    })
}

/// Generates the reply on the letter model (a blocking thread holding a work slot), sending its
/// text as it comes. A closed receiver (the client left) stops the generation.
fn run(
    state: &ServerState,
    conversation: &Conversation,
    cancel: &AtomicBool,
    sender: &tokio::sync::mpsc::Sender<Progress>,
) {
    let result = state.letters.with_model(|loaded, table| {
        let prompt = &conversation.prompt;
        let tokens_per_image = loaded.vision.as_ref().map_or(0, |v| v.tokens_per_image());
        let (prompt, markers) = medscribe_llm::expand_image_markers(prompt, tokens_per_image);
        let images = if markers == 0 {
            None
        } else {
            let paths: Vec<PathBuf> = conversation
                .images
                .iter()
                .map(|file| file.path().to_path_buf())
                .collect();
            Some(loaded.encode_images(&paths).map_err(|error| match error {
                medscribe_llm::LlmError::Image { reason, .. } => {
                    ApiError::invalid("invalid_image", reason)
                }
                other => ApiError::invalid("unsupported", other.to_string()),
            })?)
        };
        let ids = loaded
            .tokenizer
            .encode(&prompt)
            .map_err(|e| ApiError::internal(format!("cannot tokenise the prompt: {e}")))?;
        let stop = [loaded.tokenizer.eos, loaded.tokenizer.end_of_turn];
        loaded.model.reset();
        let tokenizer = &loaded.tokenizer;
        let (mut generated, mut sent) = (Vec::new(), String::new());
        let mut on_token = |id| {
            generated.push(id);
            // Whole-continuation decoding keeps characters split over tokens intact.
            if let Ok(text) = tokenizer.decode(&generated) {
                if let Some(new) = text.strip_prefix(sent.as_str()) {
                    if !new.is_empty()
                        && sender
                            .blocking_send(Progress::Text(new.to_owned()))
                            .is_err()
                    {
                        return false;
                    }
                    sent = text;
                }
            }
            true
        };
        let generation = match &conversation.schema {
            Some(schema) => medscribe_llm::generate_json(
                &mut loaded.model,
                &ids,
                images.as_ref(),
                &mut SchemaConstraint::new(schema, table),
                &conversation.sampling,
                cancel,
                &mut on_token,
            ),
            None => medscribe_llm::generate_with_images(
                &mut loaded.model,
                &ids,
                images.as_ref(),
                &stop,
                &conversation.sampling,
                cancel,
                &mut on_token,
            ),
        };
        let (_, reason) = generation.map_err(|e| match e {
            medscribe_llm::LlmError::Setting(why) => ApiError::invalid("invalid_max_tokens", why),
            other => ApiError::internal(format!("generation failed: {other}")),
        })?;
        Ok(Progress::Done {
            prompt_tokens: ids.len(),
            completion_tokens: generated.len(),
            reason,
        })
    });
    let last = match result {
        Ok(Ok(done)) => done,
        Ok(Err(error)) | Err(error) => Progress::Failed(error),
    };
    let _ = sender.blocking_send(last);
}
