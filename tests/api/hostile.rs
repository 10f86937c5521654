//! Attacks by anonymous clients, each reproduced against a real `bankgraph serve` process (a
//! crash there would take a test binary down with it): the process must refuse them and keep
//! answering everyone else.

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

/// The process still answers `/healthz` within 100 ms and a normal query at once.
async fn still_serving(http: &reqwest::Client, server: &Server, token: &str) {
    let started = Instant::now();
    let r = http.get(format!("{}/healthz", base(server))).send().await.expect("healthz answers");
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(100), "healthz took {:?}", started.elapsed());
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
