//! Letters drafted by an inference server that speaks OpenAI's chat API (vLLM, llama.cpp's
//! `llama-server`, Ollama, TGI, or another `medscribe serve`), for hospitals whose letter model
//! runs on a shared GPU server.
//!
//! The server is asked for the letter's JSON with `response_format: json_schema` (each template
//! key a string), streamed; what it sends is re-validated here, and the letter is then grounded
//! and fact-guarded exactly as a local model's is, so a server cannot add what was not said.
//! Nothing but the request goes to the server: no telemetry, and nothing at all unless the user
//! names one. https works with the usual public roots or a hospital's own CA file (rustls).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Map, Value};

use super::prompt::chat_instructions;
use super::{assemble, joined_text, mend_medication_names, outcome, LetterEvent, LetterRequest};
use super::{Letter, LetterOutcome};
use crate::error::{LlmError, Result};

/// Largest CA file read.
const MAX_CA_FILE: u64 = 1 << 20;
/// Largest image sent.
const MAX_IMAGE: u64 = 32 << 20;
/// Largest reply read: a letter is a few kilobytes.
const MAX_REPLY: u64 = 16 << 20;
/// Largest error body read.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// An OpenAI-compatible server to draft letters on.
#[derive(Debug, Clone)]
pub struct LetterServer {
    /// Base URL of the API, ending in its version (`http://host:8000/v1`).
    base: String,
    model: Option<String>,
    api_key: Option<String>,
    timeout: Duration,
    agent: ureq::Agent,
}

impl LetterServer {
    /// A server at `url` (`http(s)://host[:port][/path]`; a bare host gets `/v1`), drafting with
    /// `model` (default: the server's model, if it lists only one), sending `api_key` as a bearer token,
    /// trusting the certificates in `ca_file` (PEM) instead of the public roots if given, and
    /// giving up on a reply after `timeout`.
    pub fn new(
        url: &str,
        model: Option<String>,
        api_key: Option<String>,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self> {
        let base = base_url(url)?;
        let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
        if let Some(ca_file) = ca_file {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&read_ca_file(
                ca_file,
            )?));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10).min(timeout)))
            .timeout_global(Some(timeout))
            .user_agent("medscribe")
            .tls_config(tls.build())
            .build()
            .into();
        Ok(Self {
            base,
            model: model.filter(|m| !m.trim().is_empty()),
            api_key: api_key.filter(|k| !k.is_empty()),
            timeout,
            agent,
        })
    }

    /// The API's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The ids of the models the server serves (`GET /models`).
    pub fn models(&self) -> Result<Vec<String>> {
        let mut request = self.agent.get(format!("{}/models", self.base));
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let mut response = request.call().map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_REPLY)
            .read_to_string()
            .map_err(|e| self.unreachable(e))?;
        if status != 200 {
            return Err(self.refused(status, &body));
        }
        let listed: Value = serde_json::from_str(&body).map_err(|_| {
            LlmError::Server(format!(
                "{}/models did not answer with a model list: is this an OpenAI-compatible server?",
                self.base
            ))
        })?;
        Ok(listed["data"]
            .as_array()
            .map(|models| {
                models
                    .iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The model letters are drafted with: the one named, else the server's only one.
    fn model(&mut self) -> Result<String> {
        if let Some(model) = &self.model {
            return Ok(model.clone());
        }
        let models = self.models()?;
        let only = match models.as_slice() {
            [only] => only.clone(),
            [] => {
                return Err(LlmError::Server(format!(
                    "the letter server at {} lists no models",
                    self.base
                )))
            }
            several => {
                return Err(LlmError::Server(format!(
                    "the letter server at {} serves several models ({}): choose one with \
                     --letter-server-model",
                    self.base,
                    several.join(", ")
                )))
            }
        };
        self.model = Some(only.clone());
        Ok(only)
    }

    /// One line for a request that never got an answer.
    fn unreachable(&self, error: ureq::Error) -> LlmError {
        LlmError::Server(match error {
            ureq::Error::Timeout(_) => format!(
                "the letter server at {} did not answer within {} s",
                self.base,
                self.timeout.as_secs()
            ),
            ureq::Error::HostNotFound => {
                format!(
                    "cannot reach the letter server at {}: unknown host",
                    self.base
                )
            }
            ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => format!(
                "the letter server at {} did not answer within {} s",
                self.base,
                self.timeout.as_secs()
            ),
            ureq::Error::BodyExceedsLimit(limit) => format!(
                "the letter server at {} sent more than {limit} bytes",
                self.base
            ),
            other => format!("cannot reach the letter server at {}: {other}", self.base),
        })
    }

    /// One line for an answer other than 200.
    fn refused(&self, status: u16, body: &str) -> LlmError {
        let message = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| {
                v["error"]["message"]
                    .as_str()
                    .or(v["error"].as_str())
                    .or(v["detail"].as_str())
                    .or(v["message"].as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| body.to_owned());
        let message: String = crate::files::one_line(&message).chars().take(300).collect();
        LlmError::Server(match status {
            401 | 403 => format!(
                "the letter server at {} refused the API key ({status}: {message}); set \
                 MEDSCRIBE_API_KEY",
                self.base
            ),
            _ => format!(
                "the letter server at {} answered {status}: {message}",
                self.base
            ),
        })
    }

    /// After a refusal: if the model is not one the server lists, say that instead.
    fn wrong_model(&self, model: &str, refusal: LlmError) -> LlmError {
        match self.models() {
            Ok(models) if !models.iter().any(|m| m == model) => LlmError::Server(format!(
                "the letter server at {} does not serve model {model:?}; it serves: {} \
                 (--letter-server-model)",
                self.base,
                if models.is_empty() {
                    "nothing".to_owned()
                } else {
                    models.join(", ")
                }
            )),
            _ => refusal,
        }
    }

    /// Writes a letter: the server drafts it, this side checks, grounds and guards it.
    pub(crate) fn write_letter(
        &mut self,
        request: &LetterRequest<'_>,
        images: &[PathBuf],
        cancel: &AtomicBool,
        on_event: &mut dyn FnMut(LetterEvent),
    ) -> Result<LetterOutcome> {
        outcome(cancel, || self.compose(request, images, cancel, on_event))
    }

    fn compose(
        &mut self,
        request: &LetterRequest<'_>,
        images: &[PathBuf],
        cancel: &AtomicBool,
        on_event: &mut dyn FnMut(LetterEvent),
    ) -> Result<Letter> {
        let mended = mend_medication_names(request);
        let request = &LetterRequest {
            transcript: &mended,
            ..request.clone()
        };
        let transcript_text = joined_text(request.transcript)?;
        let template = request.template;
        let mut content = Vec::new();
        for path in images {
            content.push(json!({"type": "image_url", "image_url": {"url": data_url(path)?}}));
        }
        content
            .push(json!({"type": "text", "text": chat_instructions(template, &transcript_text)}));
        let keys: Vec<&str> = template.sections.iter().map(|s| s.key.as_str()).collect();
        let properties: Map<String, Value> = keys
            .iter()
            .map(|k| ((*k).to_owned(), json!({"type": "string"})))
            .collect();
        let model = self.model()?;
        on_event(LetterEvent::Server(format!("{} ({model})", self.base)));
        let sampling = &request.sampling;
        let schema = json!({
            "type": "object",
            "properties": properties,
            "required": keys,
            "additionalProperties": false,
        });
        let mut body = json!({
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "stream": true,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
            "max_tokens": sampling.max_new_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": template.name, "strict": true, "schema": schema},
            },
        });
        if sampling.repetition_penalty != 1.0 {
            // vLLM's and TGI's name; servers that do not know it ignore it.
            body["repetition_penalty"] = json!(sampling.repetition_penalty);
        }
        let mut response = self.post_chat(&body)?;
        let mut status = response.status().as_u16();
        // A validation error: 400 (OpenAI, vLLM), 422 (FastAPI), 500 (llama-cpp-python).
        if matches!(status, 400 | 422 | 500) {
            let refusal = read_error_body(&mut response);
            if refusal.contains("response_format") || refusal.contains("json_schema") {
                // llama-cpp-python's server takes the schema as {"type": "json_object",
                // "schema": ...} and refuses OpenAI's form.
                body["response_format"] = json!({"type": "json_object", "schema": schema});
                response = self.post_chat(&body)?;
                status = response.status().as_u16();
            } else {
                let refusal = self.refused(status, &refusal);
                return Err(self.wrong_model(&model, refusal));
            }
        }
        if status != 200 {
            let body = read_error_body(&mut response);
            let refusal = self.refused(status, &body);
            return Err(if matches!(status, 400 | 404) {
                self.wrong_model(&model, refusal)
            } else {
                refusal
            });
        }
        let streamed = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let reader = response.into_body().into_reader().take(MAX_REPLY);
        let (reply, finish) = if streamed {
            read_events(
                reader,
                &self.base,
                cancel,
                &mut SectionStream::new(&keys),
                on_event,
            )
            .map_err(|e| match e {
                LlmError::Server(_) | LlmError::Cancelled => e,
                other => LlmError::Server(format!("{}: {other}", self.base)),
            })?
        } else {
            // A server that ignores `stream` answers whole.
            let mut text = String::new();
            BufReader::new(reader)
                .read_to_string(&mut text)
                .map_err(|e| self.unreachable(ureq::Error::Io(e)))?;
            let whole: Value = serde_json::from_str(&text).map_err(|_| not_a_letter(&self.base))?;
            let content = whole["choices"][0]["message"]["content"]
                .as_str()
                .ok_or_else(|| not_a_letter(&self.base))?
                .to_owned();
            let mut sections = SectionStream::new(&keys);
            sections.feed(&content, on_event);
            let finish = whole["choices"][0]["finish_reason"]
                .as_str()
                .map(str::to_owned);
            (content, finish)
        };
        let (values, mut warnings) = check_letter(&reply, &keys, &self.base)?;
        let truncated = finish.as_deref() == Some("length");
        if truncated && values.is_none() {
            return Err(LlmError::Server(format!(
                "the letter server at {} stopped at the token limit ({}) before the letter's \
                 JSON was complete: raise --max-new-tokens",
                self.base, sampling.max_new_tokens
            )));
        }
        let Some(values) = values else {
            return Err(not_a_letter(&self.base));
        };
        warnings.insert(
            0,
            format!("drafted by the letter server at {} ({model})", self.base),
        );
        Ok(assemble(
            request,
            &[values],
            &transcript_text,
            warnings,
            truncated,
            model,
        ))
    }
}

impl LetterServer {
    fn post_chat(&self, body: &Value) -> Result<ureq::http::Response<ureq::Body>> {
        let mut call = self
            .agent
            .post(format!("{}/chat/completions", self.base))
            .header("Content-Type", "application/json")
            .header("Accept", "text/event-stream");
        if let Some(key) = &self.api_key {
            call = call.header("Authorization", format!("Bearer {key}"));
        }
        call.send(body.to_string()).map_err(|e| self.unreachable(e))
    }
}

fn read_error_body(response: &mut ureq::http::Response<ureq::Body>) -> String {
    response
        .body_mut()
        .with_config()
        .limit(MAX_ERROR_BODY)
        .read_to_string()
        .unwrap_or_default()
}

fn not_a_letter(base: &str) -> LlmError {
    LlmError::Server(format!(
        "the letter server at {base} did not answer with the letter's JSON (does it support \
         response_format json_schema?)"
    ))
}

/// `url` as the API's base: scheme checked, no trailing slash, `/v1` added to a bare host.
fn base_url(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            LlmError::Setting(format!(
                "letter server {url:?}: expected an http:// or https:// URL"
            ))
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(LlmError::Setting(format!("letter server {url:?}: no host")));
    }
    if rest.contains(['?', '#', ' ']) {
        return Err(LlmError::Setting(format!(
            "letter server {url:?}: give the API's base URL, without a query"
        )));
    }
    Ok(if rest.contains('/') {
        url.to_owned()
    } else {
        format!("{url}/v1")
    })
}

fn read_ca_file(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let bad = |reason: String| LlmError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = crate::files::read_bounded(path, MAX_CA_FILE)
        .map_err(|e| bad(format!("cannot read the CA file: {e}")))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the CA file".into()));
    }
    Ok(certs)
}

/// An image as a data URL, its type told by its first bytes.
fn data_url(path: &Path) -> Result<String> {
    let bad = |reason: String| LlmError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = crate::files::read_bounded(path, MAX_IMAGE)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    let mime = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else {
        return Err(bad("not a PNG or JPEG image".into()));
    };
    Ok(format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    ))
}

/// Reads the server-sent events of a streamed reply: the content, and the finish reason.
fn read_events(
    reader: impl Read,
    base: &str,
    cancel: &AtomicBool,
    sections: &mut SectionStream,
    on_event: &mut dyn FnMut(LetterEvent),
) -> Result<(String, Option<String>)> {
    let mut content = String::new();
    let mut finish = None;
    for line in BufReader::new(reader).lines() {
        if cancel.load(Ordering::Relaxed) {
            // Dropping the reader closes the connection, which stops the server's work.
            return Err(LlmError::Cancelled);
        }
        let line = line.map_err(|e| {
            LlmError::Server(format!(
                "the letter server at {base} broke off its reply: {e}"
            ))
        })?;
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data).map_err(|_| {
            LlmError::Server(format!(
                "the letter server at {base} sent an event that is not JSON"
            ))
        })?;
        if let Some(error) = chunk.get("error") {
            let message = error["message"]
                .as_str()
                .or(error.as_str())
                .unwrap_or("unknown");
            return Err(LlmError::Server(format!(
                "the letter server at {base} failed while writing: {message}"
            )));
        }
        let choice = &chunk["choices"][0];
        if let Some(piece) = choice["delta"]["content"].as_str() {
            content.push_str(piece);
            sections.feed(piece, on_event);
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = Some(reason.to_owned());
        }
    }
    Ok((content, finish))
}

/// A letter server's section values (`None`: the reply did not parse), and warnings.
type CheckedLetter = (Option<Map<String, Value>>, Vec<String>);

/// The section values of the server's letter JSON, re-validated: an object whose template keys
/// hold strings. `None` if the reply does not parse at all; warnings for what was missing or
/// extra.
fn check_letter(reply: &str, keys: &[&str], base: &str) -> Result<CheckedLetter> {
    let Ok(value) = serde_json::from_str::<Value>(reply.trim()) else {
        return Ok((None, Vec::new()));
    };
    let Value::Object(object) = value else {
        return Err(not_a_letter(base));
    };
    let mut warnings = Vec::new();
    let mut values = Map::new();
    for key in keys {
        match object.get(*key) {
            Some(Value::String(text)) => {
                values.insert((*key).to_owned(), Value::String(text.clone()));
            }
            Some(Value::Null) | None => {
                warnings.push(format!("the letter server left out section \"{key}\""));
            }
            Some(_) => {
                return Err(LlmError::Server(format!(
                    "the letter server at {base} wrote section \"{key}\" as something other \
                     than text (does it enforce response_format json_schema?)"
                )))
            }
        }
    }
    let extra = object
        .keys()
        .filter(|k| !keys.contains(&k.as_str()))
        .count();
    if extra > 0 {
        warnings.push(format!(
            "the letter server wrote {extra} section(s) the template does not have; they were left out"
        ));
    }
    Ok((Some(values), warnings))
}

/// Follows the letter's JSON as it streams in, to report sections and their text as they come
/// (the finished letter is parsed whole; this is only for showing progress).
#[derive(Debug)]
struct SectionStream {
    keys: Vec<String>,
    depth: usize,
    /// After `{` or `,`: the next string is a key.
    expect_key: bool,
    state: StreamState,
    /// The key being read, or the last key read.
    key: String,
    /// Pending `\u` escape digits.
    unicode: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// Between tokens.
    Between,
    /// In a top-level key; `escaped` after a backslash.
    Key { escaped: bool },
    /// In a top-level section value.
    Value { escaped: bool },
    /// In some other string (nested, or a value of an unknown key).
    Other { escaped: bool },
}

impl SectionStream {
    fn new(keys: &[&str]) -> Self {
        Self {
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            depth: 0,
            expect_key: false,
            state: StreamState::Between,
            key: String::new(),
            unicode: String::new(),
        }
    }

    fn feed(&mut self, piece: &str, on_event: &mut dyn FnMut(LetterEvent)) {
        let mut text = String::new();
        for c in piece.chars() {
            match self.state {
                StreamState::Between => match c {
                    '{' | '[' => {
                        self.depth += 1;
                        self.expect_key = c == '{';
                    }
                    '}' | ']' => self.depth = self.depth.saturating_sub(1),
                    ',' => self.expect_key = true,
                    '"' if self.depth == 1 && (self.expect_key || self.key.is_empty()) => {
                        self.key.clear();
                        self.state = StreamState::Key { escaped: false };
                    }
                    '"' if self.depth == 1 && self.keys.contains(&self.key) => {
                        on_event(LetterEvent::Section(self.key.clone()));
                        self.state = StreamState::Value { escaped: false };
                    }
                    '"' => self.state = StreamState::Other { escaped: false },
                    _ => {}
                },
                StreamState::Key { escaped } => match (escaped, c) {
                    (false, '\\') => self.state = StreamState::Key { escaped: true },
                    (false, '"') => {
                        self.state = StreamState::Between;
                        self.expect_key = false;
                    }
                    _ => {
                        self.key.push(c);
                        self.state = StreamState::Key { escaped: false };
                    }
                },
                StreamState::Value { escaped } => {
                    if !self.unicode.is_empty() {
                        self.unicode.push(c);
                        if self.unicode.len() == 5 {
                            let code = u32::from_str_radix(&self.unicode[1..], 16).ok();
                            text.push(code.and_then(char::from_u32).unwrap_or('\u{FFFD}'));
                            self.unicode.clear();
                        }
                        continue;
                    }
                    match (escaped, c) {
                        (false, '\\') => self.state = StreamState::Value { escaped: true },
                        (false, '"') => {
                            self.state = StreamState::Between;
                            if !text.is_empty() {
                                on_event(LetterEvent::Text(std::mem::take(&mut text)));
                            }
                        }
                        (false, c) => text.push(c),
                        (true, 'u') => {
                            self.unicode.push('u');
                            self.state = StreamState::Value { escaped: false };
                        }
                        (true, c) => {
                            text.push(match c {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                'b' | 'f' => ' ',
                                other => other,
                            });
                            self.state = StreamState::Value { escaped: false };
                        }
                    }
                }
                StreamState::Other { escaped } => {
                    self.state = match (escaped, c) {
                        (false, '\\') => StreamState::Other { escaped: true },
                        (false, '"') => StreamState::Between,
                        _ => StreamState::Other { escaped: false },
                    }
                }
            }
        }
        if !text.is_empty() {
            on_event(LetterEvent::Text(text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_normalised() {
        for (url, base) in [
            ("http://gpu:8000", "http://gpu:8000/v1"),
            ("https://gpu.hospital.org/", "https://gpu.hospital.org/v1"),
            ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1"),
            ("http://proxy/llm/openai/v1", "http://proxy/llm/openai/v1"),
        ] {
            assert_eq!(base_url(url).unwrap(), base, "{url}");
        }
        for bad in [
            "gpu:8000",
            "ftp://gpu",
            "http://",
            "http:///v1",
            "http://gpu/v1?x=1",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    fn events(pieces: &[&str]) -> Vec<LetterEvent> {
        let mut stream = SectionStream::new(&["history", "plan"]);
        let mut events = Vec::new();
        for piece in pieces {
            stream.feed(piece, &mut |e| events.push(e));
        }
        events
    }

    #[test]
    fn streamed_json_becomes_sections_and_text_whatever_the_cuts() {
        let json = "{\n  \"history\": \"Chest pain, \\\"crushing\\\"\\n2 days \\u00e9\",\n  \"plan\": \"ECG\" }";
        let whole = events(&[json]);
        let text = |events: &[LetterEvent]| {
            let mut out = String::new();
            for e in events {
                match e {
                    LetterEvent::Section(k) => out.push_str(&format!("[{k}]")),
                    LetterEvent::Text(t) => out.push_str(t),
                    _ => {}
                }
            }
            out
        };
        assert_eq!(
            text(&whole),
            "[history]Chest pain, \"crushing\"\n2 days é[plan]ECG"
        );
        // One character at a time gives the same.
        let chars: Vec<String> = json.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(text(&events(&pieces)), text(&whole));
        // Unknown keys and nested values are not shown.
        let other = events(&[r#"{"extra": {"history": "no"}, "plan": "yes"}"#]);
        assert_eq!(text(&other), "[plan]yes");
    }

    #[test]
    fn replies_are_revalidated() {
        let keys = ["history", "plan"];
        let (values, warnings) = check_letter(r#"{"history": "a", "x": "b"}"#, &keys, "u").unwrap();
        let values = values.unwrap();
        assert_eq!(values["history"], "a");
        assert!(!values.contains_key("x"));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(check_letter(r#"{"history": 3, "plan": ""}"#, &keys, "u").is_err());
        assert!(check_letter("[1]", &keys, "u").is_err());
        assert!(check_letter("{\"history\": \"cut", &keys, "u")
            .unwrap()
            .0
            .is_none());
    }

    #[test]
    fn bad_ca_files_and_images_are_named() {
        let dir = std::env::temp_dir().join(format!("medscribe-remote-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let error = LetterServer::new("https://gpu", None, None, Some(&ca), Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("ca.pem") && error.contains("no PEM certificate"),
            "{error}"
        );
        let image = dir.join("scan.png");
        std::fs::write(&image, "GIF89a").unwrap();
        let error = data_url(&image).unwrap_err().to_string();
        assert!(
            error.contains("scan.png") && error.contains("PNG or JPEG"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unreachable_server_is_one_clear_line() {
        // Port 9 (discard) on loopback: nothing listens in a test machine.
        let mut server = LetterServer::new(
            "http://127.0.0.1:9",
            Some("m".into()),
            None,
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        let error = server.models().unwrap_err().to_string();
        assert!(
            error.starts_with("cannot reach the letter server at http://127.0.0.1:9/v1"),
            "{error}"
        );
        assert_eq!(server.model().unwrap(), "m");
    }
}
