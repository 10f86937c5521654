//! The seed's two flows, end to end: a new link, and a relink after the bank asks the user to
//! log in again.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_new_link_makes_accounts_balances_and_history_queryable() {
    let app = TestApp::spawn().await;
    let t = app.token("alice");

    let r = app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {}})).await;
    let lt = &r["data"]["createPlaidLinkToken"];
    assert_eq!(lt["mode"], "CREATE");
    assert!(lt["linkToken"].as_str().unwrap().starts_with("link-sandbox-"));
    assert!(!lt["requestId"].as_str().unwrap().is_empty());

    let done = app.link(&t).await;
    assert_eq!(done["bankInstitutionName"], "First Platypus Bank");
    assert_eq!(done["requiresAddress"], true);
    let conn = done["bankInstitutionAuthId"].as_str().unwrap();
    assert_eq!(done["newlyLinkedBankInstitutionAuthId"], conn, "a new connection was created");
    let accounts = done["bankAccounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 9);
    assert_eq!(accounts[0]["lastFour"], "0000");
    assert_eq!(done["bankAccountId"], accounts[0]["bankAccountId"], "the primary account is the checking account");

    let listed = app.accounts(&t, json!({"platformItemId": done["platformItemId"]})).await;
    assert_eq!(listed.as_array().unwrap().len(), 9);
    assert_eq!(listed[0]["accountName"], "Plaid Checking");
    assert_eq!(listed[0]["status"], "ACTIVE");
    assert_eq!(listed[0]["bankInstitutionAuthId"], conn);

    let b = app.gql(Some(&t), BALANCES, json!({"input": {"bankAccountId": done["bankAccountId"]}})).await;
    let b = &b["data"]["getPlaidBankBalances"][0];
    assert_eq!((b["amount"].as_str(), b["current"].as_str()), (Some("100"), Some("110")), "money is a decimal string");
    assert_eq!((b["source"].as_str(), b["trigger"].as_str()), (Some("PLAID_CACHED"), Some("LINK")));

    // The first sync runs in the background; the full history becomes queryable.
    let page = app.wait_for_history(&t, 120).await;
    let tx = &page["data"]["getPlaidBankTransactions"]["transactions"][0];
    assert_eq!(tx["platformItemId"], done["platformItemId"]);
    assert!(["DEBIT", "CREDIT"].contains(&tx["transactionType"].as_str().unwrap()));
    assert!(!tx["amount"].as_str().unwrap().starts_with('-'), "amounts are positive, the type carries the direction");

    // Newest first, and the whole filtered set is counted.
    let all = app.transactions(&t, json!({"paginate": {"limit": 100}})).await;
    let txs = all["data"]["getPlaidBankTransactions"]["transactions"].as_array().unwrap().clone();
    assert_eq!(txs.len(), 100);
    let dates: Vec<&str> = txs.iter().map(|t| t["transactionDate"].as_str().unwrap()).collect();
    assert!(dates.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let upstream =
        app.emu_get(&format!("/emulator/items/{}/transactions", done["platformItemId"].as_str().unwrap())).await;
    assert_eq!(upstream["transactions"].as_array().unwrap().len(), 120);
}

#[tokio::test]
async fn a_relink_after_login_required_repairs_the_same_connection_and_keeps_account_ids() {
    let app = TestApp::spawn().await;
    let t = app.token("bob");
    let done = app.link(&t).await;
    let item = done["platformItemId"].as_str().unwrap().to_string();
    let ids: Vec<String> = done["bankAccounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["bankAccountId"].as_str().unwrap().to_string())
        .collect();

    // The bank asks the user to log in again.
    app.reset_login(&item).await;

    // A refresh notices, and lists the connection among those that need the user.
    let r = app.gql(Some(&t), REFRESH, json!({})).await;
    let refreshed = &r["data"]["refreshPlaidBankConnections"];
    assert_eq!(refreshed["status"], "PARTIAL", "{r}");
    assert_eq!(refreshed["verifyMembers"][0]["platformItemId"], item);
    assert_eq!(app.accounts(&t, json!({})).await[0]["status"], "LOGIN_REQUIRED");

    // Update mode, with the stored platformItemId.
    let (public_token, emu_item) = app.link_session(&t, json!({"platformItemId": item}), json!({})).await;
    assert_eq!(emu_item, item, "update mode repairs the same item");
    let r = app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {"platformItemId": item}})).await;
    assert_eq!(r["data"]["createPlaidLinkToken"]["mode"], "UPDATE");

    let r = app.complete(&t, &public_token, Some(&item)).await;
    let relinked = &r["data"]["completePlaidLink"];
    assert_eq!(relinked["bankInstitutionAuthId"], done["bankInstitutionAuthId"], "{r}");
    assert!(relinked["newlyLinkedBankInstitutionAuthId"].is_null());
    assert_eq!(relinked["platformItemId"], item);
    let again: Vec<String> = relinked["bankAccounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["bankAccountId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(again, ids, "bankAccountIds survive the relink");
    let accounts = app.accounts(&t, json!({})).await;
    assert!(accounts.as_array().unwrap().iter().all(|a| a["status"] == "ACTIVE"));
    let b = app.gql(Some(&t), BALANCES, json!({"input": {"bankAccountId": ids[0]}})).await;
    assert_eq!(b["data"]["getPlaidBankBalances"][0]["trigger"], "RELINK");
}

#[tokio::test]
async fn a_relink_is_not_accepted_on_the_clients_word_while_the_bank_still_refuses() {
    let app = TestApp::spawn().await;
    let t = app.token("carol");
    let done = app.link(&t).await;
    let item = done["platformItemId"].as_str().unwrap();
    app.reset_login(item).await;
    // The client claims a relink without going through Link.
    let r = app.complete(&t, "public-sandbox-00000000-0000-0000-0000-000000000000", Some(item)).await;
    assert_eq!(code(&r).as_deref(), Some("PLAID_ERROR"), "{r}");
    assert_eq!(r["errors"][0]["extensions"]["plaid"]["errorCode"], "ITEM_LOGIN_REQUIRED");
    assert_eq!(app.accounts(&t, json!({})).await[0]["status"], "LOGIN_REQUIRED");
}
