//! What the public gateway lets a client do: connections and requests over HTTP, request
//! rates, GraphQL documents, and GraphQL WebSockets.

use std::time::Duration;

use ipnet::IpNet;

use super::{ProxyHeader, TrustedMode};

/// What the listeners accept.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Per-address limits count an IPv6 client by this many leading bits.
    pub ipv6_prefix: u8,
    /// Load balancers whose `Forwarded` / `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The header those balancers name the client in.
    pub trusted_proxy_header: ProxyHeader,
    pub cors_origins: Vec<String>,
    pub shutdown_grace: Duration,
}

/// Request rates (0: no limit).
#[derive(Debug, Clone)]
pub struct RateLimits {
    pub per_ip_per_second: u32,
    pub per_user_per_second: u32,
    pub sensitive_per_minute: u32,
    /// An IPv6 client is counted by this many leading bits of its address.
    pub ipv6_prefix: u8,
}

/// The documents a deployment lets run, by the SHA-256 of their text (hex).
#[derive(Debug, Clone)]
pub struct TrustedDocuments {
    pub mode: TrustedMode,
    pub documents: std::collections::HashMap<String, String>,
}

/// What a GraphQL document may be.
#[derive(Debug, Clone)]
pub struct GraphqlLimits {
    pub introspection: bool,
    pub max_query_length: usize,
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_directives: usize,
    /// The deepest `paginate.offset` accepted (deeper pages go by cursor).
    pub max_page_offset: i32,
    pub trusted_documents: Option<TrustedDocuments>,
}

/// What a GraphQL WebSocket (subscriptions) may hold and how long it may stay quiet.
#[derive(Debug, Clone)]
pub struct WsLimits {
    pub max_sockets: usize,
    pub max_sockets_per_ip: usize,
    pub max_sockets_per_user: usize,
    pub max_subscriptions_per_socket: usize,
    pub init_timeout: Duration,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    /// How long one message may wait to be written before the client counts as not reading.
    pub send_timeout: Duration,
}
