//! What every listener does at accept (the public and internal HTTP listeners, the identity
//! service's RPC listener): connections are counted in total and per client address (an IPv6
//! client by its prefix, trusted proxies exempt) and closed at accept beyond either cap, and a
//! failed accept (out of descriptors) backs off rather than spins. How long an admitted
//! connection may stay silent is each listener's: the HTTP loop watches request heads, the RPC
//! listener wraps its sockets in [`FirstBytes`].

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::http::client_ip::{TrustedProxies, address_key};

/// How many connections a listener holds.
#[derive(Debug, Clone)]
pub struct Caps {
    /// Open connections in this listener; more are closed at accept.
    pub max_connections: usize,
    /// Open connections from one client address (trusted proxies are exempt).
    pub max_connections_per_ip: usize,
    /// An IPv6 client is counted by this many leading bits of its address.
    pub ipv6_prefix: u8,
    pub trusted_proxies: TrustedProxies,
}

/// A listener's open connections, in total and by client address, against its caps.
pub struct Admission {
    caps: Caps,
    total: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees its place.
pub struct Admitted {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut by_ip = self.admission.by_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&ip);
                }
            }
        }
    }
}

impl Admission {
    pub fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Admission { caps, total: AtomicUsize::new(0), by_ip: Mutex::default() })
    }

    /// A place for a connection from `ip`, or `None` when a cap is full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.caps.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if self.caps.trusted_proxies.contains(ip) {
            return Some(Admitted { admission: self.clone(), ip: None });
        }
        let ip = address_key(ip, self.caps.ipv6_prefix);
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = by_ip.entry(ip).or_insert(0);
        if *n >= self.caps.max_connections_per_ip {
            drop(by_ip);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        *n += 1;
        Some(Admitted { admission: self.clone(), ip: Some(ip) })
    }

    /// The next connection of `listener` that fits the caps; the others are closed at once
    /// (and counted in `bankgraph_connections_refused_total`). Cancel-safe.
    pub async fn accept(self: &Arc<Self>, listener: &TcpListener) -> (TcpStream, SocketAddr, Admitted) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (EMFILE) or the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.admit(peer.ip()) {
                Some(admitted) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, peer, admitted);
                }
                None => {
                    metrics::counter!(crate::metrics::CONNECTIONS_REFUSED).increment(1);
                    drop(stream);
                }
            }
        }
    }
}

/// An admitted socket that must deliver its first `needed` bytes (for HTTP/2, the 24-byte
/// client preface; under TLS, the handshake's) within a deadline of accept: a read after that
/// fails with `TimedOut`, which closes the connection.
pub struct FirstBytes {
    inner: TcpStream,
    _admitted: Admitted,
    /// Until the first bytes are in: when the connection is given up.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    needed: usize,
}

impl FirstBytes {
    pub fn new(inner: TcpStream, admitted: Admitted, within: Duration, needed: usize) -> Self {
        FirstBytes { inner, _admitted: admitted, deadline: Some(Box::pin(tokio::time::sleep(within))), needed }
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }
}

impl AsyncRead for FirstBytes {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(deadline) = &mut this.deadline {
            this.needed = this.needed.saturating_sub(buf.filled().len() - before);
            if this.needed == 0 {
                this.deadline = None;
            } else if polled.is_pending() && deadline.as_mut().poll(cx).is_ready() {
                metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "reason" => "no_request").increment(1);
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no request within the header timeout of accept",
                )));
            }
        }
        polled
    }
}

impl AsyncWrite for FirstBytes {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(per_ip: usize) -> Caps {
        Caps {
            max_connections: 100,
            max_connections_per_ip: per_ip,
            ipv6_prefix: 64,
            trusted_proxies: TrustedProxies::default(),
        }
    }

    #[test]
    fn ipv6_connections_of_one_prefix_share_the_per_address_cap() {
        let admission = Admission::new(caps(2));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let held = [admission.admit(ip("2001:db8:0:1::1")), admission.admit(ip("2001:db8:0:1::2"))];
        assert!(held.iter().all(Option::is_some));
        assert!(admission.admit(ip("2001:db8:0:1:ffff::9")).is_none(), "a third from the same /64");
        assert!(admission.admit(ip("2001:db8:0:2::1")).is_some(), "another /64 has its own share");
        drop(held);
        assert!(admission.admit(ip("2001:db8:0:1::3")).is_some(), "places come back when connections close");
    }

    #[tokio::test]
    async fn a_socket_that_sends_too_little_is_given_up_at_the_deadline_and_one_that_sends_enough_is_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admission = Admission::new(caps(10));
        let to = listener.local_addr().unwrap();
        let mut silent = TcpStream::connect(to).await.unwrap();
        let (s, _, a) = admission.accept(&listener).await;
        let mut guarded = FirstBytes::new(s, a, Duration::from_millis(200), 4);
        silent.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 3);
        let e = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);

        let mut talker = TcpStream::connect(to).await.unwrap();
        let (s, _, a) = admission.accept(&listener).await;
        let mut guarded = FirstBytes::new(s, a, Duration::from_millis(200), 4);
        talker.write_all(b"abcd").await.unwrap();
        guarded.read_exact(&mut buf[..4]).await.unwrap();
        let later = tokio::time::timeout(Duration::from_millis(400), guarded.read(&mut buf)).await;
        assert!(later.is_err(), "past its first bytes a connection may stay quiet: {later:?}");
    }
}
