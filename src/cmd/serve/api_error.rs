//! Errors as OpenAI's API writes them: `{"error": {"message", "type", "code"}}` with the HTTP
//! status that fits, so that OpenAI clients raise their usual exceptions.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One failed request.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    retry_after_s: Option<u64>,
}

impl ApiError {
    /// 400: the request itself is wrong (bad audio, an unknown format or model).
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    /// 401: no or a wrong bearer token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "this server needs 'Authorization: Bearer TOKEN' with the token it was started with",
        )
    }

    /// 404: no such endpoint.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_url",
            format!(
                "no endpoint {path}; see GET /v1/models, POST /v1/audio/transcriptions, POST /v1/letters"
            ),
        )
    }

    /// 413: the body is over the server's limit.
    pub fn too_large(limit_bytes: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!(
                "the request is larger than this server's limit of {} MB (--max-upload-mb)",
                limit_bytes / 1_000_000
            ),
        )
    }

    /// 429: every work slot and queue place is taken.
    pub fn busy(retry_after_s: u64) -> Self {
        Self {
            retry_after_s: Some(retry_after_s),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "server_busy",
                "the server is busy (every work slot and queue place is taken); retry later",
            )
        }
    }

    /// 504: the work took longer than the server's limit.
    pub fn timed_out(limit_s: u64) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            "timeout",
            format!("the work took longer than this server's limit of {limit_s} s (--timeout-s)"),
        )
    }

    /// 500: our fault; the message says what failed, without patient text.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            message,
        )
    }

    fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
}

impl ApiError {
    /// The JSON body: `{"error": {"message", "type", "code", "param"}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {"message": self.message, "type": self.kind, "code": self.code, "param": null}
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
