//! The GraphQL endpoint, as GraphQL over HTTP wants it and as a public money API needs it:
//! queries over GET or POST, mutations over POST only, `application/json` bodies, no batches,
//! size limits before parsing, rate limits, a request timeout, content negotiation, masked
//! internal errors.
//!
//! `post_graphql` is four steps: `preflight` (media types, the address's rate), `read` (the
//! body, bounded in size and time, into one GraphQL request), `execute` (the caller, their
//! rate, the gateway under the request deadline) and `respond` (status and headers from the
//! answer's codes, and the log line). Every refusal on the way is a `Refusal`.

use std::net::SocketAddr;
use std::time::Instant;

use async_graphql::Value;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_http::request_id::RequestId;

use super::refusal::{Answer, Refusal};
use super::{AppState, REQUEST_ID};
use crate::auth::AuthState;
use crate::error::{INTERNAL_MESSAGE, code};
use crate::graphql::{Executed, Method};
use crate::metrics::GRAPHQL_REQUESTS;
use crate::trace::{RequestContext, RequestTrace};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

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

/// `GET /api/v1/graphql`: with a `query` parameter, a query as GraphQL over HTTP describes
/// it (`query`, `operationName`, `variables` and `extensions` as JSON); a mutation is refused
/// with 405, so a link or an image tag can never change anything (and Bearer tokens are never
/// sent by a browser on its own, so there is no cross-site request to forge). Without one,
/// GraphiQL, or a 404 when `GRAPHIQL_ENABLED` is off.
/// With `Upgrade: websocket`, a GraphQL WebSocket (`super::ws`).
pub async fn get_graphql(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let rid = req.extensions().get::<RequestId>().cloned();
    let request_id = request_id(req.headers(), rid.as_ref());
    if super::ws::is_upgrade(req.headers()) {
        return super::ws::upgrade(state, req, request_id).await;
    }
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let trace = req.extensions().get::<RequestTrace>().copied().map(axum::Extension);
    let query = req.uri().query().map(str::to_string);
    let headers = req.headers().clone();
    get_query(state, peer, headers, request_id, trace, query).await
}

async fn get_query(
    state: AppState,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    request_id: String,
    trace: Option<axum::Extension<RequestTrace>>,
    query: Option<String>,
) -> Response {
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes()).into_owned().collect();
    // A query, or a persisted query named by hash alone (APQ over GET).
    if !params.iter().any(|(k, _)| k == "query" || k == "extensions") {
        if state.graphiql {
            return super::graphiql::page();
        }
        let message = "No query: send it as the query parameter of a GET, or POST it as JSON.";
        return Refusal::new(StatusCode::NOT_FOUND, code::NOT_FOUND, "no_query", message).into_response();
    }
    let started = Instant::now();
    let answer = match preflight(&state, peer, &headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let request = match from_params(&state, &params) {
        Ok(r) => r,
        Err(r) => return r.answered_as(answer).into_response(),
    };
    match execute(&state, &headers, request, &request_id, trace_of(trace), Method::Get).await {
        Ok((executed, sub)) => respond(executed, answer, sub.as_deref(), started),
        Err(r) => r.answered_as(answer).into_response(),
    }
}

/// The request's trace (set by the router for every request; a fresh one otherwise).
fn trace_of(ext: Option<axum::Extension<RequestTrace>>) -> RequestTrace {
    ext.map(|e| e.0).unwrap_or_else(|| RequestTrace::from_header(None))
}

/// A GET request's parameters as one GraphQL request.
fn from_params(state: &AppState, params: &[(String, String)]) -> Result<async_graphql::Request, Refusal> {
    let one = |name: &str| -> Result<Option<&str>, Refusal> {
        let mut values = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        match (values.next(), values.next()) {
            (_, Some(_)) => Err(Refusal::bad_request("malformed", format!("The {name} parameter is given twice."))),
            (v, None) => Ok(v),
        }
    };
    let query = one("query")?.unwrap_or_default();
    check_query_length(state, query)?;
    let mut request = async_graphql::Request::new(query);
    if let Some(name) = one("operationName")?.filter(|n| !n.is_empty()) {
        request = request.operation_name(name);
    }
    if let Some(v) = one("variables")?.filter(|v| !v.is_empty()) {
        let variables: async_graphql::Variables = serde_json::from_str(v).map_err(|e| {
            Refusal::bad_request("malformed", format!("The variables parameter is not a JSON object ({e})."))
        })?;
        request = request.variables(variables);
    }
    if let Some(v) = one("extensions")?.filter(|v| !v.is_empty()) {
        request.extensions = serde_json::from_str(v).map_err(|e| {
            Refusal::bad_request("malformed", format!("The extensions parameter is not a JSON object ({e})."))
        })?;
    }
    Ok(request)
}

fn check_query_length(state: &AppState, query: &str) -> Result<(), Refusal> {
    let max_query_length = state.graphql_limits.max_query_length;
    if query.chars().count() > max_query_length {
        return Err(Refusal::bad_request(
            "query_too_long",
            format!("The query is longer than {max_query_length} characters."),
        ));
    }
    Ok(())
}

/// `POST /api/v1/graphql`.
pub async fn post_graphql(
    State(state): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    rid: Option<axum::Extension<RequestId>>,
    trace: Option<axum::Extension<RequestTrace>>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let answer = match preflight(&state, peer.map(|p| p.0.0), &headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let request = match read(&state, &headers, body).await {
        Ok(r) => r,
        Err(r) => return r.answered_as(answer).into_response(),
    };
    let request_id = request_id(&headers, rid.as_ref().map(|e| &e.0));
    match execute(&state, &headers, request, &request_id, trace_of(trace), Method::Post).await {
        Ok((executed, sub)) => respond(executed, answer, sub.as_deref(), started),
        Err(r) => r.answered_as(answer).into_response(),
    }
}

/// What the client accepts, and whether its address may send another request.
fn preflight(state: &AppState, peer: Option<SocketAddr>, headers: &HeaderMap) -> Result<Answer, Refusal> {
    let answer = negotiate(headers).ok_or_else(|| {
        Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            code::NOT_ACCEPTABLE,
            "not_acceptable",
            "Accept application/graphql-response+json or application/json.",
        )
    })?;
    if let Some(addr) = peer
        && let Err(wait) = state.limiters.check_ip(state.proxies.client(addr.ip(), headers))
    {
        return Err(Refusal::rate_limited(wait, "address").answered_as(answer));
    }
    Ok(answer)
}

/// The body, as one GraphQL request: `application/json` only (a form or text/plain post is
/// CSRF without a preflight), within `MAX_BODY_BYTES` and `BODY_READ_TIMEOUT_SECONDS`, not a
/// batch, its query within `MAX_QUERY_LENGTH`.
async fn read(state: &AppState, headers: &HeaderMap, body: Body) -> Result<async_graphql::Request, Refusal> {
    let limits = &state.limits;
    Refusal::unless_json(headers)?;
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("The request body is larger than {} bytes.", limits.max_body_bytes),
        )
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return Err(too_large());
    }
    // A body that trickles in is cut off, within the request deadline.
    let body_deadline = limits.body_read_timeout.min(limits.request_timeout);
    let bytes = match tokio::time::timeout(body_deadline, axum::body::to_bytes(body, limits.max_body_bytes)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return Err(too_large()),
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                code::REQUEST_TIMEOUT,
                "body_timeout",
                format!("The request body did not arrive within {} s.", body_deadline.as_secs()),
            ));
        }
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(Refusal::bad_request(
            "batch",
            "Batched requests are not supported; send one operation per request.",
        ));
    }
    let request: async_graphql::Request = serde_json::from_slice(&bytes)
        .map_err(|e| Refusal::bad_request("malformed", format!("The body is not a GraphQL request ({e}).")))?;
    check_query_length(state, &request.query)?;
    Ok(request)
}

/// Authenticates the caller, checks their rate, and runs the request through the gateway
/// within `REQUEST_TIMEOUT_SECONDS`. Returns the answer and the caller's `sub`.
async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    request: async_graphql::Request,
    request_id: &str,
    trace: RequestTrace,
    method: Method,
) -> Result<(Executed, Option<String>), Refusal> {
    let auth = state.auth.authenticate(headers).await;
    let sub = match &auth {
        AuthState::Authenticated(c) => Some(c.user_id.clone()),
        _ => None,
    };
    if let Some(sub) = &sub
        && let Err(wait) = state.limiters.check_user(sub)
    {
        return Err(Refusal::rate_limited(wait, "caller"));
    }
    let operation = log_name(request.operation_name.as_deref()).to_string();
    let request = request.data(auth);
    // The identity service gets what is left of the request's time, its id and its trace.
    let context = RequestContext {
        request_id: request_id.to_string(),
        trace: trace.for_call_from(&tracing::Span::current()),
        deadline: Instant::now() + state.limits.request_timeout,
    };
    let run = crate::trace::scope(context, state.gateway.execute(request, request_id, method));
    match tokio::time::timeout(state.limits.request_timeout, run).await {
        Ok(executed) => Ok((executed, sub)),
        Err(_) => {
            tracing::warn!(%operation, "request timed out");
            Err(Refusal::new(
                StatusCode::GATEWAY_TIMEOUT,
                code::UPSTREAM_UNAVAILABLE,
                "timeout",
                "The request took too long; try again. A completePlaidLink keeps running: check getPlaidBankAccounts.",
            ))
        }
    }
}

/// The HTTP answer to an executed request: 401 when authentication is what failed, 429 when
/// a limit did (with `Retry-After`), 400 for a document that did not parse or validate when
/// the client speaks GraphQL over HTTP's own media type, else 200.
fn respond(executed: Executed, answer: Answer, sub: Option<&str>, started: Instant) -> Response {
    let response = executed.response;
    let codes: Vec<&str> = response
        .errors
        .iter()
        .filter_map(|e| match e.extensions.as_ref().and_then(|x| x.get("code")) {
            Some(Value::String(c)) => Some(c.as_str()),
            _ => None,
        })
        .collect();
    let unauthenticated = codes.contains(&code::UNAUTHENTICATED);
    let wrong_method = codes.contains(&code::METHOD_NOT_ALLOWED);
    let retry_after = response
        .errors
        .iter()
        .filter_map(|e| match e.extensions.as_ref().and_then(|x| x.get("retryAfterSeconds")) {
            Some(Value::Number(n)) => n.as_u64(),
            _ => None,
        })
        .max();
    // Parse and validation errors have no path; field errors do (even when they null `data`).
    let request_failed = matches!(response.data, Value::Null)
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let status = if unauthenticated {
        StatusCode::UNAUTHORIZED
    } else if wrong_method {
        StatusCode::METHOD_NOT_ALLOWED
    } else if retry_after.is_some() {
        StatusCode::TOO_MANY_REQUESTS
    } else if request_failed && answer == Answer::GraphqlResponse {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let outcome = if codes.is_empty() { "ok".to_string() } else { codes.join(",") };
    // GraphQL over HTTP: a request error (nothing executed) has no `data` at all.
    let encoded = if request_failed && answer == Answer::GraphqlResponse {
        serde_json::to_value(&response).and_then(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.remove("data");
            }
            serde_json::to_vec(&v)
        })
    } else {
        serde_json::to_vec(&response)
    };
    let body = match encoded {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "response could not be encoded");
            return Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                code::INTERNAL_SERVER_ERROR,
                "encoding",
                INTERNAL_MESSAGE,
            )
            .answered_as(answer)
            .into_response();
        }
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(answer.media_type()));
    if unauthenticated {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if wrong_method {
        h.insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    // A caller's data is for the caller alone: no shared cache keeps it, no cache at all.
    if sub.is_some() {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    }
    if let Some(secs) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let operation = log_name(executed.name.as_deref());
    let fields = executed.fields.as_deref().unwrap_or("-");
    tracing::info!(operation, fields, sub = sub.unwrap_or("-"), latency_ms, status = status.as_u16(), %outcome, "graphql request");
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
