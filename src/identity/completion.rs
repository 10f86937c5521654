//! `completePlaidLink` is idempotent by its public token: the first call claims the token and
//! does the work in a task of its own (a client that disconnects cannot cancel it halfway);
//! later calls replay the stored answer or error, or wait for the one in progress.

use std::time::Duration;

use chrono::Utc;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::CompletedLink;
use super::link::transient;
use super::service::PlaidIdentity;
use super::store::Claim;
use crate::error::{AppError, AppResult, PlaidDetail};

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
        use crate::error::code;
        // What a failed completion stores is final (internal failures are retried, not
        // stored); any other code reads as the upstream failure it was.
        let final_code = [
            code::BAD_USER_INPUT,
            code::NOT_FOUND,
            code::CONFLICT,
            code::NOT_CONFIGURED,
            code::LINK_RESTART_REQUIRED,
            code::FORBIDDEN,
        ]
        .contains(&self.code.as_str());
        if self.plaid.is_some() || final_code {
            AppError::from_code(&self.code, self.message, self.plaid, None)
        } else {
            AppError::Upstream(self.message)
        }
    }
}

pub(super) fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

impl PlaidIdentity {
    /// The stored answer (or error) of a public token already decided, doing nothing else.
    pub(super) async fn replay(&self, user_id: &str, public_token: &SecretString) -> AppResult<Option<CompletedLink>> {
        use secrecy::ExposeSecret;
        let hash = sha256_hex(public_token.expose_secret());
        match self.inner.store.decided_completion(user_id, &hash).await? {
            Some(Claim::Done(json)) => Ok(Some(serde_json::from_str(&json).map_err(AppError::internal)?)),
            Some(Claim::Failed(json)) => {
                let stored: StoredError = serde_json::from_str(&json).map_err(AppError::internal)?;
                Err(stored.into_error())
            }
            _ => Ok(None),
        }
    }

    /// Completes a Link session once per public token (see the module's comment).
    pub(super) async fn complete_once(
        &self,
        user_id: &str,
        public_token: SecretString,
        platform_item_id: Option<String>,
    ) -> AppResult<CompletedLink> {
        use secrecy::ExposeSecret;
        let hash = sha256_hex(public_token.expose_secret());
        let store = &self.inner.store;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let (heartbeat, stale) = (self.inner.schedule.completion_heartbeat, self.inner.schedule.completion_stale);
        let stale = chrono::Duration::from_std(stale).map_err(AppError::internal)?;
        loop {
            match store.claim_completion(user_id, &hash, Utc::now(), stale).await? {
                Claim::Mine | Claim::TakenOver { exchanged_item: None } => break,
                Claim::TakenOver { exchanged_item: Some(item) } => {
                    return self.resume_spent(user_id, &hash, &item).await;
                }
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
        let work = self.inner.tasks.spawn(
            async move {
                // Keep the claim fresh while working, so it is never taken over as stale.
                // Aborted when dropped: also when `complete` panics, so a dead completion's
                // claim is never kept fresh.
                let heartbeat = {
                    let (store, user, hash) = (this.inner.store.clone(), user.clone(), hash.clone());
                    tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(heartbeat).await;
                            if let Err(e) = store.touch_completion(&user, &hash, Utc::now()).await {
                                tracing::warn!(error = %format!("{e:#}"), "could not renew a completion claim");
                            }
                        }
                    }))
                };
                let outcome = this.complete(&user, public_token, platform_item_id).await;
                drop(heartbeat);
                this.record(&user, &hash, &outcome).await;
                outcome
            }
            // Its log lines name the request that started it (request id, trace), even after the
            // request is gone.
            .instrument(tracing::Span::current()),
        );
        work.await.map_err(AppError::internal)?
    }

    /// A retry took over the claim of a completion that died after exchanging its public
    /// token for `item_id`. The token is spent: if no connection holds the item (it waits for
    /// its pending removal), the user must run Link again; if the dead attempt
    /// stored the connection, its answer is that connection. Either answer is recorded, so
    /// every later retry agrees.
    async fn resume_spent(&self, user_id: &str, hash: &str, item_id: &str) -> AppResult<CompletedLink> {
        let store = &self.inner.store;
        tracing::warn!(item_id = %item_id, "took over the claim of a completion that died after the exchange");
        // A connection holding the item keeps it from its pending removal (the removal job
        // checks), so only an item nobody holds is lost to this token.
        let held = matches!(store.connection_by_plaid_item(item_id).await?, Some(c) if c.user_id == user_id);
        let outcome = if held {
            self.complete(user_id, SecretString::from(String::new()), Some(item_id.into())).await
        } else {
            Err(super::link::restart_link())
        };
        self.record(user_id, hash, &outcome).await;
        outcome
    }

    /// Records a claimed completion's outcome: its answer, or its final error; a transient
    /// error releases the claim so the same token may be tried again.
    async fn record(&self, user_id: &str, hash: &str, outcome: &AppResult<CompletedLink>) {
        let (store, now) = (&self.inner.store, Utc::now());
        let recorded = match outcome {
            Ok(done) => match serde_json::to_string(done) {
                Ok(json) => store.finish_completion(user_id, hash, true, &json, now).await,
                Err(e) => Err(e.into()),
            },
            Err(e) if transient(e) => store.release_completion(user_id, hash).await,
            Err(e) => match serde_json::to_string(&StoredError::of(e)) {
                Ok(json) => store.finish_completion(user_id, hash, false, &json, now).await,
                Err(e) => Err(e.into()),
            },
        };
        if let Err(e) = recorded {
            tracing::error!(error = %format!("{e:#}"), "could not record a link completion");
        }
    }
}
