//! Plaid's JSON translated into the domain types the store takes, so a change in Plaid's
//! wire shapes stops here and never reaches SQL.

use crate::domain::{IncomingAccount, IncomingTransaction, SyncPage};
use crate::plaid::wire;

impl From<&wire::Account> for IncomingAccount {
    fn from(a: &wire::Account) -> Self {
        let b = &a.balances;
        IncomingAccount {
            plaid_account_id: a.account_id.clone(),
            name: a.name.clone(),
            official_name: a.official_name.clone(),
            mask: a.mask.clone(),
            account_type: a.account_type.clone(),
            subtype: a.subtype.clone(),
            available: b.available,
            current: b.current,
            limit: b.limit,
            currency_code: b.iso_currency_code.clone().or_else(|| b.unofficial_currency_code.clone()),
        }
    }
}

impl From<&wire::Transaction> for IncomingTransaction {
    fn from(t: &wire::Transaction) -> Self {
        IncomingTransaction {
            plaid_transaction_id: t.transaction_id.clone(),
            plaid_account_id: t.account_id.clone(),
            pending_transaction_id: t.pending_transaction_id.clone(),
            amount: t.amount,
            currency_code: t.iso_currency_code.clone().or_else(|| t.unofficial_currency_code.clone()),
            date: t.date,
            description: t.name.clone(),
            merchant_name: t.merchant_name.clone(),
            // Plaid's current taxonomy first; the legacy hierarchy when that is all there is.
            category: match (&t.personal_finance_category, &t.category) {
                (Some(p), _) => Some(p.primary.clone()),
                (None, Some(c)) if !c.is_empty() => Some(c.join(" > ")),
                _ => None,
            },
            pending: t.pending,
        }
    }
}

impl From<&wire::TransactionsSyncResponse> for SyncPage {
    fn from(p: &wire::TransactionsSyncResponse) -> Self {
        SyncPage {
            added: p.added.iter().map(IncomingTransaction::from).collect(),
            modified: p.modified.iter().map(IncomingTransaction::from).collect(),
            removed: p.removed.iter().map(|r| r.transaction_id.clone()).collect(),
            next_cursor: p.next_cursor.clone(),
            has_more: p.has_more,
            history_complete: matches!(
                p.transactions_update_status.as_deref(),
                None | Some("HISTORICAL_UPDATE_COMPLETE")
            ),
        }
    }
}

/// The accounts of a Plaid answer, as the store takes them.
pub(super) fn accounts(accounts: &[wire::Account]) -> Vec<IncomingAccount> {
    accounts.iter().map(IncomingAccount::from).collect()
}
