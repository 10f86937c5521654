//! The read cache of account lists: by caller, bounded by the accounts it holds, stale as
//! soon as a write in this process lands (the store's generation) or `READ_CACHE_SECONDS`
//! pass.

use std::sync::Arc;
use std::time::Instant;

use super::service::PlaidIdentity;
use crate::domain::BankAccount;
use crate::error::AppResult;

/// A caller's account list as read at an instant, under a store generation.
type CachedAccounts = (Instant, u64, Arc<Vec<BankAccount>>);

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

pub(super) struct AccountsCache(quick_cache::sync::Cache<String, CachedAccounts, AccountsWeight>);

impl AccountsCache {
    pub(super) fn new() -> Self {
        AccountsCache(quick_cache::sync::Cache::with_weighter(
            ACCOUNTS_CACHE_CALLERS,
            ACCOUNTS_CACHE_ACCOUNTS,
            AccountsWeight,
        ))
    }
}

impl PlaidIdentity {
    /// The caller's account list, from memory while it is fresh: no write in this process
    /// since it was read, and younger than `read_cache`.
    pub(super) async fn cached_accounts(&self, user_id: &str) -> AppResult<Arc<Vec<BankAccount>>> {
        let ttl = self.inner.schedule.read_cache;
        let cache = &self.inner.accounts_cache.0;
        // Read before the database, so a write that lands meanwhile makes this entry stale.
        let generation = self.inner.store.generation();
        if !ttl.is_zero()
            && let Some((at, g, v)) = cache.get(user_id)
            && g == generation
            && at.elapsed() < ttl
        {
            return Ok(v);
        }
        let fresh = self.inner.store.accounts(user_id).await?;
        if !ttl.is_zero() {
            cache.insert(user_id.to_string(), (Instant::now(), generation, fresh.clone()));
        }
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accounts_cache_stays_within_its_account_budget_however_many_callers_read() {
        let cache = AccountsCache::new().0;
        let now = Instant::now();
        for i in 0..100_000 {
            cache.insert(format!("user-{i}"), (now, 0, Arc::new(Vec::new())));
        }
        assert!(cache.weight() <= ACCOUNTS_CACHE_ACCOUNTS, "{}", cache.weight());
        assert!(cache.len() > 1000, "recent callers are still cached: {}", cache.len());
    }
}
