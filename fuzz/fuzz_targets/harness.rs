//! The gateway as the public endpoint runs it, shared by the fuzz targets of the request path.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bankgraph::config::{GraphqlLimits, RateLimits, RpcClientConfig};
use bankgraph::graphql::Gateway;
use bankgraph::ratelimit::Limiters;
use bankgraph::rpc::client::RemoteIdentity;

/// The longest query the endpoint takes by default (`MAX_QUERY_LENGTH`).
pub const MAX_QUERY_LENGTH: usize = 20_000;

pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    pub gateway: Gateway,
}

pub fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        // Anonymous requests never reach the identity service; this one listens nowhere.
        let config =
            RpcClientConfig { endpoints: vec!["http://127.0.0.1:9".parse().expect("url")], token: None, tls: None };
        let identity = {
            let _guard = runtime.enter();
            Arc::new(RemoteIdentity::new(&config, Duration::from_secs(1)).expect("client"))
        };
        // The defaults of the settings.
        let limits = GraphqlLimits {
            introspection: true,
            max_query_length: MAX_QUERY_LENGTH,
            max_depth: 15,
            max_complexity: 500,
            max_aliases: 15,
            max_directives: 10,
            trusted_documents: None,
            max_page_offset: 10_000,
        };
        let limiters = Arc::new(Limiters::new(&RateLimits {
            per_ip_per_second: 0,
            per_user_per_second: 0,
            sensitive_per_minute: 0,
            ipv6_prefix: 64,
        }));
        Harness { gateway: Gateway::new(identity, &limits, limiters), runtime }
    })
}

/// Every error of an answer carries a stable `extensions.code`.
pub fn assert_coded(errors: &[async_graphql::ServerError]) {
    for e in errors {
        let code = e.extensions.as_ref().and_then(|x| x.get("code"));
        assert!(matches!(code, Some(async_graphql::Value::String(_))), "an error without a code: {e:?}");
    }
}
