//! `POST /webhooks/plaid` (internal listener): verified, stored, acknowledged. An
//! unverifiable request gets 401 and is stored nowhere; when Plaid's key cannot be fetched, or
//! the webhook cannot be stored, 503 so that Plaid delivers it again.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::refusal::Refusal;
use crate::error::code;
use crate::identity::{PlaidIdentity, WebhookError};
use crate::plaid::WebhookRejection;

pub(super) async fn plaid_webhook(State(identity): State<PlaidIdentity>, headers: HeaderMap, body: Bytes) -> Response {
    let unavailable =
        |message: &str| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, code::UPSTREAM_UNAVAILABLE, "webhook", message);
    match identity.receive_webhook(&headers, &body).await {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({"received": true}))).into_response(),
        Err(WebhookError::Rejected(WebhookRejection::KeyUnavailable(_) | WebhookRejection::LookupThrottled)) => {
            unavailable("The verification key is unavailable; deliver again later.").into_response()
        }
        Err(WebhookError::Rejected(r)) => Refusal::new(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHENTICATED,
            "webhook",
            format!("webhook rejected: {}", r.label()),
        )
        .into_response(),
        Err(WebhookError::Malformed) => Refusal::bad_request("webhook", "not a Plaid webhook").into_response(),
        Err(WebhookError::Storage(e)) => {
            tracing::error!(error = %format!("{e:#}"), "webhook could not be stored");
            unavailable("The webhook could not be stored; deliver again.").into_response()
        }
    }
}
