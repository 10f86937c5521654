//! An item as the emulator holds it: its accounts, balances, error, and the change log of its
//! transactions (a sync cursor is a position in it).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand_chacha::ChaCha8Rng;

use crate::emulator::data::{AccountFixture, InstitutionFixture};
use crate::emulator::errors::ApiError;
use crate::plaid::wire::{Account, Item, Transaction};

/// One entry of an item's change log; a sync cursor is a position in this log.
#[derive(Debug, Clone)]
pub enum Change {
    Added(Arc<Transaction>),
    Modified(Arc<Transaction>),
    Removed { transaction_id: String, account_id: String },
}

/// An item's transactions: the ordered log of changes and the current set it adds up to.
#[derive(Debug, Default)]
pub struct TxBook {
    pub log: Vec<Change>,
    pub current: HashMap<String, Arc<Transaction>>,
    /// Bumped on every change made after the history was first loaded; a cursor issued
    /// mid-pagination under an older generation fails with the mutation error.
    pub generation: u64,
}

impl TxBook {
    pub(super) fn add(&mut self, t: Transaction) {
        let t = Arc::new(t);
        self.current.insert(t.transaction_id.clone(), t.clone());
        self.log.push(Change::Added(t));
    }

    pub(super) fn modify(&mut self, t: Transaction) {
        let t = Arc::new(t);
        self.current.insert(t.transaction_id.clone(), t.clone());
        self.log.push(Change::Modified(t));
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Arc<Transaction>> {
        let t = self.current.remove(id)?;
        self.log.push(Change::Removed { transaction_id: t.transaction_id.clone(), account_id: t.account_id.clone() });
        Some(t)
    }

    /// The current transactions, newest first (then by id, for a stable order).
    pub fn newest_first(&self) -> Vec<Arc<Transaction>> {
        let mut all: Vec<_> = self.current.values().cloned().collect();
        all.sort_by(|a, b| b.date.cmp(&a.date).then_with(|| a.transaction_id.cmp(&b.transaction_id)));
        all
    }
}

/// One item and everything the emulator knows about it.
#[derive(Debug)]
pub struct ItemRecord {
    pub item_id: String,
    pub index: u64,
    pub institution: &'static InstitutionFixture,
    pub access_token: String,
    pub webhook: Option<String>,
    pub products: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub error: Option<ApiError>,
    pub removed: bool,
    pub consent_expiration_time: Option<DateTime<Utc>>,
    pub accounts: Vec<AccountFixture>,
    pub tx: TxBook,
    /// `/transactions/sync` has been called: sync webhooks are switched on.
    pub sync_started: bool,
    pub last_webhook: Option<(DateTime<Utc>, String)>,
    pub last_successful_update: DateTime<Utc>,
    pub last_failed_update: Option<DateTime<Utc>>,
    pub rng: ChaCha8Rng,
    /// History generated but not yet "pulled from the bank" (see `State::history_delay`).
    pub pending_history: Option<Vec<Transaction>>,
}

impl ItemRecord {
    pub fn billed_products(&self) -> Vec<String> {
        self.products.iter().filter(|p| p.as_str() != "balance").cloned().collect()
    }

    /// The Item object; `error` is filled only where Plaid fills it (`/item/get`).
    pub fn to_wire(&self, with_error: bool) -> Item {
        let billed = self.billed_products();
        Item {
            item_id: self.item_id.clone(),
            institution_id: Some(self.institution.id.to_string()),
            webhook: self.webhook.clone(),
            error: if with_error { self.error.as_ref().map(|e| (*e.body).clone()) } else { None },
            available_products: self
                .institution
                .products
                .iter()
                .filter(|p| !billed.iter().any(|b| b == *p))
                .map(|p| p.to_string())
                .collect(),
            billed_products: billed.clone(),
            products: billed,
            consent_expiration_time: self.consent_expiration_time,
            update_type: "background".into(),
        }
    }

    pub fn accounts_wire(&self) -> Vec<Account> {
        self.accounts.iter().map(|a| a.account.clone()).collect()
    }

    /// Accounts that carry transactions (what `/transactions/sync` lists).
    pub fn transaction_accounts(&self) -> Vec<Account> {
        self.accounts.iter().filter(|a| a.has_transactions).map(|a| a.account.clone()).collect()
    }

    pub fn has_product(&self, p: &str) -> bool {
        self.products.iter().any(|x| x == p)
    }

    /// Applies a transaction's effect on the balances of its account.
    pub(super) fn apply_to_balance(&mut self, t: &Transaction, posted_only: bool) {
        let Some(a) = self.accounts.iter_mut().find(|a| a.account.account_id == t.account_id) else {
            return;
        };
        let b = &mut a.account.balances;
        match a.account.account_type.as_str() {
            "credit" => {
                if !posted_only || !t.pending {
                    b.current = b.current.map(|c| c + t.amount);
                }
            }
            _ => {
                b.available = b.available.map(|v| v - t.amount);
                if !t.pending {
                    b.current = b.current.map(|c| c - t.amount);
                }
            }
        }
    }
}
