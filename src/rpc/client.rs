//! The identity service as the gateway reaches it over gRPC: [`RemoteIdentity`] implements
//! [`IdentityService`], so the GraphQL layer does not know it is remote.
//!
//! Calls are spread round-robin over the configured endpoints. One that cannot be reached is
//! marked down and skipped until a probe (`Ready`, every half second) finds it answering again;
//! when every endpoint is down, calls still try one, so recovery needs no probe. Each call
//! carries the service token, the request id, a child of the request's trace, and what is left
//! of the request's deadline. Reads and `CompleteLink` (idempotent by its public token) are
//! tried once more, on another endpoint when there is one, after a connection failure; other
//! mutations are not, since the first attempt may have been carried out.
//!
//! Account reads of concurrent requests are coalesced (see [`crate::batch`]): while a few
//! `ListAccountsBatch` calls are in flight, the reads that arrive wait for the next one, which
//! answers them all. Under light load a read is one call, as before; under heavy load the hop
//! (two encodings, an HTTP/2 exchange, a wakeup in each process) is paid once per batch rather
//! than once per request.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::{Code, Request, Response, Status};
use url::Url;

use super::convert as c;
use super::pb;
use super::pb::identity_service_client::IdentityServiceClient;
use super::status::{Failure, detail, from_detail, from_status};
use crate::batch::Batcher;
use crate::config::RpcClientConfig;
use crate::domain::{Address, Balance, BankAccount, ConnectionEvent, RemovalReason};
use crate::error::{AppError, AppResult};
use crate::identity::{
    AccountFilter, CompletedLink, DeviceOs, EventWatch, IdentityService, LinkToken, RefreshOutcome, TransactionFilter,
    TransactionPage, Watching,
};
use crate::metrics::{IDENTITY_RPC_BATCH_REQUESTS, IDENTITY_RPC_SECONDS};
use crate::trace::{REQUEST_ID, RequestContext, TRACEPARENT, TraceParent};

/// What a client reads when the identity service cannot be reached.
pub const UNAVAILABLE: &str = "The service is temporarily unavailable; try again.";
/// What a client reads when the identity service did not answer within the request's time.
pub const TOO_SLOW: &str = "The service did not answer in time; try again.";

/// How long to wait for a TCP (and TLS) connection to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a down endpoint is probed.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Account-read calls in flight at once, per endpoint; reads that arrive while they all run
/// wait for the next call, which answers them all. Two per endpoint measured best on 2 cores
/// (bench/results/split.md).
const ACCOUNT_READS_IN_FLIGHT_PER_ENDPOINT: usize = 2;
/// After an identity service answered that it does not know `ListAccountsBatch` (an older
/// version, during a rolling upgrade), how long account reads go one by one before the batch
/// is tried again.
const UNBATCHED_FOR: Duration = Duration::from_secs(60);

/// One account read: the caller's `sub` and its filter (plaid item, connection, account).
type AccountsKey = (String, Option<String>, Option<String>, Option<String>);
/// An account read's answer, decoded once and shared by the requests that asked the same (the
/// last of them takes the list itself); an error as it crossed the wire.
type AccountsAnswer = Result<Arc<Vec<BankAccount>>, Arc<pb::ErrorDetail>>;
/// Account reads, coalesced; each caller brings its request's context (deadline, ids).
type AccountReads = Batcher<AccountsKey, Option<RequestContext>, AccountsAnswer>;

/// HTTP/2 to the identity service: hyper's pooled client (one multiplexed connection per
/// endpoint, re-established when it breaks), with rustls for mutual TLS. Calls go from the
/// request's task straight to the connection, without the extra task hop of tonic's `Channel`
/// buffer (measured: a wakeup per call on this path; see bench/results/split.md).
type Transport = Client<HttpsConnector<HttpConnector>, tonic::body::Body>;

struct Node {
    /// For logs: scheme, host and port only.
    url: Url,
    client: IdentityServiceClient<Transport>,
    /// Event streams go over connections of their own: a gateway with thousands of live
    /// subscriptions never makes a call wait for a free stream on a busy connection.
    streams: IdentityServiceClient<Transport>,
    down: AtomicBool,
}

/// Which connections a call uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// A call bounded by the request's deadline.
    Call,
    /// An event stream: the deadline bounds its opening only.
    Stream,
}

struct Inner {
    nodes: Vec<Node>,
    next: AtomicUsize,
    account_reads: Arc<AccountReads>,
    /// When an endpoint answered that it does not know `ListAccountsBatch`.
    unbatched_since: Mutex<Option<Instant>>,
    /// `Bearer <IDENTITY_SERVICE_TOKEN>`, marked sensitive.
    authorization: Option<AsciiMetadataValue>,
    /// The deadline of a call made outside a request (readiness checks).
    fallback_deadline: Duration,
}

/// Whether a call may be tried again after a connection failure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    Once,
    Never,
}

/// The identity service behind `IDENTITY_URL`.
#[derive(Clone)]
pub struct RemoteIdentity {
    inner: Arc<Inner>,
}

impl RemoteIdentity {
    /// Channels to every endpoint; they connect on first use.
    pub fn new(config: &RpcClientConfig, fallback_deadline: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(!config.endpoints.is_empty(), "IDENTITY_URL lists no endpoint");
        let (calls, streams) = (transport(config)?, transport(config)?);
        let mut nodes = Vec::new();
        for url in &config.endpoints {
            let origin: http::Uri = url.as_str().trim_end_matches('/').parse()?;
            let client = |t: &Transport| {
                IdentityServiceClient::with_origin(t.clone(), origin.clone())
                    .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(super::MAX_MESSAGE_BYTES)
            };
            nodes.push(Node {
                url: url.clone(),
                client: client(&calls),
                streams: client(&streams),
                down: AtomicBool::new(false),
            });
        }
        let authorization = match &config.token {
            Some(t) => {
                let mut v = AsciiMetadataValue::try_from(format!("Bearer {}", t.expose_secret()))
                    .map_err(|_| anyhow::anyhow!("IDENTITY_SERVICE_TOKEN must be printable ASCII"))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let in_flight = ACCOUNT_READS_IN_FLIGHT_PER_ENDPOINT * nodes.len();
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let weak = weak.clone();
            let account_reads = Batcher::new(
                in_flight,
                super::server::MAX_BATCH,
                Arc::new(move |keys, callers| {
                    let inner = weak.upgrade();
                    Box::pin(async move {
                        let inner = inner.ok_or_else(|| anyhow::anyhow!("the identity client was dropped"))?;
                        Ok(RemoteIdentity { inner }.read_accounts(keys, callers).await)
                    })
                }),
            );
            Inner {
                nodes,
                next: AtomicUsize::new(0),
                account_reads,
                unbatched_since: Mutex::new(None),
                authorization,
                fallback_deadline,
            }
        });
        Ok(RemoteIdentity { inner })
    }

    /// The next endpoint not known to be down (any, when all are).
    fn pick(&self) -> usize {
        let n = self.inner.nodes.len();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| !self.inner.nodes[i].down.load(Ordering::Relaxed))
            .unwrap_or(start % n)
    }

    /// Marks an endpoint down and probes it until it answers again.
    fn mark_down(&self, idx: usize) {
        let node = &self.inner.nodes[idx];
        if node.down.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::warn!(endpoint = %node.url, "identity service endpoint unreachable; avoiding it until it answers");
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                let node = &inner.nodes[idx];
                let mut req = Request::new(pb::ReadyRequest {});
                req.set_timeout(CONNECT_TIMEOUT);
                add_auth(req.metadata_mut(), &inner.authorization);
                let mut client = node.client.clone();
                let alive = match tokio::time::timeout(CONNECT_TIMEOUT * 2, client.ready(req)).await {
                    Ok(Ok(_)) => true,
                    // An answer, even "not ready", means the endpoint is there.
                    Ok(Err(s)) => matches!(from_status(s), Failure::Answer(_)),
                    Err(_) => false,
                };
                if alive {
                    node.down.store(false, Ordering::Relaxed);
                    tracing::info!(endpoint = %node.url, "identity service endpoint answers again");
                    return;
                }
            }
        });
    }

    async fn call<Req, Resp, F, Fut>(&self, method: &'static str, retry: Retry, msg: Req, send: F) -> AppResult<Resp>
    where
        Req: Clone,
        F: Fn(IdentityServiceClient<Transport>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.call_on(crate::trace::current(), Lane::Call, method, retry, msg, send).await
    }

    /// A call for the request `ctx` describes (none: a call of the gateway's own).
    async fn call_on<Req, Resp, F, Fut>(
        &self,
        ctx: Option<RequestContext>,
        lane: Lane,
        method: &'static str,
        retry: Retry,
        msg: Req,
        send: F,
    ) -> AppResult<Resp>
    where
        Req: Clone,
        F: Fn(IdentityServiceClient<Transport>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let deadline = self.deadline_of(&ctx);
        let attempts = if retry == Retry::Once { 2 } else { 1 };
        let started = Instant::now();
        let record = |outcome: &str| {
            metrics::histogram!(IDENTITY_RPC_SECONDS, "method" => method, "outcome" => outcome.to_string())
                .record(started.elapsed().as_secs_f64());
        };
        for attempt in 1..=attempts {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let idx = self.pick();
            let node = &self.inner.nodes[idx];
            let mut req = Request::new(msg.clone());
            if lane == Lane::Call {
                req.set_timeout(remaining);
            }
            let meta = req.metadata_mut();
            add_auth(meta, &self.inner.authorization);
            let trace = match &ctx {
                Some(c) => {
                    insert(meta, REQUEST_ID, &c.request_id);
                    c.trace.child()
                }
                None => TraceParent::fresh(),
            };
            insert(meta, TRACEPARENT, &trace.to_string());
            let client = match lane {
                Lane::Call => node.client.clone(),
                Lane::Stream => node.streams.clone(),
            };
            let status = match tokio::time::timeout(remaining, send(client, req)).await {
                Ok(Ok(resp)) => {
                    record("ok");
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => break,
            };
            match from_status(status) {
                Failure::Answer(e) => {
                    record(e.code());
                    return Err(e);
                }
                Failure::Connection(s) => {
                    tracing::warn!(endpoint = %node.url, method, attempt, error = %chain(&s), "identity service call failed to connect");
                    self.mark_down(idx);
                }
                Failure::Refused(s) => {
                    record("refused");
                    tracing::error!(
                        endpoint = %node.url, method, error = %s.message(),
                        "the identity service refused this gateway: check IDENTITY_SERVICE_TOKEN and IDENTITY_TLS_*"
                    );
                    return Err(AppError::Upstream(UNAVAILABLE.into()));
                }
                Failure::Other(s) if matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled) => break,
                Failure::Other(s) => {
                    record("error");
                    return Err(AppError::internal(anyhow::anyhow!("identity RPC {method} failed: {s}")));
                }
            }
            if attempt == attempts {
                record("unavailable");
                return Err(AppError::Upstream(UNAVAILABLE.into()));
            }
        }
        record("timeout");
        tracing::warn!(method, "identity service call ran out of time");
        Err(AppError::Upstream(TOO_SLOW.into()))
    }

    /// When a call for the request `ctx` describes must be answered.
    fn deadline_of(&self, ctx: &Option<RequestContext>) -> Instant {
        ctx.as_ref().map(|c| c.deadline).unwrap_or_else(|| Instant::now() + self.inner.fallback_deadline)
    }

    /// Whether account reads go one by one (an endpoint did not know `ListAccountsBatch`).
    fn unbatched(&self) -> bool {
        let mut since = self.inner.unbatched_since.lock().unwrap_or_else(|p| p.into_inner());
        match *since {
            Some(t) if t.elapsed() < UNBATCHED_FOR => true,
            Some(_) => {
                *since = None;
                false
            }
            None => false,
        }
    }

    /// One account read, on its own.
    async fn list_accounts(&self, ctx: Option<RequestContext>, key: AccountsKey) -> AppResult<Vec<pb::BankAccount>> {
        let msg = pb::ListAccountsRequest { user_id: key.0, filter: Some(c::filter_of(key.1, key.2, key.3)) };
        let r =
            self.call_on(ctx, Lane::Call, "ListAccounts", Retry::Once, msg, |mut cl, r| async move {
                cl.list_accounts(r).await
            })
            .await?;
        Ok(r.accounts)
    }

    /// The account reads of one batch: every key gets its answer (an error the whole call met
    /// is each one's answer). The call carries the first caller's request id and trace, every
    /// caller's request id in its body, and the latest of their deadlines (each caller stops
    /// waiting at its own).
    async fn read_accounts(
        &self,
        keys: Vec<AccountsKey>,
        callers: Vec<Option<RequestContext>>,
    ) -> HashMap<AccountsKey, AccountsAnswer> {
        metrics::histogram!(IDENTITY_RPC_BATCH_REQUESTS).record(callers.len() as f64);
        let request_ids = callers.iter().flatten().map(|c| c.request_id.clone()).collect();
        let ctx = callers.iter().flatten().next().map(|first| RequestContext {
            deadline: callers.iter().map(|c| self.deadline_of(c)).max().unwrap_or(first.deadline),
            ..first.clone()
        });
        let requests = keys
            .iter()
            .map(|(user, p, cn, a)| pb::ListAccountsRequest {
                user_id: user.clone(),
                filter: Some(c::filter_of(p.clone(), cn.clone(), a.clone())),
            })
            .collect();
        let msg = pb::ListAccountsBatchRequest { requests, request_ids };
        let unknown = Arc::new(AtomicBool::new(false));
        let seen = unknown.clone();
        let answer = self
            .call_on(ctx.clone(), Lane::Call, "ListAccountsBatch", Retry::Once, msg, move |mut cl, r| {
                let seen = seen.clone();
                async move {
                    let answer = cl.list_accounts_batch(r).await;
                    // UNIMPLEMENTED without an ErrorDetail: the service does not know the method.
                    if let Err(s) = &answer
                        && s.code() == Code::Unimplemented
                        && s.details().is_empty()
                    {
                        seen.store(true, Ordering::Relaxed);
                    }
                    answer
                }
            })
            .await;
        let results = match answer {
            Ok(r) if r.results.len() == keys.len() => r.results,
            Ok(r) => {
                let e = anyhow::anyhow!(
                    "ListAccountsBatch answered {} results for {} requests",
                    r.results.len(),
                    keys.len()
                );
                return every(keys, lost(AppError::internal(e)));
            }
            Err(_) if unknown.load(Ordering::Relaxed) => {
                tracing::warn!(
                    "the identity service does not know ListAccountsBatch (an older version?); reading accounts one by one for a while"
                );
                *self.inner.unbatched_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                let reads = keys.into_iter().map(|key| {
                    let ctx = ctx.clone();
                    async move {
                        let answer = self.list_accounts(ctx, key.clone()).await;
                        (key, decoded(answer))
                    }
                });
                return futures::future::join_all(reads).await.into_iter().collect();
            }
            Err(e) => return every(keys, lost(e)),
        };
        use pb::list_accounts_result::Result as One;
        keys.into_iter()
            .zip(results)
            .map(|(key, r)| {
                let answer = match r.result {
                    Some(One::Accounts(a)) => decoded(Ok(a.accounts)),
                    Some(One::Error(d)) => Err(Arc::new(d)),
                    None => Err(lost(AppError::internal(anyhow::anyhow!("ListAccountsBatch sent an empty result")))),
                };
                (key, answer)
            })
            .collect()
    }
}

/// Accounts as the domain has them, once for every request that shares them.
fn decoded(read: AppResult<Vec<pb::BankAccount>>) -> AccountsAnswer {
    let accounts = read.and_then(|a| a.into_iter().map(c::from_account).collect::<AppResult<Vec<_>>>());
    accounts.map(Arc::new).map_err(lost)
}

/// An error as every request that shares it gets it.
fn lost(e: AppError) -> Arc<pb::ErrorDetail> {
    Arc::new(detail(e).1)
}

/// The same answer for every key.
fn every(keys: Vec<AccountsKey>, error: Arc<pb::ErrorDetail>) -> HashMap<AccountsKey, AccountsAnswer> {
    keys.into_iter().map(|k| (k, Err(error.clone()))).collect()
}

/// The pooled HTTP/2 client every endpoint shares: TCP with no delay and a connect timeout,
/// HTTP/2 keep-alive pings, TLS (only https, with our certificate) when `IDENTITY_TLS_*` is set.
fn transport(config: &RpcClientConfig) -> anyhow::Result<Transport> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let connector = match &config.tls {
        Some(tls) => hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(super::tls::client_config(tls)?)
            .https_only()
            .enable_http2()
            .wrap_connector(http),
        None => hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(super::tls::no_tls_config()?)
            .https_or_http()
            .enable_http2()
            .wrap_connector(http),
    };
    Ok(Client::builder(TokioExecutor::new())
        .http2_only(true)
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(Duration::from_secs(20))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .http2_keep_alive_while_idle(true)
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector))
}

/// A status with the errors under it ("transport error: ...: received fatal alert: UnknownCA").
fn chain(s: &Status) -> String {
    let mut text = s.message().to_string();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

fn add_auth(meta: &mut MetadataMap, authorization: &Option<AsciiMetadataValue>) {
    if let Some(v) = authorization {
        meta.insert("authorization", v.clone());
    }
}

fn insert(meta: &mut MetadataMap, key: &'static str, value: &str) {
    if let Ok(v) = AsciiMetadataValue::try_from(value) {
        meta.insert(key, v);
    }
}

#[async_trait::async_trait]
impl IdentityService for RemoteIdentity {
    async fn create_link_token(
        &self,
        user_id: &str,
        device_os: Option<DeviceOs>,
        platform_item_id: Option<&str>,
    ) -> AppResult<LinkToken> {
        let msg = pb::CreateLinkTokenRequest {
            user_id: user_id.to_string(),
            device_os: c::device_os(device_os) as i32,
            platform_item_id: platform_item_id.map(str::to_string),
        };
        let t = self
            .call("CreateLinkToken", Retry::Never, msg, |mut cl, r| async move { cl.create_link_token(r).await })
            .await?;
        c::from_link_token(t)
    }

    async fn complete_link(
        &self,
        user_id: &str,
        public_token: SecretString,
        platform_item_id: Option<String>,
    ) -> AppResult<CompletedLink> {
        let msg = pb::CompleteLinkRequest {
            user_id: user_id.to_string(),
            public_token: public_token.expose_secret().to_string(),
            platform_item_id,
        };
        let done =
            self.call("CompleteLink", Retry::Once, msg, |mut cl, r| async move { cl.complete_link(r).await }).await?;
        Ok(c::from_completed(done))
    }

    async fn replayed_link(&self, user_id: &str, public_token: &SecretString) -> AppResult<Option<CompletedLink>> {
        let msg = pb::ReplayedLinkRequest {
            user_id: user_id.to_string(),
            public_token: public_token.expose_secret().to_string(),
        };
        let r =
            self.call("ReplayedLink", Retry::Once, msg, |mut cl, r| async move { cl.replayed_link(r).await }).await?;
        Ok(r.completed.map(c::from_completed))
    }

    /// Coalesced with the account reads of concurrent requests (one by one when the service
    /// does not know the batch), and bounded by this request's deadline.
    async fn accounts(&self, user_id: &str, filter: AccountFilter) -> AppResult<Vec<BankAccount>> {
        let ctx = crate::trace::current();
        let key = (user_id.to_string(), filter.plaid_item_id, filter.connection_id, filter.account_id);
        if self.unbatched() {
            return self.list_accounts(ctx, key).await?.into_iter().map(c::from_account).collect();
        }
        let deadline = self.deadline_of(&ctx);
        let read = self.inner.account_reads.get(key, ctx);
        match tokio::time::timeout_at(deadline.into(), read).await {
            Ok(Ok(Ok(accounts))) => Ok(Arc::unwrap_or_clone(accounts)),
            Ok(Ok(Err(d))) => Err(from_detail(Arc::unwrap_or_clone(d))),
            Ok(Err(e)) => Err(AppError::internal(e)),
            Err(_) => {
                tracing::warn!(method = "ListAccountsBatch", "identity service call ran out of time");
                Err(AppError::Upstream(TOO_SLOW.into()))
            }
        }
    }

    async fn balances(&self, user_id: &str, filter: AccountFilter) -> AppResult<Vec<Balance>> {
        let msg = pb::ListBalancesRequest { user_id: user_id.to_string(), filter: Some(c::filter(filter)) };
        let r =
            self.call("ListBalances", Retry::Once, msg, |mut cl, r| async move { cl.list_balances(r).await }).await?;
        r.balances.into_iter().map(c::from_balance).collect()
    }

    async fn transactions(&self, user_id: &str, filter: TransactionFilter) -> AppResult<TransactionPage> {
        let msg = c::transactions_request(user_id, filter);
        let r = self
            .call("ListTransactions", Retry::Once, msg, |mut cl, r| async move { cl.list_transactions(r).await })
            .await?;
        c::from_page(r)
    }

    async fn refresh(&self, user_id: &str) -> AppResult<RefreshOutcome> {
        let msg = pb::RefreshRequest { user_id: user_id.to_string() };
        let r = self.call("Refresh", Retry::Never, msg, |mut cl, r| async move { cl.refresh(r).await }).await?;
        c::from_refresh(r)
    }

    async fn add_address(&self, user_id: &str, connection_id: &str, address: Address) -> AppResult<String> {
        let msg = pb::AddAddressRequest {
            user_id: user_id.to_string(),
            connection_id: connection_id.to_string(),
            address: Some(c::address(address)),
        };
        let r = self.call("AddAddress", Retry::Never, msg, |mut cl, r| async move { cl.add_address(r).await }).await?;
        Ok(r.address_id)
    }

    async fn remove_connection(
        &self,
        user_id: &str,
        connection_id: &str,
        reason: RemovalReason,
    ) -> AppResult<Vec<String>> {
        let msg = pb::RemoveConnectionRequest {
            user_id: user_id.to_string(),
            connection_id: connection_id.to_string(),
            reason: reason.as_str().to_string(),
        };
        let r = self
            .call("RemoveConnection", Retry::Never, msg, |mut cl, r| async move { cl.remove_connection(r).await })
            .await?;
        Ok(r.removed_account_ids)
    }

    async fn ready(&self) -> AppResult<()> {
        self.call("Ready", Retry::Once, pb::ReadyRequest {}, |mut cl, r| async move { cl.ready(r).await }).await?;
        Ok(())
    }

    /// Opens the stream (within the request's deadline, retried once like a read). When it
    /// breaks, it is opened again after the last event received, so a restart or a dead
    /// endpoint of the identity service loses nothing; when it cannot be reopened within
    /// [`RESUME_WITHIN`], the subscriber gets UPSTREAM_UNAVAILABLE (and resumes itself).
    async fn connection_events(&self, user_id: &str, watch: EventWatch) -> AppResult<Watching> {
        let (start, stream) = self.open_events(user_id, &watch, watch.after).await?;
        let resume = Resume {
            remote: self.clone(),
            user_id: user_id.to_string(),
            watch,
            last: start,
            stream: Some(stream),
            done: false,
        };
        let events = futures::stream::unfold(resume, |mut r| async move { r.next().await.map(|e| (e, r)) }).boxed();
        Ok(Watching { start, events })
    }
}

/// How long a broken event stream may take to reopen before the subscriber is told.
const RESUME_WITHIN: Duration = Duration::from_secs(10);

impl RemoteIdentity {
    /// Opens an event stream and reads its first message, the position it starts from.
    async fn open_events(
        &self,
        user_id: &str,
        watch: &EventWatch,
        after: Option<i64>,
    ) -> AppResult<(i64, tonic::Streaming<pb::WatchedEvent>)> {
        let msg = pb::WatchConnectionEventsRequest {
            user_id: user_id.to_string(),
            platform_item_id: watch.plaid_item_id.clone(),
            connection_id: watch.connection_id.clone(),
            after,
        };
        let mut stream = self
            .call_on(
                crate::trace::current(),
                Lane::Stream,
                "WatchConnectionEvents",
                Retry::Once,
                msg,
                |mut cl, r| async move { cl.watch_connection_events(r).await },
            )
            .await?;
        let first = tokio::time::timeout(self.inner.fallback_deadline, stream.message()).await;
        match first {
            Ok(Ok(Some(pb::WatchedEvent { cursor, event: None }))) => Ok((cursor, stream)),
            Ok(Ok(_)) => Err(AppError::internal(anyhow::anyhow!(
                "identity RPC: an event stream did not start with its position"
            ))),
            Ok(Err(status)) => Err(match from_status(status) {
                Failure::Answer(e) => e,
                _ => AppError::Upstream(UNAVAILABLE.into()),
            }),
            Err(_) => Err(AppError::Upstream(TOO_SLOW.into())),
        }
    }
}

/// An event stream that reopens itself after the last event it delivered.
struct Resume {
    remote: RemoteIdentity,
    user_id: String,
    watch: EventWatch,
    /// The stream's position: the last event delivered, or where it started.
    last: i64,
    stream: Option<tonic::Streaming<pb::WatchedEvent>>,
    /// An error was delivered: the stream is over.
    done: bool,
}

impl Resume {
    async fn next(&mut self) -> Option<AppResult<ConnectionEvent>> {
        let event = self.next_event().await;
        if matches!(event, Some(Err(_))) {
            self.done = true;
        }
        event
    }

    async fn next_event(&mut self) -> Option<AppResult<ConnectionEvent>> {
        if self.done {
            return None;
        }
        let mut broken_since: Option<Instant> = None;
        loop {
            let Some(stream) = self.stream.as_mut() else {
                let since = *broken_since.get_or_insert_with(Instant::now);
                match self.remote.open_events(&self.user_id, &self.watch, Some(self.last)).await {
                    Ok((_, s)) => {
                        tracing::info!(after = self.last, "identity event stream reopened");
                        self.stream = Some(s);
                    }
                    Err(AppError::Upstream(_)) if since.elapsed() < RESUME_WITHIN => {
                        tokio::time::sleep(PROBE_EVERY).await;
                    }
                    Err(e) => return Some(Err(e)),
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(pb::WatchedEvent { cursor, event: Some(e) })) => {
                    let event = c::from_event(e, &self.user_id);
                    if event.is_ok() {
                        self.last = cursor;
                    }
                    return Some(event);
                }
                Ok(Some(pb::WatchedEvent { event: None, .. })) => {}
                // The service ended it (it is shutting down): reopen, elsewhere when it can.
                Ok(None) => self.stream = None,
                Err(status) => match from_status(status) {
                    Failure::Answer(e) => return Some(Err(e)),
                    Failure::Connection(_) | Failure::Other(_) => {
                        tracing::warn!(after = self.last, "identity event stream broke; reopening");
                        self.stream = None;
                    }
                    Failure::Refused(_) => return Some(Err(AppError::Upstream(UNAVAILABLE.into()))),
                },
            }
        }
    }
}
