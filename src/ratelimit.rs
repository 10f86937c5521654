//! Rate limits per client IP, per caller, and tighter per caller for the operations that cost
//! money or call Plaid (createPlaidLinkToken, completePlaidLink, refreshPlaidBankConnections).
//! Owned by neither floor: the HTTP layer checks the first two, a GraphQL guard the third.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimits;

/// The limiters of one process. A limit of 0 is no limit.
pub struct Limiters {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// IPv6 clients are keyed by this many leading bits.
    ipv6_prefix: u8,
    per_user: Option<DefaultKeyedRateLimiter<String>>,
    sensitive: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

fn keyed<K: std::hash::Hash + Eq + Clone>(quota: Option<Quota>) -> Option<DefaultKeyedRateLimiter<K>> {
    quota.map(RateLimiter::keyed)
}

impl Limiters {
    pub fn new(limits: &RateLimits) -> Self {
        let per_second = |n: u32| NonZeroU32::new(n).map(|n| Quota::per_second(n).allow_burst(n));
        let per_minute = |n: u32| NonZeroU32::new(n).map(|n| Quota::per_minute(n).allow_burst(n));
        Limiters {
            per_ip: keyed(per_second(limits.per_ip_per_second)),
            ipv6_prefix: limits.ipv6_prefix,
            per_user: keyed(per_second(limits.per_user_per_second)),
            sensitive: keyed(per_minute(limits.sensitive_per_minute)),
            clock: DefaultClock::default(),
        }
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        l: &Option<DefaultKeyedRateLimiter<K>>,
        key: &K,
    ) -> Result<(), Duration> {
        match l {
            None => Ok(()),
            Some(l) => l.check_key(key).map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }

    /// One request from this IP (an IPv6 one counted with its whole prefix); `Err` holds how
    /// long to wait.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check(&self.per_ip, &crate::http::client_ip::address_key(ip, self.ipv6_prefix))
    }

    /// One request from this caller.
    pub fn check_user(&self, sub: &str) -> Result<(), Duration> {
        self.check(&self.per_user, &sub.to_string())
    }

    /// One sensitive operation from this caller.
    pub fn check_sensitive(&self, sub: &str) -> Result<(), Duration> {
        self.check(&self.sensitive, &sub.to_string())
    }

    /// Forgets keys that are back to a full allowance (bounded memory).
    pub fn shrink(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
        }
        if let Some(l) = &self.per_user {
            l.retain_recent();
        }
        if let Some(l) = &self.sensitive {
            l.retain_recent();
        }
    }
}

/// Whole seconds to tell a client in `Retry-After` (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.as_secs() == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ip: u32, user: u32, sensitive: u32) -> RateLimits {
        RateLimits {
            per_ip_per_second: ip,
            per_user_per_second: user,
            sensitive_per_minute: sensitive,
            ipv6_prefix: 64,
        }
    }

    #[test]
    fn each_key_has_its_own_allowance_and_zero_means_unlimited() {
        let l = Limiters::new(&limits(2, 0, 1));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(l.check_ip(a).is_ok() && l.check_ip(a).is_ok());
        let wait = l.check_ip(a).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(l.check_ip(b).is_ok());
        for _ in 0..100 {
            assert!(l.check_user("u").is_ok());
        }
        assert!(l.check_sensitive("u").is_ok());
        assert!(l.check_sensitive("u").unwrap_err() > Duration::from_secs(30));
        assert!(l.check_sensitive("v").is_ok());
    }

    #[test]
    fn ipv6_addresses_of_one_prefix_share_an_allowance() {
        let l = Limiters::new(&limits(1, 0, 0));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(l.check_ip(ip("2001:db8:0:1::1")).is_ok());
        assert!(l.check_ip(ip("2001:db8:0:1::2")).is_err(), "same /64, same bucket");
        assert!(l.check_ip(ip("2001:db8:0:2::1")).is_ok(), "another /64 has its own");
        let per_128 = Limiters::new(&RateLimits { ipv6_prefix: 128, ..limits(1, 0, 0) });
        assert!(per_128.check_ip(ip("2001:db8:0:1::1")).is_ok());
        assert!(per_128.check_ip(ip("2001:db8:0:1::2")).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
