//! The identity service's RPC listener: the contract's operations, each delegated to the
//! [`IdentityService`] of this process. Every call is authenticated first (the service token,
//! compared in constant time, and the client certificate when mutual TLS is on), runs in a span
//! that carries the gateway's request id and trace, and is bounded by the gateway's deadline.
//! Connections are guarded at accept as the public listener's are ([`crate::admission`]): a cap
//! in all and per address, and the HTTP/2 preface (or TLS handshake) within the header timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::convert as c;
use super::pb;
use super::pb::identity_service_server::{IdentityService as Rpc, IdentityServiceServer};
use super::status::{detail, to_status};
use crate::admission::{Admission, Caps, FirstBytes};
use crate::config::{ListenerLimits, RpcServerConfig};
use crate::error::{AppError, AppResult};
use crate::identity::{EventWatch, IdentityService, Watching};
use crate::trace::{REQUEST_ID, TRACEPARENT, TraceParent};

/// Concurrent calls and event streams on one gateway connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 16_384;

/// Requests one ListAccountsBatch may carry, and request ids it may name.
pub const MAX_BATCH: usize = 64;
const MAX_BATCH_REQUEST_IDS: usize = 256;

/// The longest a call may run when the gateway sent no deadline (gateways always send one).
const MAX_CALL: Duration = Duration::from_secs(60);

/// Open connections the listener holds (each gateway keeps a few per endpoint), below the
/// open-file limit; more are closed at accept.
const MAX_CONNECTIONS: usize = 1024;
/// Open connections from one address (a host may run several gateways).
const MAX_CONNECTIONS_PER_IP: usize = 128;
/// The HTTP/2 client preface (`PRI * HTTP/2.0...`): a connection must send this much within the
/// header timeout of accept.
const PREFACE_LEN: usize = 24;

/// The shared service token, kept as its SHA-256 so every comparison takes the same time
/// whatever the length or content of what was presented.
#[derive(Clone)]
pub struct ServiceToken([u8; 32]);

impl ServiceToken {
    pub fn new(token: &SecretString) -> Self {
        ServiceToken(Sha256::digest(token.expose_secret().as_bytes()).into())
    }

    fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.0).into()
    }

    /// Checks a call's `authorization: Bearer <token>`.
    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let presented = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        match presented.and_then(|v| v.strip_prefix("Bearer ")) {
            Some(t) if self.matches(t.as_bytes()) => Ok(()),
            Some(_) => {
                metrics::counter!(crate::metrics::IDENTITY_RPC_REFUSED, "reason" => "bad_token").increment(1);
                Err(Status::unauthenticated("The service token is not valid."))
            }
            None => {
                metrics::counter!(crate::metrics::IDENTITY_RPC_REFUSED, "reason" => "no_token").increment(1);
                Err(Status::unauthenticated("A service token is required."))
            }
        }
    }
}

/// The span of one call: the gateway's request id (when it is an acceptable one) and trace.
fn span_for(method: &'static str, meta: &tonic::metadata::MetadataMap) -> tracing::Span {
    let request_id = meta
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| crate::http::acceptable_request_id(v.as_bytes()))
        .unwrap_or("-");
    let trace = meta.get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
    let trace_id = trace.map(|t| t.trace_id_hex()).unwrap_or_default();
    let span = tracing::info_span!("rpc", method, request_id = %request_id, trace_id = %trace_id);
    if let Some(t) = trace {
        t.adopt(&span);
    }
    span
}

/// The longest caller id (a token's `sub`) a request may name, in bytes.
const MAX_USER_ID_BYTES: usize = 1024;

/// The caller a request names: the `sub` the gateway verified. One with a control character
/// (PostgreSQL refuses NUL in text, failing the statement it is in) or over-long is refused
/// here, as GraphQL refuses such an id, before it reaches the store.
fn caller(user_id: &str) -> AppResult<&str> {
    if user_id.is_empty() {
        return Err(AppError::Unauthenticated("The request names no caller.".into()));
    }
    if user_id.len() > MAX_USER_ID_BYTES {
        return Err(AppError::BadInput(format!("user_id is longer than {MAX_USER_ID_BYTES} bytes.")));
    }
    if user_id.chars().any(char::is_control) {
        return Err(AppError::BadInput("user_id must not contain control characters.".into()));
    }
    Ok(user_id)
}

/// One ListAccounts, alone or as part of a batch.
async fn list_accounts(s: &dyn IdentityService, r: pb::ListAccountsRequest) -> AppResult<pb::ListAccountsResponse> {
    let accounts = s.accounts(caller(&r.user_id)?, c::from_filter(r.filter)).await?;
    Ok(pb::ListAccountsResponse { accounts: accounts.into_iter().map(c::account).collect() })
}

/// An opened event stream (a named type, so `run` can carry it like any answer).
struct Opened(Watching);

/// The contract's operations over this process's identity service.
#[derive(Clone)]
pub struct IdentityRpc {
    service: Arc<dyn IdentityService>,
}

impl IdentityRpc {
    async fn run<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        req: Request<Req>,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(Arc<dyn IdentityService>, Req) -> Fut,
        Fut: Future<Output = AppResult<Resp>>,
    {
        let span = span_for(method, req.metadata());
        let service = self.service.clone();
        async move {
            let started = std::time::Instant::now();
            let result = f(service, req.into_inner()).await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.code(),
            };
            // The gateway logs every request (with the same request id); here only failures are
            // worth a line at info, and every call one at debug.
            let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
            if result.is_ok() {
                tracing::debug!(outcome, elapsed_ms, "rpc served");
            } else {
                tracing::info!(outcome, elapsed_ms, "rpc served");
            }
            result.map(Response::new).map_err(to_status)
        }
        .instrument(span)
        .await
    }
}

#[tonic::async_trait]
impl Rpc for IdentityRpc {
    async fn create_link_token(
        &self,
        req: Request<pb::CreateLinkTokenRequest>,
    ) -> Result<Response<pb::LinkToken>, Status> {
        self.run("CreateLinkToken", req, |s, r| async move {
            let os = c::from_device_os(r.device_os)?;
            let t = s.create_link_token(caller(&r.user_id)?, os, r.platform_item_id.as_deref()).await?;
            Ok(c::link_token(t))
        })
        .await
    }

    async fn complete_link(
        &self,
        req: Request<pb::CompleteLinkRequest>,
    ) -> Result<Response<pb::CompletedLink>, Status> {
        // The completion runs in a task of the identity service's own: a gateway that goes
        // away (or a deadline that passes) cancels only the wait for it.
        self.run("CompleteLink", req, |s, r| async move {
            let token = SecretString::from(r.public_token);
            Ok(c::completed(s.complete_link(caller(&r.user_id)?, token, r.platform_item_id).await?))
        })
        .await
    }

    async fn replayed_link(
        &self,
        req: Request<pb::ReplayedLinkRequest>,
    ) -> Result<Response<pb::ReplayedLinkResponse>, Status> {
        self.run("ReplayedLink", req, |s, r| async move {
            let token = SecretString::from(r.public_token);
            let done = s.replayed_link(caller(&r.user_id)?, &token).await?;
            Ok(pb::ReplayedLinkResponse { completed: done.map(c::completed) })
        })
        .await
    }

    async fn list_accounts(
        &self,
        req: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        self.run("ListAccounts", req, |s, r| async move { list_accounts(&*s, r).await }).await
    }

    /// Each request as ListAccounts would serve it, concurrently (so the store coalesces their
    /// reads too), each answered with its accounts or its own error.
    async fn list_accounts_batch(
        &self,
        req: Request<pb::ListAccountsBatchRequest>,
    ) -> Result<Response<pb::ListAccountsBatchResponse>, Status> {
        use pb::list_accounts_result::Result as One;
        self.run("ListAccountsBatch", req, |s, r| async move {
            if r.requests.len() > MAX_BATCH || r.request_ids.len() > MAX_BATCH_REQUEST_IDS {
                return Err(AppError::BadInput(format!(
                    "A batch carries at most {MAX_BATCH} requests and {MAX_BATCH_REQUEST_IDS} request ids."
                )));
            }
            let s = &s;
            let results = futures::future::join_all(r.requests.into_iter().map(|one| async move {
                let result = match list_accounts(&**s, one).await {
                    Ok(accounts) => One::Accounts(accounts),
                    Err(e) => One::Error(detail(e).1),
                };
                pb::ListAccountsResult { result: Some(result) }
            }))
            .await;
            // Which requests of the gateway this call answered, to find each in this log.
            let ids: Vec<&str> = r
                .request_ids
                .iter()
                .map(String::as_str)
                .filter(|id| crate::http::acceptable_request_id(id.as_bytes()))
                .collect();
            let failed = results.iter().filter(|r| matches!(r.result, Some(One::Error(_)))).count();
            if failed > 0 {
                tracing::info!(request_ids = ?ids, requests = results.len(), failed, "batched account reads failed");
            } else {
                tracing::debug!(request_ids = ?ids, requests = results.len(), "batched account reads");
            }
            Ok(pb::ListAccountsBatchResponse { results })
        })
        .await
    }

    async fn list_balances(
        &self,
        req: Request<pb::ListBalancesRequest>,
    ) -> Result<Response<pb::ListBalancesResponse>, Status> {
        self.run("ListBalances", req, |s, r| async move {
            let balances = s.balances(caller(&r.user_id)?, c::from_filter(r.filter)).await?;
            Ok(pb::ListBalancesResponse { balances: balances.into_iter().map(c::balance).collect() })
        })
        .await
    }

    async fn list_transactions(
        &self,
        req: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::TransactionPage>, Status> {
        self.run("ListTransactions", req, |s, r| async move {
            let user = r.user_id.clone();
            let filter =
                c::from_transactions_request(r).map_err(|_| AppError::BadInput("Bad transaction filter.".into()))?;
            Ok(c::page(s.transactions(caller(&user)?, filter).await?))
        })
        .await
    }

    async fn refresh(&self, req: Request<pb::RefreshRequest>) -> Result<Response<pb::RefreshOutcome>, Status> {
        self.run("Refresh", req, |s, r| async move { Ok(c::refresh(s.refresh(caller(&r.user_id)?).await?)) }).await
    }

    async fn add_address(
        &self,
        req: Request<pb::AddAddressRequest>,
    ) -> Result<Response<pb::AddAddressResponse>, Status> {
        self.run("AddAddress", req, |s, r| async move {
            let address = c::from_address(r.address)?;
            let id = s.add_address(caller(&r.user_id)?, &r.connection_id, address).await?;
            Ok(pb::AddAddressResponse { address_id: id })
        })
        .await
    }

    async fn remove_connection(
        &self,
        req: Request<pb::RemoveConnectionRequest>,
    ) -> Result<Response<pb::RemoveConnectionResponse>, Status> {
        self.run("RemoveConnection", req, |s, r| async move {
            let reason = c::from_reason(&r.reason)?;
            let ids = s.remove_connection(caller(&r.user_id)?, &r.connection_id, reason).await?;
            Ok(pb::RemoveConnectionResponse { removed_account_ids: ids })
        })
        .await
    }

    type WatchConnectionEventsStream = futures::stream::BoxStream<'static, Result<pb::WatchedEvent, Status>>;

    /// Opens like any call (its failures are answers with an ErrorDetail), then streams for as
    /// long as the gateway keeps it: the server's call timeout bounds the opening only.
    async fn watch_connection_events(
        &self,
        req: Request<pb::WatchConnectionEventsRequest>,
    ) -> Result<Response<Self::WatchConnectionEventsStream>, Status> {
        use futures::StreamExt;
        let opened = self
            .run("WatchConnectionEvents", req, |s, r| async move {
                let user = caller(&r.user_id)?.to_string();
                let watch = EventWatch {
                    plaid_item_id: r.platform_item_id,
                    connection_id: r.connection_id,
                    after: r.after,
                    after_own: r.after_own,
                };
                s.connection_events(&user, watch).await.map(Opened)
            })
            .await?;
        let Watching { start, events } = opened.into_inner().0;
        let first = pb::WatchedEvent { cursor: start, event: None };
        let events =
            events.map(|e| e.map(|e| pb::WatchedEvent { cursor: e.seq, event: Some(c::event(&e)) }).map_err(to_status));
        Ok(Response::new(futures::stream::once(async move { Ok(first) }).chain(events).boxed()))
    }

    async fn ready(&self, req: Request<pb::ReadyRequest>) -> Result<Response<pb::ReadyResponse>, Status> {
        self.run("Ready", req, |s, _| async move {
            s.ready().await?;
            Ok(pb::ReadyResponse {})
        })
        .await
    }
}

/// The contract's gRPC service over `service`, with the message size limits (and without the
/// service-token check, which [`RpcServer`] adds in front of it).
pub fn grpc(service: Arc<dyn IdentityService>) -> IdentityServiceServer<IdentityRpc> {
    IdentityServiceServer::new(IdentityRpc { service })
        .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(super::MAX_MESSAGE_BYTES)
}

/// The RPC listener, bound and ready to serve.
pub struct RpcServer {
    listener: TcpListener,
    service: Arc<dyn IdentityService>,
    config: RpcServerConfig,
}

impl RpcServer {
    pub fn new(listener: TcpListener, service: Arc<dyn IdentityService>, config: RpcServerConfig) -> Self {
        RpcServer { listener, service, config }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then lets calls in flight finish within the grace.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        limits: ListenerLimits,
    ) -> anyhow::Result<()> {
        let grace = limits.shutdown_grace;
        let token = self.config.token.as_ref().map(ServiceToken::new);
        let check = move |req: Request<()>| -> Result<Request<()>, Status> {
            if let Some(t) = &token {
                t.check(&req)?;
            }
            Ok(req)
        };
        let service = tonic::service::interceptor::InterceptedService::new(grpc(self.service), check);
        let mut builder = Server::builder()
            .timeout(MAX_CALL)
            .concurrency_limit_per_connection(1024)
            // Each live subscription of a gateway is an open stream; gateways send those on
            // connections of their own, so they never queue calls behind them.
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .tcp_nodelay(true);
        if let Some(tls) = &self.config.tls {
            builder = builder.tls_config(super::tls::server(tls).timeout(limits.header_read_timeout))?;
        }
        let descriptors = crate::http::server::raise_descriptor_limit().unwrap_or(1024) as usize;
        let admission = Admission::new(Caps {
            max_connections: MAX_CONNECTIONS.min(descriptors.saturating_sub(512).max(64)),
            max_connections_per_ip: MAX_CONNECTIONS_PER_IP,
            ipv6_prefix: limits.ipv6_prefix,
            trusted_proxies: Default::default(),
        });
        let first_bytes = limits.header_read_timeout;
        let incoming = Box::pin(futures::stream::unfold(self.listener, move |listener| {
            let admission = admission.clone();
            async move {
                let (stream, _, admitted) = admission.accept(&listener).await;
                let guarded = FirstBytes::new(stream, admitted, first_bytes, PREFACE_LEN);
                Some((Ok::<_, std::io::Error>(guarded), listener))
            }
        }));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut serving =
            tokio::spawn(builder.add_service(service).serve_with_incoming_shutdown(incoming, async move {
                let _ = stop_rx.await;
            }));
        shutdown.await;
        let _ = stop_tx.send(());
        match tokio::time::timeout(grace + Duration::from_secs(1), &mut serving).await {
            Ok(joined) => joined??,
            Err(_) => {
                tracing::warn!("identity RPC calls still running after the shutdown grace; abandoned");
                serving.abort();
            }
        }
        Ok(())
    }
}

/// An admitted gateway connection, as tonic takes it: the peer's address for its requests.
impl Connected for FirstBytes {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.get_ref().connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_id_with_a_control_character_or_over_long_is_bad_input_and_an_empty_one_no_caller() {
        let code = |id: &str| caller(id).map(str::len).map_err(|e| e.code());
        assert_eq!(code("auth0|abc-123"), Ok(13));
        assert_eq!(code("a\u{0}b"), Err(crate::error::code::BAD_USER_INPUT));
        assert_eq!(code("a\u{7f}"), Err(crate::error::code::BAD_USER_INPUT));
        assert_eq!(code(&"u".repeat(MAX_USER_ID_BYTES + 1)), Err(crate::error::code::BAD_USER_INPUT));
        assert_eq!(code(&"u".repeat(MAX_USER_ID_BYTES)), Ok(MAX_USER_ID_BYTES));
        assert_eq!(code(""), Err(crate::error::code::UNAUTHENTICATED));
    }

    #[test]
    fn the_token_matches_only_itself() {
        let t = ServiceToken::new(&SecretString::from("0123456789abcdef0123456789abcdef".to_string()));
        assert!(t.matches(b"0123456789abcdef0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdef0123456789abcdeF"));
        assert!(!t.matches(b"0123456789abcdef0123456789abcdef "));
        assert!(!t.matches(b""));
    }
}
