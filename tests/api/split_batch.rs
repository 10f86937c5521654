//! The gateway's account reads of concurrent requests share `ListAccountsBatch` calls: each
//! request still gets exactly its own answer (its accounts, or its own error), and a gateway
//! in front of an identity service that does not know the batch (an older version, during a
//! rolling upgrade) reads one by one. The identity service here is a counting stand-in served
//! by the real RPC listener, so the test sees how many reads reached it.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bankgraph::config::{ListenerLimits, RpcClientConfig, RpcServerConfig};
use bankgraph::domain::{Address, Balance, BankAccount, ConnectionStatus, RemovalReason};
use bankgraph::error::{AppError, AppResult};
use bankgraph::identity::{
    AccountFilter, CompletedLink, DeviceOs, EventWatch, IdentityService, LinkToken, RefreshOutcome, TransactionFilter,
    TransactionPage, Watching,
};
use bankgraph::rpc::{RemoteIdentity, RpcServer};
use futures::future::BoxFuture;
use secrecy::SecretString;

use crate::helpers::SERVICE_TOKEN;

/// An identity service whose accounts are made from the caller's id, slowly enough for reads
/// to queue, counting the reads it serves. "nobody" has no connection at all.
#[derive(Default)]
struct Counting {
    reads: AtomicUsize,
}

const NOBODY: &str = "No active Plaid connection found for the provided platformItemId.";

fn not_here() -> AppError {
    AppError::NotConfigured("not served by this test's identity service".into())
}

#[async_trait::async_trait]
impl IdentityService for Counting {
    async fn create_link_token(&self, _: &str, _: Option<DeviceOs>, _: Option<&str>) -> AppResult<LinkToken> {
        Err(not_here())
    }
    async fn complete_link(&self, _: &str, _: SecretString, _: Option<String>) -> AppResult<CompletedLink> {
        Err(not_here())
    }
    async fn replayed_link(&self, _: &str, _: &SecretString) -> AppResult<Option<CompletedLink>> {
        Err(not_here())
    }
    async fn accounts(&self, user_id: &str, filter: AccountFilter) -> AppResult<Vec<BankAccount>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let slow = if user_id == "slow" { 5_000 } else { 40 };
        tokio::time::sleep(Duration::from_millis(slow)).await;
        if user_id == "nobody" {
            return Err(AppError::NotFound(NOBODY.into()));
        }
        let account = |n: u32| BankAccount {
            id: format!("{user_id}-acc-{n}"),
            connection_id: format!("{user_id}-conn"),
            plaid_item_id: format!("{user_id}-item"),
            institution_name: "First Platypus Bank".into(),
            plaid_account_id: format!("{user_id}-plaid-{n}"),
            name: Some(format!("{user_id} {n}")),
            mask: None,
            account_type: "depository".into(),
            subtype: Some("checking".into()),
            status: ConnectionStatus::Active,
            history_ready: true,
            last_synced_at: None,
        };
        let all = vec![account(1), account(2)];
        Ok(all.into_iter().filter(|a| filter.account_id.as_ref().is_none_or(|id| *id == a.id)).collect())
    }
    async fn balances(&self, _: &str, _: AccountFilter) -> AppResult<Vec<Balance>> {
        Err(not_here())
    }
    async fn transactions(&self, _: &str, _: TransactionFilter) -> AppResult<TransactionPage> {
        Err(not_here())
    }
    async fn refresh(&self, _: &str) -> AppResult<RefreshOutcome> {
        Err(not_here())
    }
    async fn add_address(&self, _: &str, _: &str, _: Address) -> AppResult<String> {
        Err(not_here())
    }
    async fn remove_connection(&self, _: &str, _: &str, _: RemovalReason) -> AppResult<Vec<String>> {
        Err(not_here())
    }
    async fn ready(&self) -> AppResult<()> {
        Ok(())
    }
    async fn connection_events(&self, _: &str, _: EventWatch) -> AppResult<Watching> {
        Err(not_here())
    }
}

fn token() -> Option<SecretString> {
    Some(SecretString::from(SERVICE_TOKEN.to_string()))
}

/// The counting service behind the real RPC listener (with the service token).
async fn serve(service: Arc<Counting>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bind = listener.local_addr().unwrap();
    let server = RpcServer::new(listener, service, RpcServerConfig { bind, token: token(), tls: None });
    let limits = ListenerLimits {
        header_read_timeout: Duration::from_secs(10),
        ipv6_prefix: 64,
        idle_timeout: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(1),
    };
    tokio::spawn(server.run(std::future::pending(), limits));
    format!("http://{bind}")
}

fn remote(url: &str) -> RemoteIdentity {
    let config = RpcClientConfig { endpoints: vec![url.parse().unwrap()], token: token(), tls: None };
    RemoteIdentity::new(&config, Duration::from_secs(5)).unwrap()
}

/// Reads of `users` (one per entry), all at once; each one's answer, in order.
async fn read_all(remote: &RemoteIdentity, users: &[String]) -> Vec<AppResult<Vec<BankAccount>>> {
    let reads = users.iter().map(|u| {
        let remote = remote.clone();
        let u = u.clone();
        tokio::spawn(async move { remote.accounts(&u, AccountFilter::default()).await })
    });
    let mut out = Vec::new();
    for h in reads.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

fn check_own(user: &str, got: &AppResult<Vec<BankAccount>>) {
    match got {
        Ok(accounts) => {
            let ids: Vec<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
            assert_eq!(ids, [format!("{user}-acc-1"), format!("{user}-acc-2")], "{user} got someone else's accounts");
        }
        Err(e) => panic!("{user}: {e}"),
    }
}

#[tokio::test]
async fn concurrent_reads_share_batched_calls_and_each_gets_only_its_own_answer() {
    let service = Arc::new(Counting::default());
    let remote = remote(&serve(service.clone()).await);
    // 96 reads of 8 callers (each 12 times) and one caller without a connection.
    let mut users: Vec<String> = (0..96).map(|i| format!("user-{}", i % 8)).collect();
    users.insert(50, "nobody".into());
    let answers = read_all(&remote, &users).await;
    for (user, got) in users.iter().zip(&answers) {
        if user == "nobody" {
            let e = got.as_ref().unwrap_err();
            assert_eq!((e.code(), e.to_string().as_str()), ("NOT_FOUND", NOBODY), "its own error, exactly");
        } else {
            check_own(user, got);
        }
    }
    // Two calls start at once; the reads queued behind them share the next ones, each caller
    // read once per call: far fewer reads reach the service than were asked.
    let reads = service.reads.load(Ordering::SeqCst);
    assert!(reads <= 2 + 2 * 9, "{reads} reads reached the identity service for 97 requests");

    // A filtered read is not answered with the unfiltered one of the same caller.
    let one = AccountFilter { account_id: Some("user-3-acc-2".into()), ..Default::default() };
    let (all, filtered) =
        tokio::join!(remote.accounts("user-3", AccountFilter::default()), remote.accounts("user-3", one));
    check_own("user-3", &all);
    let filtered: Vec<String> = filtered.unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(filtered, ["user-3-acc-2"]);
}

#[tokio::test]
async fn a_read_waits_no_longer_than_its_request_deadline() {
    let service = Arc::new(Counting::default());
    let url = serve(service.clone()).await;
    let config = RpcClientConfig { endpoints: vec![url.parse().unwrap()], token: token(), tls: None };
    // Reads outside a request have this deadline; the service takes 5 s for "slow".
    let remote = RemoteIdentity::new(&config, Duration::from_millis(300)).unwrap();
    let started = std::time::Instant::now();
    let e = remote.accounts("slow", AccountFilter::default()).await.unwrap_err();
    assert_eq!(e.code(), "UPSTREAM_UNAVAILABLE", "{e}");
    assert!(started.elapsed() < Duration::from_secs(2), "cut off at the deadline: {:?}", started.elapsed());
    // The slow call is still out; the next read does not wait behind it.
    check_own("user-1", &remote.accounts("user-1", AccountFilter::default()).await);
}

/// The contract's service as a version without `ListAccountsBatch` serves it: that method is
/// UNIMPLEMENTED (what tonic answers for a method it does not know), the rest as usual.
#[derive(Clone)]
struct WithoutBatch(
    bankgraph::rpc::pb::identity_service_server::IdentityServiceServer<bankgraph::rpc::server::IdentityRpc>,
);

impl tower::Service<http::Request<tonic::body::Body>> for WithoutBatch {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        tower::Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path().ends_with("/ListAccountsBatch") {
            return Box::pin(async { Ok(tonic::Status::unimplemented("").into_http()) });
        }
        Box::pin(self.0.call(req))
    }
}

impl tonic::server::NamedService for WithoutBatch {
    const NAME: &'static str = "bankgraph.identity.v1.IdentityService";
}

#[tokio::test]
async fn in_front_of_a_service_without_the_batch_reads_go_one_by_one() {
    let service = Arc::new(Counting::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let old = WithoutBatch(bankgraph::rpc::server::grpc(service.clone()));
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(tonic::transport::Server::builder().add_service(old).serve_with_incoming(incoming));
    let remote = remote(&url);

    let users: Vec<String> = (0..24).map(|i| format!("user-{}", i % 4)).collect();
    for (user, got) in users.iter().zip(read_all(&remote, &users).await) {
        check_own(user, &got);
    }
    // The reads after the first answer went one by one, without trying the batch again.
    let before = service.reads.load(Ordering::SeqCst);
    for (user, got) in users.iter().zip(read_all(&remote, &users).await) {
        check_own(user, &got);
    }
    assert_eq!(service.reads.load(Ordering::SeqCst) - before, users.len(), "one read per request");
}

#[tokio::test]
async fn a_batch_is_bounded_and_answers_in_the_order_asked() {
    use bankgraph::rpc::pb;
    let url = serve(Arc::new(Counting::default())).await;
    let mut client = pb::identity_service_client::IdentityServiceClient::connect(url).await.unwrap();
    let call = |users: Vec<&str>| {
        let mut r = tonic::Request::new(pb::ListAccountsBatchRequest {
            requests: users.into_iter().map(|u| pb::ListAccountsRequest { user_id: u.into(), filter: None }).collect(),
            request_ids: vec!["req-1".into()],
        });
        r.metadata_mut().insert("authorization", format!("Bearer {SERVICE_TOKEN}").parse().unwrap());
        r
    };
    let r = client.list_accounts_batch(call(vec!["b", "nobody", "", "a"])).await.unwrap().into_inner();
    use pb::list_accounts_result::Result as One;
    let firsts: Vec<String> = r
        .results
        .into_iter()
        .map(|r| match r.result.unwrap() {
            One::Accounts(a) => a.accounts[0].id.clone(),
            One::Error(d) => d.code,
        })
        .collect();
    assert_eq!(firsts, ["b-acc-1", "NOT_FOUND", "UNAUTHENTICATED", "a-acc-1"], "in order, each its own");

    let status = client.list_accounts_batch(call(vec!["a"; 65])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
}
