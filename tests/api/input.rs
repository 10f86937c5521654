//! Bad input on every input type: BAD_USER_INPUT, with a message that says what is wrong.

use serde_json::{Value, json};

use crate::helpers::*;

fn expect_bad(r: &Value, needle: &str) {
    assert_eq!(code(r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
    let msg = r["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
}

#[tokio::test]
async fn bad_input_is_refused_with_a_message_that_says_what_is_wrong() {
    let app = TestApp::spawn().await;
    let t = app.token("judy");
    let done = app.link(&t).await;
    let conn = done["bankInstitutionAuthId"].as_str().unwrap();

    for (input, needle) in [
        (json!({"paginate": {"limit": 0}}), "paginate.limit"),
        (json!({"paginate": {"limit": 101}}), "paginate.limit"),
        (json!({"paginate": {"limit": 10, "offset": -1}}), "paginate.offset"),
        (json!({"startDate": "2026-06-01T00:00:00Z", "endDate": "2026-01-01T00:00:00Z"}), "endDate"),
        (json!({"startDate": "yesterday"}), "RFC 3339 date-time such as \"2026-01-01T00:00:00Z\", got \"yesterday\""),
        (json!({"endDate": "2026-13-45T00:00:00Z"}), "got \"2026-13-45T00:00:00Z\""),
        (json!({"bankAccountId": ""}), "bankAccountId"),
        (json!({"bankAccountId": "a\u{0}b"}), "bankAccountId must not contain control characters"),
        (json!({"platformItemId": "item\u{1b}[31m"}), "platformItemId must not contain control characters"),
        (json!({"bankInstitutionAuthId": "x\u{0}"}), "bankInstitutionAuthId must not contain control characters"),
    ] {
        expect_bad(&app.transactions(&t, input).await, needle);
    }

    let address = |a: Value| json!({"input": {"bankInstitutionAuthId": conn, "address": a}});
    let good = json!({"streetAddressLine1": "123 Main St", "city": "New York", "state": "NY", "postalCode": "10001", "country": "US"});
    let with = |k: &str, v: &str| {
        let mut a = good.clone();
        a[k] = json!(v);
        a
    };
    for (a, needle) in [
        (with("streetAddressLine1", "  "), "streetAddressLine1 is required"),
        (with("state", "ZZ"), "address.state"),
        (with("postalCode", "1234"), "address.postalCode"),
        (with("postalCode", "10001-12"), "address.postalCode"),
        (with("country", "XX"), "address.country"),
        (with("country", "USA"), "address.country"),
        (with("streetAddressLine2", "Apt 4\u{0}"), "streetAddressLine2 must not contain control characters"),
        (with("city", "New\u{0}York"), "address.city must not contain control characters"),
    ] {
        expect_bad(&app.gql(Some(&t), ADDRESS, address(a)).await, needle);
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("city");
    expect_bad(&app.gql(Some(&t), ADDRESS, address(missing)).await, "city");

    expect_bad(
        &app.gql(Some(&t), REMOVE, json!({"input": {"bankInstitutionAuthId": conn, "reason": "BORED"}})).await,
        "BORED",
    );
    expect_bad(&app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {"deviceOs": "SYMBIAN"}})).await, "SYMBIAN");
    expect_bad(&app.complete(&t, "", None).await, "publicToken");
    expect_bad(&app.complete(&t, "public-sandbox-\u{0}", None).await, "publicToken");
    expect_bad(&app.complete(&t, "public-sandbox-x", Some("item\u{0}")).await, "platformItemId");
    let r = app.gql(Some(&t), REMOVE, json!({"input": {"bankInstitutionAuthId": "\u{0}"}})).await;
    expect_bad(&r, "bankInstitutionAuthId");

    // Nothing was changed by the refused calls.
    assert_eq!(app.accounts(&t, json!({})).await.as_array().unwrap().len(), 9);
    let r = app.gql(Some(&t), ADDRESS, address(good)).await;
    assert!(r["data"]["createPlaidLinkAddress"]["addressId"].is_string(), "{r}");
}

#[tokio::test]
async fn a_body_that_is_not_a_graphql_request_gets_a_400() {
    let app = TestApp::spawn().await;
    let r =
        app.http.post(&app.graphql).header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(code(&body).as_deref(), Some("BAD_REQUEST"));
}

/// What a caller sends as variables is input (`BAD_USER_INPUT`); a document that is wrong in
/// itself fails validation. Decided by where the error points, not by its text.
#[tokio::test]
async fn a_bad_variable_is_bad_input_and_a_bad_literal_is_a_validation_failure() {
    let app = TestApp::spawn().await;
    let t = app.token("codes");
    let by_variable = app
        .gql(
            Some(&t),
            "query($l: Int!) { getPlaidBankTransactions(input: {paginate: {limit: $l}}) { totalCount } }",
            json!({"l": "ten"}),
        )
        .await;
    assert_eq!(code(&by_variable).as_deref(), Some("BAD_USER_INPUT"), "{by_variable}");
    let literal = app
        .gql(Some(&t), "{ getPlaidBankTransactions(input: {paginate: {limit: \"ten\"}}) { totalCount } }", json!({}))
        .await;
    assert_eq!(code(&literal).as_deref(), Some("GRAPHQL_VALIDATION_FAILED"), "{literal}");
    let unknown = app.gql(Some(&t), "{ getPlaidBankAccounts(bogus: 1) { bankAccountId } }", json!({})).await;
    assert_eq!(code(&unknown).as_deref(), Some("GRAPHQL_VALIDATION_FAILED"), "{unknown}");
}

/// A deep `offset` costs the database the rows it skips: past MAX_PAGE_OFFSET (10,000 by
/// default) it is refused, and the message points to the `after` cursor, which costs the same
/// at any depth.
#[tokio::test]
async fn an_offset_past_the_maximum_is_refused_and_points_to_the_cursor() {
    let app = TestApp::spawn().await;
    let t = app.token("olga");
    app.link(&t).await;
    let r = app.transactions(&t, json!({"paginate": {"limit": 10, "offset": 10_000}})).await;
    assert!(r["data"]["getPlaidBankTransactions"]["transactions"].is_array(), "at the maximum: {r}");
    for offset in [10_001, 99_000, i32::MAX] {
        let r = app.transactions(&t, json!({"paginate": {"limit": 10, "offset": offset}})).await;
        expect_bad(&r, "paginate.offset must be at most 10000");
        expect_bad(&r, "paginate.after");
    }
}
