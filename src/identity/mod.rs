//! The identity service: the system of record. It owns Plaid calls, encrypted access-token
//! custody, institutions, accounts, balances, transactions, addresses and removal. The gateway
//! reaches it only through [`IdentityService`].

mod api;
mod cache;
mod completion;
pub mod crypto;
mod events;
mod health;
mod incoming;
mod items;
mod keys;
mod link;
mod refresh;
mod service;
pub mod store;
mod sync;
mod webhooks;
mod worker;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::domain::{Address, Balance, BankAccount, RemovalReason};
use crate::error::AppResult;
pub use events::{EventStream, EventWatch, Watching};
pub use service::{PlaidIdentity, item_error_status};
pub use store::{AccountFilter, Received, TransactionFilter, TransactionPage};
pub use sync::SyncReport;
pub use webhooks::WebhookError;

/// The exact message for an unknown, removed or foreign `platformItemId` (seed 003).
pub const NO_ACTIVE_CONNECTION: &str = "No active Plaid connection found for the provided platformItemId.";

/// The platform a Link session runs on; it decides the OAuth redirect option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceOs {
    Ios,
    Android,
    Web,
}

/// A Link token for a new link, or for update mode (relink).
#[derive(Debug, Clone)]
pub struct LinkToken {
    pub link_token: String,
    pub expiration: DateTime<Utc>,
    pub request_id: String,
    pub update_mode: bool,
}

/// One account in a completion result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSummary {
    pub connection_id: String,
    pub account_id: String,
    pub bank_name: String,
    pub last_four: Option<String>,
    pub account_type: String,
    pub subtype: Option<String>,
}

/// What `completePlaidLink` answers; stored as is for idempotent replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedLink {
    pub requires_address: bool,
    pub primary_account_id: Option<String>,
    pub connection_id: String,
    /// Set when a new connection was created; `None` when an existing one was repaired.
    pub newly_linked_connection_id: Option<String>,
    pub institution_name: String,
    pub plaid_item_id: String,
    pub accounts: Vec<AccountSummary>,
}

/// The outcome of `refreshPlaidBankConnections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshStatus {
    Refreshed,
    Partial,
    Throttled,
    NoConnections,
}

/// A connection the user must relink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyMember {
    pub plaid_item_id: String,
    pub connection_id: String,
}

#[derive(Debug, Clone)]
pub struct RefreshOutcome {
    pub status: RefreshStatus,
    pub balances: Vec<Balance>,
    pub verify: Vec<VerifyMember>,
    /// When throttled: seconds until the next refresh is allowed.
    pub retry_after_seconds: Option<u64>,
}

/// The identity service as the gateway sees it. Every call is scoped to `user_id` (the JWT
/// `sub`): another user's ids behave exactly as ids that do not exist.
#[async_trait::async_trait]
pub trait IdentityService: Send + Sync + 'static {
    async fn create_link_token(
        &self,
        user_id: &str,
        device_os: Option<DeviceOs>,
        platform_item_id: Option<&str>,
    ) -> AppResult<LinkToken>;

    async fn complete_link(
        &self,
        user_id: &str,
        public_token: SecretString,
        platform_item_id: Option<String>,
    ) -> AppResult<CompletedLink>;

    /// The stored answer to a public token already completed (or the stored error of one that
    /// failed for good), without doing anything; `None` when it was not decided yet.
    async fn replayed_link(&self, user_id: &str, public_token: &SecretString) -> AppResult<Option<CompletedLink>>;

    async fn accounts(&self, user_id: &str, filter: AccountFilter) -> AppResult<Vec<BankAccount>>;

    async fn balances(&self, user_id: &str, filter: AccountFilter) -> AppResult<Vec<Balance>>;

    async fn transactions(&self, user_id: &str, filter: TransactionFilter) -> AppResult<TransactionPage>;

    async fn refresh(&self, user_id: &str) -> AppResult<RefreshOutcome>;

    async fn add_address(&self, user_id: &str, connection_id: &str, address: Address) -> AppResult<String>;

    /// Removes the caller's connection; returns the ids of its accounts (all of them now hidden),
    /// so clients can evict them from their caches.
    async fn remove_connection(
        &self,
        user_id: &str,
        connection_id: &str,
        reason: RemovalReason,
    ) -> AppResult<Vec<String>>;

    /// Whether the service can serve (its database answers).
    async fn ready(&self) -> AppResult<()>;

    /// The caller's connection events (of one connection, when the watch names one): those
    /// after `watch.after`, then live ones, in order. Fails before the first event when the
    /// connection is not the caller's, or `after` is older than the retention window.
    async fn connection_events(&self, user_id: &str, watch: EventWatch) -> AppResult<Watching>;
}
