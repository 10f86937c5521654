//! Health and metrics: `/healthz` (the process answers), `/readyz` (its database answers),
//! `/metrics` (Prometheus text, internal listener only).

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::identity::PlaidIdentity;

pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(3), state.identity.ready()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response(),
    }
}

/// The Prometheus text. The job gauges are read from the database first; if it does not
/// answer within 2 s they keep their last values (and `/readyz` says why).
pub(super) async fn metrics(State(identity): State<PlaidIdentity>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), identity.jobs().backlog(chrono::Utc::now())).await {
        Ok(Ok(backlog)) => backlog.record(),
        Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "job backlog could not be read"),
        Err(_) => tracing::warn!("job backlog query timed out"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render()).into_response()
}
