//! The contract's messages to and from the domain. Money crosses as decimal strings, times as
//! `google.protobuf.Timestamp`, statuses as their stored spelling. What arrives is checked: an
//! amount that is not a decimal, a time out of range or a status this build does not know is an
//! error, never a default.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::pb;
use crate::domain::{
    Address, Balance, BalanceSource, BalanceTrigger, BankAccount, BankTransaction, ConnectionEvent, ConnectionStatus,
    EventType, RemovalReason,
};
use crate::error::{AppError, AppResult};
use crate::identity::{
    AccountFilter, AccountSummary, CompletedLink, DeviceOs, LinkToken, RefreshOutcome, RefreshStatus,
    TransactionFilter, TransactionPage, VerifyMember,
};

fn bad(what: impl std::fmt::Display) -> AppError {
    AppError::internal(anyhow::anyhow!("identity RPC: {what}"))
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

pub fn time(t: Option<prost_types::Timestamp>, field: &str) -> AppResult<DateTime<Utc>> {
    let t = t.ok_or_else(|| bad(format!("{field} is missing")))?;
    u32::try_from(t.nanos)
        .ok()
        .and_then(|n| DateTime::from_timestamp(t.seconds, n))
        .ok_or_else(|| bad(format!("{field} is out of range")))
}

fn optional_time(t: Option<prost_types::Timestamp>, field: &str) -> AppResult<Option<DateTime<Utc>>> {
    t.map(|t| time(Some(t), field)).transpose()
}

fn decimal(s: &str, field: &str) -> AppResult<Decimal> {
    s.parse::<Decimal>().map_err(|_| bad(format!("{field} is not a decimal")))
}

fn optional_decimal(s: Option<String>, field: &str) -> AppResult<Option<Decimal>> {
    s.map(|s| decimal(&s, field)).transpose()
}

fn parsed<T>(s: &str, parse: fn(&str) -> Option<T>, field: &str) -> AppResult<T> {
    parse(s).ok_or_else(|| bad(format!("{field} {s:?} is not known to this build")))
}

pub fn device_os(os: Option<DeviceOs>) -> pb::DeviceOs {
    match os {
        None => pb::DeviceOs::Unspecified,
        Some(DeviceOs::Ios) => pb::DeviceOs::Ios,
        Some(DeviceOs::Android) => pb::DeviceOs::Android,
        Some(DeviceOs::Web) => pb::DeviceOs::Web,
    }
}

pub fn from_device_os(os: i32) -> AppResult<Option<DeviceOs>> {
    match pb::DeviceOs::try_from(os) {
        Ok(pb::DeviceOs::Unspecified) => Ok(None),
        Ok(pb::DeviceOs::Ios) => Ok(Some(DeviceOs::Ios)),
        Ok(pb::DeviceOs::Android) => Ok(Some(DeviceOs::Android)),
        Ok(pb::DeviceOs::Web) => Ok(Some(DeviceOs::Web)),
        Err(_) => Err(AppError::BadInput(format!("Unknown device OS {os}."))),
    }
}

pub fn link_token(t: LinkToken) -> pb::LinkToken {
    pb::LinkToken {
        link_token: t.link_token,
        expiration: Some(timestamp(t.expiration)),
        request_id: t.request_id,
        update_mode: t.update_mode,
    }
}

pub fn from_link_token(t: pb::LinkToken) -> AppResult<LinkToken> {
    Ok(LinkToken {
        expiration: time(t.expiration, "expiration")?,
        link_token: t.link_token,
        request_id: t.request_id,
        update_mode: t.update_mode,
    })
}

pub fn completed(c: CompletedLink) -> pb::CompletedLink {
    pb::CompletedLink {
        requires_address: c.requires_address,
        primary_account_id: c.primary_account_id,
        connection_id: c.connection_id,
        newly_linked_connection_id: c.newly_linked_connection_id,
        institution_name: c.institution_name,
        plaid_item_id: c.plaid_item_id,
        accounts: c
            .accounts
            .into_iter()
            .map(|a| pb::AccountSummary {
                connection_id: a.connection_id,
                account_id: a.account_id,
                bank_name: a.bank_name,
                last_four: a.last_four,
                account_type: a.account_type,
                subtype: a.subtype,
            })
            .collect(),
    }
}

pub fn from_completed(c: pb::CompletedLink) -> CompletedLink {
    CompletedLink {
        requires_address: c.requires_address,
        primary_account_id: c.primary_account_id,
        connection_id: c.connection_id,
        newly_linked_connection_id: c.newly_linked_connection_id,
        institution_name: c.institution_name,
        plaid_item_id: c.plaid_item_id,
        accounts: c
            .accounts
            .into_iter()
            .map(|a| AccountSummary {
                connection_id: a.connection_id,
                account_id: a.account_id,
                bank_name: a.bank_name,
                last_four: a.last_four,
                account_type: a.account_type,
                subtype: a.subtype,
            })
            .collect(),
    }
}

pub fn filter(f: AccountFilter) -> pb::AccountFilter {
    pb::AccountFilter { plaid_item_id: f.plaid_item_id, connection_id: f.connection_id, account_id: f.account_id }
}

pub fn from_filter(f: Option<pb::AccountFilter>) -> AccountFilter {
    let f = f.unwrap_or_default();
    AccountFilter { plaid_item_id: f.plaid_item_id, connection_id: f.connection_id, account_id: f.account_id }
}

pub fn account(a: BankAccount) -> pb::BankAccount {
    pb::BankAccount {
        id: a.id,
        connection_id: a.connection_id,
        plaid_item_id: a.plaid_item_id,
        institution_name: a.institution_name,
        plaid_account_id: a.plaid_account_id,
        name: a.name,
        mask: a.mask,
        account_type: a.account_type,
        subtype: a.subtype,
        status: a.status.as_str().to_string(),
        history_ready: a.history_ready,
        last_synced_at: a.last_synced_at.map(timestamp),
    }
}

pub fn from_account(a: pb::BankAccount) -> AppResult<BankAccount> {
    Ok(BankAccount {
        status: parsed(&a.status, ConnectionStatus::parse, "status")?,
        history_ready: a.history_ready,
        last_synced_at: optional_time(a.last_synced_at, "last_synced_at")?,
        id: a.id,
        connection_id: a.connection_id,
        plaid_item_id: a.plaid_item_id,
        institution_name: a.institution_name,
        plaid_account_id: a.plaid_account_id,
        name: a.name,
        mask: a.mask,
        account_type: a.account_type,
        subtype: a.subtype,
    })
}

pub fn event(e: &ConnectionEvent) -> pb::ConnectionEvent {
    pb::ConnectionEvent {
        seq: e.seq,
        user_seq: e.user_seq,
        connection_id: e.connection_id.clone(),
        plaid_item_id: e.plaid_item_id.clone(),
        event_type: e.event_type.as_str().to_string(),
        occurred_at: Some(timestamp(e.occurred_at)),
        status: e.status.map(|s| s.as_str().to_string()),
        transactions: e.transactions,
        added: e.added,
        modified: e.modified,
        removed: e.removed,
    }
}

/// An event of `user_id`'s stream (the stream is the user's; the message does not repeat it).
pub fn from_event(e: pb::ConnectionEvent, user_id: &str) -> AppResult<ConnectionEvent> {
    Ok(ConnectionEvent {
        seq: e.seq,
        user_seq: e.user_seq,
        user_id: user_id.to_string(),
        event_type: parsed(&e.event_type, EventType::parse, "event_type")?,
        occurred_at: time(e.occurred_at, "occurred_at")?,
        status: e.status.map(|s| parsed(&s, ConnectionStatus::parse, "status")).transpose()?,
        connection_id: e.connection_id,
        plaid_item_id: e.plaid_item_id,
        transactions: e.transactions,
        added: e.added,
        modified: e.modified,
        removed: e.removed,
    })
}

pub fn balance(b: Balance) -> pb::Balance {
    pb::Balance {
        account_id: b.account_id,
        connection_id: b.connection_id,
        plaid_item_id: b.plaid_item_id,
        available: b.available.map(|d| d.to_string()),
        current: b.current.map(|d| d.to_string()),
        currency_code: b.currency_code,
        source: b.source.as_str().to_string(),
        trigger: b.trigger.as_str().to_string(),
        started_at: Some(timestamp(b.started_at)),
    }
}

pub fn from_balance(b: pb::Balance) -> AppResult<Balance> {
    Ok(Balance {
        available: optional_decimal(b.available, "available")?,
        current: optional_decimal(b.current, "current")?,
        source: parsed(&b.source, BalanceSource::parse, "source")?,
        trigger: parsed(&b.trigger, BalanceTrigger::parse, "trigger")?,
        started_at: time(b.started_at, "started_at")?,
        account_id: b.account_id,
        connection_id: b.connection_id,
        plaid_item_id: b.plaid_item_id,
        currency_code: b.currency_code,
    })
}

pub fn transactions_request(user_id: &str, f: TransactionFilter) -> pb::ListTransactionsRequest {
    pb::ListTransactionsRequest {
        user_id: user_id.to_string(),
        accounts: Some(filter(f.accounts)),
        start: f.start.map(timestamp),
        end: f.end.map(timestamp),
        pending: f.pending,
        limit: f.limit,
        offset: f.offset,
        after: f.after.map(|(date, id)| pb::TransactionKey { date: Some(timestamp(date)), id }),
    }
}

pub fn from_transactions_request(r: pb::ListTransactionsRequest) -> AppResult<TransactionFilter> {
    Ok(TransactionFilter {
        accounts: from_filter(r.accounts),
        start: optional_time(r.start, "start")?,
        end: optional_time(r.end, "end")?,
        pending: r.pending,
        limit: r.limit,
        offset: r.offset,
        after: r.after.map(|k| Ok::<_, AppError>((time(k.date, "after.date")?, k.id))).transpose()?,
    })
}

pub fn page(p: TransactionPage) -> pb::TransactionPage {
    pb::TransactionPage {
        total: p.total,
        has_next: p.has_next,
        transactions: p
            .transactions
            .into_iter()
            .map(|t| pb::BankTransaction {
                id: t.id,
                plaid_item_id: t.plaid_item_id,
                connection_id: t.connection_id,
                account_id: t.account_id,
                plaid_transaction_id: t.plaid_transaction_id,
                amount: t.amount.to_string(),
                currency_code: t.currency_code,
                date: Some(timestamp(t.date)),
                description: t.description,
                merchant_name: t.merchant_name,
                category: t.category,
                pending: t.pending,
            })
            .collect(),
    }
}

pub fn from_page(p: pb::TransactionPage) -> AppResult<TransactionPage> {
    Ok(TransactionPage {
        total: p.total,
        has_next: p.has_next,
        transactions: p
            .transactions
            .into_iter()
            .map(|t| {
                Ok(BankTransaction {
                    amount: decimal(&t.amount, "amount")?,
                    date: time(t.date, "date")?,
                    id: t.id,
                    plaid_item_id: t.plaid_item_id,
                    connection_id: t.connection_id,
                    account_id: t.account_id,
                    plaid_transaction_id: t.plaid_transaction_id,
                    currency_code: t.currency_code,
                    description: t.description,
                    merchant_name: t.merchant_name,
                    category: t.category,
                    pending: t.pending,
                })
            })
            .collect::<AppResult<_>>()?,
    })
}

pub fn refresh(o: RefreshOutcome) -> pb::RefreshOutcome {
    let status = match o.status {
        RefreshStatus::Refreshed => pb::RefreshStatus::Refreshed,
        RefreshStatus::Partial => pb::RefreshStatus::Partial,
        RefreshStatus::Throttled => pb::RefreshStatus::Throttled,
        RefreshStatus::NoConnections => pb::RefreshStatus::NoConnections,
    };
    pb::RefreshOutcome {
        status: status as i32,
        balances: o.balances.into_iter().map(balance).collect(),
        verify: o
            .verify
            .into_iter()
            .map(|v| pb::VerifyMember { plaid_item_id: v.plaid_item_id, connection_id: v.connection_id })
            .collect(),
        retry_after_seconds: o.retry_after_seconds,
    }
}

pub fn from_refresh(o: pb::RefreshOutcome) -> AppResult<RefreshOutcome> {
    let status = match pb::RefreshStatus::try_from(o.status) {
        Ok(pb::RefreshStatus::Refreshed) => RefreshStatus::Refreshed,
        Ok(pb::RefreshStatus::Partial) => RefreshStatus::Partial,
        Ok(pb::RefreshStatus::Throttled) => RefreshStatus::Throttled,
        Ok(pb::RefreshStatus::NoConnections) => RefreshStatus::NoConnections,
        _ => return Err(bad(format!("refresh status {} is not known to this build", o.status))),
    };
    Ok(RefreshOutcome {
        status,
        balances: o.balances.into_iter().map(from_balance).collect::<AppResult<_>>()?,
        verify: o
            .verify
            .into_iter()
            .map(|v| VerifyMember { plaid_item_id: v.plaid_item_id, connection_id: v.connection_id })
            .collect(),
        retry_after_seconds: o.retry_after_seconds,
    })
}

pub fn address(a: Address) -> pb::Address {
    pb::Address {
        line1: a.line1,
        line2: a.line2,
        city: a.city,
        state: a.state,
        postal_code: a.postal_code,
        country: a.country,
    }
}

pub fn from_address(a: Option<pb::Address>) -> AppResult<Address> {
    let a = a.ok_or_else(|| AppError::BadInput("An address is required.".into()))?;
    Ok(Address {
        line1: a.line1,
        line2: a.line2,
        city: a.city,
        state: a.state,
        postal_code: a.postal_code,
        country: a.country,
    })
}

pub fn from_reason(s: &str) -> AppResult<RemovalReason> {
    RemovalReason::parse(s).ok_or_else(|| AppError::BadInput(format!("Unknown removal reason {s:?}.")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn money_and_times_cross_exactly() {
        let at = Utc.with_ymd_and_hms(2026, 11, 30, 23, 59, 58).unwrap() + chrono::Duration::nanoseconds(123_456_789);
        let b = Balance {
            account_id: "a".into(),
            connection_id: "c".into(),
            plaid_item_id: "i".into(),
            available: Some(dec("1234567890.12")),
            current: Some(dec("-0.10")),
            currency_code: Some("USD".into()),
            source: BalanceSource::PlaidRealtime,
            trigger: BalanceTrigger::Refresh,
            started_at: at,
        };
        let back = from_balance(balance(b.clone())).unwrap();
        assert_eq!(back.available, b.available);
        assert_eq!(back.current.unwrap().to_string(), "-0.10", "the scale is kept");
        assert_eq!(back.started_at, at);
        assert_eq!(back.source, b.source);
        assert_eq!(back.trigger, b.trigger);
    }

    #[test]
    fn what_does_not_parse_is_an_error_not_a_default() {
        let mut b = balance(Balance {
            account_id: "a".into(),
            connection_id: "c".into(),
            plaid_item_id: "i".into(),
            available: None,
            current: None,
            currency_code: None,
            source: BalanceSource::PlaidCached,
            trigger: BalanceTrigger::Link,
            started_at: Utc::now(),
        });
        b.current = Some("1,5".into());
        assert!(from_balance(b.clone()).is_err());
        b.current = None;
        b.source = "SOMETHING_NEW".into();
        assert!(from_balance(b.clone()).is_err());
        b.source = "PLAID_CACHED".into();
        b.started_at = None;
        assert!(from_balance(b).is_err());
        assert!(time(Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }), "t").is_err());
        assert!(time(Some(prost_types::Timestamp { seconds: 0, nanos: -1 }), "t").is_err());
        assert!(from_refresh(pb::RefreshOutcome { status: 99, ..Default::default() }).is_err());
        assert!(matches!(from_device_os(42), Err(AppError::BadInput(_))));
        assert!(matches!(from_reason("BORED"), Err(AppError::BadInput(_))));
    }
}
