//! A GraphQL WebSocket client that stops reading must not keep its socket: the server's
//! writes are bounded in time, so the idle timeout, the token's expiry and the send timeout
//! all still close it and free its place under `WS_MAX_SOCKETS`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::*;

type Raw = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A subscriber to its connection events whose socket has a tiny receive buffer, that has
/// filled the server's side with large pongs and then reads nothing more.
struct SlowReader {
    _socket: Raw,
}

impl SlowReader {
    async fn open(app: &TestApp, token: &str) -> SlowReader {
        let url = app.graphql.replacen("http://", "ws://", 1);
        let addr: std::net::SocketAddr =
            url.trim_start_matches("ws://").split('/').next().unwrap().parse().expect("a socket address");
        let tcp = tokio::net::TcpSocket::new_v4().unwrap();
        tcp.set_recv_buffer_size(4096).unwrap();
        let stream = tcp.connect(addr).await.unwrap();
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::client_async(req, stream).await.expect("handshake");
        let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
        socket.send(Message::Text(init.to_string().into())).await.unwrap();
        let ack = socket.next().await.unwrap().unwrap();
        assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
        let subscribe =
            json!({"type": "subscribe", "id": "1", "payload": {"query": EVENTS, "variables": {"input": null}}});
        socket.send(Message::Text(subscribe.to_string().into())).await.unwrap();
        // Pings of nearly MAX_BODY_BYTES each: the pongs fill the socket's buffers, since
        // nothing is read any more. Sending stops once the server no longer reads either.
        let ping = json!({"type": "ping", "payload": "p".repeat(250_000)}).to_string();
        for _ in 0..64 {
            let sent =
                tokio::time::timeout(Duration::from_secs(2), socket.send(Message::Text(ping.clone().into()))).await;
            if !matches!(sent, Ok(Ok(()))) {
                break;
            }
        }
        SlowReader { _socket: socket }
    }
}

/// Whether a new caller's socket is admitted and acknowledged now.
async fn admitted(app: &TestApp, who: &str) -> bool {
    match app.ws_raw(&[]).await {
        Ok(mut s) => {
            s.send(
                json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {}", app.token(who))}}),
            )
            .await;
            let ok =
                matches!(s.recv_within(Duration::from_secs(5)).await, Some(Ok(m)) if m["type"] == "connection_ack");
            s.close().await;
            ok
        }
        Err(_) => false,
    }
}

/// Waits up to `within` for a new socket to be admitted while the slow reader still holds
/// its own open (and reads nothing).
async fn admitted_within(app: &TestApp, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut n = 0;
    while tokio::time::Instant::now() < deadline {
        n += 1;
        if admitted(app, &format!("newcomer-{n}")).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn closed_as(app: &TestApp, reason: &str) -> bool {
    let metrics = app.http.get(format!("{}/metrics", app.internal)).send().await.unwrap().text().await.unwrap();
    metrics.lines().any(|l| l.starts_with("bankgraph_ws_closed_total") && l.contains(&format!("reason=\"{reason}\"")))
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_at_the_idle_timeout_and_frees_its_place() {
    let app = TestApp::spawn_with(Options {
        args: vec![
            "--ws-max-sockets=1".into(),
            "--ws-ping-interval-seconds=1".into(),
            "--ws-idle-timeout-seconds=2".into(),
        ],
        ..Default::default()
    })
    .await;
    let t = app.token("stalled");
    let _slow = SlowReader::open(&app, &t).await;
    // Events are produced for the subscriber while it reads nothing.
    app.link(&t).await;
    assert!(admitted_within(&app, Duration::from_secs(10)).await, "the stalled socket still holds the only place");
    assert!(closed_as(&app, "idle").await || closed_as(&app, "slow_reader").await);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_when_its_token_expires() {
    let app = TestApp::spawn_with(Options {
        args: vec![
            "--ws-max-sockets=1".into(),
            "--ws-ping-interval-seconds=600".into(),
            "--ws-idle-timeout-seconds=3600".into(),
        ],
        ..Default::default()
    })
    .await;
    let t = token_with("stalled-expiring", "MANAGE_PAYMENT", 4);
    let _slow = SlowReader::open(&app, &t).await;
    app.link(&t).await;
    assert!(admitted_within(&app, Duration::from_secs(12)).await, "the stalled socket outlived its token");
    assert!(closed_as(&app, "token_expired").await || closed_as(&app, "slow_reader").await);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_a_slow_reader_after_the_send_timeout() {
    let app = TestApp::spawn_with(Options {
        args: vec![
            "--ws-max-sockets=1".into(),
            "--ws-ping-interval-seconds=600".into(),
            "--ws-idle-timeout-seconds=3600".into(),
            "--ws-send-timeout-seconds=1".into(),
        ],
        ..Default::default()
    })
    .await;
    let t = app.token("stalled-slow");
    let _slow = SlowReader::open(&app, &t).await;
    app.link(&t).await;
    assert!(admitted_within(&app, Duration::from_secs(10)).await, "the stalled socket still holds the only place");
    assert!(closed_as(&app, "slow_reader").await, "closed as a slow reader (1008)");
}
