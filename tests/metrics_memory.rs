//! Found by the soak (`bench/soak.sh`): RSS grew about 20 bytes per request for as long as the
//! load ran, with logging on or off. The Prometheus recorder keeps every histogram sample in a
//! bucket until upkeep drains it, and nothing ran upkeep unless `/metrics` was scraped. Here a
//! counting allocator measures what a million samples leave behind once upkeep has had time to
//! run.

use std::alloc::System;
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn histogram_samples_do_not_pile_up_when_nobody_scrapes() {
    let _handle = bankgraph::metrics::handle();
    let histogram = metrics::histogram!(bankgraph::metrics::GRAPHQL_OPERATION_SECONDS, "operation" => "getPlaidBankAccounts", "outcome" => "ok");
    histogram.record(0.001);
    let region = Region::new(GLOBAL);
    for _ in 0..1_000_000 {
        histogram.record(0.003);
    }
    // Traffic goes on, lighter; upkeep runs on its own every few seconds; nobody calls render().
    // (Drained blocks are freed by crossbeam's epochs as later samples are recorded.)
    for _ in 0..8 {
        for _ in 0..10_000 {
            histogram.record(0.003);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let stats = region.change();
    let held = stats.bytes_allocated as isize - stats.bytes_deallocated as isize;
    assert!(held < 1_000_000, "a million samples still hold {held} bytes (8 MB if none were drained)");
}
