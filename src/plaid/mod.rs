//! Plaid: the typed HTTP client, Plaid's wire shapes, its errors, and webhook verification.

pub mod amount;
pub mod client;
pub mod error;
pub mod key_gate;
pub mod webhook;
pub mod wire;

pub use client::{Exchanged, PlaidClient, PlaidClientConfig, TransactionsPaging};
pub use error::{ErrorClass, PlaidError};
pub use key_gate::KeyLookupPolicy;
pub use webhook::{Verified, WebhookRejection, WebhookVerifier};
