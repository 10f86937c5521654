//! What the clients app developers use expect by default: queries over GET (urql's
//! `preferGetMethod`, Apollo's `useGETForQueries`), caching headers.

use serde_json::{Value, json};

use crate::helpers::*;

/// `GET /api/v1/graphql` with these parameters, as `token`.
async fn get(app: &TestApp, token: Option<&str>, params: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = app.http.get(&app.graphql).query(params);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let text = r.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn queries_run_over_get_as_over_post_and_mutations_do_not() {
    let app = TestApp::spawn().await;
    let t = app.token("getter");
    app.link(&t).await;
    let over_post = app.accounts(&t, json!({})).await;

    let (status, headers, body) = get(&app, Some(&t), &[("query", ACCOUNTS), ("variables", "{\"input\":{}}")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["getPlaidBankAccounts"], over_post);
    assert_eq!(headers["cache-control"], "private, no-store", "a caller's data is never cached");

    // operationName picks the operation; a document may hold a mutation that GET never runs.
    let doc = "query Mine { getPlaidBankAccounts { bankAccountId } } mutation Refresh { refreshPlaidBankConnections { status } }";
    let (status, _, body) = get(&app, Some(&t), &[("query", doc), ("operationName", "Mine")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["getPlaidBankAccounts"].as_array().unwrap().len(), 9);
    let (status, headers, body) = get(&app, Some(&t), &[("query", doc), ("operationName", "Refresh")]).await;
    assert_eq!((status, code(&body).as_deref()), (405, Some("METHOD_NOT_ALLOWED")), "{body}");
    assert_eq!(headers["allow"], "POST");
    assert_eq!(app.db_i64("select count(*) from refresh_throttle").await, 0, "nothing ran");

    // Bad parameters are the client's error, with the reason.
    let (status, _, body) = get(&app, Some(&t), &[("query", ACCOUNTS), ("variables", "{not json")]).await;
    assert_eq!((status, code(&body).as_deref()), (400, Some("BAD_REQUEST")), "{body}");
    let (status, _, body) = get(&app, Some(&t), &[("query", "{ __typename }"), ("query", "{ __typename }")]).await;
    assert_eq!((status, code(&body).as_deref()), (400, Some("BAD_REQUEST")), "{body}");
    let long = format!("{{ __typename }}{}", " ".repeat(20_001));
    let (status, _, body) = get(&app, Some(&t), &[("query", &long)]).await;
    assert_eq!((status, code(&body).as_deref()), (400, Some("BAD_REQUEST")), "{body}");

    // Anonymous over GET: the same 401 as over POST; introspection needs no token.
    let (status, headers, body) = get(&app, None, &[("query", ACCOUNTS)]).await;
    assert_eq!((status, code(&body).as_deref()), (401, Some("UNAUTHENTICATED")), "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, _, body) = get(&app, None, &[("query", "{ __schema { queryType { name } } }")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");
}

#[tokio::test]
async fn browsers_may_send_request_ids_and_apollo_client_awareness_and_read_the_request_id() {
    let app = TestApp::spawn_with(Options {
        args: vec!["--cors-allowed-origins".into(), "https://app.example.com".into()],
        ..Default::default()
    })
    .await;
    let r = app
        .http
        .request(reqwest::Method::OPTIONS, &app.graphql)
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-request-id,apollographql-client-name,apollographql-client-version",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let allowed = r.headers()["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    for h in ["authorization", "x-request-id", "apollographql-client-name", "apollographql-client-version"] {
        assert!(allowed.contains(h), "{h} not in {allowed}");
    }
    let r = app
        .http
        .post(&app.graphql)
        .header("origin", "https://app.example.com")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    let exposed = r.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

#[tokio::test]
async fn a_request_error_is_one_clean_line_and_carries_no_data_in_the_graphql_media_type() {
    let app = TestApp::spawn().await;
    let post = |accept: &'static str| {
        let app = &app;
        async move {
            let r = app
                .http
                .post(&app.graphql)
                .header("accept", accept)
                .json(&json!({"query": "{ getPlaidBankAccounts { bankAccountId "}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post("application/graphql-response+json").await;
    assert_eq!((status, code(&body).as_deref()), (400, Some("GRAPHQL_PARSE_FAILED")), "{body}");
    assert!(body.as_object().unwrap().get("data").is_none(), "no data on a request error: {body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("Syntax error at line 1, column") && !message.contains('\n'), "{message:?}");
    assert_eq!(body["errors"][0]["locations"][0]["line"], 1);
    // Plain JSON clients keep the legacy shape (status 200, `data: null`).
    let (status, body) = post("application/json").await;
    assert_eq!((status, code(&body).as_deref()), (200, Some("GRAPHQL_PARSE_FAILED")), "{body}");
}

/// The per-minute budget of the operations that call Plaid is spent only by calls that do:
/// not by input refused before anything runs, nor by replays of a decided completion.
#[tokio::test]
async fn refused_calls_and_completion_replays_do_not_spend_the_sensitive_budget() {
    let app =
        TestApp::spawn_with(Options { args: vec!["--rate-limit-sensitive-per-minute=3".into()], ..Default::default() })
            .await;
    let t = app.token("budget");
    for _ in 0..5 {
        let r = app.complete(&t, "", None).await;
        assert_eq!(code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
        let r = app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {"platformItemId": ""}})).await;
        assert_eq!(code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
    }
    // One link spends two (a link token, a completion); replays of its completion spend none.
    let (public_token, _) = app.link_session(&t, json!({}), json!({})).await;
    let first = app.complete(&t, &public_token, None).await;
    assert!(first["errors"].is_null(), "{first}");
    for _ in 0..5 {
        let again = app.complete(&t, &public_token, None).await;
        assert_eq!(again["data"], first["data"], "a replay answers the same");
    }
    let r = app.gql(Some(&t), REFRESH, json!({})).await;
    assert!(r["errors"].is_null(), "the third spend is still within the budget: {r}");
    let r = app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {}})).await;
    assert_eq!(code(&r).as_deref(), Some("RATE_LIMITED"), "the fourth is over it: {r}");
}
