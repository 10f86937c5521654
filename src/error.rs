//! One error type at the boundary: its stable `extensions.code`, and what a client may see.
//! Internal detail is logged, never returned.

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
    /// A document named only by its hash that the server does not know (APQ: send the text).
    pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
    /// A persisted-query version other than 1.
    pub const PERSISTED_QUERY_NOT_SUPPORTED: &str = "PERSISTED_QUERY_NOT_SUPPORTED";
    /// A document outside the trusted list (`TRUSTED_DOCUMENTS_MODE=enforce`).
    pub const PERSISTED_QUERY_NOT_IN_LIST: &str = "PERSISTED_QUERY_NOT_IN_LIST";
    /// The request body did not arrive in time (HTTP 408).
    pub const REQUEST_TIMEOUT: &str = "REQUEST_TIMEOUT";
    /// A subscription asked to resume after an event older than the retention window: events
    /// it has not seen are gone. Read the current state, then subscribe without `after`.
    pub const EVENTS_EXPIRED: &str = "EVENTS_EXPIRED";
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
    #[error("{0}")]
    EventsExpired(String),
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
            AppError::EventsExpired(_) => code::EVENTS_EXPIRED,
            AppError::Internal(_) => code::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        AppError::Internal(e.into())
    }

    /// The error a client saw, rebuilt from what it was told (its code, message, Plaid detail
    /// and retry delay): for an answer stored with a completion, or one that crossed the wire
    /// from the identity service. An unknown code (or an internal error, whose detail was never
    /// told) becomes an internal error.
    pub fn from_code(
        code: &str,
        message: String,
        plaid: Option<PlaidDetail>,
        retry_after_seconds: Option<u64>,
    ) -> Self {
        if let Some(detail) = plaid {
            return AppError::Plaid { message, detail };
        }
        match code {
            code::UNAUTHENTICATED => AppError::Unauthenticated(message),
            code::FORBIDDEN => AppError::Forbidden(message),
            code::BAD_USER_INPUT => AppError::BadInput(message),
            code::NOT_FOUND => AppError::NotFound(message),
            code::CONFLICT => AppError::Conflict(message),
            code::RATE_LIMITED => {
                AppError::RateLimited { message, retry_after_seconds: retry_after_seconds.unwrap_or(1) }
            }
            code::UPSTREAM_UNAVAILABLE => AppError::Upstream(message),
            code::NOT_CONFIGURED => AppError::NotConfigured(message),
            code::LINK_RESTART_REQUIRED => AppError::LinkRestart(message),
            code::EVENTS_EXPIRED => AppError::EventsExpired(message),
            other => AppError::Internal(anyhow::anyhow!("error {other}: {message}")),
        }
    }

    /// What a client may be told of this error: the message (generic for an internal error),
    /// Plaid's detail and the retry delay.
    pub fn public_parts(&self) -> (String, Option<&PlaidDetail>, Option<u64>) {
        match self {
            AppError::Internal(_) => (INTERNAL_MESSAGE.to_string(), None, None),
            AppError::Plaid { message, detail } => (message.clone(), Some(detail), None),
            AppError::RateLimited { message, retry_after_seconds } => {
                (message.clone(), None, Some(*retry_after_seconds))
            }
            other => (other.to_string(), None, None),
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Internal(anyhow::Error::new(e))
    }
}

pub type AppResult<T> = Result<T, AppError>;
