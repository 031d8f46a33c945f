//! `medscribe serve`: the speech pipeline and the letter writer as an HTTP service with OpenAI's API shapes, for a
//! hospital's load balancer to spread over replicas. Each replica is stateless: models are loaded
//! once at start and shared; requests hold nothing between them.
//!
//! Production behaviour: bounded work slots and queue (429 with `Retry-After` beyond), a body
//! limit (413), a time limit per request (504), OpenAI-style JSON errors, a bearer token compared
//! in constant time (required for any address but loopback), and on SIGTERM or Ctrl-C the server
//! stops accepting, finishes what it has, and exits. Logs carry method, path, status and time,
//! never patient text.

mod admission;
mod api_error;
mod chat;
mod letters;
mod metrics;
mod transcriptions;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use medscribe_llm::letter::{DeviceName, Writer};
use medscribe_pipeline::{DataDir, Speech, SpeechOptions, TextCorrector};
use sha2::{Digest, Sha256};

use admission::Admission;
use api_error::ApiError;
use letters::Letters;
use metrics::Metrics;
use transcriptions::SpeechPool;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on. Any address but loopback (127.0.0.1, ::1) needs
    /// --token-file: the server then answers other machines.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    bind: SocketAddr,

    /// File holding the bearer token clients must send (`Authorization: Bearer TOKEN`); its
    /// first line, without surrounding spaces. Keep it readable by the server's user only.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Requests worked on at once; one speech model is loaded for each.
    #[arg(long, default_value_t = 2, value_name = "N")]
    max_concurrent: usize,

    /// Requests that may wait for a free slot; beyond them, requests get 429 with Retry-After.
    #[arg(long, default_value_t = 16, value_name = "N")]
    queue: usize,

    /// Largest request body, megabytes (10^6 bytes); larger ones get 413. An hour of 16 kHz
    /// 16-bit mono WAV is 115 MB.
    #[arg(long, default_value_t = 200, value_name = "MB")]
    max_upload_mb: u64,

    /// Longest a request may work, seconds; then it gets 504.
    #[arg(long, default_value_t = 600, value_name = "S")]
    timeout_s: u64,

    /// Speech model directory (Moonshine or a MedASR export). Default: the installed default.
    #[arg(long, value_name = "DIR")]
    speech_model: Option<PathBuf>,

    /// ONNX Runtime threads per speech model.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,

    /// Leave medication names as the speech model wrote them (see `transcribe --help`).
    #[arg(long)]
    no_drug_correction: bool,

    /// Letter model for POST /v1/letters: a Hugging Face directory or a .gguf file. Default:
    /// Gemma 3 270M from setup.
    #[arg(long, value_name = "PATH")]
    letter_model: Option<PathBuf>,

    /// Where the letter model runs: cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: DeviceName,

    #[command(flatten)]
    writing: super::LetterModelArgs,
}

/// What every request shares.
pub struct ServerState {
    admission: Arc<Admission>,
    speech: Arc<SpeechPool>,
    letters: Letters,
    corrector: Option<Arc<dyn TextCorrector>>,
    metrics: Metrics,
    token_digest: Option<[u8; 32]>,
    max_upload_bytes: u64,
    timeout: Duration,
}

impl ServerState {
    /// Seconds a client turned away should wait: about one short request's work.
    fn retry_after_s(&self) -> u64 {
        2
    }
}

/// `medscribe serve`.
pub fn serve(args: ServeArgs, ort_lib: Option<PathBuf>) -> Result<()> {
    let token_digest = match &args.token_file {
        Some(path) => Some(read_token(path)?),
        None if !args.bind.ip().is_loopback() => bail!(
            "binding to {} would answer other machines: start with --token-file FILE (a secret clients send as 'Authorization: Bearer TOKEN'), or bind to 127.0.0.1",
            args.bind
        ),
        None => None,
    };
    if args.max_concurrent == 0 || args.max_concurrent > 256 {
        bail!("--max-concurrent must be between 1 and 256");
    }
    let max_upload_bytes = args
        .max_upload_mb
        .checked_mul(1_000_000)
        .filter(|&bytes| bytes > 0)
        .context("--max-upload-mb must be between 1 and 18446744073709")?;
    if args.timeout_s == 0 {
        bail!("--timeout-s must be at least 1");
    }
    let data = DataDir::from_env();
    let options = SpeechOptions {
        model: args.speech_model.clone(),
        segmentation: None,
        vad_model: None,
        threads: args.threads,
        ort_lib,
    };
    let started = Instant::now();
    let speech = (0..args.max_concurrent)
        .map(|_| Speech::open(&options, &data))
        .collect::<medscribe_pipeline::Result<Vec<_>>>()?;
    let model_id = speech
        .first()
        .map(|s| s.recognizer.model_name().to_owned())
        .unwrap_or_default();
    let drugs = super::drug_lexicon(&data)?;
    let corrector = if args.no_drug_correction {
        None
    } else {
        drugs
            .clone()
            .map(|drugs| Arc::new(super::transcribe::DrugNames(drugs)) as Arc<dyn TextCorrector>)
    };
    eprintln!(
        "medscribe: {} speech model{} ({model_id}) loaded in {:.1} s",
        args.max_concurrent,
        if args.max_concurrent == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let letter_model = super::letter_model_path(args.letter_model.as_deref(), &data)?;
    let mut writer = Writer::new(
        letter_model.clone(),
        args.writing.settings(args.device),
        drugs,
    )?;
    writer.load()?;
    eprintln!(
        "medscribe: letter model {} loaded in {:.1} s",
        letter_model.display(),
        started.elapsed().as_secs_f64()
    );
    let state = Arc::new(ServerState {
        admission: Admission::new(args.max_concurrent, args.queue),
        speech: Arc::new(SpeechPool::new(speech, model_id)),
        letters: Letters::new(writer, super::load_templates()),
        corrector,
        metrics: Metrics::default(),
        token_digest,
        max_upload_bytes,
        timeout: Duration::from_secs(args.timeout_s),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the server's runtime")?;
    runtime.block_on(run(state, args.bind))
}

async fn run(state: Arc<ServerState>, bind: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let address = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // Tests and scripts read this line to find the port when binding to port 0.
    eprintln!("medscribe: serving on http://{address}");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the server failed")?;
    eprintln!("medscribe: stopped; every request in progress was answered");
    Ok(())
}

fn router(state: Arc<ServerState>) -> Router {
    // The form's own fields add a little to the file; the file itself is counted as it streams.
    let body_limit =
        usize::try_from(state.max_upload_bytes.saturating_add(1 << 20)).unwrap_or(usize::MAX);
    Router::new()
        .route(
            "/v1/audio/transcriptions",
            post(transcriptions::transcriptions),
        )
        .route("/v1/letters", post(letters::letters))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .fallback(
            |State(state): State<Arc<ServerState>>, request: Request| async move {
                let path = request.uri().path().to_owned();
                discard_request(&state, request).await;
                ApiError::not_found(&path)
            },
        )
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            authorize,
        ))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            observe,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Checks the bearer token, when the server has one.
async fn authorize(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = &state.token_digest {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same_digest(&Sha256::digest(given.trim().as_bytes()).into(), expected) {
            discard_request(&state, request).await;
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// Reads a refused request's body and drops it as it comes (memory stays flat), up to the body
/// limit and for at most 10 s, so that a client still sending reads the answer: closing on
/// unread bytes makes the kernel reset the connection, and the client may lose the answer with
/// it. A client waiting for `100 Continue` has sent nothing yet: reading would invite the upload.
pub(super) async fn discard_request(state: &ServerState, request: Request) {
    use futures_util::StreamExt;
    let waits_to_send = request
        .headers()
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    if waits_to_send {
        return;
    }
    let mut stream = request.into_body().into_data_stream();
    let limit = state.max_upload_bytes;
    let drain = async {
        let mut seen: u64 = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            seen = seen.saturating_add(chunk.len() as u64);
            if seen > limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}

/// Longest a refused request's upload is read for, so that its client sees the answer.
pub(super) const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Digests compared without an early exit, so that timing tells nothing of the token (hashing
/// first also hides its length).
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Counts and logs each request: method, path, status, time; nothing of its content.
async fn observe(State(state): State<Arc<ServerState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let endpoint = match path.as_str() {
        "/v1/audio/transcriptions" => "transcriptions",
        "/v1/letters" => "letters",
        "/v1/chat/completions" => "chat",
        "/v1/models" => "models",
        "/metrics" => "metrics",
        "/healthz" => "healthz",
        _ => "other",
    };
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    state
        .metrics
        .request(endpoint, response.status().as_u16(), seconds);
    if endpoint != "healthz" && endpoint != "metrics" {
        eprintln!(
            "medscribe: {method} {} {} {:.3} s",
            if endpoint == "other" {
                "(unknown path)"
            } else {
                &path
            },
            response.status().as_u16(),
            seconds
        );
    }
    response
}

async fn models(State(state): State<Arc<ServerState>>) -> Response {
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [
            {"id": state.speech.model_id(), "object": "model", "created": 0, "owned_by": "medscribe"},
            {"id": state.letters.model_id(), "object": "model", "created": 0, "owned_by": "medscribe"},
        ],
    }))
    .into_response()
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&state.admission),
    )
        .into_response()
}

/// The token file's first line, digested; refused when empty or readable by others.
fn read_token(path: &std::path::Path) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.len() < 16 {
        bail!(
            "{}: the token must be at least 16 characters on the first line (e.g. from `openssl rand -hex 32`)",
            path.display()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "{}: other users can read this token file (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(Sha256::digest(token.as_bytes()).into())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    eprintln!("medscribe: shutting down: finishing the requests in progress, taking no new ones");
}
