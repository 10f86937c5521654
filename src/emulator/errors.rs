//! Plaid's errors as the emulator sends them: the documented type, HTTP status and message for
//! each code (plaid-reference §3).

use axum::http::StatusCode;

use crate::plaid::wire::PlaidErrorBody;

/// An error answer: Plaid's error object and its HTTP status.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Boxed: errors travel through every `Result` in the emulator.
    pub body: Box<PlaidErrorBody>,
}

/// (error_type, HTTP status, error_message, display_message) of a known code.
fn catalogue(code: &str) -> (&'static str, u16, &'static str, Option<&'static str>) {
    const LOGIN: &str = "the login details of this item have changed (credentials, MFA, or required user action) and a user login is required to update this information. use Link's update mode to restore the item to a good state";
    match code {
        "INVALID_API_KEYS" => ("INVALID_INPUT", 400, "invalid client_id or secret provided", None),
        "INVALID_PUBLIC_TOKEN" => ("INVALID_INPUT", 400, "could not find matching public token", None),
        "INVALID_ACCESS_TOKEN" => ("INVALID_INPUT", 400, "could not find matching access token", None),
        "INVALID_LINK_TOKEN" => ("INVALID_INPUT", 400, "invalid link_token provided", None),
        "INVALID_ACCOUNT_ID" => ("INVALID_INPUT", 400, "failed to find requested account ID for requested item", None),
        "INVALID_INSTITUTION" => ("INVALID_INPUT", 400, "invalid institution_id provided", None),
        "INVALID_PRODUCT" => (
            "INVALID_INPUT",
            400,
            "products must either be null or a list of strings containing at least one valid product",
            None,
        ),
        "INVALID_WEBHOOK_VERIFICATION_KEY_ID" => ("INVALID_INPUT", 400, "invalid key_id provided", None),
        "USER_PERMISSION_REVOKED" => (
            "ITEM_ERROR",
            400,
            "the holder of this account has revoked their permission for your application to access it",
            Some("The holder of this account has revoked their permission for your application to access it."),
        ),
        "INVALID_BODY" => ("INVALID_REQUEST", 400, "body could not be parsed as JSON", None),
        "INVALID_HEADERS" => ("INVALID_REQUEST", 400, "the request is missing a required header", None),
        "INVALID_FIELD" => ("INVALID_REQUEST", 400, "one or more of the request fields are invalid", None),
        "MISSING_FIELDS" => ("INVALID_REQUEST", 400, "the following required fields are missing", None),
        "UNKNOWN_FIELDS" => ("INVALID_REQUEST", 400, "the following fields are not recognized by this endpoint", None),
        "NOT_FOUND" => ("INVALID_REQUEST", 400, "not found", None),
        "INVALID_CONFIGURATION" => {
            ("INVALID_REQUEST", 400, "please ensure that the request body is formatted correctly", None)
        }
        "ITEM_LOGIN_REQUIRED" => ("ITEM_ERROR", 400, LOGIN, None),
        "ITEM_NOT_FOUND" => (
            "ITEM_ERROR",
            400,
            "The Item you requested cannot be found. This Item does not exist, has been previously removed via /item/remove, or has had access removed by the user.",
            None,
        ),
        "PRODUCT_NOT_READY" => (
            "ITEM_ERROR",
            400,
            "the requested product is not yet ready. please provide a webhook or try the request again later",
            None,
        ),
        "PRODUCTS_NOT_SUPPORTED" => ("ITEM_ERROR", 400, "", None),
        "NO_ACCOUNTS" => (
            "ITEM_ERROR",
            400,
            "no valid accounts were found for this item",
            Some(
                "No valid accounts were found at the financial institution. Please visit your financial institution's website to confirm accounts are available.",
            ),
        ),
        "NO_AUTH_ACCOUNTS" => (
            "ITEM_ERROR",
            400,
            "There are no valid checking or savings account(s) associated with this Item.",
            Some("No valid checking or savings accounts were found."),
        ),
        "ITEM_LOCKED" => (
            "ITEM_ERROR",
            400,
            "the account is locked. prompt the user to visit the institution's site and unlock their account",
            Some(
                "The financial institution indicated that your account is locked. Please visit your financial institution's website to unlock your account.",
            ),
        ),
        "INVALID_CREDENTIALS" => (
            "ITEM_ERROR",
            400,
            "the provided credentials were not correct",
            Some("The provided credentials were not correct. Please try again."),
        ),
        "INVALID_MFA" => (
            "ITEM_ERROR",
            400,
            "the provided MFA response(s) were not correct",
            Some("The provided code was not correct."),
        ),
        "OAUTH_STATE_ID_ALREADY_PROCESSED" => {
            ("OAUTH_ERROR", 208, "the provided oauth_state_id has already been processed", None)
        }
        "OAUTH_STATE_ID_NOT_FOUND" => ("OAUTH_ERROR", 404, "the provided oauth_state_id wasn't found", None),
        "INCORRECT_LINK_TOKEN" => (
            "OAUTH_ERROR",
            400,
            "the link_token provided does not match the link_token used to start this OAuth session",
            None,
        ),
        "INVALID_SEND_METHOD" => ("ITEM_ERROR", 400, "the provided MFA send_method was invalid", None),
        "INSUFFICIENT_CREDENTIALS" => {
            ("ITEM_ERROR", 400, "insufficient authorization was provided to complete the request", None)
        }
        "ITEM_NOT_SUPPORTED" => {
            ("ITEM_ERROR", 400, "this account is currently not supported", Some("Account not currently supported."))
        }
        "MFA_NOT_SUPPORTED" => {
            ("ITEM_ERROR", 400, "this account requires a software-based MFA which is not supported", None)
        }
        "USER_SETUP_REQUIRED" => (
            "ITEM_ERROR",
            400,
            "the account has not been fully set up. prompt the user to visit the issuing institution's site and finish the setup process",
            Some(
                "The given account is not fully setup. Please visit your financial institution's website to setup your account.",
            ),
        ),
        "USER_INPUT_TIMEOUT" => ("ITEM_ERROR", 400, "user must retry this operation", None),
        "ITEM_CONCURRENTLY_DELETED" => {
            ("ITEM_ERROR", 400, "this item was deleted while the operation was in progress", None)
        }
        "ACCESS_NOT_GRANTED" => {
            ("ITEM_ERROR", 400, "the user did not grant the necessary permissions for their account", None)
        }
        "COUNTRY_NOT_SUPPORTED" => {
            ("INSTITUTION_ERROR", 400, "this country is not supported for this institution", None)
        }
        "PAYMENT_INVALID_RECIPIENT" => ("PAYMENT_ERROR", 400, "payment recipient invalid", None),
        "INSTITUTION_DOWN" => (
            "INSTITUTION_ERROR",
            400,
            "this institution is not currently responding to this request. please try again soon",
            Some(
                "This financial institution is not currently responding to requests. We apologize for the inconvenience.",
            ),
        ),
        "INSTITUTION_NOT_RESPONDING" => (
            "INSTITUTION_ERROR",
            400,
            "this institution is not currently responding to this request. please try again soon",
            Some(
                "This financial institution is not currently responding to requests. We apologize for the inconvenience.",
            ),
        ),
        "INSTITUTION_NOT_AVAILABLE" => {
            ("INSTITUTION_ERROR", 400, "this institution is not available at this time", None)
        }
        "INSTITUTION_NO_LONGER_SUPPORTED" => (
            "INSTITUTION_ERROR",
            400,
            "this institution is no longer supported",
            Some("This financial institution is no longer supported."),
        ),
        "INSTITUTION_NOT_FOUND" => ("INSTITUTION_ERROR", 400, "this institution was not found", None),
        "INTERNAL_SERVER_ERROR" => {
            ("API_ERROR", 500, "an unexpected error occurred", Some("Something went wrong. Please try again later."))
        }
        "PLANNED_MAINTENANCE" => (
            "API_ERROR",
            503,
            "the Plaid API is temporarily unavailable due to planned maintenance. visit https://status.plaid.com/ for more information",
            Some("Something went wrong. Please try again later."),
        ),
        "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION" => (
            "TRANSACTIONS_ERROR",
            400,
            "Underlying transaction data changed since last page was fetched. Please restart pagination from last update.",
            None,
        ),
        "SANDBOX_PRODUCT_NOT_ENABLED" => {
            ("SANDBOX_ERROR", 400, "The requested product is not enabled for this Item", None)
        }
        "SANDBOX_WEBHOOK_INVALID" => (
            "SANDBOX_ERROR",
            400,
            "Webhook for this item is either not set up, or invalid. Please update the item's webhook and try again.",
            None,
        ),
        "SANDBOX_ACCOUNT_SELECT_V2_NOT_ENABLED" => {
            ("SANDBOX_ERROR", 400, "Account Select v2 is not enabled for this item", None)
        }
        code if code == "RATE_LIMIT" || code.ends_with("_LIMIT") => (
            "RATE_LIMIT_EXCEEDED",
            429,
            "rate limit exceeded for attempts to access this item. please try again later",
            Some("Too many attempts. Please try again in a few minutes."),
        ),
        _ => ("API_ERROR", 500, "an unexpected error occurred", None),
    }
}

impl ApiError {
    /// The documented error for `code`, with its documented message.
    pub fn code(code: &str) -> Self {
        let (error_type, status, message, display) = catalogue(code);
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            body: Box::new(PlaidErrorBody {
                error_type: error_type.to_string(),
                error_code: code.to_string(),
                error_message: message.to_string(),
                display_message: display.map(str::to_string),
                request_id: None,
                status: None,
                documentation_url: Some(format!("https://plaid.com/docs/errors/{}/", error_type.to_lowercase())),
                suggested_action: None,
            }),
        }
    }

    /// The documented error for `code` with a message that names what is wrong.
    pub fn with_message(code: &str, message: impl Into<String>) -> Self {
        let mut e = ApiError::code(code);
        e.body.error_message = message.into();
        e
    }

    pub fn missing(fields: &[&str]) -> Self {
        ApiError::with_message(
            "MISSING_FIELDS",
            format!("the following required fields are missing: {}", fields.join(", ")),
        )
    }

    pub fn invalid_field(message: impl Into<String>) -> Self {
        ApiError::with_message("INVALID_FIELD", message)
    }

    /// This error as it appears inside a webhook or `item.error`: with `status`, without
    /// `request_id`.
    pub fn for_webhook(&self) -> PlaidErrorBody {
        let mut b = (*self.body).clone();
        b.request_id = None;
        b.status = Some(self.status.as_u16());
        b
    }
}

/// Whether `code` is one the emulator can produce with its documented type and status.
pub fn is_known(code: &str) -> bool {
    catalogue(code).0 != "API_ERROR" || code == "INTERNAL_SERVER_ERROR" || code == "PLANNED_MAINTENANCE"
}
