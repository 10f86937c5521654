//! What never leaves the server: across a full run, no response body and no log line carries
//! an access token, a public token after completion, the Plaid secret, or an account or
//! routing number the emulator's /auth/get holds.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn no_token_secret_or_account_number_reaches_a_response_or_a_log_line() {
    let app = TestApp::spawn_with(Options {
        args: vec!["--plaid-products".into(), "transactions,identity".into()],
        ..Default::default()
    })
    .await;
    let t = app.token("leaky");

    // A full run: link, sync, relink, refresh, address, remove, and a few failures.
    let (pt, item) = app.link_session(&t, json!({}), json!({})).await;
    let done = app.complete(&t, &pt, None).await["data"]["completePlaidLink"].clone();
    assert_eq!(done["requiresAddress"], false, "the address came from Plaid identity data");
    app.wait_for_history(&t, 120).await;
    let view = app.emu_get(&format!("/emulator/items/{item}")).await;
    let access_token = view["access_token"].as_str().unwrap().to_string();
    let numbers: Vec<String> = view["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| [n["account"].as_str().unwrap().to_string(), n["routing"].as_str().unwrap().to_string()])
        .collect();
    assert!(!numbers.is_empty());
    let (relink_pt, _) = app.link_session(&t, json!({"platformItemId": item}), json!({})).await;
    app.complete(&t, &relink_pt, Some(&item)).await;
    app.complete(&t, &pt, None).await;
    app.gql(Some(&t), REFRESH, json!({})).await;
    app.gql(Some(&t), BALANCES, json!({})).await;
    app.transactions(&t, json!({"paginate": {"limit": 100}})).await;
    app.accounts(&t, json!({})).await;
    app.emu_post("/emulator/faults", json!({"endpoint": "/link/token/create", "kind": "http_error", "status": 500}))
        .await;
    app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {"platformItemId": item}})).await;
    app.http.delete(format!("{}/emulator/faults", app.emulator.url())).send().await.unwrap();
    app.gql(Some(&t), REMOVE, json!({"input": {"bankInstitutionAuthId": done["bankInstitutionAuthId"]}})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    let bodies = bodies().lock().unwrap().join("\n");
    assert!(logs.contains("public token exchanged"), "the logs were captured");
    let mut secrets = vec![
        ("access token", access_token.clone()),
        ("public token", pt.clone()),
        ("relink public token", relink_pt.clone()),
        ("Plaid secret", bankgraph::emulator::DEFAULT_SECRET.to_string()),
        // Split topology (TEST_TOPOLOGY=split): the service token between the two services.
        ("service token", SERVICE_TOKEN.to_string()),
    ];
    for n in numbers {
        secrets.push(("account or routing number", n));
    }
    for (what, secret) in &secrets {
        assert!(!bodies.contains(secret.as_str()), "a response carried the {what}");
        assert!(!logs.contains(secret.as_str()), "a log line carried the {what}");
    }
    // No access token of any test in this binary, whatever it was.
    assert!(!bodies.contains("access-sandbox-"), "a response carried an access token");
    assert!(!logs.contains("access-sandbox-"), "a log line carried an access token");
}
