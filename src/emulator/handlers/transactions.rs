//! Transactions: `/transactions/sync`, `/transactions/get`, `/transactions/refresh`.

use serde_json::{Value, json};

use super::accounts::select_accounts;
use super::{Call, parse, to_value, token};
use crate::emulator::Emulator;
use crate::emulator::errors::ApiError;
use crate::emulator::state::{Access, Advance};
use crate::plaid::wire::*;

pub(super) fn transactions_sync(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    let req: TransactionsSyncRequest = parse(body)?;
    let count = req.count.unwrap_or(100);
    if !(1..=500).contains(&count) {
        return Err(ApiError::invalid_field("count must be an integer from 1 to 500"));
    }
    if req.cursor.as_ref().is_some_and(|c| c.len() > 256) {
        return Err(ApiError::invalid_field("cursor must be at most 256 characters"));
    }
    let mut state = emu.state();
    let item = state.resolve(&req.access_token, &call.endpoint, Access::Data)?;
    if !item.has_product("transactions") {
        // The first call initialises the product, as at Plaid.
        item.products.push("transactions".into());
    }
    let accounts = item.transaction_accounts();
    let id = item.item_id.clone();
    let page = state.sync_page(&id, req.cursor.as_deref(), count as usize)?;
    to_value(&TransactionsSyncResponse {
        transactions_update_status: Some(if page.ready { "HISTORICAL_UPDATE_COMPLETE" } else { "NOT_READY" }.into()),
        accounts,
        added: page.added,
        modified: page.modified,
        removed: page.removed,
        next_cursor: page.next_cursor,
        has_more: page.has_more,
        request_id: String::new(),
    })
}

pub(super) fn transactions_get(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    let req: TransactionsGetRequest = parse(body)?;
    if req.end_date < req.start_date {
        return Err(ApiError::invalid_field("end_date must be on or after start_date"));
    }
    let opts = req.options.unwrap_or_default();
    let max = if call.proxy { 100 } else { 500 };
    let count = opts.count.unwrap_or(100);
    if !(1..=max).contains(&count) {
        return Err(ApiError::invalid_field(format!("options.count must be an integer from 1 to {max}")));
    }
    let offset = if call.proxy {
        if opts.offset.is_some() {
            return Err(ApiError::invalid_field("options.offset is not supported by this proxy; use options.page"));
        }
        opts.page.unwrap_or(0).saturating_mul(count)
    } else {
        if opts.page.is_some() {
            return Err(ApiError::invalid_field("options.page is not a Plaid field; use options.offset"));
        }
        opts.offset.unwrap_or(0)
    };
    let mut state = emu.state();
    let item = state.resolve(&req.access_token, &call.endpoint, Access::Data)?;
    if !item.has_product("transactions") {
        item.products.push("transactions".into());
        return Err(ApiError::code("PRODUCT_NOT_READY"));
    }
    let all = item.accounts_wire();
    let accounts =
        select_accounts(all, Some(&AccountIdsOptions { account_ids: opts.account_ids.clone(), ..Default::default() }))?;
    let matching: Vec<_> = item
        .tx
        .newest_first()
        .into_iter()
        .filter(|t| t.date >= req.start_date && t.date <= req.end_date)
        .filter(|t| opts.account_ids.as_ref().is_none_or(|ids| ids.contains(&t.account_id)))
        .collect();
    let total = matching.len() as u32;
    let page: Vec<Transaction> =
        matching.into_iter().skip(offset as usize).take(count as usize).map(|t| (*t).clone()).collect();
    to_value(&TransactionsGetResponse {
        accounts,
        transactions: page,
        total_transactions: total,
        item: item.to_wire(false),
        request_id: String::new(),
    })
}

pub(super) fn transactions_refresh(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    let mut state = emu.state();
    let item = state.resolve(&token(&body)?, &call.endpoint, Access::Data)?;
    let id = item.item_id.clone();
    state.advance(&id, &Advance::default(), call.now)?;
    Ok(json!({}))
}
