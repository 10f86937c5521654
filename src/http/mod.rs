//! HTTP: the public router (GraphQL, GraphiQL, health) and the internal one (Plaid webhooks,
//! metrics, health), and the server loop that runs them. The public listener never serves
//! Plaid webhooks.

pub mod client_ip;
pub mod demo;
mod graphiql;
mod graphql;
mod health;
pub mod refusal;
pub mod server;
mod webhooks;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Authenticator;
use crate::config::{GraphqlLimits, HttpLimits};
use crate::graphql::Gateway;
use crate::identity::{IdentityService, PlaidIdentity};
use client_ip::TrustedProxies;

use crate::ratelimit::Limiters;
use crate::trace::RequestTrace;
pub use server::{ConnectionLimits, serve};

pub const GRAPHQL_PATH: &str = "/api/v1/graphql";
const REQUEST_ID: &str = "x-request-id";

/// What every public handler shares.
#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub auth: Arc<Authenticator>,
    pub identity: Arc<dyn IdentityService>,
    pub limits: Arc<HttpLimits>,
    /// `MAX_QUERY_LENGTH` is checked here, before parsing.
    pub graphql_limits: Arc<GraphqlLimits>,
    pub limiters: Arc<Limiters>,
    pub proxies: TrustedProxies,
    /// The GraphQL WebSockets (subscriptions) of this gateway.
    pub sockets: Arc<ws::Sockets>,
    /// The demo app at `/demo`, when it is on.
    pub demo: Option<Arc<demo::Demo>>,
    /// GraphiQL and its assets (`GRAPHIQL_ENABLED`).
    pub graphiql: bool,
}

/// Whether a request id may be written to the log: 1 to 128 characters of `[A-Za-z0-9._:-]`.
/// Anything else (100 KB of text, control characters, JSON) is not.
pub fn acceptable_request_id(v: &[u8]) -> bool {
    (1..=128).contains(&v.len()) && v.iter().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
}

/// The `x-request-id` a client sent, when it is one well-formed id: logged beside ours as
/// `client_request_id`, never taken as ours.
#[derive(Debug, Clone)]
pub struct ClientRequestId(pub String);

/// Takes the client's `x-request-id` off the request (so the server always makes its own) and
/// keeps a well-formed one as [`ClientRequestId`]; notes the client's trace context.
async fn take_client_request_id(mut req: axum::extract::Request) -> axum::extract::Request {
    let h = req.headers_mut();
    // A request joins its caller's trace when it names one correctly; otherwise it starts one.
    let trace = RequestTrace::from_header(h.get(crate::trace::TRACEPARENT).and_then(|v| v.to_str().ok()));
    let client = {
        let mut all = h.get_all(REQUEST_ID).iter();
        match (all.next(), all.next()) {
            (Some(v), None) if acceptable_request_id(v.as_bytes()) => v.to_str().ok().map(str::to_string),
            _ => None,
        }
    };
    h.remove(REQUEST_ID);
    req.extensions_mut().insert(trace);
    if let Some(id) = client {
        req.extensions_mut().insert(ClientRequestId(id));
    }
    req
}

/// Adds a request id of ours to every request and response, a trace context to every request,
/// and a span per request that carries both (and the client's own request id, when it sent a
/// well-formed one), so every log line of a request names them.
fn observed(router: Router) -> Router {
    let header = header::HeaderName::from_static(REQUEST_ID);
    router
        .layer(CatchPanicLayer::custom(panicked))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            let trace = req.extensions().get::<RequestTrace>().copied();
            let span = tracing::info_span!(
                "http",
                method = %req.method(),
                path = %req.uri().path(),
                request_id = %id,
                client_request_id = tracing::field::Empty,
                trace_id = tracing::field::Empty
            );
            if let Some(ClientRequestId(client)) = req.extensions().get::<ClientRequestId>() {
                span.record("client_request_id", tracing::field::display(client));
            }
            if let Some(t) = trace {
                // Exported spans continue the client's trace; without one, the exporter starts it.
                if let Some(client) = t.client {
                    client.adopt(&span);
                }
                span.record("trace_id", tracing::field::display(t.effective(&span).trace_id_hex()));
            }
            span
        }))
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(SetRequestIdLayer::new(header, MakeRequestUuid))
        .layer(axum::middleware::map_request(take_client_request_id))
}

/// The answer to a request whose handler panicked: the generic internal error, as any other
/// (the request id header is still added), logged and counted. A panic is a bug; this keeps
/// it to the one request, never the connection or the process.
fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    // At most 256 characters of it: a panic message may quote what the request carried.
    let what: String = what.chars().take(256).collect();
    tracing::error!(panic = %what, "a request handler panicked");
    metrics::counter!(crate::metrics::HANDLER_PANICS).increment(1);
    let body = serde_json::json!({"errors": [{
        "message": crate::error::INTERNAL_MESSAGE,
        "extensions": {"code": crate::error::code::INTERNAL_SERVER_ERROR},
    }]});
    let mut resp = (axum::http::StatusCode::INTERNAL_SERVER_ERROR, body.to_string()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
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
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::HeaderName::from_static(REQUEST_ID),
                // Apollo Client's client awareness.
                header::HeaderName::from_static("apollographql-client-name"),
                header::HeaderName::from_static("apollographql-client-version"),
            ])
            .expose_headers([header::HeaderName::from_static(REQUEST_ID), header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

/// `POST /api/v1/graphql`, `GET /api/v1/graphql` (GraphiQL unless `GRAPHIQL_ENABLED` is off),
/// `/healthz`, `/readyz`.
pub fn public_router(state: AppState) -> Router {
    let cors = cors(&state.limits.cors_origins);
    let mut router = Router::new()
        .route(GRAPHQL_PATH, get(graphql::get_graphql).post(graphql::post_graphql))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    if state.graphiql {
        router = router.route(&format!("{}/{{file}}", graphiql::ASSETS), get(graphiql::serve_asset));
    }
    let mut router = router
        .route(crate::config::DEMO_PATH, get(demo::page))
        .route("/demo/assets/{file}", get(demo::asset))
        .route("/demo/token", post(demo::token))
        .route("/demo/login-required", post(demo::login_required))
        .with_state(state);
    if let Some(c) = cors {
        router = router.layer(c);
    }
    observed(router)
}

/// The identity service's internal listener: Plaid webhooks, metrics and health.
pub fn internal_router(identity: PlaidIdentity) -> Router {
    let ready = health::Readiness(Arc::new(identity.clone()));
    let own = Router::new()
        .route("/webhooks/plaid", post(webhooks::plaid_webhook))
        .route("/metrics", get(health::metrics))
        .with_state(identity);
    observed(health_router(ready).merge(own))
}

/// A split gateway's internal listener: metrics and health (it serves no webhooks).
pub fn gateway_internal_router(identity: Arc<dyn IdentityService>) -> Router {
    let own = Router::new().route("/metrics", get(health::gateway_metrics));
    observed(health_router(health::Readiness(identity)).merge(own))
}

fn health_router(ready: health::Readiness) -> Router {
    Router::new().route("/healthz", get(health::healthz)).route("/readyz", get(health::readyz)).with_state(ready)
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_handler_that_panics_answers_the_generic_internal_error_with_our_request_id() {
        async fn boom() -> &'static str {
            panic!("a bug")
        }
        let app = observed(Router::new().route("/boom", get(boom)));
        let request = axum::http::Request::builder().uri("/boom").body(axum::body::Body::empty()).unwrap();
        let resp = app.oneshot(request).await.expect("an answer, not a dropped connection");
        assert_eq!(resp.status(), 500);
        assert!(resp.headers().contains_key(REQUEST_ID));
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["extensions"]["code"], "INTERNAL_SERVER_ERROR");
        assert_eq!(v["errors"][0]["message"], crate::error::INTERNAL_MESSAGE);
    }
}
