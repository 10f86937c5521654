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
//! Account reads of concurrent requests share calls ([`accounts`]); event streams reopen
//! themselves when they break ([`events`]).

mod accounts;
mod events;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

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
use super::status::{Failure, from_status};
use crate::config::RpcClientConfig;
use crate::domain::{Address, Balance, BankAccount, RemovalReason};
use crate::error::{AppError, AppResult};
use crate::identity::{
    AccountFilter, CompletedLink, DeviceOs, EventWatch, IdentityService, LinkToken, RefreshOutcome, TransactionFilter,
    TransactionPage, Watching,
};
use crate::metrics::IDENTITY_RPC_SECONDS;
use crate::trace::{REQUEST_ID, RequestContext, TRACEPARENT, TraceParent};

/// What a client reads when the identity service cannot be reached.
pub const UNAVAILABLE: &str = "The service is temporarily unavailable; try again.";
/// What a client reads when the identity service did not answer within the request's time.
pub const TOO_SLOW: &str = "The service did not answer in time; try again.";

/// How long to wait for a TCP (and TLS) connection to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a down endpoint is probed.
const PROBE_EVERY: Duration = Duration::from_millis(500);

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
    /// Account reads, coalesced across requests.
    accounts: accounts::AccountReads,
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
        let endpoints = nodes.len();
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| Inner {
            nodes,
            next: AtomicUsize::new(0),
            accounts: accounts::AccountReads::new(weak.clone(), endpoints),
            authorization,
            fallback_deadline,
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

    /// See [`accounts`]: coalesced with the account reads of concurrent requests.
    async fn accounts(&self, user_id: &str, filter: AccountFilter) -> AppResult<Vec<BankAccount>> {
        self.read_accounts(user_id, filter).await
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

    /// See [`events`]: the stream reopens itself after the last event when it breaks.
    async fn connection_events(&self, user_id: &str, watch: EventWatch) -> AppResult<Watching> {
        self.watch_events(user_id, watch).await
    }
}
