//! The identity service's core: what every flow shares. The one rule for what a Plaid item
//! error does to a connection, the one way to open a stored access token, the one way to
//! queue a sync. Flows (`link.rs`, `refresh.rs`, `sync.rs`, `webhooks.rs`, `health.rs`, …) call
//! down into this file, never the other way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tokio_util::task::TaskTracker;

use super::cache::AccountsCache;
use super::crypto::TokenCipher;
use super::events::EventHub;
use super::store::{ConnectionRow, Store};
use crate::config::{JobsConfig, LinkConfig};
use crate::db::Db;
use crate::domain::ConnectionStatus;
use crate::error::AppResult;
use crate::jobs::{JobKind, Jobs};
use crate::plaid::wire::PlaidErrorBody;
use crate::plaid::{KeyLookupPolicy, PlaidClient, PlaidError, WebhookVerifier};

/// The identity service: Plaid, the store, and the cipher of access tokens. Cheap to clone.
#[derive(Clone)]
pub struct PlaidIdentity {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) store: Store,
    pub(super) plaid: PlaidClient,
    pub(super) cipher: Arc<TokenCipher>,
    pub(super) link: LinkConfig,
    pub(super) schedule: JobsConfig,
    /// At most one sync per connection at a time in this process.
    pub(super) sync_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Background work, so shutdown can wait for it.
    pub(super) tasks: TaskTracker,
    /// The durable job queue (syncs, webhook processing, the reconciler).
    pub(super) jobs: Jobs,
    pub(super) verifier: WebhookVerifier,
    pub(super) accounts_cache: AccountsCache,
    /// Connection events to this process's subscribers.
    pub(super) events: EventHub,
}

/// The status a Plaid item error puts a connection in; `None` when the error says nothing
/// about the item's health (it passes, or it is about one product or one Link session).
/// The one rule, used by relink, refresh, sync, webhooks, health checks and the reconciler
/// (Plaid's item errors: `ITEM_LOGIN_REQUIRED` and its kin ask the user to relink, the
/// others say the item is gone or broken).
pub fn item_error_status(error_type: &str, error_code: &str) -> Option<ConnectionStatus> {
    match error_code {
        // The user can repair it through Link update mode (after unlocking the account or
        // finishing a step at the bank, for the last three).
        "ITEM_LOGIN_REQUIRED"
        | "ACCESS_NOT_GRANTED"
        | "INVALID_UPDATED_USERNAME"
        | "ITEM_LOCKED"
        | "USER_SETUP_REQUIRED"
        | "NO_ACCOUNTS" => Some(ConnectionStatus::LoginRequired),
        // Terminal: only a new link replaces the item.
        "ITEM_NOT_FOUND"
        | "INVALID_ACCESS_TOKEN"
        | "USER_PERMISSION_REVOKED"
        | "USER_ACCOUNT_REVOKED"
        | "ITEM_CONCURRENTLY_DELETED"
        | "INSTITUTION_NO_LONGER_SUPPORTED" => Some(ConnectionStatus::Revoked),
        "PENDING_EXPIRATION" => Some(ConnectionStatus::PendingExpiration),
        // Passing, or about one product or one Link session, not the item.
        "PRODUCT_NOT_READY"
        | "PRODUCTS_NOT_SUPPORTED"
        | "PRODUCT_NOT_ENABLED"
        | "NO_AUTH_ACCOUNTS"
        | "INVALID_CREDENTIALS"
        | "INVALID_MFA"
        | "INSUFFICIENT_CREDENTIALS"
        | "INVALID_SEND_METHOD"
        | "USER_INPUT_TIMEOUT"
        | "INSTANT_MATCH_FAILED"
        | "ITEM_NOT_SUPPORTED"
        | "MFA_NOT_SUPPORTED" => None,
        // An item error nobody documented yet: the item is unwell and a person should look.
        _ if error_type == "ITEM_ERROR" => Some(ConnectionStatus::Error),
        // Rate limits, outages, bad requests: nothing about the item.
        _ => None,
    }
}

impl PlaidIdentity {
    /// The identity service on `db`; its store and job queue share the database, and so do the
    /// webhook keys Plaid gave (see [`PlaidIdentity::load_webhook_keys`]).
    pub fn new(
        db: Db,
        plaid: PlaidClient,
        cipher: Arc<TokenCipher>,
        link: LinkConfig,
        schedule: JobsConfig,
        webhook_keys: &KeyLookupPolicy,
    ) -> Self {
        let jobs = Jobs::new(db.clone(), schedule.lease);
        let store = Store::new(db);
        let verifier =
            WebhookVerifier::new(plaid.clone()).with_policy(webhook_keys).with_shelf(Arc::new(store.clone()));
        PlaidIdentity {
            inner: Arc::new(Inner {
                events: EventHub::new(store.clone()),
                store,
                plaid,
                cipher,
                link,
                schedule,
                sync_locks: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                jobs,
                verifier,
                accounts_cache: AccountsCache::new(),
            }),
        }
    }

    /// Starts handing connection events to this process's subscribers, until `stop` turns true.
    pub fn start_events(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let hub = self.inner.events.clone();
        let cancel = tokio_util::sync::CancellationToken::new();
        let on_stop = cancel.clone();
        self.inner.tasks.spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            on_stop.cancel();
        });
        self.inner.tasks.spawn(hub.run(cancel));
    }

    pub fn jobs(&self) -> &Jobs {
        &self.inner.jobs
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Waits for background work (syncs) to finish, up to `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!("background work still running at the end of the grace period");
        }
    }

    /// Opens a connection's stored access token.
    pub(super) fn open(&self, c: &ConnectionRow) -> anyhow::Result<SecretString> {
        self.inner.cipher.open(&c.sealed(), &c.user_id, &c.plaid_item_id)
    }

    /// As [`PlaidIdentity::open`], for request paths.
    pub(super) fn open_token(&self, c: &ConnectionRow) -> AppResult<SecretString> {
        Ok(self.open(c)?)
    }

    /// Applies the item-error rule to a connection: when the error says something about the
    /// item, its status becomes what the rule says, with the code as the status detail.
    /// Returns the status set, if any.
    pub(super) async fn apply_item_error(
        &self,
        connection_id: &str,
        error: &PlaidErrorBody,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<ConnectionStatus>> {
        let Some(status) = item_error_status(&error.error_type, &error.error_code) else {
            return Ok(None);
        };
        self.inner.store.set_status(connection_id, status, Some(&error.error_code), now).await?;
        tracing::info!(connection_id, error_code = %error.error_code, status = status.as_str(), "connection status set from a Plaid item error");
        Ok(Some(status))
    }

    /// [`PlaidIdentity::apply_item_error`] for a failed Plaid call (one that carries Plaid's
    /// error object; a timeout or transport failure says nothing about the item).
    pub(super) async fn apply_call_error(
        &self,
        connection_id: &str,
        error: &PlaidError,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<ConnectionStatus>> {
        match error.body() {
            Some(body) => self.apply_item_error(connection_id, body, now).await,
            None => Ok(None),
        }
    }

    /// Queues a transaction sync of a connection (durable; coalesced with one already queued).
    pub(super) async fn queue_sync(&self, connection_id: &str) {
        if let Err(e) = self.inner.jobs.enqueue(JobKind::Sync, connection_id, Utc::now()).await {
            tracing::error!(connection_id = %connection_id, error = %format!("{e:#}"), "could not queue a sync");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectionStatus::*;

    /// Every `ITEM_ERROR` code Plaid documents (plaid-reference §3.2), the terminal codes of
    /// other types (§3.4), and what each does to a connection.
    #[test]
    fn every_documented_item_error_has_one_status() {
        let table: &[(&str, &str, Option<ConnectionStatus>)] = &[
            ("ITEM_ERROR", "ITEM_LOGIN_REQUIRED", Some(LoginRequired)),
            ("ITEM_ERROR", "ACCESS_NOT_GRANTED", Some(LoginRequired)),
            ("ITEM_ERROR", "INVALID_UPDATED_USERNAME", Some(LoginRequired)),
            ("ITEM_ERROR", "ITEM_LOCKED", Some(LoginRequired)),
            ("ITEM_ERROR", "USER_SETUP_REQUIRED", Some(LoginRequired)),
            ("ITEM_ERROR", "NO_ACCOUNTS", Some(LoginRequired)),
            ("ITEM_ERROR", "ITEM_NOT_FOUND", Some(Revoked)),
            ("ITEM_ERROR", "ITEM_CONCURRENTLY_DELETED", Some(Revoked)),
            ("ITEM_ERROR", "USER_PERMISSION_REVOKED", Some(Revoked)),
            ("INVALID_INPUT", "USER_PERMISSION_REVOKED", Some(Revoked)),
            ("INVALID_INPUT", "INVALID_ACCESS_TOKEN", Some(Revoked)),
            ("INSTITUTION_ERROR", "INSTITUTION_NO_LONGER_SUPPORTED", Some(Revoked)),
            ("ITEM_ERROR", "USER_ACCOUNT_REVOKED", Some(Revoked)),
            ("ITEM_ERROR", "PENDING_EXPIRATION", Some(PendingExpiration)),
            ("ITEM_ERROR", "PRODUCT_NOT_READY", None),
            ("ITEM_ERROR", "PRODUCTS_NOT_SUPPORTED", None),
            ("ITEM_ERROR", "PRODUCT_NOT_ENABLED", None),
            ("ITEM_ERROR", "NO_AUTH_ACCOUNTS", None),
            ("ITEM_ERROR", "INVALID_CREDENTIALS", None),
            ("ITEM_ERROR", "INVALID_MFA", None),
            ("ITEM_ERROR", "INSUFFICIENT_CREDENTIALS", None),
            ("ITEM_ERROR", "INVALID_SEND_METHOD", None),
            ("ITEM_ERROR", "USER_INPUT_TIMEOUT", None),
            ("ITEM_ERROR", "INSTANT_MATCH_FAILED", None),
            ("ITEM_ERROR", "ITEM_NOT_SUPPORTED", None),
            ("ITEM_ERROR", "MFA_NOT_SUPPORTED", None),
            ("ITEM_ERROR", "A_CODE_PLAID_ADDS_LATER", Some(Error)),
            ("INSTITUTION_ERROR", "INSTITUTION_DOWN", None),
            ("INSTITUTION_ERROR", "INSTITUTION_NOT_RESPONDING", None),
            ("INSTITUTION_ERROR", "INSTITUTION_NOT_AVAILABLE", None),
            ("RATE_LIMIT_EXCEEDED", "TRANSACTIONS_SYNC_LIMIT", None),
            ("API_ERROR", "INTERNAL_SERVER_ERROR", None),
            ("API_ERROR", "PLANNED_MAINTENANCE", None),
            ("TRANSACTIONS_ERROR", "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION", None),
            ("INVALID_REQUEST", "MISSING_FIELDS", None),
        ];
        for (error_type, code, want) in table {
            assert_eq!(item_error_status(error_type, code), *want, "{error_type} {code}");
        }
    }

    /// The rule agrees with how the Plaid client classifies the same codes: what it calls
    /// gone is revoked, what it calls a user action needs the user.
    #[test]
    fn the_rule_agrees_with_the_error_classes() {
        use crate::plaid::ErrorClass;
        for code in [
            "ITEM_LOGIN_REQUIRED",
            "ACCESS_NOT_GRANTED",
            "INVALID_UPDATED_USERNAME",
            "ITEM_LOCKED",
            "USER_SETUP_REQUIRED",
            "ITEM_NOT_FOUND",
            "INVALID_ACCESS_TOKEN",
            "USER_PERMISSION_REVOKED",
            "ITEM_CONCURRENTLY_DELETED",
            "INSTITUTION_NO_LONGER_SUPPORTED",
            "PENDING_EXPIRATION",
        ] {
            let e = PlaidError::Api {
                endpoint: "/item/get",
                status: 400,
                body: Box::new(PlaidErrorBody::item_error(code)),
            };
            let status = item_error_status("ITEM_ERROR", code).expect(code);
            match e.class() {
                ErrorClass::ItemGone => assert_eq!(status, Revoked, "{code}"),
                ErrorClass::UserActionRequired => assert!(status.needs_user(), "{code}"),
                other => panic!("{code} is classed {other:?}"),
            }
        }
    }
}
