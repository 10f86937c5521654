//! One error type at the boundary: its stable `extensions.code`, and what a client may see.
//! Internal detail is logged, never returned.

use async_graphql::ErrorExtensions;

use crate::plaid::{ErrorClass, PlaidError};

/// The codes clients branch on (`extensions.code`).
pub mod code {
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    pub const FORBIDDEN: &str = "FORBIDDEN";
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const CONFLICT: &str = "CONFLICT";
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    pub const PLAID_ERROR: &str = "PLAID_ERROR";
    pub const UPSTREAM_UNAVAILABLE: &str = "UPSTREAM_UNAVAILABLE";
    pub const NOT_CONFIGURED: &str = "NOT_CONFIGURED";
    /// `completePlaidLink` failed after Plaid exchanged the public token, and the new item was
    /// (or is being) removed at Plaid: the token is spent, so the user must run Link again.
    pub const LINK_RESTART_REQUIRED: &str = "LINK_RESTART_REQUIRED";
    pub const INTERNAL_SERVER_ERROR: &str = "INTERNAL_SERVER_ERROR";
    /// The document does not parse.
    pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    /// The document breaks a rule or a limit (depth, complexity, aliases, directives, …).
    pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
    // Refusals before GraphQL runs, each with its HTTP status.
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    pub const NOT_ACCEPTABLE: &str = "NOT_ACCEPTABLE";
    /// The request body did not arrive in time (HTTP 408).
    pub const REQUEST_TIMEOUT: &str = "REQUEST_TIMEOUT";
}

/// The message of every internal error; the request id is added by the HTTP layer.
pub const INTERNAL_MESSAGE: &str = "Internal server error.";

/// Plaid's error, as much of it as a client may see.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlaidDetail {
    pub error_type: String,
    pub error_code: String,
    pub display_message: Option<String>,
    pub request_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    RateLimited { message: String, retry_after_seconds: u64 },
    #[error("{message}")]
    Plaid { message: String, detail: PlaidDetail },
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    NotConfigured(String),
    #[error("{0}")]
    LinkRestart(String),
    /// Anything else. The detail is logged when the error reaches the client, never shown.
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Unauthenticated(_) => code::UNAUTHENTICATED,
            AppError::Forbidden(_) => code::FORBIDDEN,
            AppError::BadInput(_) => code::BAD_USER_INPUT,
            AppError::NotFound(_) => code::NOT_FOUND,
            AppError::Conflict(_) => code::CONFLICT,
            AppError::RateLimited { .. } => code::RATE_LIMITED,
            AppError::Plaid { .. } => code::PLAID_ERROR,
            AppError::Upstream(_) => code::UPSTREAM_UNAVAILABLE,
            AppError::NotConfigured(_) => code::NOT_CONFIGURED,
            AppError::LinkRestart(_) => code::LINK_RESTART_REQUIRED,
            AppError::Internal(_) => code::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        AppError::Internal(e.into())
    }

    /// Maps a Plaid failure to what the client may see: actionable Plaid errors keep their
    /// code; outages become `UPSTREAM_UNAVAILABLE`; our own misconfiguration is internal.
    pub fn from_plaid(e: PlaidError) -> Self {
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

    /// The GraphQL error a client receives. Internal errors are logged here, once.
    pub fn to_graphql(&self) -> async_graphql::Error {
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

impl From<PlaidError> for AppError {
    fn from(e: PlaidError) -> Self {
        AppError::from_plaid(e)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Internal(anyhow::Error::new(e))
    }
}

pub type AppResult<T> = Result<T, AppError>;
