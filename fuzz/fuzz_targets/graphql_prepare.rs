//! The GraphQL request path an anonymous client reaches, as the endpoint runs it: text ->
//! parse -> guardrails -> async-graphql's validation -> execution, through the real gateway
//! and schema. The input is a query, optionally followed by a NUL byte and the variables as
//! JSON. Whatever it is, the gateway answers (no panic, no stack overflow: run the binary with
//! `ulimit -s 2048`, a tokio worker's stack, as `fuzz/run.sh` does), and every error carries a
//! stable code.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bankgraph::auth::AuthState;
use bankgraph::config::{GraphqlLimits, RateLimits, RpcClientConfig};
use bankgraph::graphql::{Gateway, Method};
use bankgraph::ratelimit::Limiters;
use bankgraph::rpc::client::RemoteIdentity;
use libfuzzer_sys::fuzz_target;

struct Harness {
    runtime: tokio::runtime::Runtime,
    gateway: Gateway,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        // Anonymous requests never reach the identity service; this one listens nowhere.
        let config = RpcClientConfig {
            endpoints: vec!["http://127.0.0.1:9".parse().expect("url")],
            token: None,
            tls: None,
        };
        let identity = {
            let _guard = runtime.enter();
            Arc::new(RemoteIdentity::new(&config, Duration::from_secs(1)).expect("client"))
        };
        let limits = GraphqlLimits {
            introspection: true,
            max_query_length: 20_000,
            max_depth: 15,
            max_complexity: 500,
            max_aliases: 15,
            max_directives: 10,
            trusted_documents: None,
        };
        let limiters =
            Arc::new(Limiters::new(&RateLimits { per_ip_per_second: 0, per_user_per_second: 0, sensitive_per_minute: 0 }));
        Harness { gateway: Gateway::new(identity, &limits, limiters), runtime }
    })
}

fuzz_target!(|data: &[u8]| {
    let (text, variables) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(query) = std::str::from_utf8(text) else { return };
    if query.chars().count() > 20_000 {
        return;
    }
    let mut request = async_graphql::Request::new(query);
    if let Some(v) = variables.and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        && v.is_object()
    {
        request = request.variables(async_graphql::Variables::from_json(v));
    }
    let h = harness();
    let executed =
        h.runtime.block_on(h.gateway.execute(request.data(AuthState::Anonymous), "fuzz", Method::Post));
    for e in &executed.response.errors {
        let code = e.extensions.as_ref().and_then(|x| x.get("code"));
        assert!(matches!(code, Some(async_graphql::Value::String(_))), "an error without a code: {e:?}");
    }
});
