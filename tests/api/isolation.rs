//! Another user's ids behave exactly as ids that do not exist.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_second_user_sees_nothing_and_can_touch_nothing_of_the_first() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice");
    let mallory = app.token("mallory");
    let done = app.link(&alice).await;
    app.wait_for_history(&alice, 120).await;
    let item = done["platformItemId"].as_str().unwrap();
    let conn = done["bankInstitutionAuthId"].as_str().unwrap();
    let account = done["bankAccountId"].as_str().unwrap();

    for filter in [
        json!({}),
        json!({"platformItemId": item}),
        json!({"bankInstitutionAuthId": conn}),
        json!({"bankAccountId": account}),
    ] {
        assert_eq!(app.accounts(&mallory, filter.clone()).await, json!([]), "{filter}");
        let b = app.gql(Some(&mallory), BALANCES, json!({"input": filter.clone()})).await;
        assert_eq!(b["data"]["getPlaidBankBalances"], json!([]), "{filter}");
        let t = app.transactions(&mallory, filter.clone()).await;
        assert_eq!(t["data"]["getPlaidBankTransactions"]["totalCount"], 0, "{filter}");
    }
    let unknown = json!({"bankAccountId": "00000000-0000-0000-0000-000000000000"});
    assert_eq!(app.accounts(&alice, unknown).await, json!([]), "an unknown id looks the same to its owner");

    let r = app.gql(Some(&mallory), CREATE_LINK_TOKEN, json!({"input": {"platformItemId": item}})).await;
    assert_eq!(code(&r).as_deref(), Some("NOT_FOUND"));
    assert_eq!(r["errors"][0]["message"], "No active Plaid connection found for the provided platformItemId.");
    let r2 = app.gql(Some(&mallory), CREATE_LINK_TOKEN, json!({"input": {"platformItemId": "no-such-item"}})).await;
    assert_eq!(r["errors"][0]["message"], r2["errors"][0]["message"], "foreign and unknown look alike");

    let r = app.complete(&mallory, "public-sandbox-11111111-1111-1111-1111-111111111111", Some(item)).await;
    assert_eq!(code(&r).as_deref(), Some("NOT_FOUND"), "{r}");

    let address = json!({"streetAddressLine1": "1 Main St", "city": "New York", "state": "NY", "postalCode": "10001", "country": "US"});
    let r =
        app.gql(Some(&mallory), ADDRESS, json!({"input": {"bankInstitutionAuthId": conn, "address": address}})).await;
    assert_eq!(code(&r).as_deref(), Some("NOT_FOUND"), "{r}");

    let r = app.gql(Some(&mallory), REMOVE, json!({"input": {"bankInstitutionAuthId": conn}})).await;
    assert_eq!(code(&r).as_deref(), Some("NOT_FOUND"), "{r}");

    // Alice's connection is untouched: still linked, still active at the emulator, no address.
    assert_eq!(app.accounts(&alice, json!({})).await.as_array().unwrap().len(), 9);
    assert_eq!(app.emu_get(&format!("/emulator/items/{item}")).await["removed"], false);
    let r = app.gql(Some(&alice), CREATE_LINK_TOKEN, json!({"input": {"platformItemId": item}})).await;
    assert_eq!(r["data"]["createPlaidLinkToken"]["mode"], "UPDATE");
}

/// Concurrent account reads share statements (identity/store/batch.rs): each caller still gets
/// exactly its own accounts, whatever its `sub` holds (quotes, backslashes, braces, commas,
/// non-ASCII, the word NULL), however the reads are grouped.
#[tokio::test]
async fn concurrent_account_reads_of_many_callers_each_get_their_own_whatever_the_sub() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let subs = ["o\"brien", "back\\slash", "{brace},comma", "用户-ü", "NULL", "[\"json\"]", "plain"];
    let mut owners = Vec::new();
    for sub in subs {
        let token = app.token(sub);
        let done = app.link(&token).await;
        owners.push((token, done["platformItemId"].as_str().unwrap().to_string()));
    }
    let owners = std::sync::Arc::new(owners);
    let reads: Vec<_> = (0..140)
        .map(|i| {
            let (app, owners) = (app.clone(), owners.clone());
            tokio::spawn(async move {
                let (token, item) = &owners[i % owners.len()];
                let accounts = app.accounts(token, json!({})).await;
                let accounts = accounts.as_array().unwrap().clone();
                assert_eq!(accounts.len(), 9, "caller {i}: {accounts:?}");
                assert!(accounts.iter().all(|a| a["platformItemId"] == item.as_str()), "caller {i} saw another's");
            })
        })
        .collect();
    for r in reads {
        r.await.unwrap();
    }
}
