//! The gateway's GraphQL WebSockets, counted: in total, per client IP (at the upgrade) and per
//! caller (after `connection_init`), and closed together at shutdown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::WsLimits;
use crate::metrics::WS_SOCKETS;

/// The sockets of this gateway: counted in total, per IP and per caller, and closed together
/// at shutdown.
pub struct Sockets {
    pub(super) limits: WsLimits,
    total: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    by_user: Mutex<HashMap<String, usize>>,
    pub(super) shutdown: CancellationToken,
    pub(super) tasks: TaskTracker,
}

impl Sockets {
    pub fn new(limits: WsLimits) -> Self {
        Sockets {
            limits,
            total: AtomicUsize::new(0),
            by_ip: Mutex::default(),
            by_user: Mutex::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Closes every socket (1001, going away) and waits for them within `grace`.
    pub async fn close_all(&self, grace: Duration) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!("WebSockets still open at the end of the grace period");
        }
    }

    /// A place for a new socket from `ip` (`None` for a trusted proxy), or which cap is full.
    pub(super) fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Place, Full> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.limits.max_sockets {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Total);
        }
        if let Some(ip) = ip {
            let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = by_ip.entry(ip).or_insert(0);
            if *n >= self.limits.max_sockets_per_ip {
                drop(by_ip);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Full::Address);
            }
            *n += 1;
        }
        Ok(Place { sockets: self.clone(), ip, user: None })
    }
}

/// The cap that kept a socket out.
pub(super) enum Full {
    Total,
    Address,
}

/// One admitted socket; dropping it frees its places.
pub(super) struct Place {
    sockets: Arc<Sockets>,
    ip: Option<IpAddr>,
    user: Option<String>,
}

impl Place {
    /// Takes one of the caller's places; false when they hold all of theirs.
    pub(super) fn claim_user(&mut self, user: &str) -> bool {
        let mut by_user = self.sockets.by_user.lock().unwrap_or_else(|p| p.into_inner());
        let n = by_user.entry(user.to_string()).or_insert(0);
        if *n >= self.sockets.limits.max_sockets_per_user {
            if *n == 0 {
                by_user.remove(user);
            }
            return false;
        }
        *n += 1;
        self.user = Some(user.to_string());
        metrics::gauge!(WS_SOCKETS).increment(1.0);
        true
    }
}

fn release<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, usize>>, key: &K) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.sockets.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            release(&self.sockets.by_ip, &ip);
        }
        if let Some(user) = &self.user {
            release(&self.sockets.by_user, user);
            metrics::gauge!(WS_SOCKETS).decrement(1.0);
        }
    }
}
