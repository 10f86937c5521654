//! The domain: statuses, the stored models, and address validation. Depends on nothing else in
//! the crate. Money is `rust_decimal::Decimal` everywhere; never a float.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// The stored (and GraphQL) spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the stored spelling.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

string_enum!(
    /// Health of a linked connection, decided by the server from Plaid, never by a client.
    ConnectionStatus {
        Active => "ACTIVE",
        LoginRequired => "LOGIN_REQUIRED",
        PendingExpiration => "PENDING_EXPIRATION",
        PendingDisconnect => "PENDING_DISCONNECT",
        Revoked => "REVOKED",
        Error => "ERROR",
    }
);

impl ConnectionStatus {
    /// The user has to go through Link update mode.
    pub fn needs_user(self) -> bool {
        matches!(
            self,
            ConnectionStatus::LoginRequired
                | ConnectionStatus::PendingExpiration
                | ConnectionStatus::PendingDisconnect
                | ConnectionStatus::Revoked
        )
    }

    /// Plaid data calls will fail until the user acts.
    pub fn blocks_data(self) -> bool {
        matches!(self, ConnectionStatus::LoginRequired | ConnectionStatus::Revoked)
    }
}

string_enum!(
    BalanceSource {
        PlaidCached => "PLAID_CACHED",
        PlaidRealtime => "PLAID_REALTIME",
    }
);

string_enum!(
    BalanceTrigger {
        Link => "LINK",
        Relink => "RELINK",
        Refresh => "REFRESH",
        Webhook => "WEBHOOK",
        Scheduled => "SCHEDULED",
    }
);

string_enum!(
    RemovalReason {
        UserRequested => "USER_REQUESTED",
        Duplicate => "DUPLICATE",
        AccountClosed => "ACCOUNT_CLOSED",
        FraudSuspected => "FRAUD_SUSPECTED",
        Other => "OTHER",
    }
);

string_enum!(
    /// What happened to a connection, as the `plaidConnectionEvents` subscription tells it.
    EventType {
        Linked => "LINKED",
        HistorySyncProgress => "HISTORY_SYNC_PROGRESS",
        HistoryReady => "HISTORY_READY",
        TransactionsUpdated => "TRANSACTIONS_UPDATED",
        BalancesUpdated => "BALANCES_UPDATED",
        StatusChanged => "STATUS_CHANGED",
        Removed => "REMOVED",
    }
);

/// An event as it is written, with what changed. The connection's ids, the time and (for the
/// history events) the number of transactions stored so far are filled in by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventChange {
    Linked,
    HistorySyncProgress,
    HistoryReady,
    TransactionsUpdated { added: i64, modified: i64, removed: i64 },
    BalancesUpdated,
    StatusChanged(ConnectionStatus),
    Removed,
}

impl EventChange {
    pub fn event_type(self) -> EventType {
        match self {
            EventChange::Linked => EventType::Linked,
            EventChange::HistorySyncProgress => EventType::HistorySyncProgress,
            EventChange::HistoryReady => EventType::HistoryReady,
            EventChange::TransactionsUpdated { .. } => EventType::TransactionsUpdated,
            EventChange::BalancesUpdated => EventType::BalancesUpdated,
            EventChange::StatusChanged(_) => EventType::StatusChanged,
            EventChange::Removed => EventType::Removed,
        }
    }
}

/// A stored connection event: its place in the one order of events (`seq`), whose it is, and
/// what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionEvent {
    pub seq: i64,
    /// The user's own number of the event (1, 2, 3, …): what clients see as its id.
    pub user_seq: i64,
    pub user_id: String,
    pub connection_id: String,
    pub plaid_item_id: String,
    pub event_type: EventType,
    pub occurred_at: DateTime<Utc>,
    /// STATUS_CHANGED: the new status.
    pub status: Option<ConnectionStatus>,
    /// HISTORY_SYNC_PROGRESS and HISTORY_READY: the connection's transactions stored so far.
    pub transactions: Option<i64>,
    /// TRANSACTIONS_UPDATED: what the sync page changed.
    pub added: Option<i64>,
    pub modified: Option<i64>,
    pub removed: Option<i64>,
}

/// The public form of an event's `user_seq`: opaque to clients, and ordered as text as the
/// user's events are (fixed width), so a client may compare two ids. It counts the user's own
/// events only, so it says nothing of anyone else's.
pub fn event_id(user_seq: i64) -> String {
    format!("evt_{:016x}", user_seq.max(0))
}

/// The `user_seq` of a public event id; `None` for anything [`event_id`] did not produce.
pub fn parse_event_id(id: &str) -> Option<i64> {
    let hex = id.strip_prefix("evt_")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    i64::from_str_radix(hex, 16).ok()
}

/// A linked Plaid connection (`bankInstitutionAuthId`).
#[derive(Debug, Clone)]
pub struct Connection {
    pub id: String,
    pub user_id: String,
    pub plaid_item_id: String,
    pub institution_id: Option<String>,
    pub institution_name: String,
    pub status: ConnectionStatus,
    pub removed_at: Option<DateTime<Utc>>,
}

/// A bank account as clients see it (`bankAccountId`), with its connection's facts.
#[derive(Debug, Clone)]
pub struct BankAccount {
    pub id: String,
    pub connection_id: String,
    pub plaid_item_id: String,
    pub institution_name: String,
    pub plaid_account_id: String,
    pub name: Option<String>,
    pub mask: Option<String>,
    pub account_type: String,
    pub subtype: Option<String>,
    pub status: ConnectionStatus,
    /// Whether the connection's history has finished its first sync (`historyStatus`).
    pub history_ready: bool,
    /// When its transactions were last brought up to date with Plaid.
    pub last_synced_at: Option<DateTime<Utc>>,
}

/// The latest stored balance of an account.
#[derive(Debug, Clone)]
pub struct Balance {
    pub account_id: String,
    pub connection_id: String,
    pub plaid_item_id: String,
    pub available: Option<Decimal>,
    pub current: Option<Decimal>,
    pub currency_code: Option<String>,
    pub source: BalanceSource,
    pub trigger: BalanceTrigger,
    pub started_at: DateTime<Utc>,
}

/// A stored transaction (`historicalBankTransactionId`), stable across pending→posted.
#[derive(Debug, Clone)]
pub struct BankTransaction {
    pub id: String,
    pub plaid_item_id: String,
    pub connection_id: String,
    pub account_id: String,
    pub plaid_transaction_id: String,
    /// Positive: money out (Plaid's sign).
    pub amount: Decimal,
    pub currency_code: Option<String>,
    pub date: DateTime<Utc>,
    pub description: Option<String>,
    pub merchant_name: Option<String>,
    pub category: Option<String>,
    pub pending: bool,
}

/// An account as the bank reports it, with its balance now: what a link, relink or refresh
/// hands to the store (Plaid's JSON is translated before it reaches the store).
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingAccount {
    pub plaid_account_id: String,
    pub name: String,
    pub official_name: Option<String>,
    pub mask: Option<String>,
    pub account_type: String,
    pub subtype: Option<String>,
    pub available: Option<Decimal>,
    pub current: Option<Decimal>,
    pub limit: Option<Decimal>,
    pub currency_code: Option<String>,
}

/// A transaction as the bank reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingTransaction {
    pub plaid_transaction_id: String,
    pub plaid_account_id: String,
    /// On a posted transaction, the pending one it replaces.
    pub pending_transaction_id: Option<String>,
    pub amount: Decimal,
    pub currency_code: Option<String>,
    /// The calendar day of the transaction.
    pub date: NaiveDate,
    pub description: String,
    pub merchant_name: Option<String>,
    pub category: Option<String>,
    pub pending: bool,
}

/// One page of transaction changes, with the cursor that follows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncPage {
    pub added: Vec<IncomingTransaction>,
    pub modified: Vec<IncomingTransaction>,
    /// Plaid ids of removed transactions.
    pub removed: Vec<String>,
    pub next_cursor: String,
    pub has_more: bool,
    /// Plaid has the whole history of the item (`transactions_update_status` is
    /// `HISTORICAL_UPDATE_COMPLETE`, or absent as in older API versions): the last page of
    /// this loop completes the history.
    pub history_complete: bool,
}

/// A postal address attached to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub state: String,
    pub postal_code: String,
    pub country: String,
}

const US_STATES: &[&str] = &[
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS", "KY", "LA", "ME",
    "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA",
    "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY", "DC", "AS", "GU", "MP", "PR", "VI", "UM",
    "AA", "AE", "AP",
];

/// ISO 3166-1 alpha-2 codes.
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR \
BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ \
FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE \
JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR \
MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU \
RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG \
UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

impl Address {
    /// Checks and normalises an address: required fields, lengths, an ISO 3166-1 alpha-2
    /// country, and for `US` a state code and a ZIP or ZIP+4. Returns every problem at once.
    pub fn parse(
        line1: &str,
        line2: Option<&str>,
        city: &str,
        state: &str,
        postal_code: &str,
        country: &str,
    ) -> Result<Address, Vec<String>> {
        let mut problems = Vec::new();
        let mut field = |name: &str, value: &str, max: usize| -> String {
            let v = value.trim().to_string();
            if v.is_empty() {
                problems.push(format!("{name} is required"));
            } else if v.chars().count() > max {
                problems.push(format!("{name} must be at most {max} characters"));
            } else if v.chars().any(char::is_control) {
                problems.push(format!("{name} must not contain control characters"));
            }
            v
        };
        let line1 = field("address.streetAddressLine1", line1, 200);
        let city = field("address.city", city, 100);
        let state = field("address.state", state, 100).to_uppercase();
        let postal_code = field("address.postalCode", postal_code, 20).to_uppercase();
        let country = field("address.country", country, 2).to_uppercase();
        let line2 = line2.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        if line2.as_ref().is_some_and(|l| l.chars().count() > 200) {
            problems.push("address.streetAddressLine2 must be at most 200 characters".into());
        } else if line2.as_ref().is_some_and(|l| l.chars().any(char::is_control)) {
            problems.push("address.streetAddressLine2 must not contain control characters".into());
        }
        let known = country.len() == 2 && COUNTRIES.split(' ').any(|c| c == country);
        if !country.is_empty() && !known {
            problems.push(format!("address.country must be an ISO 3166-1 alpha-2 code such as US; got {country:?}"));
        }
        if country == "US" {
            if !state.is_empty() && !US_STATES.contains(&state.as_str()) {
                problems.push(format!("address.state must be a two-letter US state code such as NY; got {state:?}"));
            }
            let b = postal_code.as_bytes();
            let zip5 = b.len() == 5 && b.iter().all(u8::is_ascii_digit);
            let zip9 = b.len() == 10 && b[5] == b'-' && b[..5].iter().chain(&b[6..]).all(u8::is_ascii_digit);
            let zip = zip5 || zip9;
            if !postal_code.is_empty() && !zip {
                problems.push(format!(
                    "address.postalCode must be a US ZIP code (12345) or ZIP+4 (12345-6789); got {postal_code:?}"
                ));
            }
        }
        if problems.is_empty() {
            Ok(Address { line1, line2, city, state, postal_code, country })
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_us_address_is_normalised() {
        let a = Address::parse(" 123 Main St ", Some("Apt 4"), "New York", "ny", "10001-1234", "us").unwrap();
        assert_eq!((a.state.as_str(), a.country.as_str(), a.line1.as_str()), ("NY", "US", "123 Main St"));
    }

    #[test]
    fn every_problem_is_reported() {
        let e = Address::parse("", None, "X", "ZZ", "1234", "US").unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(Address::parse("1 Rue", None, "Paris", "IDF", "75001", "FRA").is_err());
        assert!(Address::parse("1 Rue", None, "Paris", "IDF", "75001", "FR").is_ok());
    }

    #[test]
    fn statuses_round_trip() {
        for s in ["ACTIVE", "LOGIN_REQUIRED", "PENDING_EXPIRATION", "PENDING_DISCONNECT", "REVOKED", "ERROR"] {
            assert_eq!(ConnectionStatus::parse(s).unwrap().as_str(), s);
        }
        assert!(ConnectionStatus::LoginRequired.needs_user());
        assert!(!ConnectionStatus::Active.needs_user());
    }
}
