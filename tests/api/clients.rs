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

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Apollo Client's automatic persisted queries: the hash alone first, then hash and text once,
/// then the hash alone works, over POST and over GET.
#[tokio::test]
async fn automatic_persisted_queries_work_as_apollo_sends_them() {
    let app = TestApp::spawn().await;
    let t = app.token("apq");
    app.link(&t).await;
    let q = "query Mine { getPlaidBankAccounts { bankAccountId } }";
    let ext = json!({"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(q)}});
    let post = |body: Value| {
        let app = &app;
        let t = t.clone();
        async move { app.post_raw(&[("authorization", &format!("Bearer {t}"))], body).await }
    };
    let (status, _, body) = post(json!({"extensions": ext})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound", "{body}");
    assert_eq!(code(&body).as_deref(), Some("PERSISTED_QUERY_NOT_FOUND"));
    let (_, _, body) = post(json!({"query": "{ __typename }", "extensions": ext})).await;
    assert_eq!(code(&body).as_deref(), Some("BAD_REQUEST"), "a text under another text's hash: {body}");
    let (_, _, body) = post(json!({"query": q, "extensions": ext})).await;
    assert_eq!(body["data"]["getPlaidBankAccounts"].as_array().unwrap().len(), 9, "{body}");
    let (_, _, body) = post(json!({"extensions": ext})).await;
    assert_eq!(body["data"]["getPlaidBankAccounts"].as_array().unwrap().len(), 9, "by hash alone: {body}");
    let (status, _, body) = get(&app, Some(&t), &[("extensions", &ext.to_string())]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["getPlaidBankAccounts"].as_array().unwrap().len(), 9, "over GET: {body}");
    let v2 = json!({"persistedQuery": {"version": 2, "sha256Hash": sha256_hex(q)}});
    let (_, _, body) = post(json!({"extensions": v2})).await;
    assert_eq!(code(&body).as_deref(), Some("PERSISTED_QUERY_NOT_SUPPORTED"), "{body}");
}

/// Trusted documents: the manifest's documents run (by hash or by text), nothing else does
/// under `enforce`; under `log` the rest runs and is counted. Both manifest formats load.
#[tokio::test]
async fn trusted_documents_let_through_exactly_the_manifest() {
    let mine = "query Mine { getPlaidBankAccounts { bankAccountId } }";
    let link_token = "mutation Link { createPlaidLinkToken(input: {}) { linkToken } }";
    let dir = std::env::temp_dir().join(format!("bankgraph-trusted-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let codegen = dir.join("persisted-documents.json");
    std::fs::write(&codegen, json!({ sha256_hex(mine): mine, sha256_hex(link_token): link_token }).to_string())
        .unwrap();
    let apollo = dir.join("persisted-query-manifest.json");
    let ops = json!({"format": "apollo-persisted-query-manifest", "version": 1, "operations": [
        {"id": sha256_hex(mine), "name": "Mine", "type": "query", "body": mine},
        {"id": sha256_hex(link_token), "name": "Link", "type": "mutation", "body": link_token},
    ]});
    std::fs::write(&apollo, ops.to_string()).unwrap();

    for (manifest, mode) in [(&codegen, "enforce"), (&apollo, "enforce"), (&codegen, "log")] {
        let app = TestApp::spawn_with(Options {
            args: vec![
                format!("--trusted-documents={}", manifest.display()),
                format!("--trusted-documents-mode={mode}"),
            ],
            ..Default::default()
        })
        .await;
        let t = app.token("trusted");
        let auth = format!("Bearer {t}");
        let by_hash =
            |text: &str| json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(text)}}});
        let (_, _, body) = app.post_raw(&[("authorization", &auth)], by_hash(mine)).await;
        assert!(body["data"]["getPlaidBankAccounts"].is_array(), "{mode}: {body}");
        let (_, _, body) = app.post_raw(&[("authorization", &auth)], json!({"query": link_token})).await;
        assert!(body["data"]["createPlaidLinkToken"]["linkToken"].is_string(), "{mode}: {body}");
        let adhoc = json!({"query": "{ getPlaidBankAccounts { bankAccountId lastFour } }"});
        let (_, _, body) = app.post_raw(&[("authorization", &auth)], adhoc).await;
        if mode == "enforce" {
            assert_eq!(code(&body).as_deref(), Some("PERSISTED_QUERY_NOT_IN_LIST"), "{body}");
        } else {
            assert!(body["data"]["getPlaidBankAccounts"].is_array(), "{body}");
            let metrics = app.http.get(format!("{}/metrics", app.internal)).send().await.unwrap().text().await.unwrap();
            assert!(metrics.contains("bankgraph_untrusted_documents_total{mode=\"log\"} 1"), "{metrics}");
        }
    }

    // A manifest whose id is not its document's hash is refused at start, naming the variable.
    let wrong = dir.join("wrong.json");
    std::fs::write(&wrong, json!({ sha256_hex("{ a }"): mine }).to_string()).unwrap();
    let mut args = vec!["bankgraph".to_string(), format!("--trusted-documents={}", wrong.display())];
    args.push(format!("--database-url=sqlite://{}/x.db", dir.display()));
    let e = settings(&args[1..]).resolve().unwrap_err();
    assert!(e.0.starts_with("TRUSTED_DOCUMENTS"), "{e}");
}

/// Keyset pages stay exact while a sync lands between them; offset pages drift.
#[tokio::test]
async fn keyset_pages_have_no_duplicate_and_no_gap_while_new_transactions_arrive() {
    let app = TestApp::spawn().await;
    let t = app.token("pager");
    let item = app.link(&t).await["platformItemId"].as_str().unwrap().to_string();
    app.wait_for_history(&t, 120).await;
    let q = "query($p: PaginateInput) { getPlaidBankTransactions(input: {paginate: $p}) { totalCount
        pageInfo { endCursor hasNextPage } transactions { historicalBankTransactionId date transactionDate } } }";
    let page = |p: Value| {
        let app = &app;
        let t = t.clone();
        async move {
            let r = app.gql(Some(&t), q, json!({"p": p})).await;
            r["data"]["getPlaidBankTransactions"].clone()
        }
    };
    let ids = |p: &Value| -> Vec<String> {
        p["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["historicalBankTransactionId"].as_str().unwrap().to_string())
            .collect()
    };
    let everything: std::collections::BTreeSet<String> = ids(&page(json!({"limit": 100})).await)
        .into_iter()
        .chain(ids(&page(json!({"limit": 100, "offset": 100})).await))
        .collect();
    assert_eq!(everything.len(), 120);

    let first = page(json!({"limit": 50})).await;
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    let by_offset_first = ids(&first);
    // A sync lands between pages: five new transactions, dated today (at the top).
    app.emu_post(&format!("/emulator/items/{item}/transactions/advance"), json!({"new": 5, "post_pending": false}))
        .await;
    app.wait_for_history(&t, 125).await;

    let mut seen = ids(&first);
    let mut cursor = first["pageInfo"]["endCursor"].as_str().unwrap().to_string();
    loop {
        let p = page(json!({"limit": 50, "after": cursor})).await;
        seen.extend(ids(&p));
        if p["pageInfo"]["hasNextPage"] == false {
            assert_eq!(p["transactions"].as_array().unwrap().len(), 20);
            break;
        }
        cursor = p["pageInfo"]["endCursor"].as_str().unwrap().to_string();
    }
    let unique: std::collections::BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicate");
    assert_eq!(unique, everything, "no gap: exactly the transactions there were at the first page");

    // The same walk by offset repeats rows of the first page (what the contract's offset does).
    let second_by_offset = ids(&page(json!({"limit": 50, "offset": 50})).await);
    assert!(second_by_offset.iter().any(|id| by_offset_first.contains(id)), "offset pages drift");

    // The calendar day, beside the instant.
    let tx = &first["transactions"][0];
    assert_eq!(tx["date"].as_str().unwrap(), &tx["transactionDate"].as_str().unwrap()[..10]);
    // Bad cursors and mixed windows are the client's error.
    let r = app.gql(Some(&t), q, json!({"p": {"after": "not-a-cursor"}})).await;
    assert_eq!(code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
    let r = app.gql(Some(&t), q, json!({"p": {"after": cursor, "offset": 5}})).await;
    assert_eq!(code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
}

/// GraphiQL's page and assets come from the binary: the page under a self-only policy, the
/// assets gzipped for clients that accept it and inflated for the rest.
#[tokio::test]
async fn graphiql_is_served_from_the_binary_under_a_self_only_policy() {
    let app = TestApp::spawn().await;
    let page = app.http.get(&app.graphql).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("http"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("://"), "no absolute URL in the page: {html}");
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let asset = format!("{}/graphiql/3.8.3/graphiql.min.js", app.base);
    let gz = raw.get(&asset).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let gz_len = gz.bytes().await.unwrap().len();
    let plain = raw.get(&asset).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let text = plain.text().await.unwrap();
    assert!(text.len() > 3 * gz_len, "inflated: {} vs {gz_len}", text.len());
    let missing = raw.get(format!("{}/graphiql/3.8.3/nope.js", app.base)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

/// GRAPHIQL_ENABLED=false: a GET without a query is a 404, never the page, and its assets are
/// gone too; queries over GET still run.
#[tokio::test]
async fn graphiql_can_be_switched_off() {
    let app =
        TestApp::spawn_with(Options { args: vec!["--graphiql-enabled=false".into()], ..Default::default() }).await;
    let page = app.http.get(&app.graphql).send().await.unwrap();
    assert_eq!(page.status(), 404);
    let body: Value = page.json().await.unwrap();
    assert_eq!(code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    assert!(!body.to_string().contains("GraphiQL"), "{body}");
    let asset = app.http.get(format!("{}/graphiql/3.8.3/graphiql.min.js", app.base)).send().await.unwrap();
    assert_eq!(asset.status(), 404);
    let q = app.http.get(format!("{}?query=%7B__typename%7D", app.graphql)).send().await.unwrap();
    assert_eq!(q.json::<Value>().await.unwrap()["data"]["__typename"], "Query");
}
