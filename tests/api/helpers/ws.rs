//! A GraphQL WebSocket client for tests: the `graphql-transport-ws` protocol spoken frame by
//! frame, so a test can see every message and close code.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::TestApp;

pub const EVENTS: &str = "subscription($input: PlaidConnectionEventsInput) { plaidConnectionEvents(input: $input) {
    eventId type occurredAt platformItemId bankInstitutionAuthId status transactionCount addedCount modifiedCount removedCount } }";

type Stream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Socket {
    stream: Stream,
}

/// How a socket ended: its close code and reason.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed(pub u16, pub String);

impl TestApp {
    /// Opens a socket with these extra headers (no `connection_init` yet).
    pub async fn ws_raw(&self, headers: &[(&str, &str)]) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
        Socket::open(&self.graphql, headers).await
    }

    /// A socket past `connection_init` with this token (panics unless acknowledged).
    pub async fn ws(&self, token: &str) -> Socket {
        Socket::connect(&self.graphql, token).await
    }
}

impl Socket {
    /// Opens a socket to the GraphQL endpoint `graphql` (`http://…/api/v1/graphql`).
    pub async fn open(
        graphql: &str,
        headers: &[(&str, &str)],
    ) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
        let mut req = graphql.replacen("http://", "ws://", 1).into_client_request().unwrap();
        req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        for (k, v) in headers {
            let name: http::HeaderName = k.parse().unwrap();
            req.headers_mut().insert(name, v.parse().unwrap());
        }
        let (stream, resp) = tokio_tungstenite::connect_async(req).await?;
        assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "graphql-transport-ws");
        Ok(Socket { stream })
    }

    /// Opens a socket and initialises it with this token (panics unless acknowledged).
    pub async fn connect(graphql: &str, token: &str) -> Socket {
        let mut s = Socket::open(graphql, &[]).await.expect("socket opens");
        s.send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}})).await;
        let ack = s.recv().await.expect("an answer to connection_init");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        s
    }

    pub async fn send(&mut self, message: Value) {
        self.stream.send(Message::Text(message.to_string().into())).await.expect("send");
    }

    /// The next protocol message within 20 s; `Err` with the close code when the socket closed.
    pub async fn recv(&mut self) -> Result<Value, Closed> {
        self.recv_within(Duration::from_secs(20)).await.expect("a message within 20 s")
    }

    /// The next protocol message within `wait` (`None` when none came).
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Result<Value, Closed>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.stream.next()).await.ok()?;
            return Some(match frame {
                Some(Ok(Message::Text(t))) => {
                    // What clients receive is checked for leaks with every other answer.
                    super::bodies().lock().unwrap().push(t.to_string());
                    Ok(serde_json::from_str(t.as_str()).expect("JSON message"))
                }
                Some(Ok(Message::Close(Some(f)))) => Err(Closed(u16::from(f.code), f.reason.to_string())),
                Some(Ok(Message::Close(None))) => Err(Closed(u16::from(CloseCode::Status), String::new())),
                Some(Ok(_)) => continue,
                Some(Err(e)) => Err(Closed(0, e.to_string())),
                None => Err(Closed(0, "ended".into())),
            });
        }
    }

    /// The close code the server ends with (skipping messages before it).
    pub async fn closed(&mut self) -> Closed {
        loop {
            match self.recv().await {
                Err(c) => return c,
                Ok(_) => continue,
            }
        }
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({"type": "subscribe", "id": id, "payload": {"query": query, "variables": variables}})).await;
    }

    /// Subscribes to connection events with this input.
    pub async fn events(&mut self, id: &str, input: Value) {
        self.subscribe(id, EVENTS, json!({"input": input})).await;
    }

    /// The next event of subscription `id` (panics on any other message).
    pub async fn event(&mut self, id: &str) -> Value {
        let m = self.recv().await.expect("open socket");
        assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("next"), Some(id)), "{m}");
        assert!(m["payload"]["errors"].is_null(), "{m}");
        m["payload"]["data"]["plaidConnectionEvents"].clone()
    }

    /// Events of subscription `id` until one of type `until` (included).
    pub async fn events_until(&mut self, id: &str, until: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let e = self.event(id).await;
            let done = e["type"] == until;
            out.push(e);
            if done {
                return out;
            }
        }
    }

    /// Nothing arrives within `wait`.
    pub async fn silent_for(&mut self, wait: Duration) {
        if let Some(m) = self.recv_within(wait).await {
            panic!("expected silence, got {m:?}");
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
