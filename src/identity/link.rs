//! Linking: Link tokens (new and update mode), and what happens once Link hands back a
//! public token: a new connection, a relink of an existing one, or the repair of a duplicate.

use chrono::Utc;
use secrecy::SecretString;

use super::items::CLEANUP_AFTER;
use super::service::PlaidIdentity;
use super::store::NewConnection;
use super::{AccountSummary, CompletedLink, DeviceOs, LinkToken, NO_ACTIVE_CONNECTION, incoming};
use crate::domain::{Address, BalanceTrigger, ConnectionStatus, IncomingAccount};
use crate::error::{AppError, AppResult, PlaidDetail};
use crate::plaid::ErrorClass;
use crate::plaid::wire::{self, LinkTokenCreateRequest, LinkTokenUser};

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

/// The answer once the public token is spent and the link could not be stored.
pub(super) fn restart_link() -> AppError {
    AppError::LinkRestart(
        "Linking this bank did not finish, and the connection made at the bank was undone. The public token is \
         used up: run Plaid Link again to connect this bank."
            .into(),
    )
}

/// Errors worth a retry with the same public token: nothing was decided.
pub(super) fn transient(e: &AppError) -> bool {
    matches!(e, AppError::Upstream(_) | AppError::Internal(_) | AppError::RateLimited { .. })
}

impl PlaidIdentity {
    /// A Link token for a new link, or for update mode on the caller's connection.
    pub(super) async fn link_token(
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
                (request, Some(self.open_token(&conn)?))
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

    fn link_request(
        &self,
        user_id: &str,
        device_os: Option<DeviceOs>,
        update: bool,
    ) -> AppResult<LinkTokenCreateRequest> {
        let cfg = &self.inner.link;
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

    /// The completion itself, claimed and recorded by `completion.rs`.
    pub(super) async fn complete(
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
        let token = self.open_token(&conn)?;
        let item = match self.inner.plaid.item_get(&token).await {
            Ok(item) => item,
            Err(e) => {
                self.apply_call_error(&conn.id, &e, Utc::now()).await?;
                return Err(e.into());
            }
        };
        if let Some(err) = item.item.error {
            self.apply_item_error(&conn.id, &err, Utc::now()).await?;
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
        let usable = incoming::accounts(&usable);
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
        self.queue_sync(&conn.id).await;
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
        let hash = super::completion::sha256_hex(secrecy::ExposeSecret::expose_secret(&public_token));
        if let Err(e) = store.note_exchanged_item(user_id, &hash, &item_id).await {
            tracing::warn!(item_id = %item_id, error = %format!("{e:#}"), "could not note the exchanged item on its completion");
        }
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

    /// Stores what a new exchange brought: a new connection, or the repair of the caller's
    /// connection to the same accounts (the same login linked again).
    async fn store_new_item(&self, user_id: &str, token: &SecretString, item_id: &str) -> AppResult<CompletedLink> {
        let (plaid, store, cfg) = (&self.inner.plaid, &self.inner.store, &self.inner.link);
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
        let usable = incoming::accounts(&usable);
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
            let old_token = self.open_token(&old)?;
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
            self.queue_sync(&old.id).await;
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
        self.queue_sync(&connection_id).await;
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
        accounts: &[IncomingAccount],
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
}
