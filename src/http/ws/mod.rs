//! GraphQL over WebSocket at `GET /api/v1/graphql`: the `graphql-transport-ws` protocol (the
//! `graphql-ws` npm client's; <https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>),
//! carrying subscriptions only.
//!
//! The session is written here rather than taken from async-graphql's `WebSocket`, because a
//! public socket needs what that one leaves out: the protocol's close codes (4400 bad message,
//! 4401 subscribe before ack, 4403 refused or expired token, 4408 no `connection_init` in time,
//! 4409 duplicate id, 4429 a second init), a bound on subscriptions per socket, the gateway's
//! guardrails on every document, server pings with an idle timeout, a bounded writer that
//! closes a client that does not read (1008, `WS_SEND_TIMEOUT_SECONDS`; see `writer.rs`), and
//! a close at shutdown.
//! Execution is still async-graphql's (`Schema::execute_stream`).
//!
//! Bounds, before any of the protocol runs: the `Origin` (same origin or `CORS_ALLOWED_ORIGINS`;
//! clients that send none, as native apps, are let through), the address's request rate, and
//! sockets in total and per client IP, forwarded or not (`WS_MAX_SOCKETS`, `WS_MAX_SOCKETS_PER_IP`); after
//! authentication, sockets per caller (`WS_MAX_SOCKETS_PER_USER`). Frames and messages are
//! bounded by `MAX_BODY_BYTES`.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::ServerError;
use axum::extract::FromRequestParts;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;
use tokio_stream::StreamMap;
use tokio_util::sync::CancellationToken;

mod sockets;
mod writer;

pub use sockets::Sockets;
use sockets::{Full, Place};
use writer::{NotSent, Outbox};

use super::AppState;
use super::refusal::Refusal;
use crate::auth::{AuthState, MANAGE_PAYMENT};
use crate::config::WsLimits;
use crate::error::code;
use crate::metrics::WS_CLOSED;
use crate::ratelimit::retry_after_secs;

/// The longest a socket waits for its token to expire before checking (a year): tokens
/// normally live hours (`JWT_MAX_LIFETIME_SECONDS`), but that limit can be turned off.
const MAX_TOKEN_WAIT_SECS: i64 = 365 * 24 * 3600;

/// The one subprotocol served.
pub const PROTOCOL: &str = "graphql-transport-ws";

/// Close codes of the protocol (and of WebSocket itself, below 4000).
mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const BAD_MESSAGE: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const INIT_TIMEOUT: u16 = 4408;
    pub const DUPLICATE_ID: u16 = 4409;
    pub const TOO_MANY_INITS: u16 = 4429;
}

/// Whether a request asks to become a WebSocket.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Whether a browser page from `origin` may open a socket: no `Origin` (not a browser), the
/// page's own origin, or one of `CORS_ALLOWED_ORIGINS`.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    if allowed.iter().any(|a| a == origin) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let own = url::Url::parse(origin).ok().and_then(|u| {
        let host_port = match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => return None,
        };
        Some(host_port)
    });
    matches!((own, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

fn refuse(status: StatusCode, reason: &'static str, message: &str) -> Response {
    metrics::counter!(WS_CLOSED, "reason" => reason).increment(1);
    let c = match status {
        StatusCode::FORBIDDEN => code::FORBIDDEN,
        StatusCode::SERVICE_UNAVAILABLE => code::UPSTREAM_UNAVAILABLE,
        _ => code::BAD_REQUEST,
    };
    Refusal::new(status, c, "websocket", message).into_response()
}

/// `GET /api/v1/graphql` with `Upgrade: websocket`.
pub async fn upgrade(state: AppState, req: axum::extract::Request, request_id: String) -> Response {
    let (mut parts, _) = req.into_parts();
    let headers = &parts.headers;
    if !origin_allowed(headers, &state.limits.cors_origins) {
        return refuse(StatusCode::FORBIDDEN, "origin", "This origin may not open a GraphQL WebSocket here.");
    }
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == PROTOCOL);
    if !offered {
        return refuse(
            StatusCode::BAD_REQUEST,
            "protocol",
            "GraphQL WebSockets speak the graphql-transport-ws subprotocol (the graphql-ws client's).",
        );
    }
    let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let client = peer.map(|p| state.proxies.client(p, headers));
    if let Some(ip) = client
        && let Err(wait) = state.limiters.check_ip(ip)
    {
        metrics::counter!(WS_CLOSED, "reason" => "rate_limited").increment(1);
        return Refusal::rate_limited(wait, "address").into_response();
    }
    // Behind a trusted balancer each forwarded client has its own share of sockets (counted
    // from the upgrade, before connection_init), as it has its own request rate.
    let counted_ip = peer
        .and_then(|p| state.proxies.counted(p, headers))
        .map(|ip| super::client_ip::address_key(ip, state.limits.ipv6_prefix));
    let place = match state.sockets.admit(counted_ip) {
        Ok(p) => p,
        Err(Full::Address) => {
            return refuse(StatusCode::TOO_MANY_REQUESTS, "ip_limit", "Too many GraphQL WebSockets from this address.");
        }
        Err(Full::Total) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "total_limit",
                "Too many GraphQL WebSockets; try again later.",
            );
        }
    };
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let max = state.limits.max_body_bytes;
    let sockets = state.sockets.clone();
    let shutdown = sockets.shutdown.clone();
    let ws = ws
        .protocols([PROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        // Small buffers: an idle socket should cost little (they grow for a large message).
        // Every message is written through at once, and what waits unwritten is bounded: one
        // message (a pong may echo up to MAX_BODY_BYTES) and a little more.
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(max.saturating_mul(2).saturating_add(64 * 1024));
    ws.on_upgrade(move |socket| {
        let session = Session { state, place, request_id: Arc::from(request_id), shutdown };
        sockets.tasks.track_future(session.run(socket))
    })
}

/// A client's message (graphql-transport-ws).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<serde_json::Value>,
    },
    Ping {
        #[serde(default)]
        payload: Option<serde_json::Value>,
    },
    Pong {
        #[serde(default)]
        #[allow(dead_code)]
        payload: Option<serde_json::Value>,
    },
    Subscribe {
        id: String,
        payload: SubscribePayload,
    },
    Complete {
        id: String,
    },
}

/// What a `subscribe` message carries.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribePayload {
    pub query: Option<String>,
    pub operation_name: Option<String>,
    #[serde(default)]
    pub variables: Option<serde_json::Value>,
    #[serde(default)]
    pub extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Reads one text frame as a client's message; `None` when it is not one (the session closes
/// with 4400).
pub fn read_message(text: &str) -> Option<ClientMessage> {
    serde_json::from_str::<ClientMessage>(text).ok()
}

/// The GraphQL request a `subscribe` message asks for: its query within `max_query_length`
/// characters, variables a JSON object, extensions kept when they are GraphQL values. `Err`
/// holds the error to answer with, in graphql-transport-ws's `error` payload form.
pub fn subscribe_request(
    payload: SubscribePayload,
    max_query_length: usize,
) -> Result<async_graphql::Request, Vec<serde_json::Value>> {
    let query = payload.query.unwrap_or_default();
    if query.chars().count() > max_query_length {
        let message = format!("The query is longer than {max_query_length} characters.");
        return Err(payload_error(message, code::BAD_REQUEST, None));
    }
    let mut request = async_graphql::Request::new(query);
    if let Some(name) = payload.operation_name.filter(|n| !n.is_empty()) {
        request = request.operation_name(name);
    }
    match payload.variables {
        None | Some(serde_json::Value::Null) => {}
        Some(v @ serde_json::Value::Object(_)) => {
            request = request.variables(async_graphql::Variables::from_json(v));
        }
        Some(_) => return Err(payload_error("variables must be a JSON object.".into(), code::BAD_REQUEST, None)),
    }
    if let Some(ext) = payload.extensions {
        for (k, v) in ext {
            if let Ok(v) = async_graphql::Value::from_json(v) {
                request.extensions.insert(k, v);
            }
        }
    }
    Ok(request)
}

/// One error, as an `error` message's payload carries it.
fn payload_error(message: String, code: &str, extra: Option<(&str, serde_json::Value)>) -> Vec<serde_json::Value> {
    let mut extensions = json!({"code": code});
    if let Some((k, v)) = extra {
        extensions[k] = v;
    }
    vec![json!({"message": message, "extensions": extensions})]
}

/// How a session ends.
struct Closing(u16, &'static str, &'static str);

struct Session {
    state: AppState,
    place: Place,
    request_id: Arc<str>,
    shutdown: CancellationToken,
}

/// A subscription's answers, then `None` when it has ended.
type Answers = BoxStream<'static, Option<async_graphql::Response>>;

impl Session {
    async fn run(mut self, socket: WebSocket) {
        let (tx, mut rx) = socket.split();
        let limits = self.state.sockets.limits.clone();
        let out = Outbox::start(tx, limits.send_timeout);
        let closing = self.serve(&out, &mut rx).await;
        let Closing(code, reason, metric) = closing;
        metrics::counter!(WS_CLOSED, "reason" => metric).increment(1);
        out.close(CloseFrame { code, reason: reason.into() }, Duration::from_secs(1)).await;
        drop(rx);
        drop(self.place);
    }

    async fn serve(&mut self, out: &Outbox, rx: &mut futures::stream::SplitStream<WebSocket>) -> Closing {
        let limits = self.state.sockets.limits.clone();
        // connection_init, within the init timeout.
        let init = tokio::select! {
            _ = self.shutdown.cancelled() => return Closing(close::GOING_AWAY, "The server is shutting down.", "shutdown"),
            _ = tokio::time::sleep(limits.init_timeout) => {
                return Closing(close::INIT_TIMEOUT, "Connection initialisation timeout", "init_timeout");
            }
            m = next_message(rx) => m,
        };
        let payload = match init {
            Err(c) => return c,
            Ok(ClientMessage::ConnectionInit { payload }) => payload,
            Ok(ClientMessage::Subscribe { .. }) => return Closing(close::UNAUTHORIZED, "Unauthorized", "protocol"),
            Ok(_) => return Closing(close::BAD_MESSAGE, "Send connection_init first.", "protocol"),
        };
        let caller = match self.authenticate(payload).await {
            Ok(c) => c,
            Err(c) => return c,
        };
        if !self.place.claim_user(&caller.user_id) {
            return Closing(close::TOO_MANY_INITS, "Too many GraphQL WebSockets for this user.", "user_limit");
        }
        if let Err(e) = send(out, json!({"type": "connection_ack"})) {
            return not_sent(e);
        }
        // Capped, so a token without a lifetime limit cannot overflow the clock.
        let left = (caller.expires_at - chrono::Utc::now().timestamp()).clamp(0, MAX_TOKEN_WAIT_SECS);
        let expires = tokio::time::Instant::now() + Duration::from_secs(left as u64);
        let auth = AuthState::Authenticated(caller.clone());
        let mut active: StreamMap<String, Answers> = StreamMap::new();
        let mut ping = tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Closing(close::GOING_AWAY, "The server is shutting down.", "shutdown"),
                _ = out.stalled.cancelled() => return not_sent(NotSent::Full),
                _ = out.failed.cancelled() => return not_sent(NotSent::Closed),
                _ = tokio::time::sleep_until(expires) => {
                    return Closing(close::FORBIDDEN, "Forbidden: the token has expired.", "token_expired");
                }
                _ = ping.tick() => {
                    if heard.elapsed() >= limits.idle_timeout {
                        return Closing(close::POLICY, "Idle timeout.", "idle");
                    }
                    out.offer(Message::Ping(Default::default()));
                }
                // Only while the writer has room: events wait in their streams (bounded by
                // the event bus) rather than in this socket's memory.
                Some((id, answer)) = active.next(), if !active.is_empty() && out.has_room() => {
                    let sent = match answer {
                        // Every event goes to every subscriber: written straight to text, not
                        // through a JSON value tree first.
                        Some(response) => send_text(out, &Next { kind: "next", id: &id, payload: &response }),
                        None => {
                            active.remove(&id);
                            send(out, json!({"type": "complete", "id": id}))
                        }
                    };
                    if let Err(e) = sent {
                        return not_sent(e);
                    }
                }
                frame = rx.next() => {
                    heard = Instant::now();
                    let message = match frame {
                        None => return Closing(close::GOING_AWAY, "", "gone"),
                        Some(Err(e)) => return read_failed(e),
                        Some(Ok(Message::Close(_))) => return Closing(1000, "", "client"),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Binary(_))) => return Closing(close::BAD_MESSAGE, "Messages are JSON text.", "protocol"),
                        Some(Ok(Message::Text(t))) => match read_message(t.as_str()) {
                            Some(m) => m,
                            None => return Closing(close::BAD_MESSAGE, "Invalid message received", "protocol"),
                        },
                    };
                    match message {
                        ClientMessage::ConnectionInit { .. } => {
                            return Closing(close::TOO_MANY_INITS, "Too many initialisation requests", "protocol");
                        }
                        ClientMessage::Ping { payload } => {
                            let pong = match payload {
                                Some(p) => json!({"type": "pong", "payload": p}),
                                None => json!({"type": "pong"}),
                            };
                            if let Ok(text) = serde_json::to_string(&pong) {
                                out.offer(Message::Text(text.into()));
                            }
                        }
                        ClientMessage::Pong { .. } => {}
                        ClientMessage::Complete { id } => {
                            active.remove(&id);
                        }
                        ClientMessage::Subscribe { id, payload } => {
                            if active.contains_key(&id) {
                                return Closing(close::DUPLICATE_ID, "Subscriber for this id already exists", "protocol");
                            }
                            match self.start(&caller.user_id, &auth, payload, active.len(), &limits) {
                                Ok(answers) => {
                                    active.insert(id, answers);
                                }
                                Err(errors) => {
                                    let message = json!({"type": "error", "id": id, "payload": errors});
                                    if let Err(e) = send(out, message) {
                                        return not_sent(e);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Checks `connection_init`'s `Authorization` (browsers cannot set a WebSocket's headers):
    /// a verified Bearer token with the MANAGE_PAYMENT scope, or the socket closes with 4403.
    async fn authenticate(&self, payload: Option<serde_json::Value>) -> Result<crate::auth::Caller, Closing> {
        let value = payload.as_ref().and_then(|p| p.as_object()).and_then(|o| {
            o.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")).and_then(|(_, v)| v.as_str())
        });
        let state = match value {
            Some(v) if v.len() <= 16 * 1024 => self.state.auth.authenticate_value(v).await,
            Some(_) => AuthState::Invalid,
            None => AuthState::Anonymous,
        };
        match state {
            AuthState::Authenticated(c) if c.scopes.contains(MANAGE_PAYMENT) => Ok(c),
            AuthState::Authenticated(_) => {
                Err(Closing(close::FORBIDDEN, "Forbidden: the MANAGE_PAYMENT scope is required.", "forbidden"))
            }
            AuthState::Anonymous => Err(Closing(
                close::FORBIDDEN,
                "Forbidden: send {\"Authorization\": \"Bearer <token>\"} in connection_init.",
                "unauthenticated",
            )),
            _ => Err(Closing(close::FORBIDDEN, "Forbidden: the token is not valid.", "unauthenticated")),
        }
    }

    /// Starts one subscription, or says why not (as the protocol's `error` payload).
    fn start(
        &self,
        user: &str,
        auth: &AuthState,
        payload: SubscribePayload,
        active: usize,
        limits: &WsLimits,
    ) -> Result<Answers, Vec<serde_json::Value>> {
        if active >= limits.max_subscriptions_per_socket {
            return Err(payload_error(
                format!(
                    "At most {} subscriptions may be active on one WebSocket; complete one first.",
                    limits.max_subscriptions_per_socket
                ),
                code::BAD_REQUEST,
                None,
            ));
        }
        if let Err(wait) = self.state.limiters.check_user(user) {
            let secs = retry_after_secs(wait);
            return Err(payload_error(
                format!("Too many requests from this caller; retry in {secs} s."),
                code::RATE_LIMITED,
                Some(("retryAfterSeconds", secs.into())),
            ));
        }
        let request = subscribe_request(payload, self.state.graphql_limits.max_query_length)?;
        match self.state.gateway.subscribe(request, auth.clone(), self.request_id.clone()) {
            Ok(answers) => Ok(answers.map(Some).chain(futures::stream::once(async { None })).boxed()),
            Err(errors) => Err(errors.into_iter().map(server_error).collect()),
        }
    }
}

fn server_error(e: ServerError) -> serde_json::Value {
    serde_json::to_value(&e).unwrap_or_else(|_| json!({"message": e.message}))
}

/// A `next` message: one result of a subscription.
#[derive(serde::Serialize)]
struct Next<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    payload: &'a async_graphql::Response,
}

fn send(out: &Outbox, message: serde_json::Value) -> Result<(), NotSent> {
    send_text(out, &message)
}

fn send_text(out: &Outbox, message: &impl serde::Serialize) -> Result<(), NotSent> {
    // Serialising these types cannot fail (string keys, no custom serialiser that errs).
    let text = serde_json::to_string(message).map_err(|_| NotSent::Closed)?;
    out.push(Message::Text(text.into()))
}

/// How a socket ends when a message could not be queued: 1008 for a client that does not
/// read in time (its place is freed), else the peer is gone.
fn not_sent(e: NotSent) -> Closing {
    match e {
        NotSent::Full => Closing(close::POLICY, "The client does not read its messages in time.", "slow_reader"),
        NotSent::Closed => Closing(close::GOING_AWAY, "", "gone"),
    }
}

/// How a socket whose read failed ends: 1009 for a message over `MAX_BODY_BYTES`, else the
/// peer is gone.
fn read_failed(e: axum::Error) -> Closing {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Closing(close::TOO_BIG, "Message too big.", "too_large"),
        _ => Closing(close::GOING_AWAY, "", "gone"),
    }
}

/// The next protocol message, skipping control frames.
async fn next_message(rx: &mut futures::stream::SplitStream<WebSocket>) -> Result<ClientMessage, Closing> {
    loop {
        match rx.next().await {
            None => return Err(Closing(close::GOING_AWAY, "", "gone")),
            Some(Err(e)) => return Err(read_failed(e)),
            Some(Ok(Message::Close(_))) => return Err(Closing(1000, "", "client")),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(_))) => {
                return Err(Closing(close::BAD_MESSAGE, "Messages are JSON text.", "protocol"));
            }
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str::<ClientMessage>(t.as_str())
                    .map_err(|_| Closing(close::BAD_MESSAGE, "Invalid message received", "protocol"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example".to_string()];
        assert!(origin_allowed(&headers(None, "api.example"), &allowed));
        assert!(origin_allowed(&headers(Some("https://app.example"), "api.example"), &allowed));
        assert!(origin_allowed(&headers(Some("http://127.0.0.1:8000"), "127.0.0.1:8000"), &[]));
        assert!(!origin_allowed(&headers(Some("https://evil.example"), "api.example"), &allowed));
        assert!(!origin_allowed(&headers(Some("http://127.0.0.1:9999"), "127.0.0.1:8000"), &[]));
        assert!(!origin_allowed(&headers(Some("null"), "api.example"), &allowed));
    }

    #[test]
    fn messages_parse_as_the_protocol_spells_them() {
        assert!(matches!(
            serde_json::from_str::<ClientMessage>(
                r#"{"type":"connection_init","payload":{"Authorization":"Bearer x"}}"#
            ),
            Ok(ClientMessage::ConnectionInit { payload: Some(_) })
        ));
        assert!(matches!(
            serde_json::from_str::<ClientMessage>(
                r#"{"type":"subscribe","id":"1","payload":{"query":"subscription{a}"}}"#
            ),
            Ok(ClientMessage::Subscribe { .. })
        ));
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"start","id":"1"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"subscribe","payload":{}}"#).is_err());
    }
}
