//! The one GraphQL rendering of an `AppError`: its message, its stable `extensions.code`, and
//! what else a client may branch on (`retryAfterSeconds`, Plaid's error). Internal errors are
//! logged here, once, and reach the client as a generic message.

use async_graphql::ErrorExtensions;

use crate::error::{AppError, INTERNAL_MESSAGE};

impl ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        let message = match self {
            AppError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
                INTERNAL_MESSAGE.to_string()
            }
            other => other.to_string(),
        };
        async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", self.code());
            match self {
                AppError::RateLimited { retry_after_seconds, .. } => ext.set("retryAfterSeconds", *retry_after_seconds),
                AppError::Plaid { detail, .. } => {
                    let mut plaid = async_graphql::indexmap::IndexMap::new();
                    let s = |v: &str| async_graphql::Value::String(v.to_string());
                    let o = |v: &Option<String>| v.as_deref().map(s).unwrap_or(async_graphql::Value::Null);
                    plaid.insert(async_graphql::Name::new("errorType"), s(&detail.error_type));
                    plaid.insert(async_graphql::Name::new("errorCode"), s(&detail.error_code));
                    plaid.insert(async_graphql::Name::new("displayMessage"), o(&detail.display_message));
                    plaid.insert(async_graphql::Name::new("requestId"), o(&detail.request_id));
                    ext.set("plaid", async_graphql::Value::Object(plaid));
                }
                _ => {}
            }
        })
    }
}
