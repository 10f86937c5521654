//! What clients read from an item's change log: `/transactions/sync` pages, and simulated new
//! activity (new, posted, modified and removed transactions).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::seq::IndexedRandom;
use serde::Serialize;
use serde_json::json;

use super::{Change, Cursor, State};
use crate::emulator::data::{self, TransactionFactory};
use crate::emulator::errors::ApiError;
use crate::plaid::wire::{RemovedTransaction, Transaction};

/// One page of `/transactions/sync`.
#[derive(Debug)]
pub struct SyncPage {
    pub added: Vec<Transaction>,
    pub modified: Vec<Transaction>,
    pub removed: Vec<RemovedTransaction>,
    pub next_cursor: String,
    pub has_more: bool,
    /// False while the item's history is not available yet.
    pub ready: bool,
}

/// How new activity is simulated on an item.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Advance {
    /// New transactions dated today (half of them pending).
    #[serde(default = "three")]
    pub new: usize,
    /// Post every pending transaction: its id is removed and a posted copy is added with
    /// `pending_transaction_id` pointing at it.
    #[serde(default = "yes")]
    pub post_pending: bool,
    /// Recategorise this many posted transactions.
    #[serde(default)]
    pub modify: usize,
    /// Remove this many posted transactions.
    #[serde(default)]
    pub remove: usize,
    /// Send the webhooks Plaid would send.
    #[serde(default = "yes")]
    pub webhooks: bool,
}

fn three() -> usize {
    3
}
fn yes() -> bool {
    true
}

impl Default for Advance {
    fn default() -> Self {
        Advance { new: 3, post_pending: true, modify: 0, remove: 0, webhooks: true }
    }
}

/// What an [`Advance`] changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AdvanceSummary {
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub removed: Vec<String>,
}

impl State {
    /// One page of `/transactions/sync` from `cursor`.
    pub fn sync_page(&mut self, item_id: &str, cursor: Option<&str>, count: usize) -> Result<SyncPage, ApiError> {
        let item = self.items.get_mut(item_id).ok_or_else(|| ApiError::code("ITEM_NOT_FOUND"))?;
        if item.pending_history.is_some() {
            // Not ready yet: no transactions and an empty cursor; the webhook comes when ready.
            item.sync_started = true;
            return Ok(SyncPage {
                added: vec![],
                modified: vec![],
                removed: vec![],
                next_cursor: String::new(),
                has_more: false,
                ready: false,
            });
        }
        let start = match cursor.filter(|c| !c.is_empty()) {
            None => 0,
            Some("now") => item.tx.log.len(),
            Some(c) => {
                let c = Cursor::decode(c)
                    .filter(|c| c.item_index == item.index && c.pos <= item.tx.log.len())
                    .ok_or_else(|| ApiError::invalid_field("cursor is not a valid cursor for this item"))?;
                if c.paging && c.generation != item.tx.generation {
                    return Err(ApiError::code("TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"));
                }
                c.pos
            }
        };
        let first_sync = !item.sync_started;
        item.sync_started = true;
        let end = (start + count).min(item.tx.log.len());
        let (mut added, mut modified, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        for change in &item.tx.log[start..end] {
            match change {
                Change::Added(t) => added.push((**t).clone()),
                Change::Modified(t) => modified.push((**t).clone()),
                Change::Removed { transaction_id, account_id } => removed.push(RemovedTransaction {
                    transaction_id: transaction_id.clone(),
                    account_id: Some(account_id.clone()),
                }),
            }
        }
        let has_more = end < item.tx.log.len();
        let next = Cursor { item_index: item.index, pos: end, generation: item.tx.generation, paging: has_more };
        if first_sync {
            // Plaid switches sync webhooks on with the first call; the history is ready at once.
            let id = item.item_id.clone();
            self.queue(
                &id,
                "TRANSACTIONS",
                "SYNC_UPDATES_AVAILABLE",
                json!({"initial_update_complete": true, "historical_update_complete": true}),
            );
        }
        Ok(SyncPage { added, modified, removed, next_cursor: next.encode(), has_more, ready: true })
    }

    /// Simulates new activity at the bank on one item.
    pub fn advance(&mut self, item_id: &str, spec: &Advance, now: DateTime<Utc>) -> Result<AdvanceSummary, ApiError> {
        let today = now.date_naive();
        let item = self.items.get_mut(item_id).ok_or_else(|| ApiError::code("ITEM_NOT_FOUND"))?;
        let mut summary = AdvanceSummary::default();
        let mut rng = item.rng.clone();
        if spec.post_pending {
            let mut pending: Vec<Arc<Transaction>> = item.tx.current.values().filter(|t| t.pending).cloned().collect();
            pending.sort_by(|a, b| a.transaction_id.cmp(&b.transaction_id));
            for p in pending {
                item.tx.remove(&p.transaction_id);
                let mut posted = (*p).clone();
                posted.transaction_id = data::plaid_id(&mut rng);
                posted.pending = false;
                posted.pending_transaction_id = Some(p.transaction_id.clone());
                posted.authorized_date = Some(p.date);
                posted.date = today.max(p.date);
                // Restaurants settle with the tip added.
                if posted.category.as_ref().is_some_and(|c| c.iter().any(|s| s == "Restaurants")) {
                    posted.amount = (posted.amount * rust_decimal::Decimal::new(118, 2)).round_dp(2);
                }
                item.apply_to_balance(&posted, true);
                summary.removed.push(p.transaction_id.clone());
                summary.added.push(posted.transaction_id.clone());
                item.tx.add(posted);
            }
        }
        if spec.modify > 0 || spec.remove > 0 {
            let mut posted: Vec<String> =
                item.tx.current.values().filter(|t| !t.pending).map(|t| t.transaction_id.clone()).collect();
            posted.sort();
            let chosen: Vec<String> = posted.choose_multiple(&mut rng, spec.modify + spec.remove).cloned().collect();
            let (to_modify, to_remove) = chosen.split_at(spec.modify.min(chosen.len()));
            for id in to_modify {
                if let Some(t) = item.tx.current.get(id) {
                    let mut t = (**t).clone();
                    t.category = Some(vec!["Shops".into(), "Discount Stores".into()]);
                    t.category_id = Some("19017000".into());
                    t.personal_finance_category = Some(crate::plaid::wire::PersonalFinanceCategory {
                        primary: "GENERAL_MERCHANDISE".into(),
                        detailed: "GENERAL_MERCHANDISE_DISCOUNT_STORES".into(),
                        confidence_level: None,
                    });
                    summary.modified.push(t.transaction_id.clone());
                    item.tx.modify(t);
                }
            }
            for id in to_remove {
                if item.tx.remove(id).is_some() {
                    summary.removed.push(id.clone());
                }
            }
        }
        let factory = TransactionFactory::new(&item.accounts);
        let mut fresh = Vec::new();
        for i in 0..spec.new {
            if let Some(t) = factory.make(&mut rng, today, i % 2 == 0) {
                fresh.push(t);
            }
        }
        for t in fresh {
            item.apply_to_balance(&t, false);
            summary.added.push(t.transaction_id.clone());
            item.tx.add(t);
        }
        item.rng = rng;
        let changed = !(summary.added.is_empty() && summary.modified.is_empty() && summary.removed.is_empty());
        if changed {
            item.tx.generation += 1;
            item.last_successful_update = now;
        }
        let sync_started = item.sync_started;
        if spec.webhooks && changed {
            if sync_started {
                self.queue(
                    item_id,
                    "TRANSACTIONS",
                    "SYNC_UPDATES_AVAILABLE",
                    json!({"initial_update_complete": true, "historical_update_complete": true}),
                );
            }
            if !summary.added.is_empty() {
                self.queue(
                    item_id,
                    "TRANSACTIONS",
                    "DEFAULT_UPDATE",
                    json!({"error": null, "new_transactions": summary.added.len()}),
                );
            }
            if !summary.removed.is_empty() {
                self.queue(
                    item_id,
                    "TRANSACTIONS",
                    "TRANSACTIONS_REMOVED",
                    json!({"error": null, "removed_transactions": summary.removed}),
                );
            }
        }
        Ok(summary)
    }
}
