//! HTTP: the public router (GraphQL, GraphiQL, health) and the internal one (Plaid webhooks,
//! metrics, health), and the server loop that runs them. The public listener never serves
//! Plaid webhooks.

mod graphql;
pub mod ratelimit;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::Service;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Authenticator;
use crate::config::HttpLimits;
use crate::graphql::Gateway;
use crate::identity::{IdentityService, PlaidIdentity, WebhookError};
use crate::plaid::WebhookRejection;

pub use graphql::RequestIdValue;
use ratelimit::Limiters;

pub const GRAPHQL_PATH: &str = "/api/v1/graphql";
const REQUEST_ID: &str = "x-request-id";

/// What every public handler shares.
#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub auth: Arc<Authenticator>,
    pub identity: Arc<dyn IdentityService>,
    pub limits: Arc<HttpLimits>,
    pub limiters: Arc<Limiters>,
}

/// Adds a request id to every request and response, and a span per request that carries it,
/// so every log line of a request names it.
fn observed(router: Router) -> Router {
    let header = header::HeaderName::from_static(REQUEST_ID);
    router
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(SetRequestIdLayer::new(header, MakeRequestUuid))
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_methods([Method::POST, Method::GET])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
            .expose_headers([header::HeaderName::from_static(REQUEST_ID), header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

/// `POST /api/v1/graphql`, `GET /api/v1/graphql` (GraphiQL), `/healthz`, `/readyz`.
pub fn public_router(state: AppState) -> Router {
    let cors = cors(&state.limits.cors_origins);
    let mut router = Router::new()
        .route(GRAPHQL_PATH, get(graphql::get_graphql).post(graphql::post_graphql))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    if let Some(c) = cors {
        router = router.layer(c);
    }
    observed(router)
}

/// The internal listener: Plaid webhooks, metrics and health. It is the identity service's.
pub fn internal_router(state: AppState, identity: PlaidIdentity) -> Router {
    let own = Router::new()
        .route("/webhooks/plaid", post(plaid_webhook))
        .route("/metrics", get(metrics))
        .with_state(identity);
    observed(Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(state).merge(own))
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers.
async fn readyz(State(state): State<AppState>) -> Response {
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
async fn metrics(State(identity): State<PlaidIdentity>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), identity.jobs().backlog(chrono::Utc::now())).await {
        Ok(Ok(backlog)) => backlog.record(),
        Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "job backlog could not be read"),
        Err(_) => tracing::warn!("job backlog query timed out"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render()).into_response()
}

/// `POST /webhooks/plaid`: verified, stored, acknowledged. An unverifiable request gets 401
/// and is stored nowhere; when Plaid's key cannot be fetched, 503 so Plaid retries.
async fn plaid_webhook(State(identity): State<PlaidIdentity>, headers: HeaderMap, body: Bytes) -> Response {
    match identity.receive_webhook(&headers, &body).await {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({"received": true}))).into_response(),
        Err(WebhookError::Rejected(WebhookRejection::KeyUnavailable(_))) => {
            (StatusCode::SERVICE_UNAVAILABLE, "verification key unavailable").into_response()
        }
        Err(WebhookError::Rejected(r)) => {
            (StatusCode::UNAUTHORIZED, format!("webhook rejected: {}", r.label())).into_response()
        }
        Err(WebhookError::Malformed) => (StatusCode::BAD_REQUEST, "not a Plaid webhook").into_response(),
        Err(WebhookError::Storage(e)) => {
            tracing::error!(error = %format!("{e:#}"), "webhook could not be stored");
            (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting and gives
/// in-flight requests up to `grace` to finish. Clients get `header_read_timeout` to send
/// their headers (slow-loris), and handlers see the peer address as `ConnectInfo`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let mut router = router.clone();
                let svc = tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                    router.call(req.map(axum::body::Body::new))
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(svc));
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight at the end of the grace period");
    }
    Ok(())
}
