//! What can go wrong on a Plaid call, typed so callers branch on codes, never on text.

use super::wire::PlaidErrorBody;
use crate::error::{AppError, PlaidDetail};

/// A failed Plaid call. `Display` never includes a URL, a token or a secret, so the text is
/// safe to log; it is still never shown to an end user as is.
#[derive(Debug, thiserror::Error)]
pub enum PlaidError {
    /// Plaid answered with its error object.
    #[error("plaid {endpoint} failed: {} {} (http {status}, request_id {})",
        .body.error_type, .body.error_code, .body.request_id.as_deref().unwrap_or("-"))]
    Api { endpoint: &'static str, status: u16, body: Box<PlaidErrorBody> },
    /// No answer within the endpoint's timeout (after any retries).
    #[error("plaid {endpoint} timed out after {attempts} attempt(s)")]
    Timeout { endpoint: &'static str, attempts: u32 },
    /// The connection failed or dropped before a complete answer arrived.
    #[error("plaid {endpoint} transport failure after {attempts} attempt(s): {detail}")]
    Transport { endpoint: &'static str, attempts: u32, detail: String },
    /// Plaid answered something that is not the documented shape.
    #[error("plaid {endpoint} returned an unreadable response (http {status}): {detail}")]
    Decode { endpoint: &'static str, status: u16, detail: String },
}

/// How bankgraph should react to an error (plaid-reference §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The user must go through Link update mode.
    UserActionRequired,
    /// The item is gone at Plaid (removed, revoked, invalid token): stop using it.
    ItemGone,
    /// Too many calls; back off.
    RateLimited,
    /// Plaid or the institution is failing, or the network is; retry later.
    Unavailable,
    /// A transactions sync page raced a data change; restart from the first cursor.
    RestartSync,
    /// The request was wrong: bad input from the user (e.g. an expired public token).
    InvalidInput,
    /// Our configuration or a bug: never retried automatically.
    Configuration,
}

impl PlaidError {
    /// Plaid's `error_code`, when Plaid sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            PlaidError::Api { body, .. } => Some(&body.error_code),
            _ => None,
        }
    }

    /// Plaid's error object, when Plaid sent one.
    pub fn body(&self) -> Option<&PlaidErrorBody> {
        match self {
            PlaidError::Api { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            PlaidError::Api { status, .. } | PlaidError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Classifies by `error_code`, falling back on `error_type` for codes we do not know.
    pub fn class(&self) -> ErrorClass {
        let body = match self {
            PlaidError::Api { body, .. } => body,
            PlaidError::Timeout { .. } | PlaidError::Transport { .. } => return ErrorClass::Unavailable,
            PlaidError::Decode { status, .. } if *status >= 500 => return ErrorClass::Unavailable,
            PlaidError::Decode { .. } => return ErrorClass::Configuration,
        };
        match body.error_code.as_str() {
            "ITEM_LOGIN_REQUIRED"
            | "ACCESS_NOT_GRANTED"
            | "PENDING_EXPIRATION"
            | "INVALID_UPDATED_USERNAME"
            | "USER_SETUP_REQUIRED"
            | "ITEM_LOCKED" => ErrorClass::UserActionRequired,
            "ITEM_NOT_FOUND"
            | "INVALID_ACCESS_TOKEN"
            | "USER_PERMISSION_REVOKED"
            | "ITEM_CONCURRENTLY_DELETED"
            | "INSTITUTION_NO_LONGER_SUPPORTED" => ErrorClass::ItemGone,
            "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION" => ErrorClass::RestartSync,
            "INTERNAL_SERVER_ERROR"
            | "PLANNED_MAINTENANCE"
            | "INSTITUTION_DOWN"
            | "INSTITUTION_NOT_RESPONDING"
            | "INSTITUTION_NOT_AVAILABLE"
            | "PRODUCT_NOT_READY"
            | "LAST_UPDATED_DATETIME_OUT_OF_RANGE" => ErrorClass::Unavailable,
            "INVALID_PUBLIC_TOKEN"
            | "INVALID_LINK_TOKEN"
            | "INVALID_ACCOUNT_ID"
            | "INVALID_CREDENTIALS"
            | "INVALID_MFA"
            | "NO_ACCOUNTS"
            | "NO_AUTH_ACCOUNTS"
            | "PRODUCTS_NOT_SUPPORTED"
            | "INVALID_INSTITUTION"
            | "INSTITUTION_NOT_FOUND" => ErrorClass::InvalidInput,
            _ => match body.error_type.as_str() {
                "RATE_LIMIT_EXCEEDED" => ErrorClass::RateLimited,
                "API_ERROR" | "INSTITUTION_ERROR" => ErrorClass::Unavailable,
                "ITEM_ERROR" => ErrorClass::UserActionRequired,
                _ => ErrorClass::Configuration,
            },
        }
    }
}

impl From<PlaidError> for AppError {
    /// Maps a Plaid failure to what the client may see: actionable Plaid errors keep their
    /// code; outages become `UPSTREAM_UNAVAILABLE`; our own misconfiguration is internal.
    fn from(e: PlaidError) -> Self {
        match e.class() {
            ErrorClass::RateLimited => AppError::RateLimited {
                message: "Plaid is rate limiting this connection; try again in a minute.".into(),
                retry_after_seconds: 60,
            },
            ErrorClass::Unavailable => {
                tracing::warn!(error = %e, "plaid unavailable");
                AppError::Upstream("The bank connection service is unavailable; try again later.".into())
            }
            ErrorClass::Configuration | ErrorClass::RestartSync => AppError::Internal(anyhow::Error::new(e)),
            ErrorClass::InvalidInput | ErrorClass::UserActionRequired | ErrorClass::ItemGone => {
                let Some(body) = e.body() else {
                    return AppError::Internal(anyhow::Error::new(e));
                };
                let message = match body.error_code.as_str() {
                    "INVALID_PUBLIC_TOKEN" => {
                        "The public token is invalid, expired or already used; open Plaid Link again.".to_string()
                    }
                    "ITEM_LOGIN_REQUIRED" => "The bank needs the user to log in again; start the relink flow.".into(),
                    code => match &body.display_message {
                        Some(d) => format!("Plaid returned {code}: {d}"),
                        None => format!("Plaid returned {code}."),
                    },
                };
                AppError::Plaid {
                    message,
                    detail: PlaidDetail {
                        error_type: body.error_type.clone(),
                        error_code: body.error_code.clone(),
                        display_message: body.display_message.clone(),
                        request_id: body.request_id.clone(),
                    },
                }
            }
        }
    }
}
