//! A GraphQL WebSocket's text frames as the session reads them (graphql-transport-ws): the
//! message, and for `subscribe` the request it builds and the gateway's answer (checks,
//! validation, the subscription's first result). Whatever a frame holds: no panic, no stack
//! overflow on a worker's stack, every error with a code.
#![no_main]

use std::sync::Arc;

use bankgraph::auth::AuthState;
use bankgraph::http::ws::{ClientMessage, read_message, subscribe_request};
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;

mod harness;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(ClientMessage::Subscribe { payload, .. }) = read_message(text) else { return };
    let Ok(request) = subscribe_request(payload, harness::MAX_QUERY_LENGTH) else { return };
    let h = harness::harness();
    match h.gateway.subscribe(request, AuthState::Anonymous, Arc::from("fuzz")) {
        Ok(mut answers) => {
            if let Some(first) = h.runtime.block_on(answers.next()) {
                harness::assert_coded(&first.errors);
            }
        }
        Err(errors) => harness::assert_coded(&errors),
    }
});
