//! Accounts: `/accounts/get`, `/accounts/balance/get`, `/auth/get`, `/identity/get`.

use serde_json::Value;

use super::{Call, parse, to_value};
use crate::emulator::Emulator;
use crate::emulator::data;
use crate::emulator::errors::ApiError;
use crate::emulator::state::Access;
use crate::plaid::wire::*;

/// The accounts a call asked for (`options.account_ids`), or all.
pub(super) fn select_accounts(
    all: Vec<Account>,
    options: Option<&AccountIdsOptions>,
) -> Result<Vec<Account>, ApiError> {
    match options.and_then(|o| o.account_ids.as_ref()) {
        None => Ok(all),
        Some(ids) => {
            if ids.iter().any(|id| !all.iter().any(|a| &a.account_id == id)) {
                return Err(ApiError::code("INVALID_ACCOUNT_ID"));
            }
            Ok(all.into_iter().filter(|a| ids.contains(&a.account_id)).collect())
        }
    }
}

pub(super) fn accounts_response(emu: &Emulator, call: &Call, body: Value, identity: bool) -> Result<Value, ApiError> {
    let req: AccountsRequest = parse(body)?;
    let mut state = emu.state();
    let item = state.resolve(&req.access_token, &call.endpoint, Access::Data)?;
    let mut accounts = select_accounts(item.accounts_wire(), req.options.as_ref())?;
    if identity {
        let owner = data::sandbox_owner();
        for a in &mut accounts {
            a.owners = Some(vec![owner.clone()]);
        }
    }
    to_value(&AccountsResponse { accounts, item: item.to_wire(false), request_id: String::new() })
}

pub(super) fn accounts_get(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    accounts_response(emu, call, body, false)
}

pub(super) fn accounts_balance_get(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    accounts_response(emu, call, body, false)
}

pub(super) fn identity_get(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    accounts_response(emu, call, body, true)
}

pub(super) fn auth_get(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    let req: AccountsRequest = parse(body)?;
    let mut state = emu.state();
    let item = state.resolve(&req.access_token, &call.endpoint, Access::Data)?;
    let accounts = select_accounts(item.accounts_wire(), req.options.as_ref())?;
    let ach: Vec<NumbersAch> = data::ach_numbers(&item.accounts)
        .into_iter()
        .filter(|n| accounts.iter().any(|a| a.account_id == n.account_id))
        .collect();
    if ach.is_empty() {
        return Err(ApiError::code("NO_AUTH_ACCOUNTS"));
    }
    to_value(&AuthGetResponse {
        accounts,
        numbers: AuthNumbers { ach, ..Default::default() },
        item: item.to_wire(false),
        request_id: String::new(),
    })
}
