//! The accept loop: every connection is bounded in number (per process and per client IP) and
//! in time (a first request within the header timeout from accept, an idle limit between
//! requests, HTTP/2 pings), and shutdown closes connections even when a client holds them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower::Service;

use super::client_ip::TrustedProxies;
use crate::admission::{Admission, Admitted, Caps};

/// How the accept loop bounds connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// From accept: a connection that has not sent a whole request head by then is closed.
    pub header_read_timeout: Duration,
    /// Between requests on a kept-alive connection (HTTP/1.1 and HTTP/2).
    pub idle_timeout: Duration,
    /// Open connections in this listener; more are closed at accept.
    pub max_connections: usize,
    /// Open connections from one client IP (trusted proxies are exempt).
    pub max_connections_per_ip: usize,
    /// An IPv6 client is counted by this many leading bits of its address.
    pub ipv6_prefix: u8,
    pub trusted_proxies: TrustedProxies,
    /// After shutdown starts: how long in-flight requests may take before connections close.
    pub grace: Duration,
}

/// What a connection's watchdog reads: requests in flight, requests started, when the last
/// one finished (milliseconds since the connection was accepted), bytes received in all and
/// by the time the last request finished.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    started: AtomicUsize,
    idle_since_ms: AtomicU64,
    bytes_read: AtomicU64,
    bytes_at_idle: AtomicU64,
}

/// The socket, noting when bytes arrive.
struct Watched {
    inner: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity.bytes_read.fetch_add(n as u64, Ordering::AcqRel);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Counts a request in flight until it is dropped (answered or abandoned).
struct InFlight {
    activity: Arc<Activity>,
    accepted: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.idle_since_ms.store(self.accepted.elapsed().as_millis() as u64, Ordering::Release);
        self.activity.bytes_at_idle.store(self.activity.bytes_read.load(Ordering::Acquire), Ordering::Release);
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets
/// in-flight requests finish for up to `grace`, and closes what is left. Handlers see the
/// peer address as `ConnectInfo`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    // hyper's own header timeout is off: it starts only once a first byte has arrived (the
    // auto builder waits for bytes to tell HTTP/1 from HTTP/2 with no timeout at all) and on a
    // kept-alive connection it also cuts idling, racing clients that reuse the connection. The
    // watchdog in `connection` does both jobs, each with its own limit.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(100)
        .max_header_list_size(64 * 1024);
    let builder = Arc::new(builder);
    let limits = Arc::new(limits);
    let admission = Admission::new(Caps {
        max_connections: limits.max_connections,
        max_connections_per_ip: limits.max_connections_per_ip,
        ipv6_prefix: limits.ipv6_prefix,
        trusted_proxies: limits.trusted_proxies.clone(),
    });
    let connections = TaskTracker::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, peer, admitted) = admission.accept(&listener) => {
                connections.spawn(connection(
                    stream,
                    peer,
                    router.clone(),
                    builder.clone(),
                    limits.clone(),
                    admitted,
                    stop_rx.clone(),
                ));
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    connections.close();
    if tokio::time::timeout(limits.grace + Duration::from_secs(1), connections.wait()).await.is_err() {
        tracing::warn!("connections still open at the end of the grace period");
    }
    Ok(())
}

/// One connection, watched: closed when it sends no request head within the header timeout
/// of accept, when it idles longer than the idle limit, and at shutdown (gracefully first,
/// then at the end of the grace period, whatever the client does).
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    builder: Arc<Builder<TokioExecutor>>,
    limits: Arc<ConnectionLimits>,
    admitted: Admitted,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _admitted = admitted;
    let accepted = Instant::now();
    let activity = Arc::new(Activity::default());
    let svc = {
        let activity = activity.clone();
        tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            activity.in_flight.fetch_add(1, Ordering::AcqRel);
            activity.started.fetch_add(1, Ordering::AcqRel);
            let guard = InFlight { activity: activity.clone(), accepted };
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let mut router = router.clone();
            async move {
                let _guard = guard;
                router.call(req.map(axum::body::Body::new)).await
            }
        })
    };
    let io = Watched { inner: stream, activity: activity.clone() };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(svc));
    tokio::pin!(conn);
    // Set once the connection was asked to close: the moment it must be gone by.
    let mut closing: Option<tokio::time::Instant> = None;
    let tick = Duration::from_millis(250).min(limits.header_read_timeout / 2);
    loop {
        let wake = closing.unwrap_or_else(|| tokio::time::Instant::now() + tick);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.wait_for(|s| *s), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + limits.grace);
            }
            _ = tokio::time::sleep_until(wake) => {
                if closing.is_some() {
                    // The client kept it open past its time: close it.
                    return;
                }
                if activity.in_flight.load(Ordering::Acquire) > 0 {
                    continue;
                }
                let now = accepted.elapsed();
                if activity.started.load(Ordering::Acquire) == 0 {
                    // No request yet: its head must be complete within the header timeout of
                    // accept, whether the client sends nothing or trickles bytes.
                    if now >= limits.header_read_timeout {
                        metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "reason" => "no_request").increment(1);
                        return;
                    }
                    continue;
                }
                let idle_since = Duration::from_millis(activity.idle_since_ms.load(Ordering::Acquire));
                if activity.bytes_read.load(Ordering::Acquire) > activity.bytes_at_idle.load(Ordering::Acquire) {
                    // The next request's head has begun (or stray bytes came): it gets the
                    // header timeout from the end of the previous response.
                    if now.saturating_sub(idle_since) >= limits.header_read_timeout.max(limits.idle_timeout) {
                        metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "reason" => "slow_request").increment(1);
                        return;
                    }
                } else if now.saturating_sub(idle_since) >= limits.idle_timeout {
                    metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "reason" => "idle").increment(1);
                    conn.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
        }
    }
}

/// Raises this process's open-file limit to its hard limit (each connection is a descriptor;
/// the usual soft limit of 1,024 let 1,050 idle sockets stop the service) and returns it.
pub fn raise_descriptor_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
        }
    }
}
