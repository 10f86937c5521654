//! The remaining operations and their errors, the schema lock, health, and the embedded default.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn removal_calls_plaid_hides_the_connection_and_is_idempotent() {
    let app = TestApp::spawn().await;
    let t = app.token("karl");
    let done = app.link(&t).await;
    app.wait_for_history(&t, 120).await;
    let conn = done["bankInstitutionAuthId"].clone();
    for _ in 0..2 {
        let r = app
            .gql(Some(&t), REMOVE, json!({"input": {"bankInstitutionAuthId": conn, "reason": "ACCOUNT_CLOSED"}}))
            .await;
        assert_eq!(
            r["data"]["removePlaidBankInstitution"],
            json!({"removed": true, "bankInstitutionAuthId": conn}),
            "{r}"
        );
    }
    let item = done["platformItemId"].as_str().unwrap();
    assert_eq!(app.emu_get(&format!("/emulator/items/{item}")).await["removed"], true);
    assert_eq!(app.accounts(&t, json!({})).await, json!([]));
    assert_eq!(app.transactions(&t, json!({})).await["data"]["getPlaidBankTransactions"]["totalCount"], 0);
    let r = app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {"platformItemId": item}})).await;
    assert_eq!(r["errors"][0]["message"], "No active Plaid connection found for the provided platformItemId.");
    app.stop().await;
}

#[tokio::test]
async fn an_item_plaid_no_longer_knows_is_removed_all_the_same() {
    let app = TestApp::spawn().await;
    let t = app.token("liam");
    let done = app.link(&t).await;
    let item = done["platformItemId"].as_str().unwrap();
    let access = app.emu_get(&format!("/emulator/items/{item}")).await["access_token"].as_str().unwrap().to_string();
    app.http
        .post(format!("{}/item/remove", app.emulator.url()))
        .json(&json!({"client_id": "emulator_client_id", "secret": "emulator_sandbox_secret", "access_token": access}))
        .send()
        .await
        .unwrap();
    let r = app.gql(Some(&t), REMOVE, json!({"input": {"bankInstitutionAuthId": done["bankInstitutionAuthId"]}})).await;
    assert_eq!(r["data"]["removePlaidBankInstitution"]["removed"], true, "{r}");
}

#[tokio::test]
async fn an_address_can_be_attached_and_then_is_known() {
    let app = TestApp::spawn().await;
    let t = app.token("mia");
    let done = app.link(&t).await;
    assert_eq!(done["requiresAddress"], true);
    let item = done["platformItemId"].as_str().unwrap().to_string();
    let address = json!({"streetAddressLine1": "123 Main St", "streetAddressLine2": "Apt 4", "city": "New York",
        "state": "ny", "postalCode": "10001-1234", "country": "us"});
    let r = app
        .gql(
            Some(&t),
            ADDRESS,
            json!({"input": {"bankInstitutionAuthId": done["bankInstitutionAuthId"], "address": address}}),
        )
        .await;
    assert!(r["data"]["createPlaidLinkAddress"]["addressId"].is_string(), "{r}");
    let (pt, _) = app.link_session(&t, json!({"platformItemId": item}), json!({})).await;
    let again = app.complete(&t, &pt, Some(&item)).await;
    assert_eq!(again["data"]["completePlaidLink"]["requiresAddress"], false, "{again}");
}

#[tokio::test]
async fn device_os_adds_the_oauth_option_or_says_which_setting_is_missing() {
    let app = TestApp::spawn().await;
    let t = app.token("nina");
    for (os, var) in
        [("IOS", "PLAID_REDIRECT_URI"), ("WEB", "PLAID_REDIRECT_URI"), ("ANDROID", "PLAID_ANDROID_PACKAGE_NAME")]
    {
        let r = app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {"deviceOs": os}})).await;
        assert_eq!(code(&r).as_deref(), Some("NOT_CONFIGURED"), "{os}: {r}");
        assert!(r["errors"][0]["message"].as_str().unwrap().contains(var), "{os}: {r}");
    }
    let configured = TestApp::spawn_with(Options {
        args: vec![
            "--plaid-redirect-uri".into(),
            "https://app.example.com/plaid/oauth".into(),
            "--plaid-android-package-name".into(),
            "com.example.bank".into(),
        ],
        ..Default::default()
    })
    .await;
    for os in ["IOS", "ANDROID", "WEB"] {
        let r = configured.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {"deviceOs": os}})).await;
        let lt =
            r["data"]["createPlaidLinkToken"]["linkToken"].as_str().unwrap_or_else(|| panic!("{os}: {r}")).to_string();
        let got = configured
            .http
            .post(format!("{}/link/token/get", configured.emulator.url()))
            .json(&json!({"client_id": "emulator_client_id", "secret": "emulator_sandbox_secret", "link_token": lt}))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        let redirect = &got["metadata"]["redirect_uri"];
        if os == "ANDROID" {
            assert!(redirect.is_null(), "Android sends the package name, not a redirect URI");
        } else {
            assert_eq!(redirect, "https://app.example.com/plaid/oauth");
        }
    }
}

#[tokio::test]
async fn refresh_stores_new_balances_and_is_throttled_per_caller() {
    let app = TestApp::spawn_with(Options {
        args: vec!["--refresh-min-interval-seconds".into(), "300".into()],
        ..Default::default()
    })
    .await;
    let t = app.token("oscar");
    let none = app.gql(Some(&t), REFRESH, json!({})).await;
    assert_eq!(none["data"]["refreshPlaidBankConnections"]["status"], "NO_CONNECTIONS");
    let done = app.link(&t).await;
    let item = done["platformItemId"].as_str().unwrap();
    let before = app.gql(Some(&t), BALANCES, json!({})).await["data"]["getPlaidBankBalances"].clone();
    // New activity at the bank moves balances.
    app.emu_post(&format!("/emulator/items/{item}/transactions/advance"), json!({"new": 12, "post_pending": true}))
        .await;
    let upstream = app.emu_get(&format!("/emulator/items/{item}")).await;
    let r = app.gql(Some(&t), REFRESH, json!({})).await;
    let p = &r["data"]["refreshPlaidBankConnections"];
    assert_eq!(p["status"], "REFRESHED", "{r}");
    assert_eq!(p["verifyMembers"], json!([]));
    // Every returned balance is the bank's current one, and some moved since the link.
    let dec = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => Some(n.to_string().parse::<rust_decimal::Decimal>().unwrap().normalize()),
        serde_json::Value::String(s) => Some(s.parse::<rust_decimal::Decimal>().unwrap().normalize()),
        _ => None,
    };
    let linked = app.accounts(&t, json!({})).await;
    for (i, acct) in upstream["accounts"].as_array().unwrap().iter().enumerate() {
        let got = p["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["bankAccountId"] == linked[i]["bankAccountId"])
            .unwrap();
        assert_eq!(dec(&got["amount"]), dec(&acct["balances"]["available"]), "{acct}");
        assert_eq!(dec(&got["current"]), dec(&acct["balances"]["current"]), "{acct}");
    }
    let moved = before
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| {
            let now =
                p["balances"].as_array().unwrap().iter().find(|n| n["bankAccountId"] == b["bankAccountId"]).unwrap();
            now["amount"] != b["amount"] || now["current"] != b["current"]
        })
        .count();
    assert!(moved > 0, "refreshed balances differ from the ones stored at link time");
    let b = app.gql(Some(&t), BALANCES, json!({"input": {"bankAccountId": done["bankAccountId"]}})).await;
    assert_eq!(b["data"]["getPlaidBankBalances"][0]["trigger"], "REFRESH");

    let again = app.gql(Some(&t), REFRESH, json!({})).await;
    let p2 = &again["data"]["refreshPlaidBankConnections"];
    assert_eq!(p2["status"], "THROTTLED");
    assert_eq!(p2["balances"], p["balances"], "the stored balances come back");
    // Another caller is not throttled by this one.
    let other = app.gql(Some(&app.token("pia")), REFRESH, json!({})).await;
    assert_eq!(other["data"]["refreshPlaidBankConnections"]["status"], "NO_CONNECTIONS");
}

#[tokio::test]
async fn plaid_errors_surface_with_the_contracts_codes() {
    let app = TestApp::spawn().await;
    let t = app.token("quinn");
    // An expired public token.
    let (pt, _) = app.link_session(&t, json!({}), json!({})).await;
    app.emu_post("/emulator/clock/advance", json!({"seconds": 31 * 60})).await;
    let r = app.complete(&t, &pt, None).await;
    assert_eq!(code(&r).as_deref(), Some("PLAID_ERROR"), "{r}");
    let plaid = &r["errors"][0]["extensions"]["plaid"];
    assert_eq!(plaid["errorCode"], "INVALID_PUBLIC_TOKEN");
    assert_eq!(plaid["errorType"], "INVALID_INPUT");
    assert!(plaid["requestId"].is_string());

    // 500s that outlast the retries.
    app.emu_post(
        "/emulator/faults",
        json!({"endpoint": "/link/token/create", "kind": "http_error", "status": 500, "times": 3}),
    )
    .await;
    let r = app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {}})).await;
    assert_eq!(code(&r).as_deref(), Some("UPSTREAM_UNAVAILABLE"), "{r}");
    let msg = r["errors"][0]["message"].as_str().unwrap();
    assert!(!msg.contains("127.0.0.1") && !msg.contains("http"), "no upstream URL: {msg}");
    // Fewer 500s than retries: the caller never notices.
    app.emu_post(
        "/emulator/faults",
        json!({"endpoint": "/link/token/create", "kind": "http_error", "status": 500, "times": 2}),
    )
    .await;
    let r = app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {}})).await;
    assert_eq!(r["data"]["createPlaidLinkToken"]["mode"], "CREATE", "{r}");

    // Plaid rate limiting is its own code.
    app.emu_post("/emulator/faults", json!({"endpoint": "/link/token/create", "kind": "rate_limit", "times": 1})).await;
    let r = app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {}})).await;
    assert_eq!(code(&r).as_deref(), Some("RATE_LIMITED"), "{r}");
    assert!(r["errors"][0]["extensions"]["retryAfterSeconds"].as_u64().is_some());
}

#[tokio::test]
async fn schema_graphql_is_the_running_schema() {
    let app = TestApp::spawn().await;
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap();
    assert_eq!(committed, bankgraph::graphql::sdl(), "run `cargo run -- schema > schema.graphql`");
    let (_, _, body) =
        app.post_raw(&[], json!({"query": "{ __type(name: \"PlaidBankTransaction\") { fields { name } } }"})).await;
    let names: Vec<&str> =
        body["data"]["__type"]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"historicalBankTransactionId") && names.contains(&"merchantName"));
}

#[tokio::test]
async fn health_is_served_on_both_listeners_and_webhooks_never_on_the_public_one() {
    let app = TestApp::spawn().await;
    for base in [&app.base, &app.internal] {
        assert_eq!(app.http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
        assert_eq!(app.http.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    }
    let r = app.http.post(format!("{}/webhooks/plaid", app.base)).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let page = app.http.get(&app.graphql).send().await.unwrap();
    assert!(page.headers().get("x-request-id").is_some(), "every response carries a request id");
    assert!(page.text().await.unwrap().contains("graphiql"), "GraphiQL on GET");
}

#[tokio::test]
async fn with_no_configuration_it_runs_offline_on_sqlite_with_development_secrets() {
    let dir = std::env::temp_dir().join(format!("bankgraph-embedded-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}/bankgraph.db", dir.display());
    let args: Vec<String> = [
        "--bind-addr",
        "127.0.0.1:0",
        "--internal-bind-addr",
        "127.0.0.1:0",
        "--database-url",
        &db,
        "--plaid-emulator-addr",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let config = settings(&args).resolve().unwrap();
    assert!(config.gateway.auth.development);
    let secrets: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bankgraph.db.dev-secrets.json")).unwrap()).unwrap();
    let app = bankgraph::app::App::build(config).await.unwrap();
    let banner = app.banner();
    assert!(
        banner.contains("/api/v1/graphql") && banner.contains("offline") && banner.contains("bankgraph token"),
        "{banner}"
    );
    let emulator_url = app.emulator_url().unwrap();
    let graphql = format!("http://{}/api/v1/graphql", app.public_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    let token = bankgraph::auth::mint_hs256(
        secrets["jwt_secret"].as_str().unwrap().as_bytes(),
        "embedded-user",
        "MANAGE_PAYMENT",
        std::time::Duration::from_secs(600),
        None,
        None,
    )
    .unwrap();
    let http = reqwest::Client::new();
    let call = |q: serde_json::Value| {
        let http = http.clone();
        let graphql = graphql.clone();
        let token = token.clone();
        async move {
            http.post(graphql)
                .bearer_auth(token)
                .json(&q)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let r = call(json!({"query": "mutation { createPlaidLinkToken(input: {}) { linkToken } }"})).await;
    let lt = r["data"]["createPlaidLinkToken"]["linkToken"].as_str().unwrap().to_string();
    let done: serde_json::Value = http
        .post(format!("{emulator_url}/emulator/link/complete"))
        .json(&json!({"link_token": lt}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = call(json!({"query": COMPLETE_LINK, "variables": {"input": {"publicToken": done["public_token"]}}})).await;
    assert_eq!(r["data"]["completePlaidLink"]["bankInstitutionName"], "First Platypus Bank", "{r}");
    // The seed's mobile flows work out of the box offline, with the documented defaults.
    for os in ["IOS", "ANDROID", "WEB"] {
        let q = "mutation($os: DeviceOs) { createPlaidLinkToken(input: {deviceOs: $os}) { linkToken } }";
        let r = call(json!({"query": q, "variables": {"os": os}})).await;
        assert!(r["data"]["createPlaidLinkToken"]["linkToken"].is_string(), "{os}: {r}");
    }
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn behind_the_proxy_bankgraph_links_and_stores_no_placeholder_field() {
    // The app's Plaid base URL is the proxy flavour of its emulator.
    let app = TestApp::spawn_with(Options {
        args: vec![
            "--plaid-proxy-client-id".into(),
            bankgraph::emulator::DEFAULT_PROXY_CLIENT_ID.into(),
            "--plaid-proxy-api-key".into(),
            bankgraph::emulator::DEFAULT_PROXY_API_KEY.into(),
            "--plaid-products".into(),
            "transactions,identity".into(),
        ],
        proxy: true,
        ..Default::default()
    })
    .await;
    let t = app.token("proxied");
    let done = app.link(&t).await;
    assert_eq!(done["bankInstitutionName"], "First Platypus Bank", "{done}");
    assert_eq!(done["requiresAddress"], false, "owners are real behind the proxy");
    app.wait_for_history(&t, 120).await;
    let everything = [
        app.accounts(&t, json!({})).await,
        app.gql(Some(&t), BALANCES, json!({})).await,
        app.transactions(&t, json!({"paginate": {"limit": 100}})).await,
    ];
    for v in everything {
        assert!(!v.to_string().contains("fuse_placeholder"), "{v}");
    }
}
