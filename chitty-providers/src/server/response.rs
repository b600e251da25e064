//! Errors as HTTP responses: OpenAI's envelope, status code, `Retry-After` and `x-request-id`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chitty_core::Error;

/// A gateway error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    error: Error,
    request_id: String,
}

impl ApiError {
    /// Wraps `error` for the request `request_id`.
    pub fn new(error: Error, request_id: &str) -> ApiError {
        ApiError { error, request_id: request_id.to_owned() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(request_id = %self.request_id, error = %self.error, "request failed");
        }
        let mut response = (status, axum::Json(self.error.to_envelope())).into_response();
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            headers.insert("x-request-id", v);
        }
        if let Some(wait) = self.error.retry_after() {
            let secs = wait.as_millis().div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        if let Error::RateLimited { status, .. } = &self.error {
            super::insert_rate_limit_headers(headers, status);
        }
        if matches!(self.error, Error::InvalidApiKey) {
            headers.insert(axum::http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
