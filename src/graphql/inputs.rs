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

#[derive(InputObject, Debug)]
pub struct CreatePlaidLinkTokenInput {
    /// For native Link: IOS (and WEB) add the OAuth redirect URI, ANDROID the package name.
    pub device_os: Option<DeviceOs>,
    /// Relink: the connection to repair (update mode).
    pub platform_item_id: Option<String>,
}

#[derive(InputObject)]
pub struct CompletePlaidLinkInput {
    /// From Plaid Link's onSuccess. Single use; never stored or logged.
    #[graphql(secret)]
    pub public_token: String,
    /// Relink: the connection that was repaired in update mode.
    pub platform_item_id: Option<String>,
}

#[derive(InputObject, Default, Debug)]
pub struct PlaidBankAccountFilterInput {
    pub platform_item_id: Option<String>,
    pub bank_institution_auth_id: Option<ID>,
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

#[derive(InputObject, Default, Debug)]
pub struct PlaidBankBalanceFilterInput {
    pub platform_item_id: Option<String>,
    pub bank_institution_auth_id: Option<ID>,
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

/// Page window: `limit` 1..100 (default 50), `offset` ≥ 0.
#[derive(InputObject, Debug)]
pub struct PaginateInput {
    #[graphql(default = 50)]
    pub limit: i32,
    #[graphql(default = 0)]
    pub offset: i32,
}

#[derive(InputObject, Default, Debug)]
pub struct PlaidBankTransactionFilterInput {
    pub bank_account_id: Option<ID>,
    pub platform_item_id: Option<String>,
    pub bank_institution_auth_id: Option<ID>,
    pub start_date: Option<DateTime>,
    pub end_date: Option<DateTime>,
    pub pending: Option<bool>,
    pub paginate: Option<PaginateInput>,
}

#[derive(InputObject, Debug)]
pub struct AddressInput {
    pub street_address_line1: String,
    pub street_address_line2: Option<String>,
    pub city: String,
    pub state: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. US.
    pub country: String,
}

#[derive(InputObject, Debug)]
pub struct CreatePlaidLinkAddressInput {
    pub bank_institution_auth_id: ID,
    pub address: AddressInput,
}

#[derive(InputObject, Debug)]
pub struct RemovePlaidBankInstitutionInput {
    pub bank_institution_auth_id: ID,
    pub reason: Option<RemovalReason>,
}
