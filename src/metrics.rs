//! Prometheus metrics (served at `/metrics` on the internal listener). One process-wide
//! recorder; every name is declared here so the set is easy to review.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// GraphQL operations (root fields) by `operation` and `outcome`: a histogram, seconds.
pub const GRAPHQL_OPERATION_SECONDS: &str = "bankgraph_graphql_operation_duration_seconds";
/// HTTP requests to the GraphQL endpoint by `status`: a counter.
pub const GRAPHQL_REQUESTS: &str = "bankgraph_graphql_requests_total";
/// Requests refused before execution by `reason` (body_too_large, rate_limited, …): a counter.
pub const REQUESTS_REFUSED: &str = "bankgraph_requests_refused_total";
/// Requests whose handler panicked (answered 500 with the generic internal error): a counter.
/// Any increase is a bug to fix; alert on it.
pub const HANDLER_PANICS: &str = "bankgraph_handler_panics_total";
/// Documents outside the trusted list, by `mode` (refused when `enforce`, run when `log`).
pub const UNTRUSTED_DOCUMENTS: &str = "bankgraph_untrusted_documents_total";
/// Connections closed at accept because a connection cap was reached: a counter.
pub const CONNECTIONS_REFUSED: &str = "bankgraph_connections_refused_total";
/// Connections closed by the server by `reason` (no_request, idle): a counter.
pub const CONNECTIONS_CLOSED: &str = "bankgraph_connections_closed_total";
/// Plaid calls by `endpoint`: a histogram, seconds.
pub const PLAID_CALL_SECONDS: &str = "bankgraph_plaid_call_duration_seconds";
/// Failed Plaid calls by `endpoint` and `error_code`: a counter.
pub const PLAID_ERRORS: &str = "bankgraph_plaid_errors_total";
/// Webhooks accepted by `webhook_type`, `webhook_code` and `delivery` (new, redelivery).
pub const WEBHOOKS_RECEIVED: &str = "bankgraph_webhooks_received_total";
/// Webhooks refused by `reason` (the verification failure).
pub const WEBHOOKS_REJECTED: &str = "bankgraph_webhooks_rejected_total";
/// Lookups of Plaid's webhook keys not made, by `reason`: `rate` (the never-seen kids' budget
/// is spent: forged kids, or a flood) or `backoff` (the key endpoint failed recently). Each is a
/// 503 to Plaid, which delivers again; a steady rate deserves an alert.
pub const WEBHOOK_KEY_LOOKUPS_THROTTLED: &str = "bankgraph_webhook_key_lookups_throttled_total";
/// Lookups of Plaid's webhook keys that got no answer (outage, timeout, rate limit).
pub const WEBHOOK_KEY_LOOKUP_FAILURES: &str = "bankgraph_webhook_key_lookup_failures_total";
/// Jobs finished by `kind` and `outcome` (done, retry, failed).
pub const JOBS_FINISHED: &str = "bankgraph_jobs_finished_total";
/// Jobs in the shared queue by `kind` and `state` (queued, running, failed), read from the
/// database when `/metrics` is scraped: a gauge.
pub const JOBS: &str = "bankgraph_jobs";
/// How long the oldest due job of each `kind` has waited, at scrape time: a gauge, seconds (0
/// when none is due).
pub const JOBS_OLDEST_DUE_SECONDS: &str = "bankgraph_jobs_oldest_due_seconds";
/// Job run time by `kind`: a histogram, seconds.
pub const JOB_SECONDS: &str = "bankgraph_job_duration_seconds";
/// Transactions written by sync, by `change` (upserted, posted, removed).
pub const SYNC_TRANSACTIONS: &str = "bankgraph_sync_transactions_total";
/// Sync pagination restarts after a mutation during pagination.
pub const SYNC_RESTARTS: &str = "bankgraph_sync_restarts_total";
/// Calls from the gateway to the identity service by `method` and `outcome` (ok, the error
/// code, or unavailable / refused / timeout when it did not get an answer): a histogram, seconds.
pub const IDENTITY_RPC_SECONDS: &str = "bankgraph_identity_rpc_duration_seconds";
/// Gateway requests one batched account read of the identity service answered: a histogram.
pub const IDENTITY_RPC_BATCH_REQUESTS: &str = "bankgraph_identity_rpc_batch_requests";
/// Calls to the identity service's RPC listener refused by `reason` (no_token, bad_token).
pub const IDENTITY_RPC_REFUSED: &str = "bankgraph_identity_rpc_refused_total";
/// Open GraphQL WebSockets (after `connection_ack`): a gauge.
pub const WS_SOCKETS: &str = "bankgraph_ws_sockets_open";
/// WebSockets refused or closed by the server by `reason` (origin, ip_limit, user_limit,
/// unauthenticated, init_timeout, idle, token_expired, protocol, shutdown): a counter.
pub const WS_CLOSED: &str = "bankgraph_ws_closed_total";
/// Active GraphQL subscriptions: a gauge.
pub const SUBSCRIPTIONS: &str = "bankgraph_subscriptions_active";
/// Connection events delivered to subscribers: a counter.
pub const EVENTS_DELIVERED: &str = "bankgraph_events_delivered_total";
/// From an event's commit to its delivery to a subscriber: a histogram, seconds.
pub const EVENT_DELIVERY_LAG_SECONDS: &str = "bankgraph_event_delivery_lag_seconds";

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(2);

/// Installs the process-wide recorder (once) and returns its handle.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(IDENTITY_RPC_BATCH_REQUESTS.into()), &sizes))
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(h) => {
                    // The recorder keeps every histogram sample until upkeep drains it; only a
                    // scrape of /metrics ran it, so without Prometheus memory grew ~20 bytes a
                    // request for good (the soak found it). Upkeep runs here, whoever scrapes.
                    let upkeep = h.clone();
                    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                        loop {
                            std::thread::sleep(METRICS_UPKEEP);
                            upkeep.run_upkeep();
                        }
                    });
                    if let Err(e) = spawned {
                        tracing::error!(error = %e, "could not start the metrics upkeep thread");
                    }
                    h
                }
                // Another recorder is installed (a test harness): render an empty one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// The text exposition of every metric.
pub fn render() -> String {
    handle().render()
}
