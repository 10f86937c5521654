//! Attacks by anonymous clients, each reproduced against a real `bankgraph serve` process (a
//! crash there would take a test binary down with it): the process must refuse them and keep
//! answering everyone else.
//!
//! Attacks that need a room of their own are tested beside what they attack:
//! - forged random-kid webhooks across restarts and key rotations: `webhook_keys.rs`, and a
//!   failing key endpoint in `tests/plaid_client.rs`;
//! - a key id reused for a new encryption key: `custody.rs` (the rotation table);
//! - WebSocket clients that stop reading: `slow_readers.rs`;
//! - a completion killed mid-way: `completion.rs`;
//! - a control character in an RPC `user_id`: `split.rs` and `store.rs`;
//! - deep `offset` pages: `input.rs`; event ids: `events.rs`; a future `iat`: `auth.rs`;
//! - the emulator's redirect URIs: `link_web.rs`; GraphiQL switched off: `clients.rs`.
//!
//! What no list of cases covers is searched for by the fuzz targets in `fuzz/`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;

/// The server's base URL (`http://host:port`) from its GraphQL URL.
fn base(server: &Server) -> String {
    server.graphql.trim_end_matches("/api/v1/graphql").to_string()
}

async fn post_query(http: &reqwest::Client, server: &Server, body: Value) -> (u16, Value) {
    let r = http.post(&server.graphql).json(&body).send().await.expect("the server answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The process still answers `/healthz` within 100 ms and a normal query at once. The best of
/// three tries counts: a stalled server fails all three, a busy test machine only one.
async fn still_serving(http: &reqwest::Client, server: &Server, token: &str) {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let r = http.get(format!("{}/healthz", base(server))).send().await.expect("healthz answers");
        assert_eq!(r.status(), 200);
        best = best.min(started.elapsed());
    }
    assert!(best < Duration::from_millis(100), "healthz took {best:?}");
    let r = http
        .post(&server.graphql)
        .bearer_auth(token)
        .json(&json!({"query": "{ getPlaidBankAccounts { bankAccountId } }"}))
        .send()
        .await
        .expect("a normal query answers");
    let b: Value = r.json().await.unwrap();
    assert!(b["data"]["getPlaidBankAccounts"].is_array(), "{b}");
}

fn nested(open: &str, close: &str, depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

#[tokio::test]
async fn deeply_nested_values_are_refused_without_crashing() {
    let probe = TestApp::spawn_with(Options { args: vec!["--job-workers=0".into()], ..Default::default() }).await;
    let server = Server::start(&probe.database_url, &probe.emulator.url(), &[], &[]);
    let http = reqwest::Client::new();
    let token = probe.token("nest");
    let list = nested("[", "]", 5000, "1");
    let object = nested("{a: ", "}", 3000, "1");
    let attacks = [
        format!("{{ __typename(a: {list}) }}"),
        format!("query($v: Int = {list}) {{ __typename }}"),
        format!("{{ __typename(a: {object}) }}"),
        format!("{{ {} }}", nested("a { ", " }", 3000, "b")),
    ];
    for q in &attacks {
        let (status, b) = post_query(&http, &server, json!({"query": q})).await;
        assert_eq!(code(&b).as_deref(), Some("GRAPHQL_PARSE_FAILED"), "{status} {b}");
        assert!(b["errors"][0]["message"].as_str().unwrap().contains("nest"), "{b}");
    }
    // Brackets inside strings, block strings and comments are not nesting.
    let text = format!(
        "{{ __typename(a: \"{}\", b: \"\"\"{}\"\"\") # {}\n }}",
        "[".repeat(3000),
        "{".repeat(3000),
        "(".repeat(3000)
    );
    let (_, b) = post_query(&http, &server, json!({"query": text})).await;
    assert_ne!(code(&b).as_deref(), Some("GRAPHQL_PARSE_FAILED"), "{b}");
    still_serving(&http, &server, &token).await;
}

/// `{ ...F<n> }` where each fragment spreads the one below it twice: 2^n fields from 1 KB.
fn laughs(n: usize) -> String {
    let mut q = format!("{{ ...F{n} }} fragment F0 on Query {{ __typename }}\n");
    for i in 1..=n {
        q.push_str(&format!("fragment F{i} on Query {{ ...F{} ...F{} }}\n", i - 1, i - 1));
    }
    q
}

#[tokio::test]
async fn a_fragment_bomb_is_refused_at_once() {
    let probe = TestApp::spawn_with(Options { args: vec!["--job-workers=0".into()], ..Default::default() }).await;
    let server = Server::start(&probe.database_url, &probe.emulator.url(), &[], &[]);
    let http = reqwest::Client::new();
    let token = probe.token("laughs");
    let q = laughs(29);
    assert!(q.len() < 2000, "{}", q.len());
    // Two at once, as in the report: each is refused quickly, and the process keeps serving.
    let started = Instant::now();
    let (a, b) = tokio::join!(
        post_query(&http, &server, json!({"query": q})),
        post_query(&http, &server, json!({"query": q.replace("__typename", "t: __typename")})),
    );
    for (status, body) in [a, b] {
        assert_eq!((status, code(&body).as_deref()), (200, Some("GRAPHQL_VALIDATION_FAILED")), "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("fragment"), "{body}");
    }
    assert!(started.elapsed() < Duration::from_secs(2), "refused in {:?}", started.elapsed());
    // A cycle is refused too, not followed.
    let cycle = "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
    let (_, body) = post_query(&http, &server, json!({"query": cycle})).await;
    assert_eq!(code(&body).as_deref(), Some("GRAPHQL_VALIDATION_FAILED"), "{body}");
    // A small use of fragments is fine, and the introspection check sees through them.
    let (_, body) = post_query(&http, &server, json!({"query": laughs(3)})).await;
    assert_eq!(body["data"]["__typename"], "Query", "{body}");
    still_serving(&http, &server, &token).await;
}

/// Reads until the server closes the connection; returns what it sent, or `None` if it was
/// still open after `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn addr_of(app: &TestApp) -> std::net::SocketAddr {
    app.base.trim_start_matches("http://").parse().unwrap()
}

/// A TCP connection from a given loopback source address.
async fn connect_from(source: &str, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn two_thousand_silent_connections_are_closed_from_accept_and_traffic_keeps_flowing() {
    bankgraph::http::server::raise_descriptor_limit();
    let app = TestApp::spawn_with(Options {
        args: vec![
            "--job-workers=0".into(),
            "--header-read-timeout-seconds=1".into(),
            "--max-connections-per-ip=5000".into(),
        ],
        ..Default::default()
    })
    .await;
    let to = addr_of(&app);
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(tokio::net::TcpStream::connect(to).await.unwrap());
    }
    let opened = Instant::now();
    // Normal traffic flows while they are held.
    let t = app.token("busy");
    let r = app.gql(Some(&t), "{ getPlaidBankAccounts { bankAccountId } }", json!({})).await;
    assert!(r["data"]["getPlaidBankAccounts"].is_array(), "{r}");
    // Every one is closed by the server within the first-byte timeout (1 s from accept).
    let closes = idle.iter_mut().map(|s| closed_within(s, Duration::from_secs(4)));
    let results = futures::future::join_all(closes).await;
    assert!(results.iter().all(Option::is_some), "{} still open", results.iter().filter(|r| r.is_none()).count());
    assert!(opened.elapsed() < Duration::from_secs(4));
    let r = app.gql(Some(&t), "{ getPlaidBankAccounts { bankAccountId } }", json!({})).await;
    assert!(r["data"]["getPlaidBankAccounts"].is_array(), "{r}");
}

#[tokio::test]
async fn silent_connections_to_the_identity_rpc_listener_are_capped_and_closed_and_gateways_keep_working() {
    bankgraph::http::server::raise_descriptor_limit();
    let app = TestApp::spawn_with(Options {
        args: vec!["--job-workers=0".into(), "--header-read-timeout-seconds=1".into()],
        topology: Some(Topology::Split),
        ..Default::default()
    })
    .await;
    let t = app.token("busy");
    let read = || app.gql(Some(&t), "{ getPlaidBankAccounts { bankAccountId } }", json!({}));
    assert!(read().await["data"]["getPlaidBankAccounts"].is_array());
    let rpc: std::net::SocketAddr = app.rpc.as_deref().unwrap().trim_start_matches("http://").parse().unwrap();
    // 1,500 connections that never send the HTTP/2 preface, from another address than the
    // gateway's.
    let mut silent = Vec::new();
    for _ in 0..1500 {
        silent.push(connect_from("127.0.0.2", rpc).await);
    }
    let opened = Instant::now();
    let r = read().await;
    assert!(r["data"]["getPlaidBankAccounts"].is_array(), "the gateway still reads while they are held: {r}");
    // Beyond the per-address cap they are closed at accept...
    let early =
        futures::future::join_all(silent.iter_mut().map(|s| closed_within(s, Duration::from_millis(500)))).await;
    let held = early.iter().filter(|r| r.is_none()).count();
    assert!(held <= 128, "{held} held from one address");
    // ...and the rest within the first-byte timeout (1 s from accept).
    let rest = silent.iter_mut().zip(&early).filter(|(_, e)| e.is_none()).map(|(s, _)| s);
    let late = futures::future::join_all(rest.map(|s| closed_within(s, Duration::from_secs(4)))).await;
    assert!(late.iter().all(Option::is_some), "{} still open", late.iter().filter(|r| r.is_none()).count());
    assert!(opened.elapsed() < Duration::from_secs(5), "{:?}", opened.elapsed());
    assert!(read().await["data"]["getPlaidBankAccounts"].is_array());
}

#[tokio::test]
async fn one_address_gets_at_most_its_share_of_connections() {
    let app = TestApp::spawn_with(Options {
        args: vec!["--job-workers=0".into(), "--max-connections-per-ip=10".into()],
        ..Default::default()
    })
    .await;
    let to = addr_of(&app);
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(connect_from("127.0.0.2", to).await);
    }
    let mut eleventh = connect_from("127.0.0.2", to).await;
    assert!(closed_within(&mut eleventh, Duration::from_millis(500)).await.is_some(), "the 11th is closed at once");
    assert!(closed_within(&mut held[0], Duration::from_millis(200)).await.is_none(), "the first ten stay");
    // Another address is not affected.
    let r = app.http.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_body_that_trickles_is_cut_off_and_idle_connections_close() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_with(Options {
        args: vec![
            "--job-workers=0".into(),
            "--body-read-timeout-seconds=1".into(),
            "--idle-timeout-seconds=1".into(),
            "--header-read-timeout-seconds=2".into(),
        ],
        ..Default::default()
    })
    .await;
    let to = addr_of(&app);
    // Slow body: the head arrives, the body never does.
    let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
    s.write_all(
        b"POST /api/v1/graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let answer = closed_within(&mut s, Duration::from_secs(4)).await.expect("answered and closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("REQUEST_TIMEOUT"), "{text}");

    // A kept-alive HTTP/1.1 connection that idles after a request is closed.
    let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let answer = closed_within(&mut s, Duration::from_secs(4)).await.expect("closed when idle");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(started.elapsed() >= Duration::from_millis(900), "not before the idle limit");

    // HTTP/2 (prior knowledge): one request, then idle: GOAWAY and close.
    let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    let mut block = vec![0x82, 0x86, 0x04, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x01, 1, b'x']);
    frames.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x05, 0, 0, 0, 1]); // HEADERS, END_STREAM|END_HEADERS
    frames.extend_from_slice(&block);
    s.write_all(&frames).await.unwrap();
    let answer = closed_within(&mut s, Duration::from_secs(5)).await.expect("an idle HTTP/2 connection is closed");
    let mut at = 0;
    let mut types = Vec::new();
    while at + 9 <= answer.len() {
        let len = (usize::from(answer[at]) << 16) | (usize::from(answer[at + 1]) << 8) | usize::from(answer[at + 2]);
        types.push(answer[at + 3]);
        at += 9 + len;
    }
    assert!(types.contains(&1), "a response HEADERS frame: {types:?}");
    assert!(types.contains(&7), "a GOAWAY frame: {types:?}");

    // A connection that never sends anything is closed at the header timeout from accept.
    let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(4)).await.is_some());
    assert!(started.elapsed() >= Duration::from_millis(1900), "{:?}", started.elapsed());
}

#[tokio::test]
async fn behind_a_trusted_balancer_each_client_has_its_own_rate_limit_and_spoofing_stays_ignored() {
    let q = json!({"query": "{ __typename }"});
    let status = |app: &TestApp, xff: &'static str| {
        let (http, url, q) = (app.http.clone(), app.graphql.clone(), q.clone());
        async move { http.post(url).header("x-forwarded-for", xff).json(&q).send().await.unwrap().status().as_u16() }
    };
    // 127.0.0.1 is the balancer: the limit is per forwarded client.
    let behind = TestApp::spawn_with(Options {
        args: vec!["--rate-limit-per-ip=2".into(), "--trusted-proxies=127.0.0.1/32".into()],
        ..Default::default()
    })
    .await;
    let mut a = vec![];
    for _ in 0..4 {
        a.push(status(&behind, "198.51.100.1").await);
    }
    assert_eq!(a.iter().filter(|s| **s == 429).count(), 2, "{a:?}");
    // Another client behind the same balancer has its own allowance; a spoofed left-most hop
    // does not change the bucket (the right-most untrusted hop is the client).
    assert_eq!(status(&behind, "198.51.100.2").await, 200);
    assert_eq!(status(&behind, "203.0.113.66, 198.51.100.1").await, 429);

    // No trusted proxies: the header is ignored, so it cannot mint fresh buckets.
    let direct =
        TestApp::spawn_with(Options { args: vec!["--rate-limit-per-ip=2".into()], ..Default::default() }).await;
    let mut d = vec![];
    for xff in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"] {
        d.push(status(&direct, xff).await);
    }
    assert!(d.contains(&429), "{d:?}");
}

#[tokio::test]
async fn behind_a_balancer_that_appends_x_forwarded_for_a_clients_own_forwarded_header_picks_no_bucket() {
    let q = json!({"query": "{ __typename }"});
    // The balancer (127.0.0.1) appends the client's address to X-Forwarded-For and passes the
    // client's own `Forwarded` through untouched.
    let send = |app: &TestApp, forwarded: String, xff: &'static str| {
        let (http, url, q) = (app.http.clone(), app.graphql.clone(), q.clone());
        async move {
            let r = http.post(url).header("forwarded", forwarded).header("x-forwarded-for", xff).json(&q).send();
            r.await.unwrap().status().as_u16()
        }
    };
    let app = TestApp::spawn_with(Options {
        args: vec!["--rate-limit-per-ip=5".into(), "--trusted-proxies=127.0.0.1/32".into()],
        ..Default::default()
    })
    .await;
    let mut statuses = vec![];
    for n in 0..20 {
        statuses.push(send(&app, format!("for=198.51.100.{n}"), "203.0.113.7").await);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "one bucket, the appended address's: {statuses:?}");

    // An operator whose balancer writes `Forwarded` names it; then X-Forwarded-For is ignored.
    let app = TestApp::spawn_with(Options {
        args: vec![
            "--rate-limit-per-ip=5".into(),
            "--trusted-proxies=127.0.0.1/32".into(),
            "--trusted-proxy-header=forwarded".into(),
        ],
        ..Default::default()
    })
    .await;
    let spoofs = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7"];
    let mut statuses = vec![];
    for xff in spoofs {
        statuses.push(send(&app, "for=203.0.113.7".into(), xff).await);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(send(&app, "for=203.0.113.8".into(), "10.0.0.1").await, 200, "another client has its own");
}

#[tokio::test]
async fn behind_a_trusted_balancer_each_client_has_its_own_share_of_websockets() {
    let app = TestApp::spawn_with(Options {
        args: vec!["--ws-max-sockets-per-ip=2".into(), "--trusted-proxies=127.0.0.1/32".into()],
        ..Default::default()
    })
    .await;
    // Sockets that never send connection_init count too.
    let one = [("x-forwarded-for", "198.51.100.1")];
    let _held = (app.ws_raw(&one).await.unwrap(), app.ws_raw(&one).await.unwrap());
    match app.ws_raw(&one).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("expected a 429 for the third socket of one client, got {:?}", other.map(|_| ())),
    }
    app.ws_raw(&[("x-forwarded-for", "198.51.100.2")]).await.expect("another client behind the balancer opens one");
}

#[tokio::test]
async fn postgres_cancels_a_statement_that_runs_past_the_statement_timeout() {
    let database_url = fresh_database().await;
    if !database_url.starts_with("postgres") {
        return; // SQLite statements cannot be cancelled from outside; its reads are bounded.
    }
    let db = bankgraph::db::Db::connect_with(&database_url, Duration::from_millis(300)).await.unwrap();
    db.migrate().await.unwrap();
    let e = sqlx::query("select pg_sleep(2)").execute(&db.read).await.unwrap_err();
    assert!(e.to_string().contains("statement timeout"), "{e}");
    sqlx::query("select 1").execute(&db.read).await.expect("the pool still works");
}

#[tokio::test]
async fn a_clients_request_id_is_never_ours_and_reaches_the_log_beside_it_only_when_well_formed() {
    let app = TestApp::spawn().await;
    let huge = format!("evil-{}", "Qz".repeat(50_000));
    let body = json!({"query": "query Fine { __typename }", "operationName": format!("Fine{}", "Wv".repeat(25_000))});
    let r = app.http.post(&app.graphql).header("x-request-id", &huge).json(&body).send().await.unwrap();
    let echoed = r.headers().get("x-request-id").unwrap().to_str().unwrap().to_string();
    assert!(echoed.len() <= 64 && !echoed.contains("QzQz"), "ours, fresh: {echoed}");
    let r = app
        .http
        .post(&app.graphql)
        .header("x-request-id", "abc-123")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    // Even a well-formed one is the client's, not ours: ours is always the server's own.
    let ours = r.headers().get("x-request-id").unwrap().to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&ours).is_ok(), "the server's own id answers: {ours}");
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(!logs.contains("QzQzQzQz") && !logs.contains("WvWvWvWv"), "no client text of that size in the log");
    let line = logs
        .lines()
        .find(|l| l.contains(&format!(" request_id={ours}")))
        .unwrap_or_else(|| panic!("no log line carries our id {ours}"));
    assert!(line.contains("client_request_id=abc-123"), "the client's id is logged in its own field: {line}");
    assert!(!logs.contains(" request_id=abc-123"), "never as ours");
}

/// Round two of the nesting attack: an unclosed `"""` that the first scanner read as a block
/// string to the end, while the grammar reads `""` and a string and then parses the brackets
/// (`{ __typename(a: [""" " [[[…]]] ]) }`, 3,028 bytes, no token, aborted the process). Also in
/// variable defaults, object values and list types, over POST, GET and WebSocket.
fn hidden_nesting(levels: usize) -> Vec<String> {
    let hide = |open: &str, inner: &str, close: &str| {
        format!("[\"\"\" \" {}{inner}{} ]", open.repeat(levels), close.repeat(levels))
    };
    vec![
        format!("{{ __typename(a: {}) }}", hide("[", "", "]")),
        format!("query($v: Int = {}) {{ __typename }}", hide("[", "", "]")),
        format!("{{ __typename(a: {{x: {}}}) }}", hide("{a: ", "1", "}")),
        format!("{{ __typename @include(if: {}) }}", hide("[", "", "]")),
        format!("query($v: [Int] = [\"\"\" \"], $w: {}Int{}) {{ __typename }}", "[".repeat(levels), "]".repeat(levels)),
    ]
}

/// Sends every hidden-nesting payload over POST, GET and a WebSocket to `graphql`: each is
/// refused as a document that did not parse (never executed), and the server keeps serving.
async fn hidden_nesting_is_refused(http: &reqwest::Client, graphql: &str, token: &str) {
    // 500 levels are enough to overflow an unoptimised build's worker (at 1,500 pest's own
    // stack guard answers first there); 1,500 overflowed the release build.
    for q in hidden_nesting(500).into_iter().chain(hidden_nesting(1_500)) {
        let r = http.post(graphql).json(&json!({"query": q})).send().await.expect("the server answers a POST");
        let b: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(code(&b).as_deref(), Some("GRAPHQL_PARSE_FAILED"), "POST {b}");
        let r = http.get(graphql).query(&[("query", &q)]).send().await.expect("the server answers a GET");
        let b: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(code(&b).as_deref(), Some("GRAPHQL_PARSE_FAILED"), "GET {b}");
    }
    // Deeper over the socket, where the probe went 6,000 levels (within MAX_QUERY_LENGTH).
    for q in hidden_nesting(500).into_iter().chain(hidden_nesting(6_000)).filter(|q| q.len() <= 20_000) {
        let mut socket = Socket::connect(graphql, token).await;
        socket.subscribe("1", &q, json!({})).await;
        let answer = socket.recv().await.expect("an answer on the socket");
        assert_eq!(answer["type"], "error", "{answer}");
        assert_eq!(answer["payload"][0]["extensions"]["code"], "GRAPHQL_PARSE_FAILED", "{answer}");
    }
    // At the limit, each construct still parses, validates and executes on a worker's stack.
    let at_limit = [
        format!("{{ __typename(a: {}1{}) }}", "[".repeat(126), "]".repeat(126)),
        format!("query($v: Int = {}1{}) {{ __typename }}", "{a: ".repeat(127), "}".repeat(127)),
        format!("query($v: {}Int{}) {{ __typename }}", "[".repeat(127), "]".repeat(127)),
    ];
    for q in at_limit {
        let r = http.post(graphql).json(&json!({"query": q})).send().await.expect("the server answers");
        let b: Value = r.json().await.unwrap_or(Value::Null);
        assert_ne!(code(&b).as_deref(), Some("GRAPHQL_PARSE_FAILED"), "{b}");
        assert!(b.is_object(), "an answer, not a dropped connection");
    }
}

#[tokio::test]
async fn nesting_hidden_behind_an_unclosed_block_string_is_refused_on_both_topologies() {
    let probe = TestApp::spawn_with(Options { args: vec!["--job-workers=0".into()], ..Default::default() }).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let token = probe.token("hidden-nesting");

    let server = Server::start(&probe.database_url, &probe.emulator.url(), &[], &[]);
    hidden_nesting_is_refused(&http, &server.graphql, &token).await;
    still_serving(&http, &server, &token).await;

    // The split deployment: the gateway process parses what clients send.
    let dir = std::env::temp_dir().join(format!("bankgraph-hostile-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
    let plaid_url = probe.emulator.url();
    let identity = identity_process(&probe.database_url, &plaid_url, &key, &dir.join("identity.log"));
    let gateway = gateway_process(&identity.values[0], &dir.join("gateway.log"));
    let graphql = gateway.values[0].clone();
    hidden_nesting_is_refused(&http, &graphql, &token).await;
    let r: Value = http
        .post(&graphql)
        .bearer_auth(&token)
        .json(&json!({"query": "{ getPlaidBankAccounts { bankAccountId } }"}))
        .send()
        .await
        .expect("the gateway still answers")
        .json()
        .await
        .unwrap();
    assert!(r["data"]["getPlaidBankAccounts"].is_array(), "{r}");
    drop(gateway);
    drop(identity);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A directive the schema does not define is refused wherever it stands (async-graphql's own
/// validation misses it on `__typename` and on variable definitions), and the ones it defines
/// still work.
#[tokio::test]
async fn a_directive_the_schema_does_not_define_is_refused_wherever_it_stands() {
    let probe = TestApp::spawn_with(Options { args: vec!["--job-workers=0".into()], ..Default::default() }).await;
    let server = Server::start(&probe.database_url, &probe.emulator.url(), &[], &[]);
    let http = reqwest::Client::new();
    for q in [
        "{ __typename @foo }",
        "query Q @foo { __typename }",
        "query Q($a: Boolean @foo) { __typename @include(if: $a) }",
        "{ ...F @foo } fragment F on Query { __typename }",
        "{ ...F } fragment F on Query @foo { __typename }",
        "{ ... @foo { __typename } }",
        "{ ... on Query @foo { __typename } }",
        "{ __typename @include(if: true) @foo(x: 1) }",
    ] {
        let (_, body) = post_query(&http, &server, json!({"query": q})).await;
        assert_eq!(code(&body).as_deref(), Some("GRAPHQL_VALIDATION_FAILED"), "{q}: {body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("\"@foo\""), "{q}: {body}");
        assert!(body.get("data").is_none_or(Value::is_null), "{q}: {body}");
    }
    let (_, body) = post_query(
        &http,
        &server,
        json!({"query": "{ a: __typename @include(if: true) b: __typename @skip(if: true) }"}),
    )
    .await;
    assert_eq!(body["data"], json!({"a": "Query"}), "{body}");
}

/// Found by the `graphql_prepare` fuzz target: a variable of a type the schema does not define,
/// with a list default value, panicked inside async-graphql's validation (`Type \`Ynt\` not
/// defined`), before its own check of type names answered. Refused in the guardrails now, over
/// both transports that take documents.
#[tokio::test]
async fn a_variable_of_an_undefined_type_is_refused_not_a_panic() {
    let app = TestApp::spawn_with(Options { args: vec!["--job-workers=0".into()], ..Default::default() }).await;
    let http = reqwest::Client::new();
    let token = app.token("undefined-type");
    let server = Server::start(&app.database_url, &app.emulator.url(), &[], &[]);
    let found = [
        "query($a: [[Ynt!]!] = [[1]], $b: In = {x: {y: [2]}}) @d(x: [[[3]]]) { a }",
        "query($a: [[Ynt!]!] = [[1]]) { __typename }",
        "query($a: [Nope] = [{x: 1}]) { __typename }",
        "query($a: PlaidBankAccount = [1]) { __typename }",
    ];
    for q in found {
        let (status, b) = post_query(&http, &server, json!({"query": q})).await;
        assert_eq!(code(&b).as_deref(), Some("GRAPHQL_VALIDATION_FAILED"), "{status} {b}");
        let mut socket = Socket::connect(&server.graphql, &token).await;
        socket.subscribe("1", &q.replacen("query", "subscription", 1), json!({})).await;
        let answer = socket.recv().await.expect("an answer on the socket");
        assert_eq!(answer["payload"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED", "{answer}");
    }
    still_serving(&http, &server, &token).await;
}
