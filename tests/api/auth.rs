//! The auth matrix, for every operation.

use serde_json::{Value, json};

use crate::helpers::*;

const OPERATIONS: &[(&str, &str)] = &[
    ("getPlaidBankAccounts", "{ getPlaidBankAccounts { bankAccountId } }"),
    ("getPlaidBankBalances", "{ getPlaidBankBalances { bankAccountId } }"),
    (
        "getPlaidBankTransactions",
        "{ getPlaidBankTransactions { totalCount } }",
    ),
    (
        "createPlaidLinkToken",
        "mutation { createPlaidLinkToken(input: {}) { linkToken } }",
    ),
    (
        "completePlaidLink",
        "mutation { completePlaidLink(input: {publicToken: \"public-sandbox-x\"}) { requiresAddress } }",
    ),
    (
        "refreshPlaidBankConnections",
        "mutation { refreshPlaidBankConnections { status } }",
    ),
    (
        "createPlaidLinkAddress",
        "mutation { createPlaidLinkAddress(input: {bankInstitutionAuthId: \"x\", address: {streetAddressLine1: \"1 Main St\", city: \"NYC\", state: \"NY\", postalCode: \"10001\", country: \"US\"}}) { addressId } }",
    ),
    (
        "removePlaidBankInstitution",
        "mutation { removePlaidBankInstitution(input: {bankInstitutionAuthId: \"x\"}) { removed } }",
    ),
];

fn sign(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn every_operation_refuses_every_bad_credential_and_accepts_a_valid_one() {
    let app = TestApp::spawn_with(Options {
        args: vec![
            "--jwt-issuer".into(),
            "https://auth.example".into(),
            "--jwt-audience".into(),
            "bankgraph".into(),
        ],
        ..Default::default()
    })
    .await;
    let now = chrono::Utc::now().timestamp();
    let good = json!({"sub": "u1", "scope": "MANAGE_PAYMENT", "exp": now + 600, "iss": "https://auth.example", "aud": "bankgraph"});
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let bearer = |t: String| format!("Bearer {t}");
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no header", None, "UNAUTHENTICATED"),
        ("basic", Some("Basic dXNlcjpwYXNz".into()), "UNAUTHENTICATED"),
        ("other scheme", Some("Digest abc".into()), "UNAUTHENTICATED"),
        ("malformed", Some("Bearer not.a.jwt".into()), "UNAUTHENTICATED"),
        (
            "expired",
            Some(bearer(sign(with("exp", json!(now - 120)), JWT_SECRET))),
            "UNAUTHENTICATED",
        ),
        (
            "wrong signature",
            Some(bearer(sign(good.clone(), "another-secret-another-secret-1234567"))),
            "UNAUTHENTICATED",
        ),
        (
            "wrong iss",
            Some(bearer(sign(with("iss", json!("https://evil.example")), JWT_SECRET))),
            "UNAUTHENTICATED",
        ),
        (
            "wrong aud",
            Some(bearer(sign(with("aud", json!("other")), JWT_SECRET))),
            "UNAUTHENTICATED",
        ),
        (
            "no exp",
            Some(bearer(sign(
                json!({"sub": "u1", "scope": "MANAGE_PAYMENT", "iss": "https://auth.example", "aud": "bankgraph"}),
                JWT_SECRET,
            ))),
            "UNAUTHENTICATED",
        ),
        (
            "no scope",
            Some(bearer(sign(with("scope", json!("READ_ONLY")), JWT_SECRET))),
            "FORBIDDEN",
        ),
    ];
    for (op, query) in OPERATIONS {
        for (case, header, expected) in &cases {
            let headers: Vec<(&str, &str)> = header.iter().map(|h| ("authorization", h.as_str())).collect();
            let (status, resp_headers, body) = app.post_raw(&headers, json!({"query": query})).await;
            assert_eq!(code(&body).as_deref(), Some(*expected), "{op} / {case}: {body}");
            assert!(
                body["data"].is_null() || body["data"][op].is_null(),
                "{op} / {case}: no data leaks"
            );
            if *expected == "UNAUTHENTICATED" {
                assert_eq!(status, 401, "{op} / {case}");
                assert_eq!(resp_headers.get("www-authenticate").unwrap(), "Bearer", "{op} / {case}");
            } else {
                assert_eq!(status, 200, "{op} / {case}");
            }
            if *case == "basic" {
                let msg = body["errors"][0]["message"].as_str().unwrap();
                assert!(msg.contains("Bearer"), "the Basic refusal names Bearer: {msg}");
            }
        }
        // Valid: `scope` string or `scopes` array.
        for claims in [
            good.clone(),
            with("scopes", json!(["MANAGE_PAYMENT"]))
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.remove("scope");
                    Value::Object(o)
                })
                .unwrap(),
        ] {
            let h = bearer(sign(claims, JWT_SECRET));
            let (status, _, body) = app.post_raw(&[("authorization", &h)], json!({"query": query})).await;
            let c = code(&body);
            assert!(
                c.as_deref() != Some("UNAUTHENTICATED") && c.as_deref() != Some("FORBIDDEN"),
                "{op} valid: {body}"
            );
            assert_eq!(status, 200, "{op} valid: {body}");
        }
    }
}

#[tokio::test]
async fn introspection_and_typename_need_no_token() {
    let app = TestApp::spawn().await;
    let (status, _, body) = app
        .post_raw(&[], json!({"query": "{ __schema { queryType { name } } __typename }"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");
    assert_eq!(body["data"]["__typename"], "Query");
}

#[tokio::test]
async fn introspection_can_be_switched_off() {
    let app = TestApp::spawn_with(Options {
        args: vec!["--graphql-introspection".into(), "false".into()],
        ..Default::default()
    })
    .await;
    let (_, _, body) = app
        .post_raw(&[], json!({"query": "{ __schema { queryType { name } } }"}))
        .await;
    assert!(body["data"]["__schema"].is_null(), "the schema is not served: {body}");
}
