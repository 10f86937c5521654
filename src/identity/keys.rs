//! Key rotation: a start-up check that every stored token can be opened, and the job that
//! re-seals tokens sealed under an older key.

use chrono::Utc;

use super::service::PlaidIdentity;
use crate::jobs::JobKind;

impl PlaidIdentity {
    /// Fails when a stored access token was sealed under a key id this process has no key
    /// for, or when the key it has for that id does not open one of its tokens (the id was
    /// kept while the key changed): either way refresh, relink and removal would fail. Queues
    /// a re-seal when tokens are sealed under an older key.
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
        // One token per key id is tried: a key either opens every token sealed under its id
        // or none (tokens differ only in their nonce and bound user and item).
        let mut unopened = Vec::new();
        for (id, n) in &ids {
            if let Some((user_id, item_id, sealed)) = self.inner.store.a_token_sealed_under(id).await?
                && self.inner.cipher.open(&sealed, &user_id, &item_id).is_err()
            {
                unopened.push(format!("{id} ({n} tokens)"));
            }
        }
        if !unopened.is_empty() {
            return Err(crate::config::ConfigError(format!(
                "stored access tokens sealed under the key id(s) {} cannot be opened with the key configured under \
                 that id: a key id was kept while its key changed. Put the key that sealed them in \
                 TOKEN_ENCRYPTION_PREVIOUS_KEYS as id:base64key, and give a new key a new TOKEN_ENCRYPTION_KEY_ID",
                unopened.join(", ")
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
}
