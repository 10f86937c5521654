//! Access-token custody across a key rotation, with custom key ids.

use base64::Engine;
use serde_json::{Value, json};

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

/// The custody settings of one start: the key (by its fill byte), its id, and the previous
/// keys (`Some(id)` or none, and the key's byte).
#[derive(Clone, Copy)]
struct Keys<'a> {
    key: u8,
    id: Option<&'a str>,
    previous: &'a [(Option<&'a str>, u8)],
}

impl Keys<'_> {
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("TOKEN_ENCRYPTION_KEY", key(self.key))];
        if let Some(id) = self.id {
            env.push(("TOKEN_ENCRYPTION_KEY_ID", id.to_string()));
        }
        if !self.previous.is_empty() {
            let list: Vec<String> = self
                .previous
                .iter()
                .map(|(id, k)| match id {
                    Some(id) => format!("{id}:{}", key(*k)),
                    None => key(*k),
                })
                .collect();
            env.push(("TOKEN_ENCRYPTION_PREVIOUS_KEYS", list.join(",")));
        }
        env
    }

    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = self
            .env()
            .into_iter()
            .filter(|(name, _)| *name != "TOKEN_ENCRYPTION_KEY")
            .map(|(name, value)| format!("--{}={value}", name.to_lowercase().replace('_', "-")))
            .collect();
        args.push("--refresh-min-interval-seconds=0".into());
        args
    }

    fn options(&self, database_url: &str, emulator: &std::sync::Arc<bankgraph::emulator::RunningEmulator>) -> Options {
        Options {
            args: self.args(),
            token_key: Some(key(self.key)),
            database_url: Some(database_url.to_string()),
            shared_emulator: Some(emulator.clone()),
            ..Default::default()
        }
    }
}

/// A database holding two connections (and so two sealed tokens) of one user, sealed by `keys`.
struct Sealed {
    database_url: String,
    emulator: std::sync::Arc<bankgraph::emulator::RunningEmulator>,
    token: String,
    relinked: Value,
    removed: Value,
}

async fn sealed_by(keys: Keys<'_>) -> Sealed {
    let first =
        TestApp::spawn_with(Options { args: keys.args(), token_key: Some(key(keys.key)), ..Default::default() }).await;
    let token = first.token("custodian");
    let relinked = first.link(&token).await;
    let removed = first.link_at(&token, "ins_109511").await;
    let (database_url, emulator) = (first.database_url.clone(), first.emulator.clone());
    first.stop().await;
    Sealed { database_url, emulator, token, relinked, removed }
}

/// Refresh, relink and removal all need the stored tokens opened.
async fn every_token_opens(case: &str, app: &TestApp, s: &Sealed) {
    let t = &s.token;
    let r = app.gql(Some(t), REFRESH, json!({})).await;
    assert_eq!(r["data"]["refreshPlaidBankConnections"]["status"], "REFRESHED", "{case}: refresh {r}");
    let item = s.relinked["platformItemId"].as_str().unwrap();
    let (pt, _) = app.link_session(t, json!({"platformItemId": item}), json!({})).await;
    let r = app.complete(t, &pt, Some(item)).await;
    assert!(r["errors"].is_null(), "{case}: relink {r}");
    let input =
        json!({"input": {"bankInstitutionAuthId": s.removed["bankInstitutionAuthId"], "reason": "USER_REQUESTED"}});
    let r = app.gql(Some(t), REMOVE, input).await;
    assert_eq!(r["data"]["removePlaidBankInstitution"]["removed"], true, "{case}: remove {r}");
    let removed_item = s.removed["platformItemId"].as_str().unwrap();
    assert_eq!(app.emu_get(&format!("/emulator/items/{removed_item}")).await["removed"], true, "{case}");
}

/// Every way of rotating (or not rotating) the custody key either keeps every stored token
/// usable, or is refused at start with a message that names the fix; none starts and then
/// fails refresh, relink or removal.
#[tokio::test]
async fn every_key_rotation_either_keeps_the_tokens_open_or_is_refused_at_start() {
    let (derived_1, derived_2) =
        (bankgraph::identity::crypto::key_id_of(&[1; 32]), bankgraph::identity::crypto::key_id_of(&[2; 32]));
    let (derived_1, derived_2) = (derived_1.as_str(), derived_2.as_str());
    let current_derived_id_on_an_old_key = [(Some(derived_2), 1)];
    let k1 = Keys { key: 1, id: Some("k1"), previous: &[] };
    let derived = Keys { key: 1, id: None, previous: &[] };
    // (case, the keys that sealed, the keys of the next start, Ok or the words the refusal holds)
    type Expect<'a> = Result<(), Vec<&'a str>>;
    let table: Vec<(&str, Keys, Keys, Expect)> = vec![
        (
            "same id, new key, old key under that id in previous keys",
            k1,
            Keys { key: 2, id: Some("k1"), previous: &[(Some("k1"), 1)] },
            Err(vec!["key id k1 names two different keys", "TOKEN_ENCRYPTION_KEY_ID"]),
        ),
        (
            "same id, new key, old key not kept",
            k1,
            Keys { key: 2, id: Some("k1"), previous: &[] },
            Err(vec!["cannot be opened", "k1", "new TOKEN_ENCRYPTION_KEY_ID", "TOKEN_ENCRYPTION_PREVIOUS_KEYS"]),
        ),
        ("new id, old key in previous keys", k1, Keys { key: 2, id: Some("k2"), previous: &[(Some("k1"), 1)] }, Ok(())),
        (
            "new id, old key missing",
            k1,
            Keys { key: 2, id: Some("k2"), previous: &[] },
            Err(vec!["TOKEN_ENCRYPTION_PREVIOUS_KEYS has no key", "k1", "id:base64key"]),
        ),
        (
            "new id, a wrong key under the old id",
            k1,
            Keys { key: 2, id: Some("k2"), previous: &[(Some("k1"), 3)] },
            Err(vec!["cannot be opened", "k1", "TOKEN_ENCRYPTION_PREVIOUS_KEYS"]),
        ),
        ("same key, same id", k1, k1, Ok(())),
        ("derived ids, old key in previous keys", derived, Keys { key: 2, id: None, previous: &[(None, 1)] }, Ok(())),
        (
            "derived ids, old key in previous keys under an id",
            derived,
            Keys { key: 2, id: Some("k2"), previous: &[(Some("k1"), 1)] },
            Ok(()),
        ),
        ("derived id, then the same key given an id", derived, Keys { key: 1, id: Some("k1"), previous: &[] }, Ok(())),
        (
            "derived ids, old key missing",
            derived,
            Keys { key: 2, id: None, previous: &[] },
            Err(vec!["TOKEN_ENCRYPTION_PREVIOUS_KEYS has no key", derived_1]),
        ),
        (
            "a new key given the old key's derived id",
            derived,
            Keys { key: 2, id: Some(derived_1), previous: &[(None, 1)] },
            Err(vec!["names two different keys", derived_1, "TOKEN_ENCRYPTION_KEY_ID"]),
        ),
        (
            "a previous key given the current key's derived id",
            derived,
            Keys { key: 2, id: None, previous: &current_derived_id_on_an_old_key },
            Err(vec!["names two different keys", derived_2]),
        ),
        (
            "duplicate ids in previous keys, two keys",
            k1,
            Keys { key: 3, id: Some("k3"), previous: &[(Some("k1"), 1), (Some("k1"), 2)] },
            Err(vec!["key id k1 names two different keys", "TOKEN_ENCRYPTION_PREVIOUS_KEYS"]),
        ),
        (
            "duplicate ids in previous keys, the same key twice",
            k1,
            Keys { key: 3, id: Some("k3"), previous: &[(Some("k1"), 1), (Some("k1"), 1)] },
            Ok(()),
        ),
    ];
    for (case, sealer, next, expect) in table {
        let s = sealed_by(sealer).await;
        match expect {
            Ok(()) => {
                let app = TestApp::spawn_with(next.options(&s.database_url, &s.emulator)).await;
                every_token_opens(case, &app, &s).await;
                app.stop().await;
            }
            Err(words) => {
                let mut env: Vec<(&str, String)> = vec![
                    ("DATABASE_URL", s.database_url.clone()),
                    ("JWT_SECRET", JWT_SECRET.into()),
                    ("PLAID_CLIENT_ID", bankgraph::emulator::DEFAULT_CLIENT_ID.into()),
                    ("PLAID_SECRET", bankgraph::emulator::DEFAULT_SECRET.into()),
                    ("PLAID_BASE_URL", s.emulator.url()),
                    ("BIND_ADDR", "127.0.0.1:0".into()),
                    ("INTERNAL_BIND_ADDR", "127.0.0.1:0".into()),
                ];
                env.extend(next.env());
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let (code, stderr) = refusal(&["serve"], &env);
                assert_eq!(code, Some(2), "{case}: {stderr}");
                for w in words {
                    assert!(stderr.contains(w), "{case}: the refusal names {w:?}: {stderr}");
                }
                for k in [1, 2, 3] {
                    assert!(!stderr.contains(&key(k)), "{case}: no key in the refusal: {stderr}");
                }
                // Refused before anything was done: a start with the right keys still opens every token.
                let app = TestApp::spawn_with(sealer.options(&s.database_url, &s.emulator)).await;
                every_token_opens(case, &app, &s).await;
                app.stop().await;
            }
        }
    }
}
