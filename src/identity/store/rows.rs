//! How rows decode: `FromRow` types, and small column types for what both backends store as
//! text (timestamps, money) or as an integer flag.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::any::{AnyTypeInfo, AnyValueRef};
use sqlx::error::BoxDynError;
use sqlx::{Any, Decode, Type};

use crate::db::parse_ts;
use crate::domain::{
    Balance, BalanceSource, BalanceTrigger, BankAccount, BankTransaction, ConnectionEvent, ConnectionStatus, EventType,
};
use crate::identity::crypto::Sealed;

/// A stored timestamp (`db::ts` text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ts(pub DateTime<Utc>);

impl Type<Any> for Ts {
    fn type_info() -> AnyTypeInfo {
        <String as Type<Any>>::type_info()
    }
    fn compatible(ty: &AnyTypeInfo) -> bool {
        <String as Type<Any>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Any> for Ts {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        // Borrowed: no copy of the text.
        let s = <&str as Decode<Any>>::decode(value)?;
        Ok(Ts(parse_ts(s)?))
    }
}

/// `Type` and `Decode` of a column type for the typed backends of the hot reads (`db::hot`):
/// the column is read as `$via` (its `Type` as `$as`: `str` for borrowed text) and converted
/// with `$convert`.
macro_rules! typed_decode {
    ($ty:ty, $as:ty, $via:ty, $convert:expr) => {
        typed_decode!(@one $ty, $as, $via, $convert, sqlx::Postgres);
        typed_decode!(@one $ty, $as, $via, $convert, sqlx::Sqlite);
    };
    (@one $ty:ty, $as:ty, $via:ty, $convert:expr, $db:ty) => {
        impl Type<$db> for $ty {
            fn type_info() -> <$db as sqlx::Database>::TypeInfo {
                <$as as Type<$db>>::type_info()
            }
            fn compatible(ty: &<$db as sqlx::Database>::TypeInfo) -> bool {
                <$as as Type<$db>>::compatible(ty)
            }
        }

        impl<'r> Decode<'r, $db> for $ty {
            fn decode(value: <$db as sqlx::Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let convert: fn($via) -> Result<$ty, BoxDynError> = $convert;
                convert(<$via as Decode<'r, $db>>::decode(value)?)
            }
        }
    };
}

typed_decode!(Ts, str, &'r str, |s| Ok(Ts(parse_ts(s)?)));
typed_decode!(Money, str, &'r str, Money::parse);
typed_decode!(Flag, i64, i64, |n| Ok(Flag(n != 0)));

/// A stored amount of money: decimal text, never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money(pub Decimal);

impl Type<Any> for Money {
    fn type_info() -> AnyTypeInfo {
        <String as Type<Any>>::type_info()
    }
    fn compatible(ty: &AnyTypeInfo) -> bool {
        <String as Type<Any>>::compatible(ty)
    }
}

impl Money {
    fn parse(s: &str) -> Result<Money, BoxDynError> {
        Ok(Money(Decimal::from_str(s).map_err(|e| format!("stored amount {s:?} is malformed: {e}"))?))
    }
}

impl<'r> Decode<'r, Any> for Money {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        Money::parse(<&str as Decode<Any>>::decode(value)?)
    }
}

/// A boolean selected as `cast(case when … then 1 else 0 end as bigint)`: the one spelling
/// both backends return through the `Any` driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

impl Type<Any> for Flag {
    fn type_info() -> AnyTypeInfo {
        <i64 as Type<Any>>::type_info()
    }
    fn compatible(ty: &AnyTypeInfo) -> bool {
        <i64 as Type<Any>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Any> for Flag {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Flag(<i64 as Decode<Any>>::decode(value)? != 0))
    }
}

/// A connection as stored, with its sealed token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectionRow {
    pub id: String,
    pub user_id: String,
    pub plaid_item_id: String,
    pub institution_id: Option<String>,
    pub institution_name: String,
    pub access_token_sealed: String,
    pub access_token_key_id: String,
    pub status: String,
    pub transactions_cursor: Option<String>,
    pub removed_at: Option<Ts>,
    /// Set once the first sync brought the whole history.
    pub history_ready_at: Option<Ts>,
}

impl ConnectionRow {
    pub fn sealed(&self) -> Sealed {
        Sealed { key_id: self.access_token_key_id.clone(), blob: self.access_token_sealed.clone() }
    }

    pub fn status(&self) -> ConnectionStatus {
        ConnectionStatus::parse(&self.status).unwrap_or(ConnectionStatus::Error)
    }
}

pub(super) const CONNECTION_COLUMNS: &str = "id, user_id, plaid_item_id, institution_id, institution_name, \
     access_token_sealed, access_token_key_id, status, transactions_cursor, removed_at, history_ready_at";

/// An account as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub id: String,
    pub connection_id: String,
    pub plaid_account_id: String,
    pub name: Option<String>,
    pub mask: Option<String>,
    pub account_type: String,
    pub subtype: Option<String>,
}

/// A connection with when it was last synced and checked with Plaid.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveConnection {
    #[sqlx(flatten)]
    pub row: ConnectionRow,
    #[sqlx(rename = "transactions_synced_at")]
    pub synced_at: Option<Ts>,
    #[sqlx(rename = "item_checked_at")]
    pub checked_at: Option<Ts>,
}

/// An exchanged item waiting to be stored or removed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct PendingItem {
    pub plaid_item_id: String,
    pub user_id: String,
    pub access_token_sealed: String,
    pub access_token_key_id: String,
}

impl PendingItem {
    pub fn sealed(&self) -> Sealed {
        Sealed { key_id: self.access_token_key_id.clone(), blob: self.access_token_sealed.clone() }
    }
}

/// A row of the account read.
#[derive(sqlx::FromRow)]
pub(super) struct AccountRead {
    pub(super) user_id: String,
    id: String,
    connection_id: String,
    plaid_item_id: String,
    institution_name: String,
    plaid_account_id: String,
    name: Option<String>,
    mask: Option<String>,
    account_type: String,
    subtype: Option<String>,
    status: String,
    history_ready_at: Option<Ts>,
    transactions_synced_at: Option<Ts>,
}

impl From<AccountRead> for BankAccount {
    fn from(r: AccountRead) -> Self {
        BankAccount {
            status: ConnectionStatus::parse(&r.status).unwrap_or(ConnectionStatus::Error),
            id: r.id,
            connection_id: r.connection_id,
            plaid_item_id: r.plaid_item_id,
            institution_name: r.institution_name,
            plaid_account_id: r.plaid_account_id,
            name: r.name,
            mask: r.mask,
            account_type: r.account_type,
            subtype: r.subtype,
            history_ready: r.history_ready_at.is_some(),
            last_synced_at: r.transactions_synced_at.map(|t| t.0),
        }
    }
}

/// A stored connection event.
#[derive(sqlx::FromRow)]
pub(super) struct EventRead {
    seq: i64,
    user_seq: i64,
    user_id: String,
    connection_id: String,
    plaid_item_id: String,
    event_type: String,
    status: Option<String>,
    transactions: Option<i64>,
    added: Option<i64>,
    modified: Option<i64>,
    removed: Option<i64>,
    occurred_at: Ts,
}

impl TryFrom<EventRead> for ConnectionEvent {
    type Error = anyhow::Error;

    fn try_from(r: EventRead) -> anyhow::Result<Self> {
        let event_type = EventType::parse(&r.event_type)
            .ok_or_else(|| anyhow::anyhow!("stored event {} has an unknown type {:?}", r.seq, r.event_type))?;
        let status = match r.status.as_deref() {
            None => None,
            Some(s) => Some(
                ConnectionStatus::parse(s)
                    .ok_or_else(|| anyhow::anyhow!("stored event {} has an unknown status {s:?}", r.seq))?,
            ),
        };
        Ok(ConnectionEvent {
            seq: r.seq,
            user_seq: r.user_seq,
            user_id: r.user_id,
            connection_id: r.connection_id,
            plaid_item_id: r.plaid_item_id,
            event_type,
            occurred_at: r.occurred_at.0,
            status,
            transactions: r.transactions,
            added: r.added,
            modified: r.modified,
            removed: r.removed,
        })
    }
}

/// A row of the latest-balance read.
#[derive(sqlx::FromRow)]
pub(super) struct BalanceRead {
    pub account_id: String,
    connection_id: String,
    plaid_item_id: String,
    available: Option<Money>,
    current_balance: Option<Money>,
    currency_code: Option<String>,
    source: String,
    balance_trigger: String,
    started_at: Ts,
}

impl From<BalanceRead> for Balance {
    fn from(r: BalanceRead) -> Self {
        Balance {
            account_id: r.account_id,
            connection_id: r.connection_id,
            plaid_item_id: r.plaid_item_id,
            available: r.available.map(|m| m.0),
            current: r.current_balance.map(|m| m.0),
            currency_code: r.currency_code,
            source: BalanceSource::parse(&r.source).unwrap_or(BalanceSource::PlaidCached),
            trigger: BalanceTrigger::parse(&r.balance_trigger).unwrap_or(BalanceTrigger::Refresh),
            started_at: r.started_at.0,
        }
    }
}

/// A row of a transaction page.
#[derive(sqlx::FromRow)]
pub(super) struct TransactionRead {
    id: String,
    plaid_item_id: String,
    connection_id: String,
    account_id: String,
    plaid_transaction_id: String,
    amount: Money,
    currency_code: Option<String>,
    transaction_date: Ts,
    description: Option<String>,
    merchant_name: Option<String>,
    category: Option<String>,
    pending: Flag,
}

impl From<TransactionRead> for BankTransaction {
    fn from(r: TransactionRead) -> Self {
        BankTransaction {
            id: r.id,
            plaid_item_id: r.plaid_item_id,
            connection_id: r.connection_id,
            account_id: r.account_id,
            plaid_transaction_id: r.plaid_transaction_id,
            amount: r.amount.0,
            currency_code: r.currency_code,
            date: r.transaction_date.0,
            description: r.description,
            merchant_name: r.merchant_name,
            category: r.category,
            pending: r.pending.0,
        }
    }
}
