//! The identity service over Plaid and the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::task::TaskTracker;

use super::crypto::TokenCipher;
use super::store::{AccountFilter, Claim, ConnectionRow, NewConnection, Store, TransactionFilter};
use super::{
    AccountSummary, CompletedLink, DeviceOs, IdentityService, LinkToken, NO_ACTIVE_CONNECTION, RefreshOutcome,
    RefreshStatus, VerifyMember,
};
use crate::domain::{Address, Balance, BalanceTrigger, BankAccount, BankTransaction, ConnectionStatus, RemovalReason};
use crate::error::{AppError, AppResult, PlaidDetail};
use crate::jobs::{Handler, Job, JobKind, Jobs, Outcome};
use crate::plaid::wire::{self, LinkTokenCreateRequest, LinkTokenUser};
use crate::plaid::{ErrorClass, PlaidClient, WebhookVerifier};

/// What the identity service needs to know about the deployment.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub client_name: String,
    pub language: String,
    pub products: Vec<String>,
    pub country_codes: Vec<String>,
    pub redirect_uri: Option<String>,
    pub android_package_name: Option<String>,
    pub webhook_url: Option<String>,
    /// Minimum time between two `refreshPlaidBankConnections` of one user.
    pub refresh_interval: Duration,
    /// The reconciler re-syncs a connection not synced for this long.
    pub resync_after: Duration,
    /// The reconciler checks each item with Plaid this often.
    pub item_check_interval: Duration,
    /// How often the reconciler runs.
    pub reconcile_interval: Duration,
    /// How long a worker holds a job between heartbeats.
    pub job_lease: Duration,
    /// How long a caller's account list may be served from memory (0: never). Writes in this
    /// process invalidate it at once; this bounds staleness from other processes.
    pub read_cache: Duration,
}

/// The identity service: Plaid, the store, and the cipher of access tokens. Cheap to clone.
#[derive(Clone)]
pub struct PlaidIdentity {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) store: Store,
    pub(super) plaid: PlaidClient,
    pub(super) cipher: Arc<TokenCipher>,
    pub(super) config: IdentityConfig,
    /// At most one sync per connection at a time in this process.
    pub(super) sync_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Background work, so shutdown can wait for it.
    pub(super) tasks: TaskTracker,
    /// The durable job queue (syncs, webhook processing, the reconciler).
    pub(super) jobs: Jobs,
    pub(super) verifier: WebhookVerifier,
    /// Account lists by caller, bounded by the accounts they hold.
    pub(super) accounts_cache: quick_cache::sync::Cache<String, CachedAccounts, AccountsWeight>,
}

/// A caller's account list as read at an instant, under a store generation.
type CachedAccounts = (std::time::Instant, u64, Arc<Vec<BankAccount>>);

/// Callers whose account lists the read cache holds at most (an estimate for its sizing), and
/// accounts in all: about 300 bytes each, so a few megabytes whatever the number of users.
const ACCOUNTS_CACHE_CALLERS: usize = 4096;
const ACCOUNTS_CACHE_ACCOUNTS: u64 = 20_000;

/// An entry weighs as many accounts as it lists (at least one).
#[derive(Clone)]
pub(super) struct AccountsWeight;

impl quick_cache::Weighter<String, CachedAccounts> for AccountsWeight {
    fn weight(&self, _: &String, v: &CachedAccounts) -> u64 {
        v.2.len().max(1) as u64
    }
}

/// An error as stored with a failed completion, to answer a replay the same way.
#[derive(Debug, Serialize, Deserialize)]
struct StoredError {
    code: String,
    message: String,
    plaid: Option<PlaidDetail>,
}

impl StoredError {
    fn of(e: &AppError) -> Self {
        StoredError {
            code: e.code().to_string(),
            message: e.to_string(),
            plaid: match e {
                AppError::Plaid { detail, .. } => Some(detail.clone()),
                _ => None,
            },
        }
    }

    fn into_error(self) -> AppError {
        match (self.code.as_str(), self.plaid) {
            (_, Some(detail)) => AppError::Plaid { message: self.message, detail },
            ("BAD_USER_INPUT", _) => AppError::BadInput(self.message),
            ("NOT_FOUND", _) => AppError::NotFound(self.message),
            ("CONFLICT", _) => AppError::Conflict(self.message),
            ("NOT_CONFIGURED", _) => AppError::NotConfigured(self.message),
            ("LINK_RESTART_REQUIRED", _) => AppError::LinkRestart(self.message),
            ("FORBIDDEN", _) => AppError::Forbidden(self.message),
            _ => AppError::Upstream(self.message),
        }
    }
}

/// How long after an exchange an item no connection holds is removed at Plaid. A completion
/// takes seconds; this leaves room for a slow one without racing it.
/// How often a running completion renews its claim (a claim is stale after two minutes).
const CLAIM_HEARTBEAT: Duration = Duration::from_secs(20);

const CLEANUP_AFTER: chrono::Duration = chrono::Duration::minutes(10);

/// The answer once the public token is spent and the link could not be stored.
fn restart_link() -> AppError {
    AppError::LinkRestart(
        "Linking this bank did not finish, and the connection made at the bank was undone. The public token is \
         used up: run Plaid Link again to connect this bank."
            .into(),
    )
}

/// Errors worth a retry with the same public token: nothing was decided.
fn transient(e: &AppError) -> bool {
    matches!(e, AppError::Upstream(_) | AppError::Internal(_) | AppError::RateLimited { .. })
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Accounts Link handed over that still wait for manual (micro-deposit) verification.
fn needs_manual_verification(a: &wire::Account) -> bool {
    matches!(
        a.verification_status.as_deref(),
        Some("pending_manual_verification")
            | Some("pending_automatic_verification")
            | Some("verification_expired")
            | Some("verification_failed")
    )
}

/// The status an item error puts a connection in.
pub(super) fn status_for(code: &str) -> Option<ConnectionStatus> {
    match code {
        "ITEM_LOGIN_REQUIRED" | "ACCESS_NOT_GRANTED" | "INVALID_UPDATED_USERNAME" => {
            Some(ConnectionStatus::LoginRequired)
        }
        "USER_PERMISSION_REVOKED" | "ITEM_NOT_FOUND" | "INVALID_ACCESS_TOKEN" => Some(ConnectionStatus::Revoked),
        "PENDING_EXPIRATION" => Some(ConnectionStatus::PendingExpiration),
        _ => None,
    }
}

impl PlaidIdentity {
    pub fn new(store: Store, plaid: PlaidClient, cipher: Arc<TokenCipher>, config: IdentityConfig) -> Self {
        let jobs = Jobs::new(store.db.clone(), config.job_lease);
        let verifier = WebhookVerifier::new(plaid.clone());
        PlaidIdentity {
            inner: Arc::new(Inner {
                store,
                plaid,
                cipher,
                config,
                sync_locks: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                jobs,
                verifier,
                accounts_cache: quick_cache::sync::Cache::with_weighter(
                    ACCOUNTS_CACHE_CALLERS,
                    ACCOUNTS_CACHE_ACCOUNTS,
                    AccountsWeight,
                ),
            }),
        }
    }

    pub fn jobs(&self) -> &Jobs {
        &self.inner.jobs
    }

    /// Starts `workers` job workers and schedules the reconciler; they stop when `stop` turns
    /// true, finishing the job in hand.
    pub async fn start_workers(&self, workers: usize, stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
        let this = self.clone();
        let handler: Handler = Arc::new(move |job| {
            let this = this.clone();
            Box::pin(async move { this.run_job(job).await })
        });
        self.inner.jobs.spawn_workers(workers, handler, stop, &self.inner.tasks);
        self.inner.jobs.enqueue(JobKind::Reconcile, "reconciler", Utc::now()).await?;
        Ok(())
    }

    /// Runs one job.
    async fn run_job(&self, job: Job) -> Outcome {
        match job.kind {
            JobKind::Sync => match self.sync_connection(&job.key).await {
                Ok(_) => Outcome::Done,
                Err(e) => {
                    let class = e.downcast_ref::<crate::plaid::PlaidError>().map(|p| p.class());
                    match class {
                        // The connection's status now says what the user must do; a relink re-syncs.
                        Some(ErrorClass::UserActionRequired) | Some(ErrorClass::ItemGone) => {
                            Outcome::Fail(format!("{e:#}"))
                        }
                        _ => Outcome::Retry(format!("{e:#}")),
                    }
                }
            },
            JobKind::Webhook => self.process_event(&job.key).await,
            JobKind::RemoveItem => self.remove_pending_item(&job.key).await,
            JobKind::Reseal => match self.reseal_all().await {
                Ok(n) => {
                    tracing::info!(resealed = n, key_id = %self.inner.cipher.current_key_id(), "access tokens re-sealed");
                    Outcome::Done
                }
                Err(e) => Outcome::Retry(format!("{e:#}")),
            },
            JobKind::Health => match self.inner.store.connection_by_id(&job.key).await {
                Ok(Some(conn)) if conn.removed_at.is_none() => match self.confirm_health(&conn).await {
                    Ok(outcome) => {
                        tracing::info!(connection_id = %conn.id, %outcome, "health checked");
                        Outcome::Done
                    }
                    Err(e) => Outcome::Retry(format!("{e:#}")),
                },
                Ok(_) => Outcome::Done,
                Err(e) => Outcome::Retry(format!("{e:#}")),
            },
            JobKind::Reconcile => {
                let outcome = match self.reconcile().await {
                    Ok(summary) => {
                        tracing::info!(%summary, "reconciler ran");
                        Outcome::Done
                    }
                    Err(e) => Outcome::Retry(format!("{e:#}")),
                };
                let every = chrono::Duration::from_std(self.inner.config.reconcile_interval)
                    .unwrap_or(chrono::Duration::hours(1));
                if let Err(e) = self.inner.jobs.enqueue(JobKind::Reconcile, "reconciler", Utc::now() + every).await {
                    tracing::error!(error = %format!("{e:#}"), "could not schedule the next reconciler run");
                }
                outcome
            }
        }
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

    /// The caller's account list, from memory while it is fresh: no write in this process
    /// since it was read, and younger than `read_cache`.
    async fn cached_accounts(&self, user_id: &str) -> AppResult<Arc<Vec<BankAccount>>> {
        let ttl = self.inner.config.read_cache;
        // Read before the database, so a write that lands meanwhile makes this entry stale.
        let generation = self.inner.store.generation();
        if !ttl.is_zero()
            && let Some((at, g, v)) = self.inner.accounts_cache.get(user_id)
            && g == generation
            && at.elapsed() < ttl
        {
            return Ok(v);
        }
        let fresh = Arc::new(self.inner.store.accounts(user_id, &AccountFilter::default()).await?);
        if !ttl.is_zero() {
            self.inner
                .accounts_cache
                .insert(user_id.to_string(), (std::time::Instant::now(), generation, fresh.clone()));
        }
        Ok(fresh)
    }

    fn open(&self, c: &ConnectionRow) -> AppResult<SecretString> {
        Ok(self.inner.cipher.open(&c.sealed(), &c.user_id, &c.plaid_item_id)?)
    }

    fn link_request(
        &self,
        user_id: &str,
        device_os: Option<DeviceOs>,
        update: bool,
    ) -> AppResult<LinkTokenCreateRequest> {
        let cfg = &self.inner.config;
        let mut req = LinkTokenCreateRequest {
            client_name: cfg.client_name.clone(),
            language: cfg.language.clone(),
            country_codes: cfg.country_codes.clone(),
            user: LinkTokenUser { client_user_id: user_id.to_string() },
            products: (!update).then(|| cfg.products.clone()),
            webhook: cfg.webhook_url.clone(),
            ..Default::default()
        };
        match device_os {
            Some(os @ (DeviceOs::Ios | DeviceOs::Web)) => {
                let uri = cfg.redirect_uri.clone().ok_or_else(|| {
                    AppError::NotConfigured(format!(
                        "PLAID_REDIRECT_URI is not configured; it is required for deviceOs {}.",
                        if os == DeviceOs::Ios { "IOS" } else { "WEB" }
                    ))
                })?;
                req.redirect_uri = Some(uri);
            }
            Some(DeviceOs::Android) => {
                let name = cfg.android_package_name.clone().ok_or_else(|| {
                    AppError::NotConfigured(
                        "PLAID_ANDROID_PACKAGE_NAME is not configured; it is required for deviceOs ANDROID.".into(),
                    )
                })?;
                req.android_package_name = Some(name);
            }
            None => {}
        }
        Ok(req)
    }

    /// The completion itself, claimed and recorded by [`IdentityService::complete_link`].
    async fn complete(
        &self,
        user_id: &str,
        public_token: SecretString,
        item: Option<String>,
    ) -> AppResult<CompletedLink> {
        match item {
            Some(item_id) => self.relink(user_id, &item_id).await,
            None => self.new_link(user_id, public_token).await,
        }
    }

    /// Update mode finished: the server asks Plaid whether the item is healthy again, and only
    /// then marks it `ACTIVE`. The access token does not change.
    async fn relink(&self, user_id: &str, item_id: &str) -> AppResult<CompletedLink> {
        let store = &self.inner.store;
        let conn = store
            .connection_by_item(user_id, item_id)
            .await?
            .ok_or_else(|| AppError::NotFound(NO_ACTIVE_CONNECTION.into()))?;
        let token = self.open(&conn)?;
        let item = self.inner.plaid.item_get(&token).await?;
        if let Some(err) = item.item.error {
            if let Some(status) = status_for(&err.error_code) {
                store.set_status(&conn.id, status, Utc::now()).await?;
            }
            return Err(AppError::Plaid {
                message: format!(
                    "The connection still needs attention at the bank ({}); run Link again.",
                    err.error_code
                ),
                detail: PlaidDetail {
                    error_type: err.error_type,
                    error_code: err.error_code,
                    display_message: err.display_message,
                    request_id: Some(item.request_id),
                },
            });
        }
        let accounts = self.inner.plaid.accounts_get(&token, None).await?;
        let usable: Vec<wire::Account> =
            accounts.accounts.into_iter().filter(|a| !needs_manual_verification(a)).collect();
        let sealed = if self.inner.cipher.is_stale(&conn.sealed()) {
            self.inner.cipher.seal(&token, user_id, item_id)?
        } else {
            conn.sealed()
        };
        let ids = store
            .repair_connection(
                &conn,
                item_id,
                &sealed,
                &usable,
                ConnectionStatus::Active,
                BalanceTrigger::Relink,
                false,
                Utc::now(),
            )
            .await?;
        store.set_new_accounts_available(&conn.id, false).await?;
        self.spawn_sync(conn.id.clone()).await;
        self.result(&conn.id, &conn.institution_name, item_id, None, &usable, &ids).await
    }

    /// A new Link session finished: exchange, then store. Right after the exchange the item is
    /// recorded with a delayed removal job, so that whatever happens next (a failure, a crash)
    /// an item no connection holds is removed at Plaid and not left billed.
    async fn new_link(&self, user_id: &str, public_token: SecretString) -> AppResult<CompletedLink> {
        let store = &self.inner.store;
        let exchanged = self.inner.plaid.item_public_token_exchange(&public_token).await?;
        let item_id = exchanged.item_id.clone();
        tracing::info!(item_id = %item_id, "public token exchanged");
        // An update-mode public token sent without platformItemId exchanges to an item we
        // already hold: that is a relink, never a new link (which would dedupe the connection
        // onto its own item and remove it).
        match store.connection_by_plaid_item(&item_id).await {
            Ok(Some(held)) if held.user_id == user_id => {
                tracing::info!(item_id = %item_id, connection_id = %held.id, "public token of an update-mode session: relinking");
                return self.relink(user_id, &item_id).await;
            }
            Ok(Some(_)) => {
                tracing::warn!(item_id = %item_id, "public token exchanged to another user's item; refused, nothing removed");
                return Err(AppError::Forbidden("This public token belongs to another user's Link session.".into()));
            }
            Ok(None) => {}
            Err(e) => {
                // Whether the item is ours to remove is unknown: leave it to the durable job,
                // which checks again before removing.
                self.schedule_item_cleanup(user_id, &exchanged.access_token, &item_id, Utc::now()).await;
                tracing::error!(item_id = %item_id, error = %format!("{e:#}"), "link failed after the exchange");
                return Err(restart_link());
            }
        }
        let now = Utc::now();
        let sealed = self.inner.cipher.seal(&exchanged.access_token, user_id, &item_id)?;
        if let Err(e) = store.record_exchanged_item(user_id, &item_id, &sealed, now, now + CLEANUP_AFTER).await {
            tracing::warn!(item_id = %item_id, error = %format!("{e:#}"), "could not record the exchanged item");
        }
        match self.store_new_item(user_id, &exchanged.access_token, &item_id).await {
            Ok(r) => {
                if let Err(e) = store.forget_pending_item(&item_id).await {
                    // Harmless: the cleanup job finds the item held and forgets it then.
                    tracing::warn!(item_id = %item_id, error = %format!("{e:#}"), "could not clear the exchanged item record");
                }
                Ok(r)
            }
            Err(e) => {
                match self.inner.plaid.item_remove(&exchanged.access_token).await {
                    Ok(_) => {
                        tracing::warn!(item_id = %item_id, error = %e, "link failed after the exchange; the new item was removed at Plaid");
                        if let Err(fe) = store.forget_pending_item(&item_id).await {
                            tracing::warn!(item_id = %item_id, error = %format!("{fe:#}"), "could not clear the exchanged item record");
                        }
                    }
                    Err(re) if re.class() == ErrorClass::ItemGone => {
                        let _ = store.forget_pending_item(&item_id).await;
                    }
                    Err(re) => {
                        tracing::warn!(item_id = %item_id, error = %re, "link failed after the exchange; removal at Plaid failed and is retried by a job");
                        self.schedule_item_cleanup(user_id, &exchanged.access_token, &item_id, Utc::now()).await;
                    }
                }
                // The public token is spent: anything but a decided error becomes "run Link
                // again", never "try again later" (a retry could only fail).
                Err(if transient(&e) {
                    if let AppError::Internal(inner) = &e {
                        tracing::error!(item_id = %item_id, error = %format!("{inner:#}"), "link failed after the exchange");
                    }
                    restart_link()
                } else {
                    e
                })
            }
        }
    }

    /// Makes the removal job of an exchanged item due now, recording the item first if it
    /// was not recorded. When even that fails, the item is left to the reconciler's log.
    async fn schedule_item_cleanup(
        &self,
        user_id: &str,
        token: &SecretString,
        item_id: &str,
        now: chrono::DateTime<Utc>,
    ) {
        let store = &self.inner.store;
        let recorded = match store.pending_item(item_id).await {
            Ok(Some(_)) => Ok(()),
            _ => match self.inner.cipher.seal(token, user_id, item_id) {
                Ok(sealed) => store.record_exchanged_item(user_id, item_id, &sealed, now, now).await,
                Err(e) => Err(e),
            },
        };
        let scheduled = match recorded {
            Ok(()) => self.inner.jobs.expedite(JobKind::RemoveItem, item_id, now).await,
            Err(e) => Err(e),
        };
        if let Err(e) = scheduled {
            tracing::error!(item_id = %item_id, error = %format!("{e:#}"),
                "ALERT: an exchanged item could not be scheduled for removal at Plaid; remove it by hand");
        }
    }

    /// Fails when a stored access token was sealed under a key id this process has no key
    /// for (it could never be opened: refresh, relink and removal would fail), and queues a
    /// re-seal when tokens are sealed under an older key.
    pub async fn check_token_keys(&self) -> anyhow::Result<()> {
        let ids = self.inner.store.token_key_ids().await?;
        let missing: Vec<String> = ids
            .iter()
            .filter(|(id, _)| !self.inner.cipher.has_key(id))
            .map(|(id, n)| format!("{id} ({n} tokens)"))
            .collect();
        if !missing.is_empty() {
            return Err(crate::config::ConfigError(format!(
                "TOKEN_ENCRYPTION_PREVIOUS_KEYS has no key for the key id(s) {} that sealed stored access tokens; \
                 add each as id:base64key",
                missing.join(", ")
            ))
            .into());
        }
        let current = self.inner.cipher.current_key_id();
        if ids.iter().any(|(id, _)| id != current) {
            self.inner.jobs.enqueue(JobKind::Reseal, "reseal", Utc::now()).await?;
        }
        Ok(())
    }

    /// Re-seals every access token sealed under an older key with the current one, in
    /// batches; a token that cannot be opened is logged and left (the start-up check makes
    /// that rare). Returns how many were re-sealed.
    pub(super) async fn reseal_all(&self) -> anyhow::Result<usize> {
        let (store, cipher) = (&self.inner.store, &self.inner.cipher);
        let current = cipher.current_key_id().to_string();
        let (mut after, mut done) = (String::new(), 0usize);
        loop {
            let batch = store.connections_sealed_under_other_keys(&current, &after, 100).await?;
            let Some(last) = batch.last() else { break };
            after = last.id.clone();
            for c in &batch {
                let old = c.sealed();
                let resealed = cipher
                    .open(&old, &c.user_id, &c.plaid_item_id)
                    .and_then(|t| cipher.seal(&t, &c.user_id, &c.plaid_item_id));
                match resealed {
                    Ok(new) => done += usize::from(store.reseal(&c.id, &old, &new).await?),
                    Err(e) => {
                        tracing::error!(connection_id = %c.id, key_id = %old.key_id, error = %format!("{e:#}"), "access token could not be re-sealed")
                    }
                }
            }
        }
        for (item_id, user_id, old) in store.pending_items_sealed_under_other_keys(&current).await? {
            match cipher.open(&old, &user_id, &item_id).and_then(|t| cipher.seal(&t, &user_id, &item_id)) {
                Ok(new) => done += usize::from(store.reseal_pending_item(&item_id, &old, &new).await?),
                Err(e) => {
                    tracing::error!(item_id = %item_id, error = %format!("{e:#}"), "pending item token could not be re-sealed")
                }
            }
        }
        Ok(done)
    }

    /// The `remove_item` job: removes at Plaid an exchanged item that no connection holds.
    pub(super) async fn remove_pending_item(&self, item_id: &str) -> Outcome {
        let store = &self.inner.store;
        let pending = match store.pending_item(item_id).await {
            Ok(Some(p)) => p,
            Ok(None) => return Outcome::Done,
            Err(e) => return Outcome::Retry(format!("{e:#}")),
        };
        match store.item_is_held(item_id).await {
            Ok(true) => {
                return match store.forget_pending_item(item_id).await {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Retry(format!("{e:#}")),
                };
            }
            Ok(false) => {}
            Err(e) => return Outcome::Retry(format!("{e:#}")),
        }
        let (user_id, sealed) = pending;
        let token = match self.inner.cipher.open(&sealed, &user_id, item_id) {
            Ok(t) => t,
            Err(e) => return Outcome::Retry(format!("{e:#}")),
        };
        match self.inner.plaid.item_remove(&token).await {
            Ok(_) => tracing::warn!(item_id = %item_id, "an exchanged item no connection holds was removed at Plaid"),
            Err(e) if e.class() == ErrorClass::ItemGone => {}
            Err(e) => return Outcome::Retry(format!("{e}")),
        }
        match store.forget_pending_item(item_id).await {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Retry(format!("{e:#}")),
        }
    }

    async fn store_new_item(&self, user_id: &str, token: &SecretString, item_id: &str) -> AppResult<CompletedLink> {
        let (plaid, store, cfg) = (&self.inner.plaid, &self.inner.store, &self.inner.config);
        let fetched = plaid.accounts_get(token, None).await?;
        let institution_id = fetched.item.institution_id.clone();
        let institution_name = match &institution_id {
            Some(id) => match plaid.institutions_get_by_id(id, &cfg.country_codes).await {
                Ok(r) => r.institution.name,
                Err(e) => {
                    tracing::warn!(error = %e, institution_id = %id, "institution name unavailable");
                    id.clone()
                }
            },
            None => "Unknown institution".to_string(),
        };
        let (usable, manual): (Vec<_>, Vec<_>) =
            fetched.accounts.into_iter().partition(|a| !needs_manual_verification(a));
        if usable.is_empty() {
            return Err(AppError::BadInput(if manual.is_empty() {
                "The bank returned no accounts for this connection.".into()
            } else {
                "These accounts need manual micro-deposit verification, which bankgraph does not support; link them \
                 through the normal Plaid Link flow (instant login) instead."
                    .into()
            }));
        }
        let address =
            if cfg.products.iter().any(|p| p == "identity") { self.identity_address(token).await } else { None };
        let now = Utc::now();
        let sealed = self.inner.cipher.seal(token, user_id, item_id)?;

        // The same login linked again as new: repair the existing connection onto the new item.
        let duplicate = match &institution_id {
            Some(inst) => store.connections_at(user_id, inst).await?.into_iter().find(|(old, accounts)| {
                old.plaid_item_id != item_id
                    && accounts.iter().any(|e| {
                        usable.iter().any(|a| {
                            e.mask == a.mask
                                && e.name.as_deref() == Some(a.name.as_str())
                                && e.account_type == a.account_type
                        })
                    })
            }),
            None => None,
        };
        if let Some((old, _)) = duplicate {
            let old_token = self.open(&old)?;
            let ids = store
                .repair_connection(
                    &old,
                    item_id,
                    &sealed,
                    &usable,
                    ConnectionStatus::Active,
                    BalanceTrigger::Link,
                    true,
                    now,
                )
                .await?;
            if let Some(addr) = &address
                && !store.has_address(&old.id).await?
            {
                store.add_address(&old.id, user_id, addr, now).await?;
            }
            // The superseded item is still billed at Plaid until removed.
            match plaid.item_remove(&old_token).await {
                Ok(_) => {
                    tracing::info!(old_item_id = %old.plaid_item_id, new_item_id = %item_id, "duplicate link repaired; superseded item removed")
                }
                Err(e) if e.class() == ErrorClass::ItemGone => {}
                Err(e) => {
                    tracing::error!(old_item_id = %old.plaid_item_id, error = %e, "superseded item could not be removed at Plaid")
                }
            }
            self.spawn_sync(old.id.clone()).await;
            return self.result(&old.id, &institution_name, item_id, None, &usable, &ids).await;
        }

        let new = NewConnection {
            user_id: user_id.to_string(),
            plaid_item_id: item_id.to_string(),
            institution_id,
            institution_name: institution_name.clone(),
            sealed,
            accounts: usable.clone(),
            address,
        };
        let (connection_id, ids) = store.create_connection(&new, ConnectionStatus::Active, now).await?;
        self.spawn_sync(connection_id.clone()).await;
        self.result(&connection_id, &institution_name, item_id, Some(connection_id.clone()), &usable, &ids).await
    }

    /// The primary address of the first owner Plaid knows, if it is a valid one.
    async fn identity_address(&self, token: &SecretString) -> Option<Address> {
        let identity = match self.inner.plaid.identity_get(token).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "identity data unavailable");
                return None;
            }
        };
        let owners = identity.accounts.into_iter().flat_map(|a| a.owners.unwrap_or_default());
        let addresses: Vec<wire::OwnerAddress> = owners.flat_map(|o| o.addresses).collect();
        let a = addresses.iter().find(|a| a.primary).or(addresses.first())?;
        let d = &a.data;
        Address::parse(
            &d.street,
            None,
            d.city.as_deref().unwrap_or_default(),
            d.region.as_deref().unwrap_or_default(),
            d.postal_code.as_deref().unwrap_or_default(),
            d.country.as_deref().unwrap_or_default(),
        )
        .ok()
    }

    async fn result(
        &self,
        connection_id: &str,
        institution_name: &str,
        item_id: &str,
        newly: Option<String>,
        accounts: &[wire::Account],
        ids: &[String],
    ) -> AppResult<CompletedLink> {
        let primary = accounts
            .iter()
            .position(|a| a.account_type == "depository" && a.subtype.as_deref() == Some("checking"))
            .or(if accounts.is_empty() { None } else { Some(0) })
            .and_then(|i| ids.get(i).cloned());
        Ok(CompletedLink {
            requires_address: !self.inner.store.has_address(connection_id).await?,
            primary_account_id: primary,
            connection_id: connection_id.to_string(),
            newly_linked_connection_id: newly,
            institution_name: institution_name.to_string(),
            plaid_item_id: item_id.to_string(),
            accounts: accounts
                .iter()
                .zip(ids)
                .map(|(a, id)| AccountSummary {
                    connection_id: connection_id.to_string(),
                    account_id: id.clone(),
                    bank_name: institution_name.to_string(),
                    last_four: a.mask.clone(),
                    account_type: a.account_type.clone(),
                    subtype: a.subtype.clone(),
                })
                .collect(),
        })
    }

    /// Queues a transaction sync of a connection (durable; coalesced with one already queued).
    pub(super) async fn spawn_sync(&self, connection_id: String) {
        if let Err(e) = self.inner.jobs.enqueue(JobKind::Sync, &connection_id, Utc::now()).await {
            tracing::error!(connection_id = %connection_id, error = %format!("{e:#}"), "could not queue a sync");
        }
    }

    async fn refresh_one(&self, conn: &ConnectionRow) -> Result<(), ()> {
        let token = self.open(conn).map_err(|e| {
            tracing::error!(connection_id = %conn.id, error = %e, "cannot open access token");
        })?;
        match self.inner.plaid.accounts_get(&token, None).await {
            Ok(r) => {
                if let Err(e) =
                    self.inner.store.store_balances(conn, &r.accounts, BalanceTrigger::Refresh, Utc::now()).await
                {
                    tracing::error!(connection_id = %conn.id, error = %format!("{e:#}"), "storing balances failed");
                    return Err(());
                }
                self.spawn_sync(conn.id.clone()).await;
                Ok(())
            }
            Err(e) => {
                if let Some(status) = e.code().and_then(status_for) {
                    let _ = self.inner.store.set_status(&conn.id, status, Utc::now()).await;
                }
                tracing::warn!(connection_id = %conn.id, error = %e, "refresh failed");
                Err(())
            }
        }
    }
}

#[async_trait::async_trait]
impl IdentityService for PlaidIdentity {
    async fn create_link_token(
        &self,
        user_id: &str,
        device_os: Option<DeviceOs>,
        platform_item_id: Option<&str>,
    ) -> AppResult<LinkToken> {
        let (request, token) = match platform_item_id {
            Some(item_id) => {
                let conn = self
                    .inner
                    .store
                    .connection_by_item(user_id, item_id)
                    .await?
                    .ok_or_else(|| AppError::NotFound(NO_ACTIVE_CONNECTION.into()))?;
                let mut request = self.link_request(user_id, device_os, true)?;
                // Plaid told us of new accounts: let the user pick them in update mode.
                if self.inner.store.new_accounts_available(&conn.id).await? {
                    request.update = Some(serde_json::json!({"account_selection_enabled": true}));
                }
                (request, Some(self.open(&conn)?))
            }
            None => (self.link_request(user_id, device_os, false)?, None),
        };
        let r = self.inner.plaid.link_token_create(&request, token.as_ref()).await?;
        Ok(LinkToken {
            link_token: r.link_token,
            expiration: r.expiration,
            request_id: r.request_id,
            update_mode: token.is_some(),
        })
    }

    async fn complete_link(
        &self,
        user_id: &str,
        public_token: SecretString,
        platform_item_id: Option<String>,
    ) -> AppResult<CompletedLink> {
        use secrecy::ExposeSecret;
        let hash = sha256_hex(public_token.expose_secret());
        let store = &self.inner.store;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match store.claim_completion(user_id, &hash, Utc::now(), chrono::Duration::minutes(2)).await? {
                Claim::Mine => break,
                Claim::Done(json) => return serde_json::from_str(&json).map_err(AppError::internal),
                Claim::Failed(json) => {
                    let stored: StoredError = serde_json::from_str(&json).map_err(AppError::internal)?;
                    return Err(stored.into_error());
                }
                Claim::Busy if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Claim::Busy => {
                    return Err(AppError::Conflict(
                        "This public token is already being completed; call getPlaidBankAccounts to see the result."
                            .into(),
                    ));
                }
            }
        }
        // The work runs in its own task: a client that disconnects cannot cancel it halfway.
        let this = self.clone();
        let user = user_id.to_string();
        let work = self.inner.tasks.spawn(async move {
            // Keep the claim fresh while working, so it is never taken over as stale.
            let heartbeat = {
                let (store, user, hash) = (this.inner.store.clone(), user.clone(), hash.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(CLAIM_HEARTBEAT).await;
                        if let Err(e) = store.touch_completion(&user, &hash, Utc::now()).await {
                            tracing::warn!(error = %format!("{e:#}"), "could not renew a completion claim");
                        }
                    }
                })
            };
            let outcome = this.complete(&user, public_token, platform_item_id).await;
            heartbeat.abort();
            let now = Utc::now();
            let recorded = match &outcome {
                Ok(done) => match serde_json::to_string(done) {
                    Ok(json) => this.inner.store.finish_completion(&user, &hash, true, &json, now).await,
                    Err(e) => Err(e.into()),
                },
                Err(e) if transient(e) => this.inner.store.release_completion(&user, &hash).await,
                Err(e) => match serde_json::to_string(&StoredError::of(e)) {
                    Ok(json) => this.inner.store.finish_completion(&user, &hash, false, &json, now).await,
                    Err(e) => Err(e.into()),
                },
            };
            if let Err(e) = recorded {
                tracing::error!(error = %format!("{e:#}"), "could not record a link completion");
            }
            outcome
        });
        work.await.map_err(AppError::internal)?
    }

    async fn accounts(&self, user_id: &str, filter: AccountFilter) -> AppResult<Vec<BankAccount>> {
        let all = self.cached_accounts(user_id).await?;
        Ok(all
            .iter()
            .filter(|a| filter.plaid_item_id.as_ref().is_none_or(|v| *v == a.plaid_item_id))
            .filter(|a| filter.connection_id.as_ref().is_none_or(|v| *v == a.connection_id))
            .filter(|a| filter.account_id.as_ref().is_none_or(|v| *v == a.id))
            .cloned()
            .collect())
    }

    async fn balances(&self, user_id: &str, filter: AccountFilter) -> AppResult<Vec<Balance>> {
        Ok(self.inner.store.latest_balances(user_id, &filter).await?)
    }

    async fn transactions(&self, user_id: &str, filter: TransactionFilter) -> AppResult<(i64, Vec<BankTransaction>)> {
        Ok(self.inner.store.transactions(user_id, &filter).await?)
    }

    async fn refresh(&self, user_id: &str) -> AppResult<RefreshOutcome> {
        let store = &self.inner.store;
        let conns = store.connections(user_id).await?;
        let verify_of = |conns: &[ConnectionRow]| -> Vec<VerifyMember> {
            conns
                .iter()
                .filter(|c| c.status().needs_user())
                .map(|c| VerifyMember { plaid_item_id: c.plaid_item_id.clone(), connection_id: c.id.clone() })
                .collect()
        };
        if conns.is_empty() {
            return Ok(RefreshOutcome {
                status: RefreshStatus::NoConnections,
                balances: vec![],
                verify: vec![],
                retry_after_seconds: None,
            });
        }
        let interval = chrono::Duration::from_std(self.inner.config.refresh_interval).map_err(AppError::internal)?;
        if let Err(wait) = store.take_refresh_slot(user_id, Utc::now(), interval).await? {
            return Ok(RefreshOutcome {
                status: RefreshStatus::Throttled,
                balances: store.latest_balances(user_id, &AccountFilter::default()).await?,
                verify: verify_of(&conns),
                retry_after_seconds: Some(wait),
            });
        }
        let runs = conns.iter().filter(|c| !c.status().blocks_data()).map(|c| self.refresh_one(c));
        let results = futures::future::join_all(runs).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        let blocked = conns.iter().filter(|c| c.status().blocks_data()).count();
        // Statuses may have changed during the refresh.
        let conns = store.connections(user_id).await?;
        Ok(RefreshOutcome {
            status: if failed + blocked == 0 { RefreshStatus::Refreshed } else { RefreshStatus::Partial },
            balances: store.latest_balances(user_id, &AccountFilter::default()).await?,
            verify: verify_of(&conns),
            retry_after_seconds: None,
        })
    }

    async fn add_address(&self, user_id: &str, connection_id: &str, address: Address) -> AppResult<String> {
        let store = &self.inner.store;
        let conn = store.connection(user_id, connection_id, false).await?.ok_or_else(|| {
            AppError::NotFound("No active bank institution found for the provided bankInstitutionAuthId.".into())
        })?;
        Ok(store.add_address(&conn.id, user_id, &address, Utc::now()).await?)
    }

    async fn remove_connection(&self, user_id: &str, connection_id: &str, reason: RemovalReason) -> AppResult<()> {
        let store = &self.inner.store;
        let conn = store.connection(user_id, connection_id, true).await?.ok_or_else(|| {
            AppError::NotFound("No bank institution found for the provided bankInstitutionAuthId.".into())
        })?;
        if conn.removed_at.is_some() {
            return Ok(());
        }
        let token = self.open(&conn)?;
        match self.inner.plaid.item_remove(&token).await {
            Ok(_) => {}
            // Plaid no longer knows the item: nothing left to stop.
            Err(e) if e.class() == ErrorClass::ItemGone => {}
            Err(e) => return Err(e.into()),
        }
        store.mark_removed(&conn.id, reason, Utc::now()).await?;
        tracing::info!(connection_id = %conn.id, item_id = %conn.plaid_item_id, reason = reason.as_str(), "connection removed");
        Ok(())
    }

    async fn ready(&self) -> AppResult<()> {
        Ok(self.inner.store.db.ping().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accounts_cache_stays_within_its_account_budget_however_many_callers_read() {
        let cache: quick_cache::sync::Cache<String, CachedAccounts, AccountsWeight> =
            quick_cache::sync::Cache::with_weighter(ACCOUNTS_CACHE_CALLERS, ACCOUNTS_CACHE_ACCOUNTS, AccountsWeight);
        let now = std::time::Instant::now();
        for i in 0..100_000 {
            cache.insert(format!("user-{i}"), (now, 0, Arc::new(Vec::new())));
        }
        assert!(cache.weight() <= ACCOUNTS_CACHE_ACCOUNTS, "{}", cache.weight());
        assert!(cache.len() > 1000, "recent callers are still cached: {}", cache.len());
    }
}
