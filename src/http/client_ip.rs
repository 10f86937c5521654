//! Which address a request comes from, behind load balancers: the socket peer, unless it is a
//! trusted proxy (`TRUSTED_PROXIES`), in which case the right-most address of
//! `Forwarded`/`X-Forwarded-For` that is not a trusted proxy. Headers from any other peer are
//! ignored: a client cannot choose its own rate-limit bucket.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The networks whose peers may say who the client is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for a request that reached us from `peer`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let hops = forwarded_for(headers);
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

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The hops of `Forwarded` (RFC 7239 `for=`) if present, else of `X-Forwarded-For`, left to
/// right across all header lines; `None` for a hop that is not an address (`unknown`, an
/// obfuscated name, garbage). At most 32 hops are read.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    const MAX_HOPS: usize = 32;
    let forwarded: Vec<&str> = headers.get_all("forwarded").iter().filter_map(|v| v.to_str().ok()).collect();
    let mut hops = Vec::new();
    if !forwarded.is_empty() {
        for element in forwarded.iter().flat_map(|v| v.split(',')) {
            let value = element.split(';').map(str::trim).find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim().trim_matches('"'))
            });
            hops.push(value.and_then(parse_node));
        }
    } else {
        for v in headers.get_all("x-forwarded-for").iter() {
            match v.to_str() {
                Ok(v) => hops.extend(v.split(',').map(|h| parse_node(h.trim()))),
                Err(_) => hops.push(None),
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
        crate::config::parse_networks(text).map(TrustedProxies::new)
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
        // Forwarded wins over X-Forwarded-For; quoted IPv6 with a port.
        let fwd = headers(&[
            ("forwarded", "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https"),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(t.client(ip("10.0.0.1"), &fwd), ip("2001:db8::1"));
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
}
