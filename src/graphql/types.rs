//! The contract's output types and enums. Enums that mirror a domain or identity enum are
//! async-graphql remote enums: the conversions both ways are derived, so a new variant on one
//! side fails to compile until the other has it.

use async_graphql::{Enum, ID, SimpleObject};
use rust_decimal::Decimal;

use super::scalars::DateTime;
use crate::domain;
use crate::identity;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::identity::DeviceOs")]
pub enum DeviceOs {
    Ios,
    Android,
    Web,
}

/// Whether a Link token starts a new link or repairs an existing one (update mode).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum PlaidLinkMode {
    Create,
    Update,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::ConnectionStatus")]
pub enum PlaidConnectionStatus {
    Active,
    LoginRequired,
    PendingExpiration,
    PendingDisconnect,
    Revoked,
    Error,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::BalanceSource")]
pub enum BalanceSource {
    PlaidCached,
    PlaidRealtime,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::BalanceTrigger")]
pub enum BalanceTrigger {
    Link,
    Relink,
    Refresh,
    Webhook,
    Scheduled,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::identity::RefreshStatus")]
pub enum RefreshStatus {
    Refreshed,
    Partial,
    Throttled,
    NoConnections,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TransactionStatus {
    Pending,
    Posted,
}

/// `DEBIT` is money out of the account, `CREDIT` money in.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TransactionType {
    Debit,
    Credit,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::RemovalReason")]
pub enum RemovalReason {
    UserRequested,
    Duplicate,
    AccountClosed,
    FraudSuspected,
    Other,
}

#[derive(SimpleObject, Debug)]
pub struct PlaidLinkToken {
    pub link_token: String,
    pub expiration: DateTime,
    pub request_id: String,
    pub mode: PlaidLinkMode,
}

#[derive(SimpleObject, Debug)]
pub struct PlaidBankAccountSummary {
    pub bank_institution_auth_id: ID,
    pub bank_account_id: ID,
    pub bank_name: String,
    pub last_four: Option<String>,
    #[graphql(name = "type")]
    pub account_type: String,
    pub subtype: Option<String>,
}

#[derive(SimpleObject, Debug)]
pub struct CompletePlaidLinkPayload {
    pub requires_address: bool,
    pub bank_account_id: Option<ID>,
    pub bank_institution_auth_id: Option<ID>,
    pub newly_linked_bank_institution_auth_id: Option<ID>,
    pub bank_institution_name: Option<String>,
    pub platform_item_id: Option<String>,
    pub bank_accounts: Vec<PlaidBankAccountSummary>,
}

impl From<identity::CompletedLink> for CompletePlaidLinkPayload {
    fn from(c: identity::CompletedLink) -> Self {
        CompletePlaidLinkPayload {
            requires_address: c.requires_address,
            bank_account_id: c.primary_account_id.map(ID),
            bank_institution_auth_id: Some(ID(c.connection_id)),
            newly_linked_bank_institution_auth_id: c.newly_linked_connection_id.map(ID),
            bank_institution_name: Some(c.institution_name),
            platform_item_id: Some(c.plaid_item_id),
            bank_accounts: c
                .accounts
                .into_iter()
                .map(|a| PlaidBankAccountSummary {
                    bank_institution_auth_id: ID(a.connection_id),
                    bank_account_id: ID(a.account_id),
                    bank_name: a.bank_name,
                    last_four: a.last_four,
                    account_type: a.account_type,
                    subtype: a.subtype,
                })
                .collect(),
        }
    }
}

#[derive(SimpleObject, Debug)]
pub struct PlaidBankAccount {
    pub platform_item_id: String,
    pub bank_institution_auth_id: ID,
    pub bank_institution_name: String,
    pub bank_account_id: ID,
    /// The account's name at the bank or as the user labelled it.
    pub account_name: Option<String>,
    pub last_four: Option<String>,
    #[graphql(name = "type")]
    pub account_type: String,
    pub subtype: Option<String>,
    pub status: PlaidConnectionStatus,
}

impl From<domain::BankAccount> for PlaidBankAccount {
    fn from(a: domain::BankAccount) -> Self {
        PlaidBankAccount {
            platform_item_id: a.plaid_item_id,
            bank_institution_auth_id: ID(a.connection_id),
            bank_institution_name: a.institution_name,
            bank_account_id: ID(a.id),
            account_name: a.name,
            last_four: a.mask,
            account_type: a.account_type,
            subtype: a.subtype,
            status: a.status.into(),
        }
    }
}

#[derive(SimpleObject, Debug)]
pub struct PlaidBankBalance {
    pub platform_item_id: String,
    pub bank_institution_auth_id: ID,
    pub bank_account_id: ID,
    /// The available balance.
    pub amount: Option<Decimal>,
    pub current: Option<Decimal>,
    pub currency_code: Option<String>,
    pub source: BalanceSource,
    pub trigger: BalanceTrigger,
    pub started_at: DateTime,
}

impl From<domain::Balance> for PlaidBankBalance {
    fn from(b: domain::Balance) -> Self {
        PlaidBankBalance {
            platform_item_id: b.plaid_item_id,
            bank_institution_auth_id: ID(b.connection_id),
            bank_account_id: ID(b.account_id),
            amount: b.available,
            current: b.current,
            currency_code: b.currency_code,
            source: b.source.into(),
            trigger: b.trigger.into(),
            started_at: DateTime(b.started_at),
        }
    }
}

#[derive(SimpleObject, Debug)]
pub struct PlaidRefreshBalance {
    pub bank_account_id: ID,
    pub amount: Option<Decimal>,
    pub current: Option<Decimal>,
}

#[derive(SimpleObject, Debug)]
pub struct PlaidVerifyMember {
    pub platform_item_id: String,
    pub bank_institution_auth_id: ID,
}

#[derive(SimpleObject, Debug)]
pub struct RefreshPlaidBankConnectionsPayload {
    pub status: RefreshStatus,
    pub balances: Vec<PlaidRefreshBalance>,
    pub verify_members: Vec<PlaidVerifyMember>,
}

#[derive(SimpleObject, Debug)]
pub struct PlaidBankTransaction {
    /// Stable across pending → posted: one purchase, one id.
    pub historical_bank_transaction_id: ID,
    pub platform_item_id: String,
    pub bank_institution_auth_id: ID,
    pub bank_account_id: ID,
    /// Plaid's current transaction id (it changes when a pending transaction posts).
    pub transaction_id: String,
    pub transaction_status: TransactionStatus,
    pub transaction_type: TransactionType,
    pub transaction_date: DateTime,
    /// The amount, always positive; `transactionType` says which way the money went.
    pub amount: Decimal,
    pub currency_code: Option<String>,
    pub description: Option<String>,
    pub merchant_name: Option<String>,
    pub category: Option<String>,
    pub pending: bool,
}

impl From<domain::BankTransaction> for PlaidBankTransaction {
    fn from(t: domain::BankTransaction) -> Self {
        PlaidBankTransaction {
            historical_bank_transaction_id: ID(t.id),
            platform_item_id: t.plaid_item_id,
            bank_institution_auth_id: ID(t.connection_id),
            bank_account_id: ID(t.account_id),
            transaction_id: t.plaid_transaction_id,
            transaction_status: if t.pending { TransactionStatus::Pending } else { TransactionStatus::Posted },
            transaction_type: if t.amount.is_sign_negative() {
                TransactionType::Credit
            } else {
                TransactionType::Debit
            },
            transaction_date: DateTime(t.date),
            amount: t.amount.abs(),
            currency_code: t.currency_code,
            description: t.description,
            merchant_name: t.merchant_name,
            category: t.category,
            pending: t.pending,
        }
    }
}

#[derive(SimpleObject, Debug)]
pub struct PlaidBankTransactionPage {
    pub total_count: i32,
    pub transactions: Vec<PlaidBankTransaction>,
}

#[derive(SimpleObject, Debug)]
pub struct CreatePlaidLinkAddressPayload {
    pub address_id: ID,
}

#[derive(SimpleObject, Debug)]
pub struct RemovePlaidBankInstitutionPayload {
    pub removed: bool,
    pub bank_institution_auth_id: ID,
}
