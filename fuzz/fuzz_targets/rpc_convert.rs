//! The identity RPC's messages as the two sides read them: bytes decoded as each message the
//! gateway and the identity service exchange, then converted to the domain. Differential: what
//! one side's decoder accepts, the other side's encoder writes back, and decoding that again
//! gives the same message (a value the two sides would read differently fails here).
#![no_main]

use bankgraph::rpc::convert as c;
use bankgraph::rpc::pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Decodes `bytes` as `M`, converts it with `from`, writes it back with `to`, and checks that
/// the written message converts again to the same message.
fn round_trip<M: Message + Default + PartialEq + Clone + std::fmt::Debug, D>(
    bytes: &[u8],
    from: impl Fn(M) -> Option<D>,
    to: impl Fn(D) -> M,
) {
    let Ok(message) = M::decode(bytes) else { return };
    let Some(domain) = from(message) else { return };
    let written = to(domain);
    let again = from(written.clone()).expect("what the encoder writes, the decoder accepts");
    assert_eq!(to(again), written, "the two sides read the message differently");
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    match kind % 8 {
        0 => round_trip(bytes, |m: pb::TransactionPage| c::from_page(m).ok(), c::page),
        1 => round_trip(bytes, |m: pb::BankAccount| c::from_account(m).ok(), c::account),
        2 => round_trip(bytes, |m: pb::Balance| c::from_balance(m).ok(), c::balance),
        3 => round_trip(bytes, |m: pb::ConnectionEvent| c::from_event(m, "fuzz-user").ok(), |e| c::event(&e)),
        4 => round_trip(bytes, |m: pb::RefreshOutcome| c::from_refresh(m).ok(), c::refresh),
        5 => round_trip(bytes, |m: pb::CompletedLink| Some(c::from_completed(m)), c::completed),
        6 => round_trip(bytes, |m: pb::Address| c::from_address(Some(m)).ok(), c::address),
        _ => {
            // A request as the identity service reads it: never a panic, whatever it holds.
            if let Ok(r) = pb::ListTransactionsRequest::decode(bytes) {
                let _ = c::from_transactions_request(r);
            }
        }
    }
});
