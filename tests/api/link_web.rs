//! Plaid Link in a browser, at the emulator's HTTP level: every step is checked (a page cannot
//! skip one), MFA rounds, account selection, single-use OAuth state ids bound to their token;
//! and the demo's two helpers (`/demo/token` only with the development secret,
//! `/demo/login-required` only on the caller's own items). The browser itself is tested by
//! tests/browser (Playwright).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn step(app: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    let r = app.http.post(format!("{}{path}", app.emulator_url)).json(&body).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A link token made at the emulator directly, with the fields the test needs.
async fn emulator_link_token(app: &TestApp, extra: Value) -> String {
    let mut body = json!({
        "client_id": bankgraph::emulator::DEFAULT_CLIENT_ID,
        "secret": bankgraph::emulator::DEFAULT_SECRET,
        "client_name": "bankgraph tests",
        "language": "en",
        "country_codes": ["US"],
        "user": {"client_user_id": "user-1"},
        "products": ["transactions"],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = app.emu_post("/link/token/create", body).await;
    r["link_token"].as_str().unwrap_or_else(|| panic!("{r}")).to_string()
}

async fn start(app: &TestApp, token: &str) -> String {
    let (s, b) = step(app, "/link/web/session", json!({"link_token": token})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["link_session_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_step_is_checked_and_mfa_rounds_must_all_be_answered() {
    let app = TestApp::spawn().await;
    let t = app.token("web-alice");
    let r = app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {}})).await;
    let link_token = r["data"]["createPlaidLinkToken"]["linkToken"].as_str().unwrap().to_string();

    let (s, b) = step(&app, "/link/web/session", json!({"link_token": "link-sandbox-unknown"})).await;
    assert_eq!((s, b["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_LINK_TOKEN")));
    let (s, b) = step(&app, "/link/web/session", json!({"link_token": link_token})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["update_mode"], false);
    assert!(b["institutions"].as_array().unwrap().iter().any(|i| i["name"] == "First Platypus Bank"));
    assert_eq!(b["request_id"].as_str().unwrap().len(), 15);
    let id = b["link_session_id"].as_str().unwrap().to_string();

    // Nothing can be skipped: no credentials before an institution, no finish before a login.
    let (s, _) = step(
        &app,
        "/link/web/credentials",
        json!({"link_session_id": id, "username": "user_good", "password": "pass_good"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = step(&app, "/link/web/accounts", json!({"link_session_id": id, "masks": ["0000"]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = step(&app, "/link/web/mfa", json!({"link_session_id": id, "answers": ["1234"]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (s, b) =
        step(&app, "/link/web/institution", json!({"link_session_id": id, "institution_id": "ins_109508"})).await;
    assert_eq!((s, b["next"].as_str()), (StatusCode::OK, Some("credentials")));
    let (s, b) = step(
        &app,
        "/link/web/credentials",
        json!({"link_session_id": id, "username": "user_bad", "password": "pass_good"}),
    )
    .await;
    assert_eq!((s, b["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_CREDENTIALS")));
    assert_eq!(b["display_message"], "The provided credentials were not correct. Please try again.");

    // Two rounds of one question each; the answer to round i, question j is answer_<i>_<j>.
    let (_, b) = step(
        &app,
        "/link/web/credentials",
        json!({"link_session_id": id, "username": "user_good", "password": "mfa_questions_2_1"}),
    )
    .await;
    assert_eq!(
        (b["next"].as_str(), b["mfa"]["mfa_type"].as_str(), b["mfa"]["rounds"].as_u64()),
        (Some("mfa"), Some("questions"), Some(2))
    );
    let (s, b) = step(&app, "/link/web/mfa", json!({"link_session_id": id, "answers": ["answer_1_0"]})).await;
    assert_eq!((s, b["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_MFA")));
    let (_, b) = step(&app, "/link/web/mfa", json!({"link_session_id": id, "answers": ["answer_0_0"]})).await;
    assert_eq!((b["next"].as_str(), b["mfa"]["round"].as_u64()), (Some("mfa"), Some(1)));
    let (s, done) = step(&app, "/link/web/mfa", json!({"link_session_id": id, "answers": ["answer_1_0"]})).await;
    assert_eq!((s, done["next"].as_str()), (StatusCode::OK, Some("connected")), "{done}");
    assert_eq!(done["metadata"]["link_session_id"], id.as_str());
    assert_eq!(done["metadata"]["accounts"].as_array().unwrap().len(), 9);

    // The public token is a real one: bankgraph completes the link with it.
    let public_token = done["public_token"].as_str().unwrap();
    let r = app.complete(&t, public_token, None).await;
    assert_eq!(r["data"]["completePlaidLink"]["bankAccounts"].as_array().unwrap().len(), 9, "{r}");

    // A finished session takes no further step.
    let (s, _) = step(&app, "/link/web/mfa", json!({"link_session_id": id, "answers": ["answer_1_0"]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Neither does a made-up one, nor a body that is not the step's.
    let (s, _) =
        step(&app, "/link/web/institution", json!({"link_session_id": "nope", "institution_id": "ins_109508"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = step(&app, "/link/web/institution", json!({"link_session_id": 7})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test]
async fn account_selection_shares_only_the_accounts_chosen() {
    let app = TestApp::spawn().await;
    let token = emulator_link_token(&app, json!({"link_customization_name": "account_selection"})).await;
    let id = start(&app, &token).await;
    step(&app, "/link/web/institution", json!({"link_session_id": id, "institution_id": "ins_109508"})).await;
    let (_, b) = step(
        &app,
        "/link/web/credentials",
        json!({"link_session_id": id, "username": "user_good", "password": "pass_good"}),
    )
    .await;
    assert_eq!(b["next"], "select_account", "{b}");
    let masks: Vec<&str> = b["accounts"].as_array().unwrap().iter().map(|a| a["mask"].as_str().unwrap()).collect();
    assert_eq!(masks.len(), 9);

    for bad in [json!([]), json!(["9999"])] {
        let (s, _) = step(&app, "/link/web/accounts", json!({"link_session_id": id, "masks": bad})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (s, done) = step(&app, "/link/web/accounts", json!({"link_session_id": id, "masks": ["0000", "3333"]})).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    let shared: Vec<&str> =
        done["metadata"]["accounts"].as_array().unwrap().iter().map(|a| a["mask"].as_str().unwrap()).collect();
    assert_eq!(shared, ["0000", "3333"]);
    // The item holds only those accounts, and its history only theirs.
    let item_id = done["item_id"].as_str().unwrap();
    let item = app.emu_get(&format!("/emulator/items/{item_id}")).await;
    let held: Vec<&str> = item["accounts"].as_array().unwrap().iter().map(|a| a["mask"].as_str().unwrap()).collect();
    assert_eq!(held, ["0000", "3333"], "{item}");
    let ids: Vec<&str> =
        item["accounts"].as_array().unwrap().iter().map(|a| a["account_id"].as_str().unwrap()).collect();
    let txs = app.emu_get(&format!("/emulator/items/{item_id}/transactions")).await;
    let txs = txs["transactions"].as_array().unwrap();
    assert!(!txs.is_empty() && txs.iter().all(|t| ids.contains(&t["account_id"].as_str().unwrap())));
    app.stop().await;
}

#[tokio::test]
async fn an_oauth_state_id_is_bound_to_its_token_and_used_once() {
    let app = TestApp::spawn().await;
    let redirect = "http://localhost:8000/demo";
    let token = emulator_link_token(&app, json!({"redirect_uri": redirect})).await;
    let other = emulator_link_token(&app, json!({"redirect_uri": redirect})).await;
    let id = start(&app, &token).await;
    let (_, b) =
        step(&app, "/link/web/institution", json!({"link_session_id": id, "institution_id": "ins_127287"})).await;
    assert_eq!((b["next"].as_str(), b["mode"].as_str()), (Some("oauth"), Some("redirect")), "{b}");
    let state = b["oauth_state_id"].as_str().unwrap().to_string();
    // OAuth institutions take no password.
    let (s, _) = step(
        &app,
        "/link/web/credentials",
        json!({"link_session_id": id, "username": "user_good", "password": "pass_good"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let page =
        app.http.get(format!("{}/link/oauth/bank?oauth_state_id={state}", app.emulator_url)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    assert!(page.text().await.unwrap().contains("Platypus OAuth Bank"));
    let back = format!("{redirect}?oauth_state_id={state}");

    // Back before the user answered at the bank: the user abandoned OAuth.
    let (s, b) = step(&app, "/link/web/session", json!({"link_token": token, "received_redirect_uri": back})).await;
    assert_eq!((s, b["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("INSUFFICIENT_CREDENTIALS")));

    let (s, b) = step(&app, "/link/oauth/authorize", json!({"oauth_state_id": state, "allow": true})).await;
    assert_eq!((s, b["redirect"].as_str()), (StatusCode::OK, Some(back.as_str())));
    let (s, b) = step(&app, "/link/oauth/authorize", json!({"oauth_state_id": state, "allow": true})).await;
    assert_eq!((s.as_u16(), b["error_code"].as_str()), (208, Some("OAUTH_STATE_ID_ALREADY_PROCESSED")));

    // Another token cannot take this login over.
    let (s, b) = step(&app, "/link/web/session", json!({"link_token": other, "received_redirect_uri": back})).await;
    assert_eq!((s, b["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("INCORRECT_LINK_TOKEN")));
    let (s, b) = step(
        &app,
        "/link/web/session",
        json!({"link_token": token, "received_redirect_uri": format!("{redirect}?oauth_state_id=unknown")}),
    )
    .await;
    assert_eq!((s, b["error_code"].as_str()), (StatusCode::NOT_FOUND, Some("OAUTH_STATE_ID_NOT_FOUND")));

    let (s, b) = step(&app, "/link/web/session", json!({"link_token": token, "received_redirect_uri": back})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["link_session_id"], id.as_str(), "the same Link session resumes");
    assert_eq!(b["resumed"]["next"], "connected");
    assert_eq!(b["resumed"]["metadata"]["institution"]["institution_id"], "ins_127287");
    let (s, b) = step(&app, "/link/web/session", json!({"link_token": token, "received_redirect_uri": back})).await;
    assert_eq!((s.as_u16(), b["error_code"].as_str()), (208, Some("OAUTH_STATE_ID_ALREADY_PROCESSED")));

    // A refusal at the bank ends in INSUFFICIENT_CREDENTIALS, in a popup (no redirect_uri) too.
    let popup = emulator_link_token(&app, json!({})).await;
    let id = start(&app, &popup).await;
    let (_, b) =
        step(&app, "/link/web/institution", json!({"link_session_id": id, "institution_id": "ins_127287"})).await;
    assert_eq!(b["mode"], "popup");
    let state = b["oauth_state_id"].as_str().unwrap();
    let (_, b) = step(&app, "/link/web/oauth_status", json!({"link_session_id": id})).await;
    assert_eq!(b["next"], "oauth_pending");
    let (_, b) = step(&app, "/link/oauth/authorize", json!({"oauth_state_id": state, "allow": false})).await;
    assert_eq!(b["redirect"], Value::Null);
    let (s, b) = step(&app, "/link/web/oauth_status", json!({"link_session_id": id})).await;
    assert_eq!((s, b["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("INSUFFICIENT_CREDENTIALS")));
    app.stop().await;
}

#[tokio::test]
async fn update_mode_relinks_the_tokens_own_item_at_its_own_institution() {
    let app = TestApp::spawn().await;
    let t = app.token("web-relinker");
    let done = app.link(&t).await;
    let item = done["platformItemId"].as_str().unwrap();
    app.emu_post(
        &format!("/emulator/items/{item}/webhook"),
        json!({"webhook_type": "ITEM", "webhook_code": "ERROR", "error_code": "ITEM_LOGIN_REQUIRED"}),
    )
    .await;
    let r = app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {"platformItemId": item}})).await;
    let token = r["data"]["createPlaidLinkToken"]["linkToken"].as_str().unwrap().to_string();
    let (_, b) = step(&app, "/link/web/session", json!({"link_token": token})).await;
    assert_eq!(b["update_mode"], true);
    assert_eq!(b["institution"]["institution_id"], "ins_109508");
    let id = b["link_session_id"].as_str().unwrap();
    let (s, _) =
        step(&app, "/link/web/institution", json!({"link_session_id": id, "institution_id": "ins_109509"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "update mode stays at the item's institution");
    step(&app, "/link/web/institution", json!({"link_session_id": id, "institution_id": "ins_109508"})).await;
    let (_, b) = step(
        &app,
        "/link/web/credentials",
        json!({"link_session_id": id, "username": "user_good", "password": "pass_good"}),
    )
    .await;
    assert_eq!(
        (b["next"].as_str(), b["update_mode"].as_bool(), b["item_id"].as_str()),
        (Some("connected"), Some(true), Some(item))
    );
    let r = app.complete(&t, b["public_token"].as_str().unwrap(), Some(item)).await;
    assert_eq!(r["data"]["completePlaidLink"]["platformItemId"], item, "{r}");
    app.stop().await;
}

/// `bankgraph serve` offline (no JWT setting, no Plaid keys, the in-process emulator) with these
/// extra flags: (public base URL, emulator URL, stop).
async fn offline(extra: &[&str]) -> (String, String, tokio::sync::oneshot::Sender<()>) {
    let db = fresh_database().await;
    let mut args: Vec<String> = [
        "--bind-addr",
        "127.0.0.1:0",
        "--internal-bind-addr",
        "127.0.0.1:0",
        "--database-url",
        &db,
        "--plaid-emulator-addr",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let app = bankgraph::app::App::build(settings(&args).resolve().unwrap()).await.unwrap();
    let base = format!("http://{}", app.public_addr());
    let emulator = app.emulator_url().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    (base, emulator, tx)
}

async fn demo_token(http: &reqwest::Client, base: &str, body: Value) -> (StatusCode, Value) {
    let r = http.post(format!("{base}/demo/token")).json(&body).send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn graphql(http: &reqwest::Client, base: &str, token: &str, query: &str, variables: Value) -> Value {
    let r = http
        .post(format!("{base}/api/v1/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

#[tokio::test]
async fn the_demo_mints_short_lived_demo_tokens_only_with_the_development_secret() {
    let http = reqwest::Client::new();
    let (base, emulator, stop) = offline(&[]).await;
    let page = http.get(format!("{base}/demo")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        csp.contains(&format!("script-src 'self' {emulator};")) && csp.contains(&format!("frame-src {emulator};")),
        "{csp}"
    );
    assert!(csp.contains("connect-src 'self';") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&format!("data-link-script=\"{emulator}/link/v2/stable/link-initialize.js\""))
            && html.contains("data-dev-sign-in=\"true\"")
    );
    assert_eq!(http.get(format!("{base}/demo/assets/demo.js")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(http.get(format!("{base}/demo/assets/nope.js")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    let (s, b) = demo_token(&http, &base, json!({"user": "alice"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["sub"], "demo:alice");
    let token = b["token"].as_str().unwrap();
    let claims: Value = {
        use base64::Engine;
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!((1..=900).contains(&lifetime), "a demo token lives 15 minutes at most: {lifetime}");
    let r = graphql(&http, &base, token, "{ getPlaidBankAccounts { bankAccountId } }", json!({})).await;
    assert_eq!(r["data"]["getPlaidBankAccounts"], json!([]), "{r}");

    // Names that are not plain names are refused, and so is anything but one small JSON object.
    for bad in [
        json!({"user": ""}),
        json!({"user": "a@b.example"}),
        json!({"user": "5551234567"}),
        json!({"user": "x".repeat(41)}),
        json!({"user": "alice", "admin": true}),
        json!({"name": "alice"}),
    ] {
        let (s, _) = demo_token(&http, &base, bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = http
        .post(format!("{base}/demo/token"))
        .header("content-type", "text/plain")
        .body(r#"{"user":"alice"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = http
        .post(format!("{base}/demo/token"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"user":"{}"}}"#, "a".repeat(10_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let _ = stop.send(());

    // With a real JWT setting there is no minting; the demo asks for a token instead.
    let (base, _, stop) = offline(&["--jwt-secret", "0123456789abcdef0123456789abcdef-real"]).await;
    let (s, _) = demo_token(&http, &base, json!({"user": "alice"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let html = http.get(format!("{base}/demo")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("data-dev-sign-in=\"false\""));
    let _ = stop.send(());

    // DEMO_ENABLED=false: no demo at all.
    let (base, _, stop) = offline(&["--demo-enabled", "false"]).await;
    assert_eq!(http.get(format!("{base}/demo")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let (s, _) = demo_token(&http, &base, json!({"user": "alice"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let _ = stop.send(());
}

#[tokio::test]
async fn the_demo_forces_a_login_only_on_the_callers_own_items() {
    let http = reqwest::Client::new();
    let (base, emulator, stop) = offline(&[]).await;
    let alice = demo_token(&http, &base, json!({"user": "alice"})).await.1["token"].as_str().unwrap().to_string();
    let bob = demo_token(&http, &base, json!({"user": "bob"})).await.1["token"].as_str().unwrap().to_string();
    let r =
        graphql(&http, &base, &alice, "mutation { createPlaidLinkToken(input: {}) { linkToken } }", json!({})).await;
    let link_token = r["data"]["createPlaidLinkToken"]["linkToken"].as_str().unwrap();
    let done: Value = http
        .post(format!("{emulator}/emulator/link/complete"))
        .json(&json!({"link_token": link_token}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = graphql(
        &http,
        &base,
        &alice,
        "mutation($input: CompletePlaidLinkInput!) { completePlaidLink(input: $input) { platformItemId } }",
        json!({"input": {"publicToken": done["public_token"]}}),
    )
    .await;
    let item = r["data"]["completePlaidLink"]["platformItemId"].as_str().unwrap().to_string();
    let item_error = || async {
        let v: Value =
            http.get(format!("{emulator}/emulator/items/{item}")).send().await.unwrap().json().await.unwrap();
        v["error"].clone()
    };

    let force = |token: Option<String>, body: Value| {
        let mut r = http.post(format!("{base}/demo/login-required")).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(force(None, json!({"platformItemId": item})).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let r = force(Some(bob.clone()), json!({"platformItemId": item})).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "someone else's item is not found");
    assert_eq!(item_error().await, Value::Null, "and nothing happened to it");
    let r = force(Some(alice.clone()), json!({"platformItemId": "made-up"})).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let r = force(Some(alice.clone()), json!({"platformItemId": item})).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(item_error().await, "ITEM_LOGIN_REQUIRED");
    // Plaid's ITEM: ERROR webhook reaches bankgraph, which marks the connection.
    let mut status = Value::Null;
    for _ in 0..100 {
        let r = graphql(&http, &base, &alice, "{ getPlaidBankAccounts { status } }", json!({})).await;
        status = r["data"]["getPlaidBankAccounts"][0]["status"].clone();
        if status == "LOGIN_REQUIRED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, "LOGIN_REQUIRED");
    let _ = stop.send(());
}

#[tokio::test]
async fn with_plaid_keys_the_demo_is_off_unless_enabled_and_then_loads_plaids_own_script() {
    // TestApp runs with Plaid keys (pointed at an emulator) and a JWT secret.
    let app = TestApp::spawn().await;
    assert_eq!(app.http.get(format!("{}/demo", app.base)).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    app.stop().await;
    let app = TestApp::spawn_with(Options { args: vec!["--demo-enabled=true".into()], ..Default::default() }).await;
    let page = app.http.get(format!("{}/demo", app.base)).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        csp.contains("script-src 'self' https://cdn.plaid.com;") && csp.contains("frame-src https://cdn.plaid.com;"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("https://cdn.plaid.com/link/v2/stable/link-initialize.js")
            && html.contains("data-emulator=\"false\"")
    );
    let r = app.http.post(format!("{}/demo/token", app.base)).json(&json!({"user": "alice"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "no minting with a real JWT secret");
    let r = app
        .http
        .post(format!("{}/demo/login-required", app.base))
        .bearer_auth(app.token("a"))
        .json(&json!({"platformItemId": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "no emulator in this process");
    app.stop().await;
}

/// As Plaid's dashboard does, the emulator accepts only the redirect URIs registered for the
/// client (the demo's and the tests' by default): any other is INVALID_FIELD, and no token is
/// made for it.
#[tokio::test]
async fn an_unregistered_redirect_uri_is_refused_as_plaid_refuses_it() {
    let app = TestApp::spawn().await;
    let mut body = json!({
        "client_id": bankgraph::emulator::DEFAULT_CLIENT_ID,
        "secret": bankgraph::emulator::DEFAULT_SECRET,
        "client_name": "bankgraph tests",
        "language": "en",
        "country_codes": ["US"],
        "user": {"client_user_id": "user-1"},
        "products": ["transactions"],
    });
    for uri in
        ["https://evil.example/callback", "http://localhost:8000/demo/../steal", "https://app.example.com/plaid/oauth2"]
    {
        body["redirect_uri"] = json!(uri);
        let r = app.emu_post("/link/token/create", body.clone()).await;
        assert_eq!(
            (r["error_type"].as_str(), r["error_code"].as_str()),
            (Some("INVALID_REQUEST"), Some("INVALID_FIELD")),
            "{uri}: {r}"
        );
        assert!(r["error_message"].as_str().unwrap().contains("redirect_uri"), "{uri}: {r}");
        assert!(r.get("link_token").is_none(), "{uri}: {r}");
    }
    for uri in ["http://localhost:8000/demo", "https://app.example.com/plaid/oauth"] {
        assert!(emulator_link_token(&app, json!({"redirect_uri": uri})).await.starts_with("link-sandbox-"), "{uri}");
    }
}
