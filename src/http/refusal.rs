//! The one rendering of a request refused before (or instead of) GraphQL: its status, a
//! GraphQL-shaped body with a stable `extensions.code`, the media type the client accepts,
//! `Retry-After` when waiting helps and `Allow` for a wrong method, and a count of why.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::code;
use crate::metrics::REQUESTS_REFUSED;
use crate::ratelimit::retry_after_secs;

/// The media types an answer is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Json,
    GraphqlResponse,
}

impl Answer {
    pub fn media_type(self) -> &'static str {
        match self {
            Answer::Json => "application/json; charset=utf-8",
            Answer::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
        }
    }
}

#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The metrics label of why (`bankgraph_requests_refused_total{reason}`).
    reason: &'static str,
    answer: Answer,
    retry_after: Option<u64>,
    allow: Option<&'static str>,
}

impl Refusal {
    /// Refuses a body that is not `application/json` (a form or text/plain post is CSRF
    /// without a preflight).
    pub fn unless_json(headers: &axum::http::HeaderMap) -> Result<(), Refusal> {
        let content_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json") {
            return Ok(());
        }
        Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::UNSUPPORTED_MEDIA_TYPE,
            "media_type",
            "Send the request as application/json.",
        ))
    }

    pub fn new(status: StatusCode, code: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Refusal { status, code, message: message.into(), reason, answer: Answer::Json, retry_after: None, allow: None }
    }

    /// Too many requests from this `who` (address, caller): wait `wait`.
    pub fn rate_limited(wait: Duration, who: &str) -> Self {
        let secs = retry_after_secs(wait);
        let mut r = Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            code::RATE_LIMITED,
            "rate_limited",
            format!("Too many requests from this {who}; retry in {secs} s."),
        );
        r.retry_after = Some(secs);
        r
    }

    /// A malformed or oversized request (400).
    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::BAD_REQUEST, code::BAD_REQUEST, reason, message)
    }

    /// Written in the media type the client accepts.
    pub fn answered_as(mut self, answer: Answer) -> Self {
        self.answer = answer;
        self
    }

    /// With the methods the resource allows (a 405).
    pub fn allowing(mut self, methods: &'static str) -> Self {
        self.allow = Some(methods);
        self
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        metrics::counter!(REQUESTS_REFUSED, "reason" => self.reason).increment(1);
        let mut extensions = serde_json::json!({"code": self.code});
        if let Some(secs) = self.retry_after {
            extensions["retryAfterSeconds"] = secs.into();
        }
        let body = serde_json::json!({"errors": [{"message": self.message, "extensions": extensions}]});
        let mut r = (self.status, body.to_string()).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.answer.media_type()));
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(methods) = self.allow {
            h.insert(header::ALLOW, HeaderValue::from_static(methods));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refusal_carries_its_status_code_media_type_and_retry_after() {
        let r = Refusal::rate_limited(Duration::from_millis(1500), "caller").answered_as(Answer::GraphqlResponse);
        let resp = r.into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], Answer::GraphqlResponse.media_type());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["extensions"]["code"], "RATE_LIMITED");
        assert_eq!(v["errors"][0]["extensions"]["retryAfterSeconds"], 2);
        let resp = Refusal::new(StatusCode::METHOD_NOT_ALLOWED, code::METHOD_NOT_ALLOWED, "get_operation", "POST")
            .allowing("POST")
            .into_response();
        assert_eq!(resp.headers()[header::ALLOW], "POST");
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    }
}
