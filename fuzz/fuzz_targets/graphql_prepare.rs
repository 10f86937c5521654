//! The GraphQL request path an anonymous client reaches, as the endpoint runs it: text ->
//! parse -> guardrails -> async-graphql's validation -> execution, through the real gateway
//! and schema. The input is a query, optionally followed by a NUL byte and the variables as
//! JSON. Whatever it is, the gateway answers (no panic, no stack overflow: run the binary with
//! `ulimit -s 2048`, a tokio worker's stack, as `fuzz/run.sh` does), and every error carries a
//! stable code.
#![no_main]

use bankgraph::auth::AuthState;
use bankgraph::graphql::Method;
use libfuzzer_sys::fuzz_target;

mod harness;

fuzz_target!(|data: &[u8]| {
    let (text, variables) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(query) = std::str::from_utf8(text) else { return };
    if query.chars().count() > harness::MAX_QUERY_LENGTH {
        return;
    }
    let mut request = async_graphql::Request::new(query);
    if let Some(v) = variables.and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        && v.is_object()
    {
        request = request.variables(async_graphql::Variables::from_json(v));
    }
    let h = harness::harness();
    let executed = h.runtime.block_on(h.gateway.execute(request.data(AuthState::Anonymous), "fuzz", Method::Post));
    harness::assert_coded(&executed.response.errors);
});
