//! The split deployment (`bankgraph identity` + `bankgraph gateway`): who may call the identity
//! service, what a gateway does when it is down, slow or one of several, and what crosses the
//! boundary (request id, trace, errors). Real processes are in `split_processes.rs`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bankgraph::app::{GatewayApp, IdentityApp};
use bankgraph::config::{RpcClientConfig, RpcServerConfig, RpcTls, SplitGatewayConfig, SplitIdentityConfig};
use bankgraph::emulator::EmulatorConfig;
use bankgraph::emulator::drive::Endpoints;
use bankgraph::identity::IdentityService;
use bankgraph::rpc::RemoteIdentity;
use bankgraph::rpc::pb;
use bankgraph::rpc::pb::identity_service_client::IdentityServiceClient;
use secrecy::SecretString;
use serde_json::json;
use tonic::Code;

use crate::helpers::*;

fn split() -> Options {
    Options { topology: Some(Topology::Split), ..Default::default() }
}

fn service_token() -> Option<SecretString> {
    Some(SecretString::from(SERVICE_TOKEN.to_string()))
}

/// Calls every RPC of the contract with `token` (none: no authorization metadata) and
/// returns each one's status code (`Ok` for an answer).
async fn every_rpc(url: &str, token: Option<&str>) -> Vec<(&'static str, Code)> {
    let mut client = IdentityServiceClient::connect(url.to_string()).await.unwrap();
    fn req<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = token {
            r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    }
    fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
        match r {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        }
    }
    let user = || "mallory".to_string();
    vec![
        (
            "CreateLinkToken",
            code(
                client
                    .create_link_token(req(pb::CreateLinkTokenRequest { user_id: user(), ..Default::default() }, token))
                    .await,
            ),
        ),
        (
            "CompleteLink",
            code(
                client
                    .complete_link(req(
                        pb::CompleteLinkRequest {
                            user_id: user(),
                            public_token: "public-sandbox-x".into(),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "ReplayedLink",
            code(
                client
                    .replayed_link(req(
                        pb::ReplayedLinkRequest { user_id: user(), public_token: "public-sandbox-x".into() },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "ListAccounts",
            code(client.list_accounts(req(pb::ListAccountsRequest { user_id: user(), filter: None }, token)).await),
        ),
        (
            "ListAccountsBatch",
            code(
                client
                    .list_accounts_batch(req(
                        pb::ListAccountsBatchRequest {
                            requests: vec![pb::ListAccountsRequest { user_id: user(), filter: None }],
                            request_ids: vec![],
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        (
            "ListBalances",
            code(client.list_balances(req(pb::ListBalancesRequest { user_id: user(), filter: None }, token)).await),
        ),
        (
            "ListTransactions",
            code(
                client
                    .list_transactions(req(
                        pb::ListTransactionsRequest { user_id: user(), limit: 10, ..Default::default() },
                        token,
                    ))
                    .await,
            ),
        ),
        ("Refresh", code(client.refresh(req(pb::RefreshRequest { user_id: user() }, token)).await)),
        (
            "AddAddress",
            code(client.add_address(req(pb::AddAddressRequest { user_id: user(), ..Default::default() }, token)).await),
        ),
        (
            "RemoveConnection",
            code(
                client
                    .remove_connection(req(
                        pb::RemoveConnectionRequest {
                            user_id: user(),
                            connection_id: "x".into(),
                            reason: "OTHER".into(),
                        },
                        token,
                    ))
                    .await,
            ),
        ),
        ("Ready", code(client.ready(req(pb::ReadyRequest {}, token)).await)),
        (
            "WatchConnectionEvents",
            code(
                client
                    .watch_connection_events(req(
                        pb::WatchConnectionEventsRequest { user_id: user(), ..Default::default() },
                        token,
                    ))
                    .await,
            ),
        ),
    ]
}

/// How many RPCs the checked-in contract declares.
fn rpcs_in_contract() -> usize {
    include_str!("../../proto/bankgraph/identity/v1/identity.proto")
        .lines()
        .filter(|l| l.trim_start().starts_with("rpc "))
        .count()
}

#[tokio::test]
async fn every_rpc_refuses_a_caller_without_the_service_token_or_with_a_wrong_one() {
    let app = TestApp::spawn_with(split()).await;
    let url = app.rpc.clone().unwrap();
    for token in [None, Some("test-service-token-0123456789abcdeX"), Some(""), Some("short")] {
        let codes = every_rpc(&url, token).await;
        assert_eq!(codes.len(), rpcs_in_contract(), "every RPC of the contract");
        for (method, code) in codes {
            assert_eq!(code, Code::Unauthenticated, "{method} with {token:?}");
        }
    }
    // With the token the same calls reach the service, which answers each on its merits.
    let codes = every_rpc(&url, Some(SERVICE_TOKEN)).await;
    assert!(codes.iter().all(|(_, c)| *c != Code::Unauthenticated), "{codes:?}");
    for answered in ["Ready", "ListAccounts", "ListAccountsBatch", "WatchConnectionEvents"] {
        assert!(codes.contains(&(answered, Code::Ok)), "{answered}: {codes:?}");
    }
    assert!(codes.contains(&("RemoveConnection", Code::NotFound)), "another user's ids do not exist: {codes:?}");
    // And the gateway, which has the token, serves.
    let t = app.token("split-auth");
    app.link(&t).await;
    assert_eq!(app.accounts(&t, json!({})).await.as_array().unwrap().len(), 9);
}

#[tokio::test]
async fn errors_cross_the_boundary_with_their_code_exact_message_and_plaid_detail() {
    let app = TestApp::spawn_with(split()).await;
    let t = app.token("split-errors");
    let r = app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {"platformItemId": "nope"}})).await;
    assert_eq!(code(&r).as_deref(), Some("NOT_FOUND"), "{r}");
    assert_eq!(r["errors"][0]["message"], bankgraph::identity::NO_ACTIVE_CONNECTION);
    // A Plaid error keeps Plaid's fields.
    let r = app.complete(&t, "public-sandbox-00000000-0000-4000-8000-000000000000", None).await;
    let ext = &r["errors"][0]["extensions"];
    assert_eq!(ext["code"], "PLAID_ERROR", "{r}");
    assert_eq!(ext["plaid"]["errorCode"], "INVALID_PUBLIC_TOKEN", "{r}");
    assert_eq!(ext["plaid"]["errorType"], "INVALID_INPUT", "{r}");
    assert!(ext["plaid"]["requestId"].is_string(), "{r}");
    assert_eq!(
        r["errors"][0]["message"],
        "The public token is invalid, expired or already used; open Plaid Link again."
    );
    // Rate limiting keeps its retry delay.
    app.emu_post("/emulator/faults", json!({"endpoint": "/link/token/create", "kind": "rate_limit", "times": 1})).await;
    let r = app.gql(Some(&t), CREATE_LINK_TOKEN, json!({"input": {}})).await;
    assert_eq!(code(&r).as_deref(), Some("RATE_LIMITED"), "{r}");
    assert!(r["errors"][0]["extensions"]["retryAfterSeconds"].as_u64().is_some(), "{r}");
    // A refresh outcome crosses whole: statuses, balances as decimals.
    app.link(&t).await;
    let first = app.gql(Some(&t), REFRESH, json!({})).await;
    assert_eq!(first["data"]["refreshPlaidBankConnections"]["status"], "REFRESHED", "{first}");
    let again = app.gql(Some(&t), REFRESH, json!({})).await;
    let throttled = &again["data"]["refreshPlaidBankConnections"];
    assert_eq!(throttled["status"], "THROTTLED", "{again}");
    assert_eq!(throttled["balances"], first["data"]["refreshPlaidBankConnections"]["balances"]);
}

#[tokio::test]
async fn a_user_id_with_a_control_character_or_over_long_is_refused_at_the_rpc_boundary_and_fails_no_one_else() {
    use prost::Message;
    let app = TestApp::spawn_with(split()).await;
    let mut client = IdentityServiceClient::connect(app.rpc.clone().unwrap()).await.unwrap();
    fn req<T>(msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert("authorization", format!("Bearer {SERVICE_TOKEN}").parse().unwrap());
        r
    }
    let one = |user_id: &str| pb::ListAccountsRequest { user_id: user_id.into(), filter: None };
    let overlong = "u".repeat(1025);
    for bad in ["nul\u{0}id", "bell\u{7}id", "line\nid", overlong.as_str()] {
        let e = client.list_accounts(req(one(bad))).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
        assert_eq!(pb::ErrorDetail::decode(e.details()).unwrap().code, "BAD_USER_INPUT", "as GraphQL says of a bad id");
    }
    // Coalesced with good reads, a bad one fails only itself.
    let batch = pb::ListAccountsBatchRequest {
        requests: vec![one("good-1"), one("nul\u{0}id"), one("good-2")],
        request_ids: vec![],
    };
    let results = client.list_accounts_batch(req(batch)).await.unwrap().into_inner().results;
    use pb::list_accounts_result::Result as One;
    let kinds: Vec<_> = results
        .iter()
        .map(|r| match &r.result {
            Some(One::Accounts(a)) => Ok(a.accounts.len()),
            Some(One::Error(d)) => Err(d.code.clone()),
            None => Err("none".into()),
        })
        .collect();
    assert_eq!(kinds, vec![Ok(0), Err("BAD_USER_INPUT".to_string()), Ok(0)]);
}

#[tokio::test]
async fn one_request_id_and_one_trace_across_both_services() {
    let app = TestApp::spawn_with(split()).await;
    let t = app.token("split-trace");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = app
        .http
        .post(&app.graphql)
        .bearer_auth(&t)
        .header("x-request-id", "split-trace-request-1")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"query": ACCOUNTS, "variables": {}}))
        .send()
        .await
        .unwrap();
    // Ours, not the client's, crosses to the identity service; the client's is logged beside it.
    let ours = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(ours, "split-trace-request-1");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    let served = logs
        .lines()
        .find(|l| l.contains("rpc served") && l.contains(&ours))
        .unwrap_or_else(|| panic!("no identity service log line names the request"));
    assert!(served.contains("ListAccounts") && served.contains(&format!("trace_id={trace_id}")), "{served}");
    let gateway_line = logs
        .lines()
        .find(|l| l.contains("graphql request") && l.contains(&ours))
        .unwrap_or_else(|| panic!("no gateway log line names the request"));
    assert!(gateway_line.contains(&format!("trace_id={trace_id}")), "{gateway_line}");
    assert!(gateway_line.contains("client_request_id=split-trace-request-1"), "{gateway_line}");
}

/// The identity service of `config` on `rpc`, until the returned sender fires.
async fn identity_on(
    config: &bankgraph::config::Config,
    rpc: tokio::net::TcpListener,
    tls: Option<RpcTls>,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bind = rpc.local_addr().unwrap();
    let app = IdentityApp::build_with_listeners(
        SplitIdentityConfig {
            identity: config.identity.clone(),
            rpc: RpcServerConfig { bind, token: service_token(), tls },
        },
        EmulatorConfig::default(),
        internal,
        rpc,
    )
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    (tx, task)
}

struct Gateway {
    graphql: String,
    base: String,
    internal: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn gateway_to(config: &bankgraph::config::Config, endpoints: &[String]) -> Gateway {
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = GatewayApp::build_with_listeners(
        SplitGatewayConfig {
            gateway: config.gateway.clone(),
            internal: internal.local_addr().unwrap(),
            rpc: RpcClientConfig {
                endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
                token: service_token(),
                tls: None,
            },
        },
        public,
        internal,
    )
    .unwrap();
    let base = format!("http://{}", app.public_addr());
    let internal = format!("http://{}", app.internal_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    Gateway { graphql: format!("{base}/api/v1/graphql"), base, internal, _stop: tx }
}

async fn query(http: &reqwest::Client, graphql: &str, token: &str) -> (u16, serde_json::Value) {
    let r =
        http.post(graphql).bearer_auth(token).json(&json!({"query": ACCOUNTS, "variables": {}})).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn status(http: &reqwest::Client, url: &str) -> u16 {
    http.get(url).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn identity_down_answers_upstream_unavailable_in_time_and_readyz_503_then_recovers() {
    let p = Prepared::new(&Options { args: vec!["--request-timeout-seconds=5".into()], ..Default::default() }).await;
    let rpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rpc_addr: SocketAddr = rpc.local_addr().unwrap();
    let (stop_identity, identity) = identity_on(&p.config, rpc, None).await;
    let gw = gateway_to(&p.config, &[format!("http://{rpc_addr}")]).await;
    let http = reqwest::Client::new();
    let t = token_with("split-down", "MANAGE_PAYMENT", 3600);
    let (s, r) = query(&http, &gw.graphql, &t).await;
    assert_eq!((s, r["errors"].is_null()), (200, true), "{r}");
    assert_eq!(status(&http, &format!("{}/readyz", gw.base)).await, 200);

    let _ = stop_identity.send(());
    identity.await.unwrap().unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let (_, r) = query(&http, &gw.graphql, &t).await;
        assert_eq!(code(&r).as_deref(), Some("UPSTREAM_UNAVAILABLE"), "{r}");
        assert!(started.elapsed() < Duration::from_secs(5), "answered within the deadline: {:?}", started.elapsed());
        assert!(!r.to_string().contains("127.0.0.1"), "no detail: {r}");
    }
    assert_eq!(status(&http, &format!("{}/readyz", gw.base)).await, 503);
    assert_eq!(status(&http, &format!("{}/readyz", gw.internal)).await, 503);
    assert_eq!(status(&http, &format!("{}/healthz", gw.base)).await, 200, "the gateway itself lives");

    // Back on the same address: the gateway finds it by itself.
    let rpc = tokio::net::TcpListener::bind(rpc_addr).await.unwrap();
    let (_stop_identity, _identity) = identity_on(&p.config, rpc, None).await;
    let mut recovered = false;
    for _ in 0..50 {
        let (_, r) = query(&http, &gw.graphql, &t).await;
        if r["errors"].is_null() && status(&http, &format!("{}/readyz", gw.base)).await == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the gateway recovered when the identity service came back");
}

#[tokio::test]
async fn an_identity_service_that_never_answers_is_cut_off_at_the_deadline() {
    let p = Prepared::new(&Options { args: vec!["--request-timeout-seconds=2".into()], ..Default::default() }).await;
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let gw = gateway_to(&p.config, &[format!("http://{addr}")]).await;
    let http = reqwest::Client::new();
    let t = token_with("split-silent", "MANAGE_PAYMENT", 3600);
    let started = Instant::now();
    let (status, r) = query(&http, &gw.graphql, &t).await;
    let took = started.elapsed();
    assert_eq!(code(&r).as_deref(), Some("UPSTREAM_UNAVAILABLE"), "{status} {r}");
    assert!(took < Duration::from_millis(3500), "no hang: {took:?}");
    assert_ne!(status, 500);
}

#[tokio::test]
async fn calls_are_spread_over_endpoints_and_a_dead_one_is_avoided() {
    let p = Prepared::new(&Options::default()).await;
    let rpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = format!("http://{}", rpc.local_addr().unwrap());
    let (_stop, _identity) = identity_on(&p.config, rpc, None).await;
    // A port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let gw = gateway_to(&p.config, &[dead, live]).await;
    let http = reqwest::Client::new();
    let t = token_with("split-endpoints", "MANAGE_PAYMENT", 3600);
    // Reads are retried on the other endpoint: none fails, and the dead one is marked down.
    for _ in 0..6 {
        let (_, r) = query(&http, &gw.graphql, &t).await;
        assert!(r["errors"].is_null(), "{r}");
    }
    // Mutations are not retried, so they only succeed every time if the dead endpoint is avoided.
    let caller = Endpoints { http: &http, graphql: &gw.graphql, emulator: &p.emulator.url(), bearer: &t };
    for _ in 0..6 {
        let r = caller.graphql(CREATE_LINK_TOKEN, json!({"input": {}})).await.unwrap();
        assert!(r["errors"].is_null(), "{r}");
    }
}

/// A CA and the certificates it signs, for mutual TLS between the two services.
struct Ca {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// A certificate for `127.0.0.1`/`localhost`, good for server and client use, trusting `trust`.
    fn issue(&self, name: &str, trust: &Ca) -> RpcTls {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        RpcTls { cert_pem: cert.pem(), key_pem: SecretString::from(key.serialize_pem()), ca_pem: trust.pem.clone() }
    }
}

#[tokio::test]
async fn mutual_tls_admits_the_gateway_and_refuses_a_certificate_from_another_ca() {
    let ours = Ca::new("bankgraph test CA");
    let theirs = Ca::new("another CA");
    let server = ours.issue("identity", &ours);
    let gateway = ours.issue("gateway", &ours);
    let app = TestApp::spawn_with(Options { rpc_tls: Some((server, gateway)), ..split() }).await;
    let url = app.rpc.clone().unwrap();
    assert!(url.starts_with("https://"), "{url}");
    // The whole journey through the gateway, over mutual TLS.
    let t = app.token("split-tls");
    app.link(&t).await;
    assert_eq!(app.accounts(&t, json!({})).await.as_array().unwrap().len(), 9);

    let remote = |tls: Option<RpcTls>, url: &str| {
        let config = RpcClientConfig { endpoints: vec![url.parse().unwrap()], token: service_token(), tls };
        RemoteIdentity::new(&config, Duration::from_secs(5)).unwrap()
    };
    // The right token is not enough without a certificate the service trusts.
    let rogue = remote(Some(theirs.issue("rogue", &ours)), &url);
    let e = rogue.accounts("split-tls", Default::default()).await.unwrap_err();
    assert_eq!(e.code(), "UPSTREAM_UNAVAILABLE", "{e}");
    let plain = remote(None, &url.replace("https://", "http://"));
    assert!(plain.ready().await.is_err(), "no TLS, no answer");
    // A gateway that trusts another CA does not accept the service's certificate either.
    let wrong_trust = remote(Some(ours.issue("gateway-2", &theirs)), &url);
    assert!(wrong_trust.ready().await.is_err());
    // The right certificate is.
    let good = remote(Some(ours.issue("gateway-3", &ours)), &url);
    assert_eq!(good.accounts("split-tls", Default::default()).await.unwrap().len(), 9);
}

#[tokio::test]
async fn a_gateway_warns_when_the_service_token_would_cross_a_network_in_clear() {
    let p = Prepared::new(&Options::default()).await;
    let _gw = gateway_to(&p.config, &["http://10.255.255.1:8003".to_string()]).await;
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(
        logs.lines().any(|l| l.contains("IDENTITY_URL is plain HTTP to another host") && l.contains("10.255.255.1")),
        "warned at start"
    );
}

#[tokio::test]
async fn an_event_stream_survives_an_identity_restart_and_loses_nothing() {
    let p = Prepared::new(&Options::default()).await;
    let rpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rpc_addr: SocketAddr = rpc.local_addr().unwrap();
    let (stop_identity, identity) = identity_on(&p.config, rpc, None).await;
    let gw = gateway_to(&p.config, &[format!("http://{rpc_addr}")]).await;
    let t = token_with("split-events", "MANAGE_PAYMENT", 3600);
    let mut s = Socket::connect(&gw.graphql, &t).await;
    // From the first event on, whenever the stream opens.
    s.events("1", json!({"after": "evt_0000000000000000"})).await;
    let http = reqwest::Client::new();
    let emulator = p.emulator.url();
    let endpoints =
        bankgraph::emulator::drive::Endpoints { http: &http, graphql: &gw.graphql, emulator: &emulator, bearer: &t };
    let (_, done) = endpoints.link_via(json!({"institution_id": "ins_109508"}), COMPLETE_LINK).await.unwrap();
    let connection = done["data"]["completePlaidLink"]["bankInstitutionAuthId"].as_str().unwrap().to_string();
    let events = s.events_until("1", "HISTORY_READY").await;
    assert_eq!(events[0]["type"], "LINKED");

    // The identity service restarts on the same address: the gateway reopens the stream
    // after the last event it delivered, and the socket stays open.
    let _ = stop_identity.send(());
    identity.await.unwrap().unwrap();
    let rpc = tokio::net::TcpListener::bind(rpc_addr).await.unwrap();
    let (_stop_identity, _identity) = identity_on(&p.config, rpc, None).await;
    let removed = loop {
        let r = http
            .post(&gw.graphql)
            .bearer_auth(&t)
            .json(&json!({"query": REMOVE, "variables": {"input": {"bankInstitutionAuthId": connection, "reason": "USER_REQUESTED"}}}))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        if r["errors"].is_null() {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(removed["data"]["removePlaidBankInstitution"]["removed"], true, "{removed}");
    let e = s.event("1").await;
    assert_eq!(
        (e["type"].as_str(), e["bankInstitutionAuthId"].as_str()),
        (Some("REMOVED"), Some(connection.as_str())),
        "{e}"
    );
    let logged = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(logged.contains("identity event stream reopened"), "the stream was reopened, not kept");
}
