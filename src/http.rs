//! HTTP: the public router (GraphQL, GraphiQL, health) and the internal one. The public
//! listener never serves Plaid webhooks.

use std::sync::Arc;

use async_graphql::{ErrorExtensionValues, Value};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Authenticator;
use crate::error::{INTERNAL_MESSAGE, code};
use crate::graphql::BankgraphSchema;
use crate::identity::{IdentityService, PlaidIdentity, WebhookError};
use crate::plaid::WebhookRejection;

pub const GRAPHQL_PATH: &str = "/api/v1/graphql";
const REQUEST_ID: &str = "x-request-id";

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub schema: BankgraphSchema,
    pub auth: Arc<Authenticator>,
    pub identity: Arc<dyn IdentityService>,
}

/// The request id of the current request, for error messages.
#[derive(Debug, Clone)]
pub struct RequestIdValue(pub String);

/// Adds a request id to every request and response, and a span per request that carries it.
fn observed(router: Router) -> Router {
    let header = header::HeaderName::from_static(REQUEST_ID);
    router
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(SetRequestIdLayer::new(header, MakeRequestUuid))
}

/// `POST /api/v1/graphql`, `GET /api/v1/graphql` (GraphiQL), `/healthz`, `/readyz`.
pub fn public_router(state: AppState) -> Router {
    observed(
        Router::new()
            .route(GRAPHQL_PATH, get(graphiql).post(graphql))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(state),
    )
}

/// The internal listener: Plaid webhooks and health. It is the identity service's.
pub fn internal_router(state: AppState, identity: PlaidIdentity) -> Router {
    let webhooks = Router::new()
        .route("/webhooks/plaid", post(plaid_webhook))
        .with_state(identity);
    observed(
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(state)
            .merge(webhooks),
    )
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

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.identity.ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

async fn graphiql() -> Html<String> {
    Html(
        async_graphql::http::GraphiQLSource::build()
            .endpoint(GRAPHQL_PATH)
            .title("bankgraph")
            .finish(),
    )
}

fn request_id(headers: &HeaderMap, ext: Option<&RequestId>) -> String {
    ext.and_then(|r| r.header_value().to_str().ok())
        .or_else(|| headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()))
        .unwrap_or("-")
        .to_string()
}

fn error_body(message: &str, code: &str) -> serde_json::Value {
    serde_json::json!({"errors": [{"message": message, "extensions": {"code": code}}]})
}

async fn graphql(
    State(state): State<AppState>,
    headers: HeaderMap,
    rid: Option<axum::Extension<RequestId>>,
    body: Bytes,
) -> Response {
    let request_id = request_id(&headers, rid.as_ref().map(|e| &e.0));
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("The body is not a GraphQL request ({e}).");
            return (StatusCode::BAD_REQUEST, Json(error_body(&msg, code::BAD_USER_INPUT))).into_response();
        }
    };
    let auth = state.auth.authenticate(&headers).await;
    let request = request.data(auth).data(RequestIdValue(request_id.clone()));
    let mut response = state.schema.execute(request).await;

    let mut unauthenticated = false;
    for err in &mut response.errors {
        let ext = err.extensions.get_or_insert_with(ErrorExtensionValues::default);
        let code = match ext.get("code") {
            Some(Value::String(c)) => c.clone(),
            _ => {
                // Errors async-graphql raises itself (parsing, validation, input coercion).
                let c = if err.message.contains("Invalid value")
                    || err.message.contains("Failed to parse")
                    || err.message.contains("invalid value")
                {
                    code::BAD_USER_INPUT
                } else if err.message.contains("syntax") || err.message.starts_with(" --> ") {
                    "GRAPHQL_PARSE_FAILED"
                } else {
                    "GRAPHQL_VALIDATION_FAILED"
                };
                ext.set("code", c);
                c.to_string()
            }
        };
        if code == code::INTERNAL_SERVER_ERROR {
            err.message = format!("{INTERNAL_MESSAGE} Request id: {request_id}.");
            ext.set("requestId", request_id.clone());
        }
        unauthenticated |= code == code::UNAUTHENTICATED;
    }
    let status = if unauthenticated {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let mut resp = (status, Json(&response)).into_response();
    if unauthenticated {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}
