//! The client address behind trusted proxies (`X-Forwarded-For` or `Forwarded`, whichever the
//! operator names): whatever the headers say, a peer that is not a trusted proxy is the client
//! itself, and otherwise the answer is the peer or an address written in the header that
//! counts, never one from the header that does not.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bankgraph::config::{ProxyHeader, parse_networks};
use bankgraph::http::client_ip::{TrustedProxies, address_key};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let header = if data[0] & 1 == 0 { ProxyHeader::XForwardedFor } else { ProxyHeader::Forwarded };
    // Peers: trusted proxies (10.0.0.1, fd00::1) or not (203.0.113.9), as the first byte picks.
    let peer = match data[1] % 3 {
        0 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        1 => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
        _ => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
    };
    let nets = parse_networks("10.0.0.0/8, fd00::/8, 192.168.0.0/16").expect("networks");
    let proxies = TrustedProxies::new(nets, header);
    let rest = &data[2..];
    let (xff, fwd) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in [("x-forwarded-for", xff), ("forwarded", fwd)] {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name, v);
        }
    }
    let client = proxies.client(peer, &headers);
    if !proxies.contains(peer) {
        assert_eq!(client, peer, "an untrusted peer is its own client");
    } else if client != peer {
        let counted = match header {
            ProxyHeader::XForwardedFor => xff,
            ProxyHeader::Forwarded => fwd,
        };
        assert!(
            written_in(counted).contains(&client.to_canonical()),
            "{client} is not in the header that counts: {:?}",
            String::from_utf8_lossy(counted)
        );
    }
    for prefix in [1u8, 48, 64, 127, 128] {
        let _ = address_key(client, prefix);
    }
});

/// Every address written in a header value, however it is spelled (`[v6]:port`, `v4:port`,
/// quoted, in `for=`), canonical (an IPv4-mapped IPv6 address as IPv4).
fn written_in(value: &[u8]) -> Vec<IpAddr> {
    String::from_utf8_lossy(value)
        .split(|c: char| matches!(c, ',' | ';' | '=' | '"' | '[' | ']') || c.is_whitespace())
        .filter_map(|t| t.parse::<IpAddr>().ok().or_else(|| t.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())))
        .map(|ip| ip.to_canonical())
        .collect()
}
