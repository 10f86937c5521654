//! Sandbox's test users: what a username and password log in as (plaid-reference §5.2).

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::emulator::errors::ApiError;

/// Who logs in, from Sandbox's test credentials (plaid-reference §5.2).
#[derive(Debug, Clone, Default)]
pub struct TestUser {
    pub seed: Option<String>,
    pub transaction_count: Option<usize>,
    /// `microdeposits_good`: an Auth item whose checking account awaits automated
    /// micro-deposit verification.
    pub micro_deposits: bool,
    /// The masks of the accounts the user chose to share in Link's account selection (all
    /// when `None`).
    pub accounts: Option<Vec<String>>,
}

/// The error codes a `user_good` password of `error_<CODE>` may force.
const FORCEABLE: &[&str] = &[
    "COUNTRY_NOT_SUPPORTED",
    "INSTITUTION_DOWN",
    "INSTITUTION_NOT_RESPONDING",
    "INSTITUTION_NO_LONGER_SUPPORTED",
    "INSUFFICIENT_CREDENTIALS",
    "INTERNAL_SERVER_ERROR",
    "INVALID_CREDENTIALS",
    "INVALID_MFA",
    "INVALID_SEND_METHOD",
    "ITEM_LOCKED",
    "ITEM_NOT_SUPPORTED",
    "MFA_NOT_SUPPORTED",
    "NO_ACCOUNTS",
    "PAYMENT_INVALID_RECIPIENT",
    "PRODUCTS_NOT_SUPPORTED",
    "USER_INPUT_TIMEOUT",
    "USER_SETUP_REQUIRED",
];

/// Checks Sandbox credentials. `user_good` with `pass_good` (or an MFA or reCAPTCHA password,
/// which succeed offline) logs in; `error_<CODE>` forces that error; `user_custom` takes a JSON
/// configuration with `seed` and the emulator's `transaction_count`.
pub fn login(username: &str, password: &str, oauth: bool) -> Result<TestUser, ApiError> {
    if oauth {
        return Ok(TestUser::default());
    }
    match username {
        "user_good" => {
            if let Some(code) = password.strip_prefix("error_") {
                return Err(if FORCEABLE.contains(&code) {
                    ApiError::code(code)
                } else {
                    ApiError::code("INVALID_CREDENTIALS")
                });
            }
            if password == "microdeposits_good" {
                return Ok(TestUser { micro_deposits: true, ..TestUser::default() });
            }
            let ok = password == "pass_good"
                || password == "credential_good"
                || password == "mfa_device"
                || password.starts_with("mfa_questions_")
                || password.starts_with("mfa_selections")
                || password.starts_with("{\"recaptcha\"");
            if ok { Ok(TestUser::default()) } else { Err(ApiError::code("INVALID_CREDENTIALS")) }
        }
        "user_custom" => {
            let cfg: Value = serde_json::from_str(password).map_err(|_| {
                ApiError::invalid_field("override_password for user_custom must be a JSON configuration")
            })?;
            if let Some(code) = cfg.get("force_error").and_then(Value::as_str) {
                return Err(ApiError::code(code));
            }
            let transaction_count =
                match cfg.get("transaction_count") {
                    None => None,
                    Some(v) => Some(v.as_u64().filter(|n| *n <= 1_000_000).ok_or_else(|| {
                        ApiError::invalid_field("transaction_count must be an integer from 0 to 1000000")
                    })? as usize),
                };
            Ok(TestUser {
                seed: cfg.get("seed").and_then(Value::as_str).map(str::to_string),
                transaction_count,
                micro_deposits: false,
                accounts: None,
            })
        }
        _ => Err(ApiError::code("INVALID_CREDENTIALS")),
    }
}

pub(super) fn seed_from(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]))
}
