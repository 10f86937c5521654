//! Which address a request comes from, behind load balancers: the socket peer, unless it is a
//! trusted proxy (`TRUSTED_PROXIES`), in which case the right-most address that is not a trusted
//! proxy in the one header the operator named (`TRUSTED_PROXY_HEADER`: `X-Forwarded-For` or
//! `Forwarded`). The other header is ignored entirely: a balancer that appends to one passes
//! the client's own copy of the other through untouched. Headers from any other peer are
//! ignored too: a client cannot choose its own rate-limit bucket.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::ProxyHeader;

/// The networks whose peers may say who the client is, and the header they say it in.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ProxyHeader,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>, header: ProxyHeader) -> Self {
        TrustedProxies { nets, header }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The address a request from `peer` is counted as in per-address caps: its client, or
    /// `None` when that is a trusted proxy itself (a balancer that named no client is not held
    /// to one client's share).
    pub fn counted(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        let client = self.client(peer, headers);
        (!self.contains(client)).then_some(client)
    }

    /// The client's address for a request that reached us from `peer`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let hops = forwarded_for(headers, self.header);
        // Right to left: the first hop we did not put there ourselves is the client.
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) => {
                    client = *ip;
                    if !self.contains(*ip) {
                        return *ip;
                    }
                }
                // An unreadable hop: trust nothing to its left.
                None => return client,
            }
        }
        client
    }
}

/// The key an address is counted under in per-address limits: an IPv4 address itself, an IPv6
/// one by its first `v6_prefix` bits (a host is usually handed a whole /64, so counting each
/// /128 would give one client 2^64 allowances).
pub fn address_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            ipnet::Ipv6Net::new(v6, v6_prefix.min(128)).map(|n| IpAddr::V6(n.trunc().addr())).unwrap_or(IpAddr::V6(v6))
        }
        v4 => v4,
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The hops of the named header (RFC 7239 `Forwarded: for=`, or `X-Forwarded-For`), left to
/// right across all its lines; `None` for a hop that is not an address (`unknown`, an
/// obfuscated name, garbage, a line that is not text). At most the last 32 hops are read.
fn forwarded_for(headers: &HeaderMap, header: ProxyHeader) -> Vec<Option<IpAddr>> {
    const MAX_HOPS: usize = 32;
    let mut hops = Vec::new();
    match header {
        ProxyHeader::Forwarded => {
            for v in headers.get_all("forwarded").iter() {
                let Ok(v) = v.to_str() else {
                    hops.push(None);
                    continue;
                };
                for element in v.split(',') {
                    let value = element.split(';').map(str::trim).find_map(|pair| {
                        let (k, v) = pair.split_once('=')?;
                        k.trim().eq_ignore_ascii_case("for").then(|| v.trim().trim_matches('"'))
                    });
                    hops.push(value.and_then(parse_node));
                }
            }
        }
        ProxyHeader::XForwardedFor => {
            for v in headers.get_all("x-forwarded-for").iter() {
                match v.to_str() {
                    Ok(v) => hops.extend(v.split(',').map(|h| parse_node(h.trim()))),
                    Err(_) => hops.push(None),
                }
            }
        }
    }
    if hops.len() > MAX_HOPS {
        hops.drain(..hops.len() - MAX_HOPS);
    }
    hops
}

/// `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80` or `::1`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok().map(canonical);
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TrustedProxies, String> {
        crate::config::parse_networks(text).map(|n| TrustedProxies::new(n, ProxyHeader::XForwardedFor))
    }

    fn parse_forwarded(text: &str) -> TrustedProxies {
        TrustedProxies::new(crate::config::parse_networks(text).unwrap(), ProxyHeader::Forwarded)
    }
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop_and_only_behind_a_trusted_peer() {
        let t = parse("10.0.0.0/8, 192.168.1.7").unwrap();
        let spoofed = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4")]);
        // An untrusted peer's header is ignored.
        assert_eq!(t.client(ip("203.0.113.9"), &spoofed), ip("203.0.113.9"));
        // Behind the balancer: the right-most address it did not add.
        assert_eq!(t.client(ip("10.1.2.3"), &spoofed), ip("1.2.3.4"));
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.9.9.9")]);
        assert_eq!(t.client(ip("10.1.2.3"), &chain), ip("1.2.3.4"));
        // Several header lines read as one list.
        let lines = headers(&[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "1.2.3.4:5678")]);
        assert_eq!(t.client(ip("192.168.1.7"), &lines), ip("1.2.3.4"));
        // Only the named header counts: a client's own Forwarded beside the balancer's
        // X-Forwarded-For is ignored, and the other way round.
        let fwd = headers(&[
            ("forwarded", "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https"),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(t.client(ip("10.0.0.1"), &fwd), ip("9.9.9.9"));
        let f = parse_forwarded("10.0.0.0/8");
        assert_eq!(f.client(ip("10.0.0.1"), &fwd), ip("2001:db8::1"), "quoted IPv6 with a port");
        let only_xff = headers(&[("x-forwarded-for", "9.9.9.9")]);
        assert_eq!(f.client(ip("10.0.0.1"), &only_xff), ip("10.0.0.1"));
        let only_fwd = headers(&[("forwarded", "for=9.9.9.9")]);
        assert_eq!(t.client(ip("10.0.0.1"), &only_fwd), ip("10.0.0.1"));
        // Garbage stops the walk at the last trusted address.
        let bad = headers(&[("x-forwarded-for", "1.2.3.4, nonsense")]);
        assert_eq!(t.client(ip("10.0.0.1"), &bad), ip("10.0.0.1"));
        // No header: the peer.
        assert_eq!(t.client(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
        // Mapped IPv4 peers count as IPv4.
        assert!(t.contains(ip("::ffff:10.0.0.5")));
        assert!(parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::default().client(ip("10.0.0.1"), &spoofed) == ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_prefix_and_ipv4_ones_by_their_address() {
        let key = |s: &str, prefix: u8| address_key(ip(s), prefix);
        assert_eq!(key("2001:db8:1:2::1", 64), key("2001:db8:1:2:ffff:ffff:ffff:fffe", 64));
        assert_ne!(key("2001:db8:1:2::1", 64), key("2001:db8:1:3::1", 64));
        assert_eq!(key("2001:db8:1:2::1", 64), ip("2001:db8:1:2::"));
        assert_eq!(key("2001:db8:1:2::1", 48), key("2001:db8:1:3::1", 48));
        assert_ne!(key("2001:db8::1", 128), key("2001:db8::2", 128));
        assert_eq!(key("192.0.2.1", 64), ip("192.0.2.1"));
        assert_eq!(key("::ffff:192.0.2.1", 64), ip("192.0.2.1"), "mapped IPv4 stays one address");
    }

    #[test]
    fn per_address_caps_count_the_forwarded_client_and_never_a_balancer() {
        let t = parse("10.0.0.0/8").unwrap();
        let fwd = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(t.counted(ip("10.0.0.1"), &fwd), Some(ip("1.2.3.4")));
        assert_eq!(t.counted(ip("10.0.0.1"), &HeaderMap::new()), None, "a balancer that names no client");
        assert_eq!(t.counted(ip("203.0.113.9"), &fwd), Some(ip("203.0.113.9")));
    }
}
