//! The identity service's storage: the only place with SQL for identity data, one set of
//! statements for SQLite and PostgreSQL (their differences are `db::Dialect`). It speaks domain
//! types, never Plaid's JSON. Every read is scoped to a user; every multi-statement write runs
//! in one transaction.

mod completions;
mod connections;
mod custody;
mod events;
mod reads;
mod rows;
mod sync_page;
mod webhook_events;
mod webhook_keys;

use chrono::{DateTime, Utc};

use crate::db::Db;
use crate::domain::{Address, IncomingAccount};
use crate::identity::crypto::Sealed;

pub use events::EventLog;
pub use rows::{AccountRow, ConnectionRow, LiveConnection};
pub use sync_page::SyncCounts;
pub use webhook_events::{NewWebhookEvent, Received};

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Filters shared by the account and balance reads.
#[derive(Debug, Clone, Default)]
pub struct AccountFilter {
    pub plaid_item_id: Option<String>,
    pub connection_id: Option<String>,
    pub account_id: Option<String>,
}

/// Filters of the transaction read.
#[derive(Debug, Clone, Default)]
pub struct TransactionFilter {
    pub accounts: AccountFilter,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub pending: Option<bool>,
    pub limit: i64,
    pub offset: i64,
    /// Keyset: only rows after this one in the page order (its `transaction_date` and id).
    pub after: Option<(DateTime<Utc>, String)>,
}

/// A page of transactions: the rows, whether more follow, and the whole filtered set's size.
#[derive(Debug, Clone, Default)]
pub struct TransactionPage {
    pub total: i64,
    pub transactions: Vec<crate::domain::BankTransaction>,
    pub has_next: bool,
}

/// What a new link writes.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub user_id: String,
    pub plaid_item_id: String,
    pub institution_id: Option<String>,
    pub institution_name: String,
    pub sealed: Sealed,
    pub accounts: Vec<IncomingAccount>,
    pub address: Option<Address>,
}

/// The outcome of a claim on a public token (idempotency of `completePlaidLink`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours to process.
    Mine,
    /// Ours, taken over from a completion whose claim was no longer renewed (its process
    /// died), with the item it had exchanged its public token for, if it got that far.
    TakenOver { exchanged_item: Option<String> },
    /// Another request is processing it.
    Busy,
    /// Already done: the stored result.
    Done(String),
    /// Already failed: the stored error.
    Failed(String),
}

/// A builder of `where` clauses with `$n` placeholders, for reads whose filters vary.
struct Where {
    clauses: Vec<String>,
    args: Vec<Option<String>>,
}

impl Where {
    fn new(user_id: &str) -> Self {
        Where { clauses: vec![], args: vec![] }.text("a.user_id", user_id)
    }

    fn text(mut self, column: &str, value: &str) -> Self {
        self.args.push(Some(value.to_string()));
        self.clauses.push(format!("{column} = ${}", self.args.len()));
        self
    }

    fn opt(self, column: &str, value: &Option<String>) -> Self {
        match value {
            Some(v) => self.text(column, v),
            None => self,
        }
    }

    fn raw(mut self, clause: &str) -> Self {
        self.clauses.push(clause.to_string());
        self
    }

    /// `(a, b) < ($n, $n+1)`: row values, which both backends compare in order.
    fn before(mut self, columns: (&str, &str), values: (String, String)) -> Self {
        self.args.push(Some(values.0));
        self.args.push(Some(values.1));
        let n = self.args.len();
        self.clauses.push(format!("({}, {}) < (${}, ${})", columns.0, columns.1, n - 1, n));
        self
    }

    fn cmp(mut self, column: &str, op: &str, value: String) -> Self {
        self.args.push(Some(value));
        self.clauses.push(format!("{column} {op} ${}", self.args.len()));
        self
    }

    fn sql(&self) -> String {
        self.clauses.join(" and ")
    }

    fn accounts(self, f: &AccountFilter) -> Self {
        self.opt("c.plaid_item_id", &f.plaid_item_id).opt("c.id", &f.connection_id).opt("a.id", &f.account_id)
    }
}

/// The identity service's SQL.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    /// Bumped by every write in this process that changes what `accounts` returns; read
    /// caches compare it to know they are stale.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Notified after every commit of this process that wrote connection events.
    events_signal: std::sync::Arc<tokio::sync::Notify>,
    /// Concurrent account reads, coalesced (see [`crate::batch`]).
    accounts_batch: std::sync::Arc<AccountReads>,
}

/// Account reads by user id, coalesced into statements.
type AccountReads = crate::batch::Batcher<String, (), std::sync::Arc<Vec<crate::domain::BankAccount>>>;

/// Account-read statements running at once at most; reads arriving while they all run queue
/// for the next one. Two keep both of this machine's cores busy without splitting the queue
/// into many small statements.
const ACCOUNT_READS_IN_FLIGHT: usize = 2;

/// Callers one account-read statement answers at most.
const ACCOUNT_READ_CALLERS: usize = 64;

impl Store {
    pub fn new(db: Db) -> Self {
        let reader = db.clone();
        let accounts_batch = crate::batch::Batcher::new(
            ACCOUNT_READS_IN_FLIGHT,
            ACCOUNT_READ_CALLERS,
            std::sync::Arc::new(move |users, _| {
                let db = reader.clone();
                Box::pin(async move { Store::accounts_of(&db, users).await })
            }),
        );
        Store { db, generation: Default::default(), events_signal: Default::default(), accounts_batch }
    }

    /// The write generation of this process (see [`Store::generation`]'s field).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.db.ping().await
    }
}
