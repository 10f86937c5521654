//! Differential: on every document async-graphql's parser accepts, the pre-scan's bracket
//! depth (`guardrails::bracket_depth`, hand-written) equals the parsed document's depth
//! (`guardrails::document_depth`). A difference is a text the scan reads unlike the grammar,
//! the class of bug that let nesting through to the parser once.
#![no_main]

use bankgraph::graphql::guardrails::{bracket_depth, document_depth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    // The parser recurses without a limit on values and types: give it room for any input
    // libFuzzer makes (one level per byte at most).
    let scanned = bracket_depth(query);
    stacker::grow((1 << 20) + query.len() * 8192, || {
        if let Ok(document) = async_graphql::parser::parse_query(query) {
            let parsed = document_depth(&document);
            assert_eq!(scanned, parsed, "the scan and the grammar disagree on {query:?}");
        }
    });
});
