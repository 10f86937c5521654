#![allow(clippy::unwrap_used)]
//! The Plaid client against the emulator, over real HTTP on loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use bankgraph::emulator::{EmulatorConfig, RunningEmulator};
use bankgraph::plaid::wire::{SandboxPublicTokenCreateOptions, SandboxPublicTokenCreateRequest, Transaction};
use bankgraph::plaid::{
    ErrorClass, KeyLookupPolicy, PlaidClient, PlaidClientConfig, PlaidError, TransactionsPaging, WebhookRejection,
    WebhookVerifier,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::mpsc;

struct TestEmulator {
    running: RunningEmulator,
    http: reqwest::Client,
}

impl TestEmulator {
    async fn start(transactions: usize) -> Self {
        bankgraph::telemetry::init_for_tests();
        let mut cfg = EmulatorConfig { transactions_per_item: transactions, ..EmulatorConfig::default() };
        cfg.webhook_policy.retry_delay = Duration::from_millis(50);
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        TestEmulator { running: RunningEmulator::start(cfg, addr).await.unwrap(), http: reqwest::Client::new() }
    }

    fn url(&self) -> String {
        self.running.url()
    }

    fn config(&self) -> PlaidClientConfig {
        let mut cfg = PlaidClientConfig::new(
            self.url().parse().unwrap(),
            bankgraph::emulator::DEFAULT_CLIENT_ID,
            SecretString::from(bankgraph::emulator::DEFAULT_SECRET),
        );
        cfg.backoff_base = Duration::from_millis(10);
        cfg.backoff_max = Duration::from_millis(40);
        cfg.timeout = Duration::from_secs(5);
        cfg
    }

    fn client(&self) -> PlaidClient {
        PlaidClient::new(self.config()).unwrap()
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}{path}", self.url())).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.url())).send().await.unwrap().json().await.unwrap()
    }

    async fn fault(&self, endpoint: &str, fault: Value) {
        let mut body = json!({"endpoint": endpoint});
        body.as_object_mut().unwrap().extend(fault.as_object().unwrap().clone());
        self.control("/emulator/faults", body).await;
    }

    /// A linked item: (access token, item id).
    async fn item(&self, client: &PlaidClient, webhook: Option<String>) -> (SecretString, String) {
        let public = client
            .sandbox_public_token_create(&SandboxPublicTokenCreateRequest {
                institution_id: "ins_109508".into(),
                initial_products: vec!["transactions".into(), "auth".into()],
                options: Some(SandboxPublicTokenCreateOptions { webhook, ..Default::default() }),
            })
            .await
            .unwrap();
        let ex = client.item_public_token_exchange(&public).await.unwrap();
        (ex.access_token, ex.item_id)
    }
}

fn api_code(e: &PlaidError) -> &str {
    e.code().unwrap_or("<none>")
}

#[tokio::test]
async fn the_client_reads_accounts_and_syncs_the_whole_history_across_pages() {
    let emu = TestEmulator::start(1234).await;
    let client = emu.client();
    let (token, item_id) = emu.item(&client, None).await;
    let accounts = client.accounts_get(&token, None).await.unwrap();
    assert_eq!(accounts.item.item_id, item_id);
    let checking = accounts.accounts.iter().find(|a| a.subtype.as_deref() == Some("checking")).unwrap();
    assert_eq!(checking.balances.available.unwrap().to_string(), "100");
    let k401 = accounts.accounts.iter().find(|a| a.subtype.as_deref() == Some("401k")).unwrap();
    assert_eq!(k401.balances.current.unwrap().to_string(), "23631.9805", "amounts cross the wire exactly");

    let mut set: HashMap<String, Transaction> = HashMap::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let page = client.transactions_sync(&token, Some(&cursor), 500).await.unwrap();
        pages += 1;
        for t in page.added.into_iter().chain(page.modified) {
            set.insert(t.transaction_id.clone(), t);
        }
        for r in page.removed {
            set.remove(&r.transaction_id);
        }
        cursor = page.next_cursor;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(pages, 3);
    let upstream = emu.get(&format!("/emulator/items/{item_id}/transactions")).await;
    let upstream: Vec<Transaction> = serde_json::from_value(upstream["transactions"].clone()).unwrap();
    assert_eq!(set.len(), upstream.len());
    for t in &upstream {
        assert_eq!(set.get(&t.transaction_id), Some(t));
    }
}

#[tokio::test]
async fn every_error_class_comes_back_typed_with_plaids_fields() {
    let emu = TestEmulator::start(20).await;
    let client = emu.client();
    let (token, _) = emu.item(&client, None).await;

    // An expired public token: the user must link again.
    let public = client
        .sandbox_public_token_create(&SandboxPublicTokenCreateRequest {
            institution_id: "ins_109508".into(),
            initial_products: vec!["transactions".into()],
            options: None,
        })
        .await
        .unwrap();
    emu.control("/emulator/clock/advance", json!({"seconds": 31 * 60})).await;
    let e = client.item_public_token_exchange(&public).await.unwrap_err();
    assert_eq!(api_code(&e), "INVALID_PUBLIC_TOKEN");
    assert_eq!(e.class(), ErrorClass::InvalidInput);
    let body = e.body().unwrap();
    assert_eq!((body.error_type.as_str(), e.status()), ("INVALID_INPUT", Some(400)));
    assert!(body.request_id.as_deref().is_some_and(|r| r.len() == 15));

    // Rate limited: 429, never retried.
    emu.fault("/accounts/get", json!({"kind": "rate_limit", "times": 1})).await;
    let e = client.accounts_get(&token, None).await.unwrap_err();
    assert_eq!((api_code(&e), e.status(), e.class()), ("ACCOUNTS_LIMIT", Some(429), ErrorClass::RateLimited));
    assert!(client.accounts_get(&token, None).await.is_ok());

    // Login required: the user must go through update mode.
    client.sandbox_item_reset_login(&token).await.unwrap();
    let e = client.accounts_get(&token, None).await.unwrap_err();
    assert_eq!((api_code(&e), e.class()), ("ITEM_LOGIN_REQUIRED", ErrorClass::UserActionRequired));
    let item = client.item_get(&token).await.unwrap().item;
    assert_eq!(item.error.unwrap().error_code, "ITEM_LOGIN_REQUIRED", "/item/get reports the error in item.error");

    // Removed: the item is gone.
    client.item_remove(&token).await.unwrap();
    let e = client.item_get(&token).await.unwrap_err();
    assert_eq!((api_code(&e), e.class()), ("ITEM_NOT_FOUND", ErrorClass::ItemGone));
    let e =
        client.item_get(&SecretString::from("access-sandbox-8ab976e6-64bc-4b38-98f7-731e7a349970")).await.unwrap_err();
    assert_eq!((api_code(&e), e.class()), ("INVALID_ACCESS_TOKEN", ErrorClass::ItemGone));

    // Mutation during pagination: restart the sync loop.
    let (token, item_id) = emu.item(&client, None).await;
    let first = client.transactions_sync(&token, None, 5).await.unwrap();
    assert!(first.has_more);
    emu.control(&format!("/emulator/items/{item_id}/transactions/advance"), json!({})).await;
    let e = client.transactions_sync(&token, Some(&first.next_cursor), 5).await.unwrap_err();
    assert_eq!((api_code(&e), e.class()), ("TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION", ErrorClass::RestartSync));

    // Institution down: retry later.
    emu.fault("/item/get", json!({"kind": "plaid_error", "error_code": "INSTITUTION_DOWN", "times": 1})).await;
    let e = client.item_get(&token).await.unwrap_err();
    assert_eq!((api_code(&e), e.class()), ("INSTITUTION_DOWN", ErrorClass::Unavailable));

    // Wrong keys: configuration, never retried.
    let mut cfg = emu.config();
    cfg.secret = SecretString::from("wrong");
    let e = PlaidClient::new(cfg).unwrap().item_get(&token).await.unwrap_err();
    assert_eq!((api_code(&e), e.class()), ("INVALID_API_KEYS", ErrorClass::Configuration));
    assert!(!e.to_string().contains("wrong"), "errors never carry the secret");
}

#[tokio::test]
async fn a_500_then_success_is_retried_transparently_but_a_persistent_500_is_not_forever() {
    let emu = TestEmulator::start(5).await;
    let client = emu.client();
    let (token, _) = emu.item(&client, None).await;

    emu.fault("/accounts/get", json!({"kind": "http_error", "status": 500, "times": 1})).await;
    assert!(client.accounts_get(&token, None).await.is_ok(), "one 500, then success");

    emu.fault("/item/get", json!({"kind": "http_error", "status": 500})).await;
    let e = client.item_get(&token).await.unwrap_err();
    assert_eq!((api_code(&e), e.status(), e.class()), ("INTERNAL_SERVER_ERROR", Some(500), ErrorClass::Unavailable));
    emu.http.delete(format!("{}/emulator/faults", emu.url())).send().await.unwrap();

    // The public-token exchange is single use, so an ambiguous failure is never retried.
    let public = client
        .sandbox_public_token_create(&SandboxPublicTokenCreateRequest {
            institution_id: "ins_109512".into(),
            initial_products: vec!["auth".into()],
            options: None,
        })
        .await
        .unwrap();
    emu.fault("/item/public_token/exchange", json!({"kind": "http_error", "status": 503, "times": 1})).await;
    let e = client.item_public_token_exchange(&public).await.unwrap_err();
    assert_eq!(api_code(&e), "PLANNED_MAINTENANCE");
    assert!(client.item_public_token_exchange(&public).await.is_ok(), "the token was not spent by the failed call");
}

#[tokio::test]
async fn timeouts_and_dropped_connections_are_typed_and_retried_where_safe() {
    let emu = TestEmulator::start(5).await;
    let client = emu.client();
    let (token, _) = emu.item(&client, None).await;

    let mut cfg = emu.config();
    cfg.timeout = Duration::from_millis(200);
    cfg.max_retries = 1;
    let impatient = PlaidClient::new(cfg).unwrap();
    emu.fault("/item/get", json!({"kind": "latency", "ms": 1000})).await;
    let started = std::time::Instant::now();
    let e = impatient.item_get(&token).await.unwrap_err();
    assert!(matches!(e, PlaidError::Timeout { attempts: 2, .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_millis(900), "the timeout cut the wait short");
    emu.http.delete(format!("{}/emulator/faults", emu.url())).send().await.unwrap();

    emu.fault("/accounts/get", json!({"kind": "drop_connection", "times": 1})).await;
    assert!(client.accounts_get(&token, None).await.is_ok(), "a dropped connection is retried");
    emu.fault("/accounts/get", json!({"kind": "drop_connection"})).await;
    let e = client.accounts_get(&token, None).await.unwrap_err();
    assert!(matches!(e, PlaidError::Transport { attempts: 3, .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Unavailable);
    assert!(!e.to_string().contains("127.0.0.1"), "no upstream URL in the error: {e}");
}

#[tokio::test]
async fn the_proxy_flavour_needs_its_headers_pages_by_page_and_fills_placeholders() {
    let emu = TestEmulator::start(130).await;
    let direct = emu.client();
    let (token, item_id) = emu.item(&direct, None).await;

    let mut cfg = emu.config();
    cfg.base_url = format!("{}/v1/plaid", emu.url()).parse().unwrap();
    let no_headers = PlaidClient::new(cfg.clone()).unwrap();
    let e = no_headers.accounts_get(&token, None).await.unwrap_err();
    assert_eq!(api_code(&e), "INVALID_API_KEYS");

    cfg.extra_headers = vec![
        ("Fuse-Client-Id".into(), SecretString::from(bankgraph::emulator::DEFAULT_PROXY_CLIENT_ID)),
        ("Fuse-Api-Key".into(), SecretString::from(bankgraph::emulator::DEFAULT_PROXY_API_KEY)),
    ];
    cfg.transactions_paging = TransactionsPaging::Page;
    cfg.transactions_get_max_count = 100;
    let proxy = PlaidClient::new(cfg).unwrap();
    let accounts = proxy.accounts_get(&token, None).await.unwrap();
    assert_eq!(accounts.item.item_id, item_id, "item_id is real");
    assert_eq!(accounts.item.update_type, "fuse_placeholder", "the rest of item is a placeholder");
    assert_eq!(accounts.accounts[0].name, "Plaid Checking");

    let balances = proxy.accounts_balance_get(&token, None).await.unwrap();
    assert_eq!(balances.accounts[0].name, "fuse_placeholder", "only balances are real in balance/get");
    assert_eq!(balances.accounts[0].balances.available.unwrap().to_string(), "100");

    let start = chrono::Utc::now().date_naive() - chrono::Duration::days(800);
    let end = chrono::Utc::now().date_naive() + chrono::Duration::days(1);
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page = proxy.transactions_get(&token, start, end, 500, offset).await.unwrap();
        assert!(page.transactions.len() <= 100, "count is capped at 100 behind the proxy");
        offset += page.transactions.len() as u32;
        seen.extend(page.transactions.into_iter().map(|t| t.transaction_id));
        if offset >= page.total_transactions {
            break;
        }
    }
    assert_eq!(seen.len(), 130);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 130, "pages do not overlap");
}

/// A webhook receiver on loopback that hands over raw requests.
async fn receiver() -> (String, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

fn with_header(headers: &HeaderMap, jwt: &str) -> HeaderMap {
    let mut h = headers.clone();
    h.insert("plaid-verification", jwt.parse().unwrap());
    h
}

fn replace_jwt_header(jwt: &str, header: Value) -> String {
    let mut parts: Vec<String> = jwt.split('.').map(str::to_string).collect();
    parts[0] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
    parts.join(".")
}

#[tokio::test]
async fn only_a_genuine_fresh_untampered_webhook_verifies() {
    let emu = TestEmulator::start(10).await;
    let client = emu.client();
    let (url, mut hooks) = receiver().await;
    let (_token, item_id) = emu.item(&client, Some(url)).await;
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), hooks.recv()).await.unwrap().unwrap();
    let envelope: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(envelope["item_id"], item_id);
    let jwt = headers.get("plaid-verification").unwrap().to_str().unwrap().to_string();
    let verifier = WebhookVerifier::new(client.clone());

    // Valid.
    let ok = verifier.verify(&headers, &body).await.unwrap();
    assert!(!ok.kid.is_empty());

    // Tampered body.
    let mut tampered = body.to_vec();
    let at = tampered.iter().position(|b| *b == b'U').unwrap();
    tampered[at] = b'X';
    assert!(matches!(verifier.verify(&headers, &tampered).await, Err(WebhookRejection::BodyMismatch)));
    // The same JSON re-serialised differently does not match either.
    let compact = serde_json::to_vec(&envelope).unwrap();
    assert!(matches!(verifier.verify(&headers, &compact).await, Err(WebhookRejection::BodyMismatch)));

    // iat older than 5 minutes.
    let later = WebhookVerifier::new(client.clone()).with_clock(|| chrono::Utc::now().timestamp() + 301);
    assert!(matches!(later.verify(&headers, &body).await, Err(WebhookRejection::Stale { .. })));

    // Unknown kid.
    let unknown =
        replace_jwt_header(&jwt, json!({"alg": "ES256", "kid": "5cbb6f2b-d1a6-4b47-9b5a-f1f1c7a4a6c1", "typ": "JWT"}));
    assert!(matches!(
        verifier.verify(&with_header(&headers, &unknown), &body).await,
        Err(WebhookRejection::UnknownKey)
    ));

    // Wrong alg: an HS256 token, the classic algorithm-confusion attack.
    let kid = ok.kid.clone();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header { alg: jsonwebtoken::Algorithm::HS256, kid: Some(kid), ..Default::default() },
        &json!({"iat": chrono::Utc::now().timestamp(), "request_body_sha256": hex_sha(&body)}),
        &jsonwebtoken::EncodingKey::from_secret(b"public-key-as-secret"),
    )
    .unwrap();
    assert!(matches!(
        verifier.verify(&with_header(&headers, &hs), &body).await,
        Err(WebhookRejection::WrongAlgorithm(_))
    ));
    let none = replace_jwt_header(&jwt, json!({"alg": "none", "kid": ok.kid, "typ": "JWT"}));
    assert!(verifier.verify(&with_header(&headers, &none), &body).await.is_err());

    // Missing header.
    let mut bare = headers.clone();
    bare.remove("plaid-verification");
    assert!(matches!(verifier.verify(&bare, &body).await, Err(WebhookRejection::MissingHeader)));

    // A forged signature with the right kid.
    let mut parts: Vec<&str> = jwt.split('.').collect();
    let forged_sig = URL_SAFE_NO_PAD.encode([7u8; 64]);
    parts[2] = &forged_sig;
    assert!(matches!(
        verifier.verify(&with_header(&headers, &parts.join(".")), &body).await,
        Err(WebhookRejection::BadSignature)
    ));

    // After a key rotation, webhooks signed by the new key verify and the old key is refused.
    emu.control("/emulator/webhook_keys/rotate", json!({})).await;
    let fresh = WebhookVerifier::new(client.clone());
    assert!(matches!(fresh.verify(&headers, &body).await, Err(WebhookRejection::ExpiredKey)));
    emu.control(
        &format!("/emulator/items/{item_id}/webhook"),
        json!({"webhook_type": "ITEM", "webhook_code": "NEW_ACCOUNTS_AVAILABLE"}),
    )
    .await;
    loop {
        let (h, b) = tokio::time::timeout(Duration::from_secs(10), hooks.recv()).await.unwrap().unwrap();
        if serde_json::from_slice::<Value>(&b).unwrap()["webhook_code"] == "NEW_ACCOUNTS_AVAILABLE" {
            // The forged kid looked up above does not keep Plaid's new kid waiting.
            assert!(verifier.verify(&h, &b).await.is_ok(), "a new kid is fetched on first sight");
            break;
        }
    }
}

#[tokio::test]
async fn forged_kids_cost_a_few_key_lookups_a_minute_and_never_delay_a_genuine_webhook() {
    let emu = TestEmulator::start(10).await;
    let client = emu.client();
    let (url, mut hooks) = receiver().await;
    let (_token, _item) = emu.item(&client, Some(url)).await;
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), hooks.recv()).await.unwrap().unwrap();
    let jwt = headers.get("plaid-verification").unwrap().to_str().unwrap().to_string();
    let verifier = std::sync::Arc::new(WebhookVerifier::new(client.clone()));
    assert!(verifier.verify(&headers, &body).await.is_ok(), "the genuine key is cached");
    // Key lookups are slow now, and counted: a latency fault with a use budget counts calls.
    emu.fault("/webhook_verification_key/get", json!({"kind": "latency", "ms": 1500, "times": 1000})).await;
    let forged = |i: usize| {
        let kid = format!("00000000-0000-4000-8000-{i:012}");
        with_header(&headers, &replace_jwt_header(&jwt, json!({"alg": "ES256", "kid": kid, "typ": "JWT"})))
    };
    let mut attacks = Vec::new();
    for i in 0..8 {
        let (v, h, b) = (verifier.clone(), forged(i), body.clone());
        attacks.push(tokio::spawn(async move { v.verify(&h, &b).await }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The genuine webhook does not wait for the forged lookups.
    assert!(verifier.verify(&headers, &body).await.is_ok());
    assert!(attacks.iter().any(|a| !a.is_finished()), "the forged lookups were still in flight");
    for a in attacks {
        let r = a.await.unwrap();
        assert!(matches!(r, Err(WebhookRejection::UnknownKey | WebhookRejection::LookupThrottled)), "{r:?}");
    }
    // More forged kids, each new: no further calls, the never-seen budget is spent.
    for i in 8..24 {
        assert!(matches!(verifier.verify(&forged(i), &body).await, Err(WebhookRejection::LookupThrottled)));
    }
    let faults = emu.get("/emulator/faults").await;
    let left = faults["faults"].as_array().unwrap().iter().find_map(|f| f["times"].as_u64()).unwrap();
    // The genuine kid took one of the never-seen budget; the forged ones the rest, no more.
    let rest = u64::from(KeyLookupPolicy::default().burst.get()) - 1;
    assert_eq!(1000 - left, rest, "{rest} upstream key calls for 24 forged webhooks: {faults}");
}

#[tokio::test]
async fn a_failing_key_endpoint_is_asked_once_then_backed_off_and_a_failure_is_no_unknown_kid() {
    let emu = TestEmulator::start(10).await;
    let client = emu.client();
    let (url, mut hooks) = receiver().await;
    let (_token, _item) = emu.item(&client, Some(url)).await;
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), hooks.recv()).await.unwrap().unwrap();
    let jwt = headers.get("plaid-verification").unwrap().to_str().unwrap().to_string();
    let policy = KeyLookupPolicy {
        backoff_min: Duration::from_millis(300),
        backoff_max: Duration::from_secs(2),
        ..KeyLookupPolicy::default()
    };
    let verifier = WebhookVerifier::new(client.clone()).with_policy(&policy);
    // Plaid's key endpoint is down (500s), and counted.
    emu.fault("/webhook_verification_key/get", json!({"kind": "http_error", "status": 500, "times": 1000})).await;
    let r = verifier.verify(&headers, &body).await;
    assert!(matches!(r, Err(WebhookRejection::KeyUnavailable(_))), "a retryable answer: {r:?}");
    for i in 0..10 {
        let kid = format!("00000000-0000-4000-8000-{i:012}");
        let forged =
            with_header(&headers, &replace_jwt_header(&jwt, json!({"alg": "ES256", "kid": kid, "typ": "JWT"})));
        let r = verifier.verify(&forged, &body).await;
        assert!(matches!(r, Err(WebhookRejection::LookupThrottled)), "backing off, not unknown: {r:?}");
    }
    let r = verifier.verify(&headers, &body).await;
    assert!(matches!(r, Err(WebhookRejection::LookupThrottled)), "Plaid's own kid is not taken for unknown: {r:?}");
    let faults = emu.get("/emulator/faults").await;
    let left = faults["faults"].as_array().unwrap().iter().find_map(|f| f["times"].as_u64()).unwrap();
    let one_lookup = u64::from(emu.config().max_retries) + 1;
    assert_eq!(1000 - left, one_lookup, "one lookup (with the client's own retries) for 12 webhooks: {faults}");

    // Plaid is back: once the backoff has passed, its key is fetched and the webhook verifies.
    emu.http.delete(format!("{}/emulator/faults", emu.url())).send().await.unwrap();
    let started = std::time::Instant::now();
    loop {
        match verifier.verify(&headers, &body).await {
            Ok(_) => break,
            Err(WebhookRejection::LookupThrottled) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the key is fetched once Plaid answers: {e:?}"),
        }
    }
}

fn hex_sha(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(body))
}

#[tokio::test]
async fn a_failed_webhook_delivery_is_retried_twice_then_given_up() {
    let emu = TestEmulator::start(3).await;
    let client = emu.client();
    // Nothing listens on this port: every attempt fails.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", dead.local_addr().unwrap());
    drop(dead);
    let (_token, item_id) = emu.item(&client, Some(url)).await;
    let mut records = Vec::new();
    for _ in 0..100 {
        records = emu.get("/emulator/webhooks").await["webhooks"].as_array().unwrap().clone();
        if records.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(records.len(), 2, "INITIAL_UPDATE and HISTORICAL_UPDATE");
    for r in records {
        assert_eq!(r["item_id"], item_id);
        assert_eq!(r["attempts"], 3);
        assert_eq!(r["delivered"], false);
    }
}

#[tokio::test]
async fn production_rate_limits_allow_five_live_balance_calls_a_minute_per_item() {
    let emu = TestEmulator::start(3).await;
    let client = emu.client();
    let (token, _) = emu.item(&client, None).await;
    let (other, _) = emu.item(&client, None).await;
    emu.control("/emulator/settings", json!({"rate_limits": "production"})).await;
    for _ in 0..5 {
        client.accounts_balance_get(&token, None).await.unwrap();
    }
    let e = client.accounts_balance_get(&token, None).await.unwrap_err();
    assert_eq!((api_code(&e), e.status(), e.class()), ("BALANCE_LIMIT", Some(429), ErrorClass::RateLimited));
    assert!(client.accounts_balance_get(&other, None).await.is_ok(), "the limit is per item");
    assert!(client.accounts_get(&token, None).await.is_ok(), "and per endpoint");
}

#[tokio::test]
async fn the_client_follows_no_redirect_and_reads_no_oversized_body() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let elsewhere = Arc::new(AtomicUsize::new(0));
    let hits = elsewhere.clone();
    let big = "x".repeat(64 * 1024);
    let app = axum::Router::new()
        .route(
            "/item/get",
            axum::routing::post(|| async {
                (axum::http::StatusCode::TEMPORARY_REDIRECT, [("location", "/elsewhere")], "")
            }),
        )
        .route(
            "/elsewhere",
            axum::routing::post(move |body: Bytes| {
                let hits = hits.clone();
                async move {
                    hits.fetch_add(body.len().max(1), Ordering::SeqCst);
                    axum::Json(json!({}))
                }
            }),
        )
        .route("/accounts/get", axum::routing::post(move || async move { format!("{{\"pad\":\"{big}\"}}") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut cfg = PlaidClientConfig::new(url.parse().unwrap(), "id", SecretString::from("secret"));
    cfg.max_retries = 0;
    cfg.max_response_bytes = 16 * 1024;
    let client = PlaidClient::new(cfg).unwrap();
    let token = SecretString::from("access-sandbox-x");
    assert!(client.item_get(&token).await.is_err(), "a redirect is an error, not followed");
    assert_eq!(elsewhere.load(Ordering::SeqCst), 0, "the body (with the access token) went nowhere else");
    let e = client.accounts_get(&token, None).await.unwrap_err();
    assert!(format!("{e}").contains("larger than"), "{e}");
}

/// From the review of round two: a kid is remembered by the lookup gate (4,096 of them) and
/// sent to Plaid, so one of 300 KB from an anonymous sender would cost memory and a lookup.
/// Plaid's kids are UUIDs: anything longer than 64 bytes, or outside `[A-Za-z0-9_-]`, is
/// refused as malformed, before any lookup.
#[tokio::test]
async fn a_kid_that_is_no_plaid_kid_is_refused_before_any_lookup() {
    let emu = TestEmulator::start(10).await;
    let client = emu.client();
    let (url, mut hooks) = receiver().await;
    let (_token, _item) = emu.item(&client, Some(url)).await;
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), hooks.recv()).await.unwrap().unwrap();
    let jwt = headers.get("plaid-verification").unwrap().to_str().unwrap().to_string();
    let verifier = WebhookVerifier::new(client.clone());
    emu.fault("/webhook_verification_key/get", json!({"kind": "latency", "ms": 1, "times": 1000})).await;
    for kid in ["k".repeat(65), "a b".into(), "kid\n".into(), "é".into(), "../../x".into()] {
        let forged =
            with_header(&headers, &replace_jwt_header(&jwt, json!({"alg": "ES256", "kid": kid, "typ": "JWT"})));
        let r = verifier.verify(&forged, &body).await;
        assert!(matches!(r, Err(WebhookRejection::Malformed)), "{kid:?}: {r:?}");
    }
    let faults = emu.get("/emulator/faults").await;
    let left = faults["faults"].as_array().unwrap().iter().find_map(|f| f["times"].as_u64()).unwrap();
    assert_eq!(left, 1000, "no key was looked up: {faults}");
    // A UUID kid still verifies.
    assert!(verifier.verify(&headers, &body).await.is_ok());
}
