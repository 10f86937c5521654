//! Access-token custody across a key rotation, with custom key ids.

use base64::Engine;
use serde_json::json;

use crate::helpers::*;

fn key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

#[tokio::test]
async fn a_rotation_with_custom_key_ids_keeps_every_operation_working() {
    let first = TestApp::spawn_with(Options {
        args: vec!["--token-encryption-key-id=2026-01".into()],
        token_key: Some(key(1)),
        ..Default::default()
    })
    .await;
    let t = first.token("rotor");
    let a = first.link(&t).await;
    let b = first.link_at(&t, "ins_109511").await;
    first.wait_for_history(&t, 240).await;
    assert_eq!(first.db_i64("select count(*) from bank_connections where access_token_key_id = '2026-01'").await, 2);
    let (database_url, emulator) = (first.database_url.clone(), first.emulator.clone());
    first.stop().await;

    // The new key without the old one: refused at start-up, naming the missing id.
    let refused = TestApp::build_error(Options {
        args: vec!["--token-encryption-key-id=2026-06".into(), "--refresh-min-interval-seconds=0".into()],
        token_key: Some(key(2)),
        database_url: Some(database_url.clone()),
        shared_emulator: Some(emulator.clone()),
        ..Default::default()
    })
    .await;
    assert!(refused.contains("TOKEN_ENCRYPTION_PREVIOUS_KEYS") && refused.contains("2026-01"), "{refused}");

    // With the old key under its id, everything works, and the tokens move to the new key.
    let app = TestApp::spawn_with(Options {
        args: vec![
            "--token-encryption-key-id=2026-06".into(),
            "--refresh-min-interval-seconds=0".into(),
            format!("--token-encryption-previous-keys=2026-01:{}", key(1)),
        ],
        token_key: Some(key(2)),
        database_url: Some(database_url.clone()),
        shared_emulator: Some(emulator.clone()),
        ..Default::default()
    })
    .await;
    app.eventually("every token is re-sealed under the new key", || async {
        app.db_i64("select count(*) from bank_connections where access_token_key_id = '2026-06'").await == 2
    })
    .await;
    let r = app.gql(Some(&t), REFRESH, json!({})).await;
    assert_eq!(r["data"]["refreshPlaidBankConnections"]["status"], "REFRESHED", "{r}");
    let item = a["platformItemId"].as_str().unwrap();
    let (pt, _) = app.link_session(&t, json!({"platformItemId": item}), json!({})).await;
    let r = app.complete(&t, &pt, Some(item)).await;
    assert!(r["errors"].is_null(), "relink: {r}");
    let r = app
        .gql(
            Some(&t),
            REMOVE,
            json!({"input": {"bankInstitutionAuthId": b["bankInstitutionAuthId"], "reason": "USER_REQUESTED"}}),
        )
        .await;
    assert_eq!(r["data"]["removePlaidBankInstitution"]["removed"], true, "{r}");
    let removed_item = b["platformItemId"].as_str().unwrap();
    assert_eq!(app.emu_get(&format!("/emulator/items/{removed_item}")).await["removed"], true);
    app.stop().await;

    // The old key can now be retired.
    let retired = TestApp::spawn_with(Options {
        args: vec!["--token-encryption-key-id=2026-06".into(), "--refresh-min-interval-seconds=0".into()],
        token_key: Some(key(2)),
        database_url: Some(database_url),
        shared_emulator: Some(emulator),
        ..Default::default()
    })
    .await;
    let r = retired.gql(Some(&t), REFRESH, json!({})).await;
    assert_eq!(r["data"]["refreshPlaidBankConnections"]["status"], "REFRESHED", "{r}");
}
