//! Every threat of HARDENING.md refused with the right status and code; GraphQL over HTTP;
//! observability; graceful shutdown.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// graphql-js's `getIntrospectionQuery()`, what GraphiQL and codegen tools send.
const INTROSPECTION: &str = "query IntrospectionQuery { __schema { queryType { name } mutationType { name }
  subscriptionType { name } types { ...FullType } directives { name description locations args { ...InputValue } } } }
fragment FullType on __Type { kind name description fields(includeDeprecated: true) { name description
  args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason } inputFields { ...InputValue }
  interfaces { ...TypeRef } enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef } }
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
  ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";

async fn post(app: &TestApp, headers: &[(&str, &str)], body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let (s, h, b) = app.post_raw(headers, body).await;
    (s.as_u16(), h, b)
}

#[tokio::test]
async fn every_threat_is_refused_with_the_right_status_and_code() {
    let app = TestApp::spawn().await;
    let t = app.token("armor");
    let bearer = format!("Bearer {t}");
    let as_graphql = [("accept", GRAPHQL_RESPONSE), ("authorization", bearer.as_str())];

    // Codegen still works: the full introspection query is within every limit.
    let (s, _, b) = post(&app, &[], json!({"query": INTROSPECTION})).await;
    assert_eq!(s, 200);
    assert!(b["data"]["__schema"]["types"].as_array().unwrap().len() > 20, "{b}");

    // Deep query.
    let mut deep = String::from("__typename");
    for _ in 0..20 {
        deep = format!("ofType {{ {deep} }}");
    }
    let (s, _, b) =
        post(&app, &as_graphql, json!({"query": format!("{{ __type(name: \"Query\") {{ {deep} }} }}")})).await;
    assert_eq!((s, code(&b).as_deref()), (400, Some("GRAPHQL_VALIDATION_FAILED")), "{b}");

    // 100 aliases of a Plaid field.
    let aliased: Vec<String> = (0..100).map(|i| format!("a{i}: getPlaidBankAccounts {{ bankAccountId }}")).collect();
    let (s, _, b) = post(&app, &as_graphql, json!({"query": format!("{{ {} }}", aliased.join(" "))})).await;
    assert_eq!((s, code(&b).as_deref()), (400, Some("GRAPHQL_VALIDATION_FAILED")), "{b}");
    // Cheap fields too: an alias flood is refused whatever it aliases.
    let typenames: Vec<String> = (0..100).map(|i| format!("t{i}: __typename")).collect();
    let (s, _, b) = post(&app, &as_graphql, json!({"query": format!("{{ {} }}", typenames.join(" "))})).await;
    assert_eq!((s, code(&b).as_deref()), (400, Some("GRAPHQL_VALIDATION_FAILED")), "{b}");

    // 50 directives.
    let directives = "@include(if: true) ".repeat(50);
    let (s, _, b) = post(&app, &as_graphql, json!({"query": format!("{{ __typename {directives} }}")})).await;
    assert_eq!((s, code(&b).as_deref()), (400, Some("GRAPHQL_VALIDATION_FAILED")), "{b}");

    // A batch array.
    let r = app
        .http
        .post(&app.graphql)
        .header("content-type", "application/json")
        .body(r#"[{"query":"{ __typename }"},{"query":"{ __typename }"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(code(&r.json::<Value>().await.unwrap()).as_deref(), Some("BAD_REQUEST"));

    // A 1 MB body, refused before it is parsed.
    let huge = json!({"query": "{ __typename }", "variables": {"pad": "x".repeat(1 << 20)}});
    let r = app.http.post(&app.graphql).json(&huge).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(code(&r.json::<Value>().await.unwrap()).as_deref(), Some("PAYLOAD_TOO_LARGE"));

    // A mutation over GET.
    let r = app
        .http
        .get(format!("{}?query=mutation%20%7B%20refreshPlaidBankConnections%20%7B%20status%20%7D%20%7D", app.graphql))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers().get("allow").unwrap(), "POST");

    // A text/plain post (a cross-site form could send it without a preflight).
    let r = app
        .http
        .post(&app.graphql)
        .header("content-type", "text/plain")
        .header("authorization", &bearer)
        .body(r#"{"query":"mutation { refreshPlaidBankConnections { status } }"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(code(&r.json::<Value>().await.unwrap()).as_deref(), Some("UNSUPPORTED_MEDIA_TYPE"));

    // A query longer than the cap.
    let long = format!("{{ __typename }} # {}", "x".repeat(25_000));
    let (s, _, b) = post(&app, &as_graphql, json!({"query": long})).await;
    assert_eq!((s, code(&b).as_deref()), (400, Some("BAD_REQUEST")));

    // An internal error's message is masked (the storage-failure test shows the same for a
    // real failure): nothing but a generic message and the request id.
    app.sql(&["drop table balance_snapshots"]).await;
    let (s, h, b) = post(&app, &as_graphql, json!({"query": "{ getPlaidBankBalances { bankAccountId } }"})).await;
    assert_eq!((s, code(&b).as_deref()), (200, Some("INTERNAL_SERVER_ERROR")), "{b}");
    let msg = b["errors"][0]["message"].as_str().unwrap();
    let rid = h.get("x-request-id").unwrap().to_str().unwrap();
    assert_eq!(msg, format!("Internal server error. Request id: {rid}."));
    assert!(!b.to_string().to_lowercase().contains("balance_snapshots"), "no SQL leaks: {b}");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let app = TestApp::spawn_with(Options {
        args: vec!["--rate-limit-per-user=3".into(), "--rate-limit-sensitive-per-minute=2".into()],
        ..Default::default()
    })
    .await;
    let t = app.token("busy");
    let h = format!("Bearer {t}");
    let q = json!({"query": "{ getPlaidBankAccounts { bankAccountId } }"});
    let mut statuses = vec![];
    for _ in 0..6 {
        let (s, headers, b) = post(&app, &[("authorization", &h)], q.clone()).await;
        if s == 429 {
            assert!(headers.get("retry-after").is_some(), "Retry-After on a 429");
            assert_eq!(code(&b).as_deref(), Some("RATE_LIMITED"));
            assert!(b["errors"][0]["extensions"]["retryAfterSeconds"].as_u64().unwrap() >= 1);
        }
        statuses.push(s);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(statuses[0], 200);
    // Another caller has their own allowance.
    let other = format!("Bearer {}", app.token("calm"));
    assert_eq!(post(&app, &[("authorization", &other)], q.clone()).await.0, 200);

    // The operations that call Plaid have a tighter, per-minute limit.
    let t3 = format!("Bearer {}", app.token("linker"));
    let link = json!({"query": "mutation { createPlaidLinkToken(input: {}) { linkToken } }"});
    assert_eq!(post(&app, &[("authorization", &t3)], link.clone()).await.0, 200);
    assert_eq!(post(&app, &[("authorization", &t3)], link.clone()).await.0, 200);
    let (s, headers, b) = post(&app, &[("authorization", &t3)], link.clone()).await;
    assert_eq!((s, code(&b).as_deref()), (429, Some("RATE_LIMITED")), "{b}");
    let wait: u64 = headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");

    // Per client IP.
    let ip = TestApp::spawn_with(Options { args: vec!["--rate-limit-per-ip=2".into()], ..Default::default() }).await;
    let mut codes = vec![];
    for _ in 0..5 {
        codes.push(post(&ip, &[], json!({"query": "{ __typename }"})).await.0);
    }
    assert!(codes.contains(&429), "{codes:?}");
}

#[tokio::test]
async fn answers_come_in_the_media_type_the_client_accepts() {
    let app = TestApp::spawn().await;
    let ok = json!({"query": "{ __typename }"});
    let bad = json!({"query": "{ nope }"});
    let (s, h, _) = post(&app, &[("accept", GRAPHQL_RESPONSE)], ok.clone()).await;
    assert_eq!(s, 200);
    assert!(h.get("content-type").unwrap().to_str().unwrap().starts_with(GRAPHQL_RESPONSE));
    let (s, h, b) = post(&app, &[("accept", GRAPHQL_RESPONSE)], bad.clone()).await;
    assert_eq!(s, 400, "a request that fails validation is a 400 under {GRAPHQL_RESPONSE}: {b}");
    assert!(h.get("content-type").unwrap().to_str().unwrap().starts_with(GRAPHQL_RESPONSE));
    let (s, h, _) = post(&app, &[("accept", "application/json")], bad.clone()).await;
    assert_eq!(s, 200, "legacy application/json clients get 200 with errors");
    assert!(h.get("content-type").unwrap().to_str().unwrap().starts_with("application/json"));
    let (s, _, _) = post(&app, &[("accept", "text/html")], ok.clone()).await;
    assert_eq!(s, 406);
    let (s, _, b) = post(&app, &[("accept", GRAPHQL_RESPONSE)], json!({"query": "{ __typename "})).await;
    assert_eq!((s, code(&b).as_deref()), (400, Some("GRAPHQL_PARSE_FAILED")), "a request that does not parse: {b}");
}

/// The same query text is parsed once and reused, but each request's variables, `@include`
/// decisions, caller and checks are its own.
#[tokio::test]
async fn a_reused_document_takes_each_requests_own_variables_and_caller() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.token("doc-alice"), app.token("doc-bob"));
    app.link(&alice).await;
    app.link(&bob).await;
    let q = "query Accounts($f: PlaidBankAccountFilterInput, $names: Boolean!) {
      getPlaidBankAccounts(input: $f) { bankAccountId lastFour accountName @include(if: $names) } }";
    let ids = |r: &Value| -> Vec<String> {
        r["data"]["getPlaidBankAccounts"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .iter()
            .map(|a| a["bankAccountId"].as_str().unwrap().to_string())
            .collect()
    };

    let all = app.gql(Some(&alice), q, json!({"names": true})).await;
    let alice_ids = ids(&all);
    assert!(alice_ids.len() > 1, "{all}");
    assert!(all["data"]["getPlaidBankAccounts"].as_array().unwrap().iter().all(|a| a["accountName"].is_string()));

    let one = app.gql(Some(&alice), q, json!({"f": {"bankAccountId": alice_ids[0]}, "names": false})).await;
    assert_eq!(ids(&one), vec![alice_ids[0].clone()], "the filter of this request, not the last one: {one}");
    assert!(one["data"]["getPlaidBankAccounts"][0].get("accountName").is_none(), "@include(if: false): {one}");

    let theirs = app.gql(Some(&bob), q, json!({"names": true})).await;
    let bob_ids = ids(&theirs);
    assert!(!bob_ids.is_empty() && bob_ids.iter().all(|id| !alice_ids.contains(id)), "{theirs}");
    let cross = app.gql(Some(&bob), q, json!({"f": {"bankAccountId": alice_ids[0]}, "names": true})).await;
    assert_eq!(ids(&cross), Vec::<String>::new(), "another caller's id finds nothing: {cross}");

    let bad = app.gql(Some(&alice), q, json!({"names": "yes"})).await;
    assert_eq!(code(&bad).as_deref(), Some("BAD_USER_INPUT"), "variables are still checked: {bad}");
    let missing = app.gql(Some(&alice), q, json!({})).await;
    assert_eq!(code(&missing).as_deref(), Some("BAD_USER_INPUT"), "a required variable: {missing}");
    assert!(missing["data"].is_null(), "refused before anything runs: {missing}");
    let page = "query($l: Int!) { getPlaidBankTransactions(input: {paginate: {limit: $l}}) { totalCount } }";
    let (s, _, b) = post(
        &app,
        &[("accept", GRAPHQL_RESPONSE), ("authorization", &format!("Bearer {alice}"))],
        json!({"query": page, "variables": {"l": null}}),
    )
    .await;
    assert_eq!((s, code(&b).as_deref()), (400, Some("BAD_USER_INPUT")), "a required variable given as null: {b}");
    let anonymous = app.gql(None, q, json!({"names": true})).await;
    assert_eq!(code(&anonymous).as_deref(), Some("UNAUTHENTICATED"), "{anonymous}");
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let app = TestApp::spawn_with(Options {
        args: vec!["--cors-allowed-origins=https://app.example.com".into()],
        ..Default::default()
    })
    .await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, &app.graphql)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert_eq!(ok.headers().get("access-control-allow-origin").unwrap(), "https://app.example.com");
    let no = preflight("https://evil.example.com").await.unwrap();
    assert!(no.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn metrics_show_per_operation_latency_plaid_calls_and_background_work() {
    let app = TestApp::spawn().await;
    let t = app.token("observed");
    app.link(&t).await;
    app.wait_for_history(&t, 120).await;
    app.accounts(&t, json!({})).await;
    // A client cannot mint series: a field the schema does not have is labelled `unknown`.
    let bogus = app.gql(Some(&t), "{ bogusFieldXyz getPlaidBankAccounts { bankAccountId } }", json!({})).await;
    assert_eq!(code(&bogus).as_deref(), Some("GRAPHQL_VALIDATION_FAILED"), "{bogus}");
    let text = app.http.get(format!("{}/metrics", app.internal)).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("bogusFieldXyz"), "{text}");
    for series in [
        "bankgraph_graphql_operation_duration_seconds_bucket{operation=\"getPlaidBankAccounts\",outcome=\"ok\"",
        "bankgraph_graphql_operation_duration_seconds_count{operation=\"completePlaidLink\",outcome=\"ok\"}",
        "bankgraph_graphql_operation_duration_seconds_count{operation=\"getPlaidBankAccounts,unknown\",outcome=\"GRAPHQL_VALIDATION_FAILED\"}",
        "bankgraph_plaid_call_duration_seconds_count{endpoint=\"/item/public_token/exchange\"}",
        "bankgraph_jobs_finished_total{kind=\"sync\",outcome=\"done\"}",
        "bankgraph_sync_transactions_total{change=\"upserted\"}",
        "bankgraph_webhooks_received_total{",
        "bankgraph_graphql_requests_total{status=\"200\"}",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    let public = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert_eq!(public.status(), 404, "metrics are only on the internal listener");
}

/// The job backlog is read from the shared queue at each scrape: counts by kind and state, the
/// age of the oldest due job, and zeros once the queue has drained.
#[tokio::test]
async fn metrics_show_the_job_backlog_of_the_shared_queue() {
    let app = TestApp::spawn_with(Options { args: vec!["--job-workers=0".into()], ..Default::default() }).await;
    let at = |secs_ago: i64| bankgraph::db::ts(chrono::Utc::now() - chrono::Duration::seconds(secs_ago));
    let job = |id: &str, kind: &str, key: &str, state: &str, run_after: String| {
        format!(
            "insert into jobs (id, kind, dedupe_key, state, attempts, run_after, created_at, updated_at) \
             values ('{id}', '{kind}', '{key}', '{state}', 0, '{run_after}', '{run_after}', '{run_after}')"
        )
    };
    app.sql(&[
        "delete from jobs",
        &job("j1", "webhook", "e1", "queued", at(95)),
        &job("j2", "webhook", "e2", "queued", at(10)),
        // Not due yet: counted as queued, but it has not waited.
        &job("j3", "sync", "c1", "queued", at(-600)),
        &job("j4", "health", "c2", "failed", at(30)),
    ])
    .await;
    let scrape =
        || async { app.http.get(format!("{}/metrics", app.internal)).send().await.unwrap().text().await.unwrap() };
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    let text = scrape().await;
    assert_eq!(value(&text, "bankgraph_jobs{kind=\"webhook\",state=\"queued\"}"), 2.0);
    assert_eq!(value(&text, "bankgraph_jobs{kind=\"sync\",state=\"queued\"}"), 1.0);
    assert_eq!(value(&text, "bankgraph_jobs{kind=\"health\",state=\"failed\"}"), 1.0);
    assert_eq!(value(&text, "bankgraph_jobs{kind=\"reconcile\",state=\"running\"}"), 0.0);
    let waited = value(&text, "bankgraph_jobs_oldest_due_seconds{kind=\"webhook\"}");
    assert!((95.0..120.0).contains(&waited), "{waited}");
    assert_eq!(value(&text, "bankgraph_jobs_oldest_due_seconds{kind=\"sync\"}"), 0.0, "not due yet");

    app.sql(&["delete from jobs"]).await;
    let text = scrape().await;
    assert_eq!(value(&text, "bankgraph_jobs{kind=\"webhook\",state=\"queued\"}"), 0.0, "drained");
    assert_eq!(value(&text, "bankgraph_jobs_oldest_due_seconds{kind=\"webhook\"}"), 0.0);
}

#[tokio::test]
async fn readyz_fails_when_the_database_is_unreachable() {
    let app = TestApp::spawn().await;
    assert_eq!(app.http.get(format!("{}/readyz", app.base)).send().await.unwrap().status(), 200);
    if !app.is_postgres() {
        eprintln!("an embedded SQLite file cannot be made unreachable from outside; run with TEST_DATABASE_URL");
        return;
    }
    let name = app.database_url.rsplit('/').next().unwrap().to_string();
    let admin = std::env::var("TEST_DATABASE_URL").unwrap();
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.unwrap();
    sqlx::query(&format!("drop database {name} with (force)")).execute(&mut c).await.unwrap();
    app.eventually("readyz reports the database", || async {
        app.http.get(format!("{}/readyz", app.base)).send().await.unwrap().status() == 503
    })
    .await;
    assert_eq!(app.http.get(format!("{}/healthz", app.base)).send().await.unwrap().status(), 200, "still alive");
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_and_exits_zero() {
    let probe = TestApp::spawn_with(Options { args: vec!["--job-workers=0".into()], ..Default::default() }).await;
    probe.emu_post("/emulator/faults", json!({"endpoint": "/link/token/create", "kind": "latency", "ms": 1500})).await;
    let server = Server::start(&probe.database_url, &probe.emulator.url(), &["--shutdown-grace-seconds=10"], &[]);
    let graphql = server.graphql.clone();
    let token = probe.token("patient");
    let http = reqwest::Client::new();
    let slow = {
        let (http, graphql, token) = (http.clone(), graphql.clone(), token.clone());
        tokio::spawn(async move {
            http.post(graphql)
                .bearer_auth(token)
                .json(&json!({"query": "mutation { createPlaidLinkToken(input: {}) { linkToken } }"}))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let terminating = tokio::spawn(server.terminate());
    let resp = slow.await.unwrap().expect("the in-flight request completes");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body["data"]["createPlaidLinkToken"]["linkToken"].is_string(), "{body}");
    let status = terminating.await.unwrap();
    assert!(status.success(), "exits 0 after SIGTERM: {status:?}");
    assert!(http.post(&graphql).json(&json!({"query": "{ __typename }"})).send().await.is_err(), "no longer accepting");
}

/// A real process's log, as a platform team reads it: JSON lines (no terminal colours), one per
/// GraphQL request with its request id, operation, caller, status and outcome, never a token;
/// and every line is written by the time the process exits on SIGTERM.
#[tokio::test]
async fn the_log_is_json_lines_one_per_request_all_written_by_exit() {
    let probe = TestApp::spawn_with(Options { args: vec!["--job-workers=0".into()], ..Default::default() }).await;
    let dir = std::env::temp_dir().join(format!("bankgraph-log-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("bankgraph.log");
    let server = Server::start_logged(&probe.database_url, &probe.emulator.url(), &[], &[("LOG_FORMAT", "json")], &log);
    let token = probe.token("logged-caller");
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = format!("log-test-{i}");
        let (q, name) = if i % 2 == 0 {
            ("query Mine { getPlaidBankAccounts { bankAccountId } }", "Mine")
        } else {
            ("{ nope }", "anonymous")
        };
        let r = http
            .post(&server.graphql)
            .bearer_auth(&token)
            .header("x-request-id", &id)
            .json(&json!({"query": q}))
            .send()
            .await
            .unwrap();
        let ours = r.headers().get("x-request-id").unwrap().to_str().unwrap().to_string();
        assert_ne!(ours, id, "the server's own id answers, never the client's");
        ids.push((id, ours, name));
    }
    assert!(server.terminate().await.success());

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "no terminal escape codes in a log file");
    assert!(!text.contains(&token), "the caller's token is never logged");
    let lines: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let requests: Vec<&Value> = lines.iter().filter(|l| l["fields"]["message"] == "graphql request").collect();
    assert_eq!(requests.len(), ids.len(), "one line per request, all written before exit");
    for (id, ours, name) in &ids {
        let line = requests
            .iter()
            .find(|l| l["span"]["client_request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no line for {id}"));
        assert_eq!(line["span"]["request_id"], ours.as_str(), "{line}");
        let f = &line["fields"];
        assert_eq!((f["operation"].as_str(), f["sub"].as_str()), (Some(*name), Some("logged-caller")), "{line}");
        let fields = if *name == "Mine" { "getPlaidBankAccounts" } else { "unknown" };
        assert_eq!(f["fields"].as_str(), Some(fields), "{line}");
        assert!(f["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{line}");
        let want = if *name == "Mine" { "ok" } else { "GRAPHQL_VALIDATION_FAILED" };
        assert_eq!((f["status"].as_u64(), f["outcome"].as_str()), (Some(200), Some(want)), "{line}");
    }
    assert!(lines.iter().any(|l| l["fields"]["message"] == "bankgraph stopped"), "the last line is written too");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn spans_are_exported_over_otlp_when_an_endpoint_is_configured() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A collector on loopback that counts the spans it is sent (OTLP/HTTP protobuf bodies).
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(body.len(), Ordering::SeqCst);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let probe = TestApp::spawn_with(Options { args: vec!["--job-workers=0".into()], ..Default::default() }).await;
    // No background work: the only spans are the request's (a request without a traceparent
    // must still be recorded).
    let server = Server::start(
        &probe.database_url,
        &probe.emulator.url(),
        &["--job-workers=0"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("RUST_LOG", "info")],
    );
    let graphql = server.graphql.clone();
    let r: Value = reqwest::Client::new()
        .post(&graphql)
        .bearer_auth(probe.token("traced"))
        .json(&json!({"query": "mutation { createPlaidLinkToken(input: {}) { linkToken } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["errors"].is_null(), "{r}");
    assert!(server.terminate().await.success());
    assert!(received.load(Ordering::SeqCst) > 0, "spans reached the collector (flushed at shutdown)");
}
