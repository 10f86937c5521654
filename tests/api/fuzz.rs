//! Property-based fuzzing of the request path, from raw body to response, over real HTTP:
//! whatever bytes, JSON or GraphQL-shaped text a client sends, the server answers with a
//! status it documents and a JSON body whose every error has a code, never a 500, and keeps
//! serving. Bounded: `PROPTEST_CASES` cases (256 by default) per strategy.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::helpers::*;

/// Pieces of GraphQL, some of them hostile, strung together at random.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "...",
    "fragment F on Query",
    "on",
    "query",
    "mutation",
    "subscription",
    "$v",
    ":",
    "Int",
    "String!",
    "!",
    "=",
    "\"",
    "\"\"\"",
    "#",
    "\n",
    "@include(if: true)",
    "@skip(if: $v)",
    "__typename",
    "__schema { types { name } }",
    "__type(name: \"Query\") { name }",
    "getPlaidBankAccounts",
    "{ bankAccountId }",
    "getPlaidBankTransactions(input: {paginate: {limit: 1}})",
    "{ totalCount }",
    "refreshPlaidBankConnections",
    "input:",
    "1",
    "-1",
    "1.5e308",
    "true",
    "null",
    ",",
    "a:",
    "...F",
    "\\u0000",
    "\u{0}",
    "é",
    "𝔘",
    "[[[[",
    "]]]]",
    "{{{{",
    "}}}}",
    "\"\\",
    "$",
    "&",
    "|",
];

fn graphql_text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..120).prop_map(|t| t.join(" "))
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request body: raw bytes, any JSON, or a GraphQL request with odd parts.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (graphql_text(), prop::option::of(json_value()), prop::option::of(".{0,80}")).prop_map(|(q, vars, op)| {
            let mut r = json!({"query": q});
            if let Some(v) = vars {
                r["variables"] = v;
            }
            if let Some(o) = op {
                r["operationName"] = json!(o);
            }
            serde_json::to_vec(&r).unwrap()
        }),
    ]
}

const DOCUMENTED: &[u16] = &[200, 400, 401, 405, 406, 408, 413, 415, 429];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_request_body_gets_a_documented_answer_and_the_server_keeps_serving() {
    let app = TestApp::spawn().await;
    let token = app.token("fuzz");
    let handle = tokio::runtime::Handle::current();
    let headers = [
        vec![("content-type", "application/json".to_string())],
        vec![("content-type", "application/json".to_string()), ("authorization", format!("Bearer {token}"))],
        vec![("content-type", "application/json".to_string()), ("accept", "application/graphql-response+json".into())],
        vec![("content-type", "text/plain".to_string())],
    ];
    let mut runner = TestRunner::new(Config { failure_persistence: None, ..Config::default() });
    let strategy = (body(), 0..headers.len());
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |(body, h)| {
            let (status, text) = handle.block_on(async {
                let mut req = app.http.post(&app.graphql).body(body.clone());
                for (k, v) in &headers[h] {
                    req = req.header(*k, v.as_str());
                }
                let resp = req.send().await.expect("the server answers");
                let status = resp.status().as_u16();
                (status, resp.text().await.expect("a whole body"))
            });
            prop_assert!(
                DOCUMENTED.contains(&status),
                "status {} for {:?}: {}",
                status,
                String::from_utf8_lossy(&body),
                text
            );
            let v: Value =
                serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {text}")))?;
            prop_assert!(v.get("data").is_some() || v.get("errors").is_some(), "{}", text);
            for e in v["errors"].as_array().into_iter().flatten() {
                let code = e["extensions"]["code"].as_str().unwrap_or_default();
                prop_assert!(!code.is_empty(), "an error without a code: {}", text);
                prop_assert!(
                    code != "INTERNAL_SERVER_ERROR",
                    "an internal error for {:?}: {}",
                    String::from_utf8_lossy(&body),
                    text
                );
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let r = app.http.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
