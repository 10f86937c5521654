//! The contract's input types, and the checks every input passes before the identity service
//! is called: ids are non-empty, bounded and free of control characters.

use async_graphql::{ErrorExtensions, ID, InputObject};

use super::GqlResult;
use super::scalars::DateTime;
use super::types::{DeviceOs, RemovalReason};
use crate::error::AppError;
use crate::identity::AccountFilter;

pub(super) fn bad(message: impl Into<String>) -> async_graphql::Error {
    AppError::BadInput(message.into()).extend()
}

/// Checks an id argument: not empty, not absurdly long.
pub(super) fn id_arg(name: &str, v: Option<&str>) -> GqlResult<Option<String>> {
    match v.map(str::trim) {
        None => Ok(None),
        Some("") => Err(bad(format!("{name} must not be empty"))),
        Some(s) if s.len() > 200 => Err(bad(format!("{name} is too long"))),
        // NUL and other control characters are never part of an id (and PostgreSQL refuses
        // NUL in text, which would surface as an internal error).
        Some(s) if s.chars().any(char::is_control) => Err(bad(format!("{name} must not contain control characters"))),
        Some(s) => Ok(Some(s.to_string())),
    }
}

/// What Link session to prepare: `{}` for a new link.
#[derive(InputObject, Debug)]
pub struct CreatePlaidLinkTokenInput {
    /// For native Link: IOS (and WEB) add the OAuth redirect URI, ANDROID the package name.
    pub device_os: Option<DeviceOs>,
    /// Relink: the connection to repair (update mode).
    pub platform_item_id: Option<String>,
}

/// What Plaid Link's onSuccess handed the app.
#[derive(InputObject)]
pub struct CompletePlaidLinkInput {
    /// From Plaid Link's onSuccess. Single use; never stored or logged.
    #[graphql(secret)]
    pub public_token: String,
    /// Relink: the connection that was repaired in update mode.
    pub platform_item_id: Option<String>,
}

/// Which accounts to list (all the caller's when empty).
#[derive(InputObject, Default, Debug)]
pub struct PlaidBankAccountFilterInput {
    /// Only this connection's accounts (Plaid `item_id`).
    pub platform_item_id: Option<String>,
    /// Only this connection's accounts.
    pub bank_institution_auth_id: Option<ID>,
    /// Only this account.
    pub bank_account_id: Option<ID>,
}

pub(super) fn account_filter(p: Option<&str>, c: Option<&ID>, a: Option<&ID>) -> GqlResult<AccountFilter> {
    Ok(AccountFilter {
        plaid_item_id: id_arg("platformItemId", p)?,
        connection_id: id_arg("bankInstitutionAuthId", c.map(|i| i.as_str()))?,
        account_id: id_arg("bankAccountId", a.map(|i| i.as_str()))?,
    })
}

impl PlaidBankAccountFilterInput {
    pub(super) fn filter(&self) -> GqlResult<AccountFilter> {
        account_filter(
            self.platform_item_id.as_deref(),
            self.bank_institution_auth_id.as_ref(),
            self.bank_account_id.as_ref(),
        )
    }
}

/// Which balances to list (all the caller's when empty).
#[derive(InputObject, Default, Debug)]
pub struct PlaidBankBalanceFilterInput {
    /// Only this connection's balances (Plaid `item_id`).
    pub platform_item_id: Option<String>,
    /// Only this connection's balances.
    pub bank_institution_auth_id: Option<ID>,
    /// Only this account's balance.
    pub bank_account_id: Option<ID>,
}

impl PlaidBankBalanceFilterInput {
    pub(super) fn filter(&self) -> GqlResult<AccountFilter> {
        account_filter(
            self.platform_item_id.as_deref(),
            self.bank_institution_auth_id.as_ref(),
            self.bank_account_id.as_ref(),
        )
    }
}

/// Page window: `limit` 1..100 (default 50), and either `offset` (0 to 10,000 by default) or
/// `after` (a previous page's `pageInfo.endCursor`). Pages by `after` stay exact while new
/// transactions arrive, and cost the same at any depth.
#[derive(InputObject, Debug)]
pub struct PaginateInput {
    /// Page size, 1 to 100.
    #[graphql(default = 50)]
    pub limit: i32,
    /// How many transactions to skip: 0 up to the server's maximum (10,000 by default;
    /// `MAX_PAGE_OFFSET`), beyond which it is refused with BAD_USER_INPUT. Page deeper with
    /// `after`.
    #[graphql(default = 0)]
    pub offset: i32,
    /// Start after this cursor (`pageInfo.endCursor` of the previous page): no duplicate and no
    /// gap while a sync adds transactions between pages.
    pub after: Option<String>,
}

/// Which transactions to list (all the caller's when empty).
#[derive(InputObject, Default, Debug)]
pub struct PlaidBankTransactionFilterInput {
    /// Only this account's transactions.
    pub bank_account_id: Option<ID>,
    /// Only this connection's transactions (Plaid `item_id`).
    pub platform_item_id: Option<String>,
    /// Only this connection's transactions.
    pub bank_institution_auth_id: Option<ID>,
    /// Transactions on or after this instant (compared with `transactionDate`).
    pub start_date: Option<DateTime>,
    /// Transactions on or before this instant (compared with `transactionDate`).
    pub end_date: Option<DateTime>,
    /// Only pending (true) or only posted (false) transactions.
    pub pending: Option<bool>,
    /// The page window (default: the first 50).
    pub paginate: Option<PaginateInput>,
}

/// A postal address.
#[derive(InputObject, Debug)]
pub struct AddressInput {
    /// Street and number.
    pub street_address_line1: String,
    /// Apartment, suite, floor.
    pub street_address_line2: Option<String>,
    /// City.
    pub city: String,
    /// State or region; a US state code when `country` is `US`.
    pub state: String,
    /// Postal code; ZIP or ZIP+4 when `country` is `US`.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. US.
    pub country: String,
}

/// An address for one of the caller's connections.
#[derive(InputObject, Debug)]
pub struct CreatePlaidLinkAddressInput {
    /// The caller's connection to attach the address to.
    pub bank_institution_auth_id: ID,
    /// The address.
    pub address: AddressInput,
}

/// The connection to remove, and why.
#[derive(InputObject, Debug)]
pub struct RemovePlaidBankInstitutionInput {
    /// The caller's connection to remove.
    pub bank_institution_auth_id: ID,
    /// Why (default `USER_REQUESTED`).
    pub reason: Option<RemovalReason>,
}

/// Which connection events to receive: all the caller's connections when empty.
#[derive(InputObject, Debug, Default)]
pub struct PlaidConnectionEventsInput {
    /// Only this connection, by Plaid's `item_id`.
    pub platform_item_id: Option<String>,
    /// Only this connection, by its id.
    pub bank_institution_auth_id: Option<ID>,
    /// Resume: first every event after this `eventId` (kept for EVENT_RETENTION_HOURS), then
    /// live ones. Without it, live events only.
    pub after: Option<ID>,
}

impl PlaidConnectionEventsInput {
    pub fn watch(self) -> GqlResult<crate::identity::EventWatch> {
        let after = match id_arg("after", self.after.as_ref().map(|a| a.as_str()))? {
            None => None,
            Some(a) => Some(
                crate::domain::parse_event_id(&a)
                    .ok_or_else(|| bad("after is not an eventId of a connection event."))?,
            ),
        };
        Ok(crate::identity::EventWatch {
            plaid_item_id: id_arg("platformItemId", self.platform_item_id.as_deref())?,
            connection_id: id_arg("bankInstitutionAuthId", self.bank_institution_auth_id.as_ref().map(|a| a.as_str()))?,
            after: None,
            after_own: after,
        })
    }
}
