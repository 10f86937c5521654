//! The split deployment as it runs: `bankgraph identity` and `bankgraph gateway` as two real
//! processes on one database. The gateway's environment holds no secret of the identity
//! service; a gateway killed in the middle of `completePlaidLink` leaves the work to finish in
//! the identity service, and the client's retry gets the stored answer; one request id and
//! trace name the request in both logs; no log line of either carries a secret.

use std::time::Duration;

use bankgraph::emulator::drive::Endpoints;
use bankgraph::emulator::{EmulatorConfig, RunningEmulator};
use base64::Engine;
use serde_json::json;

use crate::helpers::*;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

#[tokio::test]
async fn two_processes_a_gateway_killed_mid_completion_and_nothing_secret_anywhere() {
    let mut emu = EmulatorConfig { transactions_per_item: 120, ..Default::default() };
    emu.webhook_policy.retry_delay = Duration::from_millis(50);
    let emulator = RunningEmulator::start(emu, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let database_url = fresh_database().await;
    let dir = std::env::temp_dir().join(format!("bankgraph-split-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode([11u8; 32]);
    let plaid_url = emulator.url();

    let identity = identity_process(&database_url, &plaid_url, &key, &dir.join("identity.log"));
    let rpc = identity.values[0].clone();
    let mut gw = gateway_process(&rpc, &dir.join("gateway-1.log"));

    // Nothing of the identity service's in the gateway's environment.
    let environ = std::fs::read(format!("/proc/{}/environ", gw.child.pid())).unwrap();
    let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
    for name in ["DATABASE_URL", "TOKEN_ENCRYPTION_KEY", "PLAID_"] {
        assert!(!environ.lines().any(|l| l.starts_with(name)), "{name} in the gateway's environment");
    }
    for secret in [key.as_str(), bankgraph::emulator::DEFAULT_SECRET, database_url.as_str()] {
        assert!(!environ.contains(secret), "an identity secret in the gateway's environment");
    }

    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let alice = token_with("split-alice", "MANAGE_PAYMENT", 3600);
    let graphql = gw.values[0].clone();
    let as_alice = Endpoints { http: &http, graphql: &graphql, emulator: &plaid_url, bearer: &alice };
    let first = as_alice.link_session(json!({}), json!({})).await.unwrap();
    // One request, named by the gateway's own id in both logs (the client's id beside it).
    let r = http
        .post(&graphql)
        .bearer_auth(&alice)
        .header("x-request-id", "split-process-request-1")
        .header("traceparent", format!("00-{TRACE_ID}-b7ad6b7169203331-01"))
        .json(&json!({"query": COMPLETE_LINK, "variables": {"input": {"publicToken": first.public_token}}}))
        .send()
        .await
        .unwrap();
    // The gateway's own id names the request in both logs; the client's is logged beside it.
    let ours = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let r: serde_json::Value = r.json().await.unwrap();
    assert!(r["errors"].is_null(), "{r}");

    // The gateway dies while the identity service completes a link for bob.
    let bob = token_with("split-bob", "MANAGE_PAYMENT", 3600);
    let as_bob = Endpoints { http: &http, graphql: &graphql, emulator: &plaid_url, bearer: &bob };
    let second = as_bob.link_session(json!({}), json!({})).await.unwrap();
    http.post(format!("{plaid_url}/emulator/faults"))
        .json(&json!({"endpoint": "/accounts/get", "kind": "latency", "ms": 1500, "times": 1}))
        .send()
        .await
        .unwrap();
    let cut = {
        let (http, graphql, bob, pt) = (http.clone(), graphql.clone(), bob.clone(), second.public_token.clone());
        tokio::spawn(async move {
            http.post(&graphql)
                .bearer_auth(&bob)
                .json(&json!({"query": COMPLETE_LINK, "variables": {"input": {"publicToken": pt}}}))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.child.kill();
    assert!(cut.await.unwrap().is_err(), "the client lost its gateway mid-call");

    let gw2 = gateway_process(&rpc, &dir.join("gateway-2.log"));
    let graphql2 = gw2.values[0].clone();
    let as_bob = Endpoints { http: &http, graphql: &graphql2, emulator: &plaid_url, bearer: &bob };
    let retry = as_bob.graphql(COMPLETE_LINK, json!({"input": {"publicToken": second.public_token}})).await.unwrap();
    assert!(retry["errors"].is_null(), "{retry}");
    let done = &retry["data"]["completePlaidLink"];
    let again = as_bob.graphql(COMPLETE_LINK, json!({"input": {"publicToken": second.public_token}})).await.unwrap();
    assert_eq!(&again["data"]["completePlaidLink"], done, "the stored answer");
    let accounts = as_bob.graphql(ACCOUNTS, json!({})).await.unwrap();
    let accounts = accounts["data"]["getPlaidBankAccounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 9, "one connection's accounts");
    assert!(accounts.iter().all(|a| a["bankInstitutionAuthId"] == done["bankInstitutionAuthId"]), "one connection");
    let stored =
        TestApp::count_in(&database_url, "select count(*) from bank_connections where user_id = 'split-bob'").await;
    assert_eq!(stored, 1, "one connection stored");

    // Secrets the run handled, none of which may appear in either process's log.
    let access_token = {
        let view: serde_json::Value = http
            .get(format!("{plaid_url}/emulator/items/{}", second.item_id))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        view["access_token"].as_str().unwrap().to_string()
    };
    assert!(gw2.child.terminate().await.success());
    assert!(identity.child.terminate().await.success());
    let identity_log = std::fs::read_to_string(dir.join("identity.log")).unwrap();
    let gateway_logs =
        [dir.join("gateway-1.log"), dir.join("gateway-2.log")].map(|p| std::fs::read_to_string(p).unwrap()).join("\n");
    let line =
        |log: &str, what: &str| log.lines().find(|l| l.contains(ours.as_str()) && l.contains(what)).map(str::to_string);
    let served =
        line(&identity_log, "public token exchanged").expect("the identity service logged the request by its id");
    assert!(served.contains(TRACE_ID) && served.contains("CompleteLink"), "{served}");
    let answered = line(&gateway_logs, "graphql request").expect("the gateway logged the request by its id");
    assert!(answered.contains(TRACE_ID) && answered.contains("split-process-request-1"), "{answered}");
    for (what, secret) in [
        ("public token", first.public_token.as_str()),
        ("public token", second.public_token.as_str()),
        ("access token", access_token.as_str()),
        ("Plaid secret", bankgraph::emulator::DEFAULT_SECRET),
        ("token encryption key", key.as_str()),
        ("service token", SERVICE_TOKEN),
        ("JWT secret", JWT_SECRET),
        ("caller token", bob.as_str()),
    ] {
        assert!(!identity_log.contains(secret), "the identity service's log carried the {what}");
        assert!(!gateway_logs.contains(secret), "a gateway's log carried the {what}");
    }
    assert!(!identity_log.contains("access-sandbox-") && !gateway_logs.contains("access-sandbox-"));
}

#[tokio::test]
async fn the_gateway_refuses_identity_secrets_and_the_identity_service_an_open_address_without_a_token() {
    for (var, value) in [
        ("DATABASE_URL", "postgres://app:pw@db/bank"),
        ("TOKEN_ENCRYPTION_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ("PLAID_SECRET", "s"),
        ("PLAID_CLIENT_ID", "id"),
    ] {
        let (code, stderr) = refusal(
            &["gateway"],
            &[
                ("JWT_SECRET", JWT_SECRET),
                ("IDENTITY_URL", "http://127.0.0.1:1"),
                ("BIND_ADDR", "127.0.0.1:0"),
                ("INTERNAL_BIND_ADDR", "127.0.0.1:0"),
                (var, value),
            ],
        );
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(var) && stderr.contains("must not be set for bankgraph gateway"), "{stderr}");
        assert!(!stderr.contains(value) || value.len() < 3, "the value is not echoed: {stderr}");
    }
    let (code, stderr) = refusal(&["gateway"], &[("JWT_SECRET", JWT_SECRET)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("IDENTITY_URL"), "{stderr}");

    let db = fresh_database().await;
    let (code, stderr) = refusal(
        &["identity"],
        &[("IDENTITY_BIND_ADDR", "0.0.0.0:0"), ("INTERNAL_BIND_ADDR", "127.0.0.1:0"), ("DATABASE_URL", &db)],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("IDENTITY_SERVICE_TOKEN"), "{stderr}");
    let (code, stderr) = refusal(
        &["identity"],
        &[("IDENTITY_SERVICE_TOKEN", "too-short"), ("INTERNAL_BIND_ADDR", "127.0.0.1:0"), ("DATABASE_URL", &db)],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("at least 32 characters") && !stderr.contains("too-short"), "{stderr}");
}
