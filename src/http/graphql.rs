//! The GraphQL endpoint, as GraphQL over HTTP wants it and as a public money API needs it:
//! POST only for operations, `application/json` bodies, no batches, size limits before
//! parsing, rate limits, a request timeout, content negotiation, masked internal errors.

use std::net::SocketAddr;
use std::time::Instant;

use async_graphql::{ErrorExtensionValues, Value};
use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use tower_http::request_id::RequestId;

use super::{AppState, GRAPHQL_PATH, REQUEST_ID};
use crate::auth::AuthState;
use crate::error::{INTERNAL_MESSAGE, code};
use crate::metrics::{GRAPHQL_REQUESTS, REQUESTS_REFUSED};
use crate::ratelimit::retry_after_secs;

/// The request id of the current request, for error messages.
#[derive(Debug, Clone)]
pub struct RequestIdValue(pub String);

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// Which media type the answer is written in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Json,
    GraphqlResponse,
}

impl Answer {
    fn media_type(self) -> &'static str {
        match self {
            Answer::Json => "application/json; charset=utf-8",
            Answer::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
        }
    }
}

/// Picks the answer's media type from `Accept`, in the client's order of preference.
fn negotiate(headers: &HeaderMap) -> Option<Answer> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Some(Answer::Json);
    };
    let mut best: Option<(f32, Answer)> = None;
    for part in accept.split(',') {
        let mut it = part.split(';');
        let media = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it.filter_map(|p| p.trim().strip_prefix("q=")).find_map(|q| q.parse::<f32>().ok()).unwrap_or(1.0);
        let answer = match media.as_str() {
            GRAPHQL_RESPONSE => Answer::GraphqlResponse,
            JSON | "application/*" | "*/*" => Answer::Json,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, answer));
        }
    }
    best.map(|(_, a)| a)
}

/// A response that is only errors.
fn refuse(status: StatusCode, answer: Answer, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"message": message, "extensions": {"code": code}}]});
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(answer.media_type()));
    r
}

fn refused(reason: &'static str, r: Response) -> Response {
    metrics::counter!(REQUESTS_REFUSED, "reason" => reason).increment(1);
    r
}

fn rate_limited(answer: Answer, wait: std::time::Duration, who: &str) -> Response {
    let secs = retry_after_secs(wait);
    let body = serde_json::json!({"errors": [{
        "message": format!("Too many requests from this {who}; retry in {secs} s."),
        "extensions": {"code": code::RATE_LIMITED, "retryAfterSeconds": secs}
    }]});
    let mut r = (StatusCode::TOO_MANY_REQUESTS, body.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(answer.media_type()));
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    refused("rate_limited", r)
}

fn request_id(headers: &HeaderMap, ext: Option<&RequestId>) -> String {
    ext.and_then(|r| r.header_value().to_str().ok())
        .or_else(|| headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()))
        .unwrap_or("-")
        .to_string()
}

/// An operation name as logged: a GraphQL name of at most 64 characters, else `invalid`
/// (a client's text is never written into the log as it came).
fn log_name(name: Option<&str>) -> &str {
    match name {
        None => "anonymous",
        Some(n)
            if (1..=64).contains(&n.len())
                && n.bytes()
                    .enumerate()
                    .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())) =>
        {
            n
        }
        Some(_) => "invalid",
    }
}

/// `GET /api/v1/graphql`: GraphiQL. Operations go over POST only (no mutation over GET, no
/// CSRF through a link), so a GET that carries a query is refused with 405.
pub async fn get_graphql(RawQuery(query): RawQuery) -> Response {
    let has_operation = query.as_deref().is_some_and(|q| q.split('&').any(|p| p.starts_with("query=")));
    if has_operation {
        let mut r = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            Answer::Json,
            code::METHOD_NOT_ALLOWED,
            "GraphQL operations are accepted only over POST with a JSON body.",
        );
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return refused("get_operation", r);
    }
    Html(async_graphql::http::GraphiQLSource::build().endpoint(GRAPHQL_PATH).title("bankgraph").finish())
        .into_response()
}

/// `POST /api/v1/graphql`.
pub async fn post_graphql(
    State(state): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    rid: Option<axum::Extension<RequestId>>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let limits = &state.limits;
    let Some(answer) = negotiate(&headers) else {
        return refused(
            "not_acceptable",
            refuse(
                StatusCode::NOT_ACCEPTABLE,
                Answer::Json,
                code::NOT_ACCEPTABLE,
                "Accept application/graphql-response+json or application/json.",
            ),
        );
    };
    if let Some(axum::Extension(ConnectInfo(addr))) = peer
        && let Err(wait) = state.limiters.check_ip(state.proxies.client(addr.ip(), &headers))
    {
        return rate_limited(answer, wait, "address");
    }
    // application/json only: a form or text/plain post (CSRF without a preflight) is refused.
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(JSON) {
        return refused(
            "media_type",
            refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                answer,
                code::UNSUPPORTED_MEDIA_TYPE,
                "Send the request as application/json.",
            ),
        );
    }
    let too_large = || {
        refused(
            "body_too_large",
            refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                answer,
                code::PAYLOAD_TOO_LARGE,
                &format!("The request body is larger than {} bytes.", limits.max_body_bytes),
            ),
        )
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return too_large();
    }
    // A body that trickles in is cut off: a client gets BODY_READ_TIMEOUT_SECONDS (within the
    // request deadline) to send it.
    let body_deadline = limits.body_read_timeout.min(limits.request_timeout);
    let bytes = match tokio::time::timeout(body_deadline, axum::body::to_bytes(body, limits.max_body_bytes)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return too_large(),
        Err(_) => {
            let msg = format!("The request body did not arrive within {} s.", body_deadline.as_secs());
            return refused("body_timeout", refuse(StatusCode::REQUEST_TIMEOUT, answer, code::REQUEST_TIMEOUT, &msg));
        }
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return refused(
            "batch",
            refuse(
                StatusCode::BAD_REQUEST,
                answer,
                code::BAD_REQUEST,
                "Batched requests are not supported; send one operation per request.",
            ),
        );
    }
    let request: async_graphql::Request = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("The body is not a GraphQL request ({e}).");
            return refused("malformed", refuse(StatusCode::BAD_REQUEST, answer, code::BAD_REQUEST, &msg));
        }
    };
    if request.query.chars().count() > state.max_query_length {
        let msg = format!("The query is longer than {} characters.", state.max_query_length);
        return refused("query_too_long", refuse(StatusCode::BAD_REQUEST, answer, code::BAD_REQUEST, &msg));
    }

    let request_id = request_id(&headers, rid.as_ref().map(|e| &e.0));
    let auth = state.auth.authenticate(&headers).await;
    let sub = match &auth {
        AuthState::Authenticated(c) => Some(c.user_id.clone()),
        _ => None,
    };
    if let Some(sub) = &sub
        && let Err(wait) = state.limiters.check_user(sub)
    {
        return rate_limited(answer, wait, "caller");
    }
    let operation = log_name(request.operation_name.as_deref()).to_string();
    let request = request.data(auth).data(RequestIdValue(request_id.clone()));
    let executed = match tokio::time::timeout(limits.request_timeout, state.gateway.execute(request)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(%operation, "request timed out");
            return refused(
                "timeout",
                refuse(
                    StatusCode::GATEWAY_TIMEOUT,
                    answer,
                    code::UPSTREAM_UNAVAILABLE,
                    "The request took too long; try again. A completePlaidLink keeps running: check getPlaidBankAccounts.",
                ),
            );
        }
    };
    let mut response = executed.response;

    let mut unauthenticated = false;
    let mut retry_after: Option<u64> = None;
    let mut codes: Vec<String> = Vec::new();
    for err in &mut response.errors {
        // The gateway gives every error a code.
        let ext = err.extensions.get_or_insert_with(ErrorExtensionValues::default);
        let c = match ext.get("code") {
            Some(Value::String(c)) => c.clone(),
            _ => {
                ext.set("code", code::INTERNAL_SERVER_ERROR);
                code::INTERNAL_SERVER_ERROR.to_string()
            }
        };
        if c == code::INTERNAL_SERVER_ERROR {
            err.message = format!("{INTERNAL_MESSAGE} Request id: {request_id}.");
            ext.set("requestId", request_id.clone());
        }
        if c == code::RATE_LIMITED
            && let Some(Value::Number(n)) = ext.get("retryAfterSeconds")
        {
            retry_after = retry_after.max(n.as_u64());
        }
        unauthenticated |= c == code::UNAUTHENTICATED;
        codes.push(c);
    }
    // Parse and validation errors have no path; field errors do (even when they null `data`).
    let request_failed = matches!(response.data, Value::Null)
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let status = if unauthenticated {
        StatusCode::UNAUTHORIZED
    } else if retry_after.is_some() {
        StatusCode::TOO_MANY_REQUESTS
    } else if request_failed && answer == Answer::GraphqlResponse {
        // GraphQL over HTTP: a request that does not parse or validate is a 400.
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let body = match serde_json::to_vec(&response) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "response could not be encoded");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, answer, code::INTERNAL_SERVER_ERROR, INTERNAL_MESSAGE);
        }
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(answer.media_type()));
    if unauthenticated {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(secs) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let outcome = if codes.is_empty() { "ok".to_string() } else { codes.join(",") };
    let operation = log_name(executed.name.as_deref());
    let fields = executed.fields.as_deref().unwrap_or("-");
    tracing::info!(operation, fields, sub = sub.as_deref().unwrap_or("-"), latency_ms, status = status.as_u16(), %outcome, "graphql request");
    metrics::counter!(GRAPHQL_REQUESTS, "status" => status.as_u16().to_string()).increment(1);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn only_graphql_names_are_logged_as_operation_names() {
        assert_eq!(log_name(None), "anonymous");
        assert_eq!(log_name(Some("GetAccounts_2")), "GetAccounts_2");
        assert_eq!(log_name(Some("2Fast")), "invalid");
        assert_eq!(log_name(Some("a b\n{}")), "invalid");
        assert_eq!(log_name(Some(&"x".repeat(65))), "invalid");
        assert!(super::super::acceptable_request_id(b"req-1.2:3_x"));
        assert!(!super::super::acceptable_request_id(b""));
        assert!(!super::super::acceptable_request_id("x".repeat(129).as_bytes()));
        assert!(!super::super::acceptable_request_id(b"a\nb"));
    }

    #[test]
    fn accept_picks_the_clients_preference() {
        assert!(negotiate(&HeaderMap::new()) == Some(Answer::Json));
        assert!(negotiate(&accept("application/graphql-response+json")) == Some(Answer::GraphqlResponse));
        assert!(
            negotiate(&accept("application/json;q=0.9, application/graphql-response+json"))
                == Some(Answer::GraphqlResponse)
        );
        assert!(negotiate(&accept("application/graphql-response+json;q=0.5, application/json")) == Some(Answer::Json));
        assert!(negotiate(&accept("*/*")) == Some(Answer::Json));
        assert!(negotiate(&accept("text/html")).is_none());
    }
}
