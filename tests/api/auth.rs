//! The auth matrix, for every operation.

use serde_json::{Value, json};

use crate::helpers::*;

const OPERATIONS: &[(&str, &str)] = &[
    ("getPlaidBankAccounts", "{ getPlaidBankAccounts { bankAccountId } }"),
    ("getPlaidBankBalances", "{ getPlaidBankBalances { bankAccountId } }"),
    ("getPlaidBankTransactions", "{ getPlaidBankTransactions { totalCount } }"),
    ("createPlaidLinkToken", "mutation { createPlaidLinkToken(input: {}) { linkToken } }"),
    (
        "completePlaidLink",
        "mutation { completePlaidLink(input: {publicToken: \"public-sandbox-x\"}) { requiresAddress } }",
    ),
    ("refreshPlaidBankConnections", "mutation { refreshPlaidBankConnections { status } }"),
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

/// An HS256 token with the test secret and a hand-written protected header.
fn sign_with_header(claims: Value, header: Value) -> String {
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let input = format!("{}.{}", b64(&header), b64(&claims));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, JWT_SECRET.as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, input.as_bytes()));
    format!("{input}.{sig}")
}

#[tokio::test]
async fn every_operation_refuses_every_bad_credential_and_accepts_a_valid_one() {
    let app = TestApp::spawn_with(Options {
        args: vec!["--jwt-issuer".into(), "https://auth.example".into(), "--jwt-audience".into(), "bankgraph".into()],
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
        ("expired", Some(bearer(sign(with("exp", json!(now - 120)), JWT_SECRET))), "UNAUTHENTICATED"),
        (
            "wrong signature",
            Some(bearer(sign(good.clone(), "another-secret-another-secret-1234567"))),
            "UNAUTHENTICATED",
        ),
        ("wrong iss", Some(bearer(sign(with("iss", json!("https://evil.example")), JWT_SECRET))), "UNAUTHENTICATED"),
        ("wrong aud", Some(bearer(sign(with("aud", json!("other")), JWT_SECRET))), "UNAUTHENTICATED"),
        (
            "no exp",
            Some(bearer(sign(
                json!({"sub": "u1", "scope": "MANAGE_PAYMENT", "iss": "https://auth.example", "aud": "bankgraph"}),
                JWT_SECRET,
            ))),
            "UNAUTHENTICATED",
        ),
        ("no scope", Some(bearer(sign(with("scope", json!("READ_ONLY")), JWT_SECRET))), "FORBIDDEN"),
        ("not yet valid (nbf)", Some(bearer(sign(with("nbf", json!(now + 600)), JWT_SECRET))), "UNAUTHENTICATED"),
        (
            "issued in the future (iat)",
            Some(bearer(sign(with("iat", json!(now + 600)), JWT_SECRET))),
            "UNAUTHENTICATED",
        ),
        (
            "aud list without ours",
            Some(bearer(sign(with("aud", json!(["other", "x"])), JWT_SECRET))),
            "UNAUTHENTICATED",
        ),
        ("lives too long", Some(bearer(sign(with("exp", json!(now + 3 * 86400)), JWT_SECRET))), "UNAUTHENTICATED"),
        (
            "control character in sub",
            Some(bearer(sign(with("sub", json!("u1\u{0000}x")), JWT_SECRET))),
            "UNAUTHENTICATED",
        ),
        (
            "unknown crit",
            Some(bearer(sign_with_header(
                good.clone(),
                json!({"alg": "HS256", "typ": "JWT", "crit": ["exp-ext"], "exp-ext": 1}),
            ))),
            "UNAUTHENTICATED",
        ),
    ];
    for (op, query) in OPERATIONS {
        for (case, header, expected) in &cases {
            let headers: Vec<(&str, &str)> = header.iter().map(|h| ("authorization", h.as_str())).collect();
            let (status, resp_headers, body) = app.post_raw(&headers, json!({"query": query})).await;
            assert_eq!(code(&body).as_deref(), Some(*expected), "{op} / {case}: {body}");
            assert!(body["data"].is_null() || body["data"][op].is_null(), "{op} / {case}: no data leaks");
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
        // Valid: `scope` string or list, `scopes` array, `aud` a list that has ours, `nbf` past.
        for claims in [
            good.clone(),
            with("scope", json!(["READ", "MANAGE_PAYMENT"])),
            with("aud", json!(["other", "bankgraph"])),
            with("nbf", json!(now - 10)),
            with("iat", json!(now - 10)),
            // A clock a little ahead of ours, within the leeway.
            with("iat", json!(now + 3)),
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
            assert!(c.as_deref() != Some("UNAUTHENTICATED") && c.as_deref() != Some("FORBIDDEN"), "{op} valid: {body}");
            assert_eq!(status, 200, "{op} valid: {body}");
        }
    }
}

#[tokio::test]
async fn introspection_and_typename_need_no_token() {
    let app = TestApp::spawn().await;
    let (status, _, body) = app.post_raw(&[], json!({"query": "{ __schema { queryType { name } } __typename }"})).await;
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
    let (_, _, body) = app.post_raw(&[], json!({"query": "{ __schema { queryType { name } } }"})).await;
    assert!(body["data"].is_null(), "the schema is not served: {body}");
    assert_eq!(body["errors"][0]["message"], "Introspection is disabled on this server.");
    assert_eq!(code(&body).as_deref(), Some("GRAPHQL_VALIDATION_FAILED"));
}

/// A P-256 key pair: (PKCS#8 DER private key, SPKI PEM public key, JWK x, JWK y).
fn es256_key() -> (Vec<u8>, String, String, String) {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    // SubjectPublicKeyInfo for an uncompressed P-256 point.
    let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    spki.extend_from_slice(&point);
    let b64 = STANDARD.encode(&spki);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\n")
    );
    (pkcs8.as_ref().to_vec(), pem, URL_SAFE_NO_PAD.encode(&point[1..33]), URL_SAFE_NO_PAD.encode(&point[33..65]))
}

fn es256(der: &[u8], kid: Option<&str>, sub: &str) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = kid.map(str::to_string);
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &h,
        &json!({"sub": sub, "scope": "MANAGE_PAYMENT", "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_ec_der(der),
    )
    .unwrap()
}

const ME: &str = "{ getPlaidBankAccounts { bankAccountId } }";

#[tokio::test]
async fn an_es256_public_key_verifies_its_tokens_and_nothing_else() {
    let (der, pem, _, _) = es256_key();
    let dir = std::env::temp_dir().join(format!("bankgraph-pem-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("issuer.pem");
    std::fs::write(&path, &pem).unwrap();
    let app_args =
        vec!["--jwt-algorithm".to_string(), "ES256".into(), "--jwt-public-key-pem".into(), path.display().to_string()];
    let app = TestApp::spawn_with(Options { args: app_args, without_jwt_secret: true, ..Default::default() }).await;
    let ok = app.gql(Some(&es256(&der, None, "pem-user")), ME, json!({})).await;
    assert!(ok["errors"].is_null(), "{ok}");
    let (other, _, _, _) = es256_key();
    let r = app.gql(Some(&es256(&other, None, "pem-user")), ME, json!({})).await;
    assert_eq!(code(&r).as_deref(), Some("UNAUTHENTICATED"), "another key's token");
    // Algorithm confusion: an HS256 token keyed with the public key's text.
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "pem-user", "scope": "MANAGE_PAYMENT", "exp": chrono::Utc::now().timestamp() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(pem.as_bytes()),
    )
    .unwrap();
    let r = app.gql(Some(&confused), ME, json!({})).await;
    assert_eq!(code(&r).as_deref(), Some("UNAUTHENTICATED"));
    let r = app.gql(Some(&app.token("hs-user")), ME, json!({})).await;
    assert_eq!(code(&r).as_deref(), Some("UNAUTHENTICATED"), "HS256 is not accepted once ES256 is pinned");
}

/// A JWKS endpoint serving one ES256 key as `k1`; every fetch after the first waits `slow`.
/// Returns its URL and the fetch counter.
async fn jwks_server(
    x: &str,
    y: &str,
    slow: std::time::Duration,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = fetches.clone();
    let jwks =
        json!({"keys": [{"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": "k1", "alg": "ES256", "use": "sig"}]});
    let server = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (counter, jwks) = (counter.clone(), jwks.clone());
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) > 0 {
                    tokio::time::sleep(slow).await;
                }
                axum::Json(jwks)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, server).await });
    (url, fetches)
}

#[tokio::test]
async fn jwks_keys_are_cached_and_refetched_on_an_unknown_kid() {
    use std::sync::atomic::Ordering;
    let (der, _, x, y) = es256_key();
    let (url, fetches) = jwks_server(&x, &y, std::time::Duration::ZERO).await;
    let app = TestApp::spawn_with(Options {
        args: vec!["--jwks-url".into(), url, "--jwt-algorithm".into(), "ES256".into()],
        without_jwt_secret: true,
        ..Default::default()
    })
    .await;
    for _ in 0..3 {
        let r = app.gql(Some(&es256(&der, Some("k1"), "jwks-user")), ME, json!({})).await;
        assert!(r["errors"].is_null(), "{r}");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the key set is cached");
    let r = app.gql(Some(&es256(&der, Some("k9"), "jwks-user")), ME, json!({})).await;
    assert_eq!(code(&r).as_deref(), Some("UNAUTHENTICATED"));
    let r = app.gql(Some(&es256(&der, None, "jwks-user")), ME, json!({})).await;
    assert_eq!(code(&r).as_deref(), Some("UNAUTHENTICATED"), "a JWKS token needs a kid");
    // The unknown kid refetched once; a flood of unknown kids does not hammer the issuer.
    let r = app.gql(Some(&es256(&der, Some("k10"), "jwks-user")), ME, json!({})).await;
    assert_eq!(code(&r).as_deref(), Some("UNAUTHENTICATED"));
    assert!(fetches.load(Ordering::SeqCst) <= 2, "refetches are rate limited");
}

#[tokio::test]
async fn a_slow_jwks_refetch_for_a_bogus_kid_never_stalls_callers_with_a_known_key() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let (der, _, x, y) = es256_key();
    // Every fetch after the first is slow.
    let (url, fetches) = jwks_server(&x, &y, std::time::Duration::from_secs(3)).await;
    let good = es256(&der, Some("k1"), "jwks-user");
    let app = Arc::new(
        TestApp::spawn_with(Options {
            args: vec![
                "--jwks-url".into(),
                url,
                "--jwt-algorithm".into(),
                "ES256".into(),
                "--jwks-min-refresh-seconds=1".into(),
            ],
            without_jwt_secret: true,
            ..Default::default()
        })
        .await,
    );
    assert!(app.gql(Some(&good), ME, json!({})).await["errors"].is_null());
    // Past the refetch interval, so the first bogus kid may refetch (slowly).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let bogus: Vec<_> = (0..8)
        .map(|i| {
            let (app, token) = (app.clone(), es256(&der, Some(&format!("bogus-{i}")), "x"));
            tokio::spawn(async move { app.gql(Some(&token), ME, json!({})).await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r = app.gql(Some(&good), ME, json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
    assert!(bogus.iter().any(|b| !b.is_finished()), "the genuine caller did not wait for the refetch");
    for b in bogus {
        assert_eq!(code(&b.await.unwrap()).as_deref(), Some("UNAUTHENTICATED"));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "eight bogus kids: one refetch");
}

#[tokio::test]
async fn the_token_command_mints_a_token_the_server_accepts() {
    let app = TestApp::spawn().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bankgraph"))
        .args([
            "token",
            "--sub",
            "cli-user",
            "--ttl",
            "120",
            "--database-url",
            &app.database_url,
            "--jwt-secret",
            JWT_SECRET,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let r = app.gql(Some(&token), ME, json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
}
