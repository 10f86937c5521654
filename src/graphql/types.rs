//! The contract's output types and enums. Enums that mirror a domain or identity enum are
//! async-graphql remote enums: the conversions both ways are derived, so a new variant on one
//! side fails to compile until the other has it.

use super::flat::{FlatList, FlatObject, value};
use super::scalars::{DateTime, Money};
use crate::domain;
use crate::identity;
use async_graphql::{Enum, ID, SimpleObject};

/// The platform a Link session runs on: it decides the OAuth redirect option.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::identity::DeviceOs")]
pub enum DeviceOs {
    /// iOS: adds the OAuth redirect URI.
    Ios,
    /// Android: adds the Android package name.
    Android,
    /// The web: adds the OAuth redirect URI.
    Web,
}

/// Whether a Link token starts a new link or repairs an existing one (update mode).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum PlaidLinkMode {
    /// A new link.
    Create,
    /// Update mode: repairs an existing connection (relink).
    Update,
}

/// A connection's health, decided by the server from Plaid, never by a client.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::ConnectionStatus")]
pub enum PlaidConnectionStatus {
    /// Working.
    Active,
    /// The user must log in again through Link update mode.
    LoginRequired,
    /// Consent expires soon; relink before it does.
    PendingExpiration,
    /// The institution will disconnect the item soon; relink.
    PendingDisconnect,
    /// Gone at Plaid or revoked by the user: only a new link replaces it.
    Revoked,
    /// Plaid reports an item error bankgraph does not know; look at the logs.
    Error,
}

/// Where a stored balance came from.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::BalanceSource")]
pub enum BalanceSource {
    /// Plaid's cached balance (`/accounts/get`).
    PlaidCached,
    /// A realtime balance from the bank.
    PlaidRealtime,
}

/// What made bankgraph store a balance.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::BalanceTrigger")]
pub enum BalanceTrigger {
    /// A new link.
    Link,
    /// A relink.
    Relink,
    /// `refreshPlaidBankConnections`.
    Refresh,
    /// A Plaid webhook.
    Webhook,
    /// Scheduled work.
    Scheduled,
}

/// How a `refreshPlaidBankConnections` went.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::identity::RefreshStatus")]
pub enum RefreshStatus {
    /// Every connection was refreshed.
    Refreshed,
    /// Some connections could not be refreshed (see `verifyMembers`).
    Partial,
    /// Refreshed too recently: the stored balances are returned.
    Throttled,
    /// The caller has no connections.
    NoConnections,
}

/// Whether a transaction has posted.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TransactionStatus {
    /// Not posted yet.
    Pending,
    /// Posted.
    Posted,
}

/// `DEBIT` is money out of the account, `CREDIT` money in.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TransactionType {
    /// Money out of the account.
    Debit,
    /// Money into the account.
    Credit,
}

/// Why a connection was removed.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::RemovalReason")]
pub enum RemovalReason {
    /// The user asked.
    UserRequested,
    /// A duplicate connection.
    Duplicate,
    /// The account was closed.
    AccountClosed,
    /// Suspected fraud.
    FraudSuspected,
    /// Another reason.
    Other,
}

/// A Link token, to open Plaid Link with.
#[derive(SimpleObject, Debug)]
pub struct PlaidLinkToken {
    /// The token to open Plaid Link with. Short-lived; single use.
    pub link_token: String,
    /// When the link token expires.
    pub expiration: DateTime,
    /// Plaid's request id, to quote to Plaid support.
    pub request_id: String,
    /// `CREATE` for a new link, `UPDATE` for a relink of an existing connection.
    pub mode: PlaidLinkMode,
}

/// One account of a completed link.
#[derive(SimpleObject, Debug)]
pub struct PlaidBankAccountSummary {
    /// The linked connection (ours; it survives a repair onto a new Plaid item).
    pub bank_institution_auth_id: ID,
    /// The bank account (ours; stable across relinks).
    pub bank_account_id: ID,
    /// The institution's name.
    pub bank_name: String,
    /// The last digits of the account number, as the bank shows them.
    pub last_four: Option<String>,
    /// Plaid's account type (`depository`, `credit`, `loan`, `investment`, …).
    #[graphql(name = "type")]
    pub account_type: String,
    /// Plaid's account subtype (`checking`, `savings`, `credit card`, …).
    pub subtype: Option<String>,
}

/// What `completePlaidLink` stored.
#[derive(SimpleObject, Debug)]
pub struct CompletePlaidLinkPayload {
    /// True when no postal address is known for the connection yet: attach one with `createPlaidLinkAddress`.
    pub requires_address: bool,
    /// The primary account: the first depository checking account, else the first account.
    pub bank_account_id: Option<ID>,
    /// The connection that was linked or repaired.
    pub bank_institution_auth_id: Option<ID>,
    /// Set when a new connection was created; null when an existing one was repaired (a relink, or the same login linked again).
    pub newly_linked_bank_institution_auth_id: Option<ID>,
    /// The institution's name.
    pub bank_institution_name: Option<String>,
    /// Plaid's `item_id` of the connection.
    pub platform_item_id: Option<String>,
    /// The connection's usable accounts.
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

/// A linked bank account, with its connection's facts.
#[derive(SimpleObject, Debug)]
pub struct PlaidBankAccount {
    /// Plaid's `item_id` of the connection (a safe public identifier).
    pub platform_item_id: String,
    /// The linked connection (ours; it survives a repair onto a new Plaid item).
    pub bank_institution_auth_id: ID,
    /// The institution's name, as Plaid reports it.
    pub bank_institution_name: String,
    /// The bank account (ours; stable across relinks).
    pub bank_account_id: ID,
    /// The account's name at the bank or as the user labelled it.
    pub account_name: Option<String>,
    /// The last digits of the account number, as the bank shows them.
    pub last_four: Option<String>,
    /// Plaid's account type (`depository`, `credit`, `loan`, `investment`, …).
    #[graphql(name = "type")]
    pub account_type: String,
    /// Plaid's account subtype (`checking`, `savings`, `credit card`, …).
    pub subtype: Option<String>,
    /// The connection's health, decided by the server from Plaid.
    pub status: PlaidConnectionStatus,
    /// Whether the connection's transaction history has arrived: SYNCING until its first sync
    /// has brought the whole history (`totalCount` still grows meanwhile), then READY.
    pub history_status: PlaidHistoryStatus,
    /// When the connection's transactions were last brought up to date with Plaid (null before
    /// the first sync).
    pub last_synced_at: Option<DateTime>,
}

/// Whether a connection's transaction history has arrived.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum PlaidHistoryStatus {
    /// The first sync is still bringing the history: transaction reads are incomplete.
    Syncing,
    /// The whole history is stored; later changes arrive as TRANSACTIONS_UPDATED events.
    Ready,
}

/// What happened to a connection.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::EventType")]
pub enum PlaidConnectionEventType {
    /// The connection was linked (completePlaidLink created it).
    Linked,
    /// The first sync stored more of the history; `transactionCount` says how much so far.
    HistorySyncProgress,
    /// The first sync finished: the whole history is stored (`transactionCount` transactions).
    HistoryReady,
    /// A later sync changed transactions (`addedCount`, `modifiedCount`, `removedCount`).
    TransactionsUpdated,
    /// New balances were stored.
    BalancesUpdated,
    /// The connection's status changed to `status` (LOGIN_REQUIRED: send the user through relink).
    StatusChanged,
    /// The connection was removed.
    Removed,
}

/// One change to one of the caller's connections.
#[derive(SimpleObject, Debug)]
pub struct PlaidConnectionEvent {
    /// Opaque and ordered among the caller's own events (it counts those only): pass the last
    /// one received as `after` when subscribing again, to get every event missed in between.
    pub event_id: ID,
    /// What happened.
    #[graphql(name = "type")]
    pub event_type: PlaidConnectionEventType,
    /// When the change was stored.
    pub occurred_at: DateTime,
    /// Plaid's `item_id` of the connection when the event occurred.
    pub platform_item_id: String,
    /// The connection (ours; it survives a repair onto a new Plaid item).
    pub bank_institution_auth_id: ID,
    /// STATUS_CHANGED: the connection's new status.
    pub status: Option<PlaidConnectionStatus>,
    /// HISTORY_SYNC_PROGRESS and HISTORY_READY: the connection's transactions stored so far.
    pub transaction_count: Option<i32>,
    /// TRANSACTIONS_UPDATED: transactions added by the sync.
    pub added_count: Option<i32>,
    /// TRANSACTIONS_UPDATED: transactions modified by the sync.
    pub modified_count: Option<i32>,
    /// TRANSACTIONS_UPDATED: transactions removed by the sync.
    pub removed_count: Option<i32>,
}

fn count(n: Option<i64>) -> Option<i32> {
    n.map(|n| i32::try_from(n).unwrap_or(i32::MAX))
}

impl From<&domain::ConnectionEvent> for PlaidConnectionEvent {
    fn from(e: &domain::ConnectionEvent) -> Self {
        PlaidConnectionEvent {
            event_id: ID(domain::event_id(e.user_seq)),
            event_type: e.event_type.into(),
            occurred_at: DateTime(e.occurred_at),
            platform_item_id: e.plaid_item_id.clone(),
            bank_institution_auth_id: ID(e.connection_id.clone()),
            status: e.status.map(Into::into),
            transaction_count: count(e.transactions),
            added_count: count(e.added),
            modified_count: count(e.modified),
            removed_count: count(e.removed),
        }
    }
}

impl FlatObject for PlaidBankAccount {
    fn field(&self, name: &str) -> Option<async_graphql::Value> {
        match name {
            "platformItemId" => value(&self.platform_item_id),
            "bankInstitutionAuthId" => value(&self.bank_institution_auth_id),
            "bankInstitutionName" => value(&self.bank_institution_name),
            "bankAccountId" => value(&self.bank_account_id),
            "accountName" => value(&self.account_name),
            "lastFour" => value(&self.last_four),
            "type" => value(&self.account_type),
            "subtype" => value(&self.subtype),
            "status" => value(&self.status),
            "historyStatus" => value(&self.history_status),
            "lastSyncedAt" => value(&self.last_synced_at),
            _ => None,
        }
    }
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
            history_status: if a.history_ready { PlaidHistoryStatus::Ready } else { PlaidHistoryStatus::Syncing },
            last_synced_at: a.last_synced_at.map(DateTime),
        }
    }
}

/// The latest stored balance of an account.
#[derive(SimpleObject, Debug)]
pub struct PlaidBankBalance {
    /// Plaid's `item_id` of the connection (a safe public identifier).
    pub platform_item_id: String,
    /// The linked connection (ours; it survives a repair onto a new Plaid item).
    pub bank_institution_auth_id: ID,
    /// The bank account (ours; stable across relinks).
    pub bank_account_id: ID,
    /// The available balance.
    pub amount: Option<Money>,
    /// The current (ledger) balance.
    pub current: Option<Money>,
    /// ISO 4217 currency code (or Plaid's unofficial code for currencies without one).
    pub currency_code: Option<String>,
    /// Where the balance came from.
    pub source: BalanceSource,
    /// What made bankgraph store this balance.
    pub trigger: BalanceTrigger,
    /// When this balance was stored.
    pub started_at: DateTime,
}

impl FlatObject for PlaidBankBalance {
    fn field(&self, name: &str) -> Option<async_graphql::Value> {
        match name {
            "platformItemId" => value(&self.platform_item_id),
            "bankInstitutionAuthId" => value(&self.bank_institution_auth_id),
            "bankAccountId" => value(&self.bank_account_id),
            "amount" => value(&self.amount),
            "current" => value(&self.current),
            "currencyCode" => value(&self.currency_code),
            "source" => value(&self.source),
            "trigger" => value(&self.trigger),
            "startedAt" => value(&self.started_at),
            _ => None,
        }
    }
}

impl From<domain::Balance> for PlaidBankBalance {
    fn from(b: domain::Balance) -> Self {
        PlaidBankBalance {
            platform_item_id: b.plaid_item_id,
            bank_institution_auth_id: ID(b.connection_id),
            bank_account_id: ID(b.account_id),
            amount: b.available.map(Money),
            current: b.current.map(Money),
            currency_code: b.currency_code,
            source: b.source.into(),
            trigger: b.trigger.into(),
            started_at: DateTime(b.started_at),
        }
    }
}

/// An account's balance after a refresh.
#[derive(SimpleObject, Debug)]
pub struct PlaidRefreshBalance {
    /// The bank account (ours; stable across relinks).
    pub bank_account_id: ID,
    /// The available balance.
    pub amount: Option<Money>,
    /// The current (ledger) balance.
    pub current: Option<Money>,
}

/// A connection that needs the user to relink.
#[derive(SimpleObject, Debug)]
pub struct PlaidVerifyMember {
    /// Plaid's `item_id`: pass it to `createPlaidLinkToken` to relink.
    pub platform_item_id: String,
    /// The linked connection (ours; it survives a repair onto a new Plaid item).
    pub bank_institution_auth_id: ID,
}

/// What `refreshPlaidBankConnections` did.
#[derive(SimpleObject, Debug)]
pub struct RefreshPlaidBankConnectionsPayload {
    /// How the refresh went.
    pub status: RefreshStatus,
    /// The latest stored balance of each of the caller's accounts.
    pub balances: Vec<PlaidRefreshBalance>,
    /// Exactly the connections that need the user to relink.
    pub verify_members: Vec<PlaidVerifyMember>,
    /// The same balances as full `PlaidBankBalance` objects, so a normalised cache (keyed by
    /// `bankAccountId`) updates the balances it holds.
    pub bank_balances: Vec<PlaidBankBalance>,
}

/// A stored transaction. One purchase is one transaction, from pending to posted.
#[derive(SimpleObject, Debug)]
pub struct PlaidBankTransaction {
    /// Stable across pending → posted: one purchase, one id.
    pub historical_bank_transaction_id: ID,
    /// Plaid's `item_id` of the connection (a safe public identifier).
    pub platform_item_id: String,
    /// The linked connection (ours; it survives a repair onto a new Plaid item).
    pub bank_institution_auth_id: ID,
    /// The bank account (ours; stable across relinks).
    pub bank_account_id: ID,
    /// Plaid's current transaction id (it changes when a pending transaction posts).
    pub transaction_id: String,
    /// `PENDING` or `POSTED`.
    pub transaction_status: TransactionStatus,
    /// `DEBIT` (money out) or `CREDIT` (money in).
    pub transaction_type: TransactionType,
    /// Midnight UTC of the transaction's calendar day (west of UTC it reads as the day before:
    /// use `date` to show the day).
    pub transaction_date: DateTime,
    /// The transaction's calendar day as the bank reports it, `YYYY-MM-DD` (no time zone).
    pub date: String,
    /// The amount, always positive; `transactionType` says which way the money went.
    pub amount: Money,
    /// ISO 4217 currency code (or Plaid's unofficial code for currencies without one).
    pub currency_code: Option<String>,
    /// The description the bank gives.
    pub description: Option<String>,
    /// The merchant, when Plaid recognises one.
    pub merchant_name: Option<String>,
    /// Plaid's primary personal-finance category.
    pub category: Option<String>,
    /// True while the transaction has not posted.
    pub pending: bool,
}

impl FlatObject for PlaidBankTransaction {
    fn field(&self, name: &str) -> Option<async_graphql::Value> {
        match name {
            "historicalBankTransactionId" => value(&self.historical_bank_transaction_id),
            "platformItemId" => value(&self.platform_item_id),
            "bankInstitutionAuthId" => value(&self.bank_institution_auth_id),
            "bankAccountId" => value(&self.bank_account_id),
            "transactionId" => value(&self.transaction_id),
            "transactionStatus" => value(&self.transaction_status),
            "transactionType" => value(&self.transaction_type),
            "transactionDate" => value(&self.transaction_date),
            "date" => value(&self.date),
            "amount" => value(&self.amount),
            "currencyCode" => value(&self.currency_code),
            "description" => value(&self.description),
            "merchantName" => value(&self.merchant_name),
            "category" => value(&self.category),
            "pending" => value(&self.pending),
            _ => None,
        }
    }
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
            date: t.date.format("%Y-%m-%d").to_string(),
            amount: Money(t.amount.abs()),
            currency_code: t.currency_code,
            description: t.description,
            merchant_name: t.merchant_name,
            category: t.category,
            pending: t.pending,
        }
    }
}

/// Where a page ends.
#[derive(SimpleObject, Debug)]
pub struct PageInfo {
    /// The cursor of the page's last transaction: pass it as `paginate.after` for the next.
    pub end_cursor: Option<String>,
    /// Whether more transactions follow this page.
    pub has_next_page: bool,
}

/// A page of transactions and the size of the whole filtered set.
#[derive(SimpleObject, Debug)]
pub struct PlaidBankTransactionPage {
    /// How many transactions the whole filtered set holds (not just this page).
    pub total_count: i32,
    /// This page, newest first.
    pub transactions: FlatList<PlaidBankTransaction>,
    /// Where this page ends, for keyset paging.
    pub page_info: PageInfo,
}

/// The stored address.
#[derive(SimpleObject, Debug)]
pub struct CreatePlaidLinkAddressPayload {
    /// The stored address.
    pub address_id: ID,
}

/// The removed connection.
#[derive(SimpleObject, Debug)]
pub struct RemovePlaidBankInstitutionPayload {
    /// Always true: the connection is removed (calling again is fine).
    pub removed: bool,
    /// The removed connection.
    pub bank_institution_auth_id: ID,
    /// The connection's accounts, all hidden now: evict them (`PlaidBankAccount:{bankAccountId}`,
    /// and their balances) from a normalised cache.
    pub removed_bank_account_ids: Vec<ID>,
}
