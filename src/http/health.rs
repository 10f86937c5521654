//! Health and metrics: `/healthz` (the process answers), `/readyz` (its database answers),
//! `/metrics` (Prometheus text, internal listener only).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::identity::{IdentityService, PlaidIdentity};

pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// What `/readyz` asks: the identity service, in this process or behind `IDENTITY_URL`.
#[derive(Clone)]
pub struct Readiness(pub Arc<dyn IdentityService>);

impl FromRef<AppState> for Readiness {
    fn from_ref(state: &AppState) -> Readiness {
        Readiness(state.identity.clone())
    }
}

/// Ready when the identity service answers and its database does.
pub(super) async fn readyz(State(Readiness(identity)): State<Readiness>) -> Response {
    match tokio::time::timeout(Duration::from_secs(3), identity.ready()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "identity service or database unavailable").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "identity service or database unavailable").into_response(),
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

/// A split gateway's Prometheus text (it has no job queue of its own).
pub(super) async fn gateway_metrics() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render()).into_response()
}
