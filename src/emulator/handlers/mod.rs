//! Plaid's endpoints. Each handler takes the parsed JSON body (credentials already checked)
//! and returns the response body without `request_id`, which the dispatcher adds. By product:
//! `link.rs` (Link tokens, public tokens, institutions), `items.rs` (items and the Sandbox's
//! item controls), `accounts.rs` (accounts, balance, auth, identity), `transactions.rs`.

mod accounts;
mod items;
mod link;
mod transactions;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Emulator;
use super::data;
use super::errors::ApiError;
use super::state::State;
use accounts::{accounts_balance_get, accounts_get, auth_get, identity_get};
use items::{
    item_get, item_remove, item_webhook_update, sandbox_item_fire_webhook, sandbox_item_reset_login,
    webhook_verification_key_get,
};
use link::{
    institutions_get_by_id, item_public_token_exchange, link_token_create, link_token_get, sandbox_public_token_create,
};
use transactions::{transactions_get, transactions_refresh, transactions_sync};

/// What the dispatcher knows about one call.
pub struct Call {
    pub endpoint: String,
    pub now: DateTime<Utc>,
    /// Served under the proxy prefix (seed 000).
    pub proxy: bool,
}

pub type Handler = fn(&Emulator, &Call, Value) -> Result<Value, ApiError>;

/// The handler of a Plaid path, if the emulator serves it.
pub fn lookup(path: &str) -> Option<Handler> {
    Some(match path {
        "/link/token/create" => link_token_create,
        "/link/token/get" => link_token_get,
        "/sandbox/public_token/create" => sandbox_public_token_create,
        "/item/public_token/exchange" => item_public_token_exchange,
        "/item/get" => item_get,
        "/item/remove" => item_remove,
        "/item/webhook/update" => item_webhook_update,
        "/accounts/get" => accounts_get,
        "/accounts/balance/get" => accounts_balance_get,
        "/auth/get" => auth_get,
        "/identity/get" => identity_get,
        "/transactions/sync" => transactions_sync,
        "/transactions/get" => transactions_get,
        "/transactions/refresh" => transactions_refresh,
        "/institutions/get_by_id" => institutions_get_by_id,
        "/webhook_verification_key/get" => webhook_verification_key_get,
        "/sandbox/item/reset_login" => sandbox_item_reset_login,
        "/sandbox/item/fire_webhook" => sandbox_item_fire_webhook,
        _ => return None,
    })
}

/// Reads a typed request, answering Plaid's `MISSING_FIELDS` or `INVALID_FIELD`.
pub fn parse<T: DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    serde_json::from_value(body).map_err(|e| {
        let msg = e.to_string();
        match msg.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
            Some(field) => ApiError::missing(&[field]),
            None => ApiError::invalid_field(format!("the request has an invalid field: {msg}")),
        }
    })
}

pub(super) fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|_| ApiError::code("INTERNAL_SERVER_ERROR"))
}

pub(super) fn token(body: &Value) -> Result<String, ApiError> {
    match body.get("access_token") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::invalid_field("access_token must be a string")),
        None => Err(ApiError::missing(&["access_token"])),
    }
}

/// Replaces the fields the proxy (seed 000) documents as placeholders with dummy values.
pub fn apply_placeholders(endpoint: &str, body: &mut Value) {
    fn dummy(v: &mut Value) {
        match v {
            Value::String(s) => *s = "fuse_placeholder".into(),
            Value::Number(n) => *n = 0.into(),
            Value::Bool(b) => *b = false,
            Value::Array(a) => a.iter_mut().for_each(dummy),
            Value::Object(o) => o.values_mut().for_each(dummy),
            // A null stays null: the type of every field is kept.
            Value::Null => {}
        }
    }
    fn accounts_except(body: &mut Value, keep: &str) {
        if let Some(Value::Array(accounts)) = body.get_mut("accounts") {
            for a in accounts {
                if let Value::Object(o) = a {
                    for (k, v) in o.iter_mut() {
                        if k != keep {
                            dummy(v);
                        }
                    }
                }
            }
        }
    }
    let item = |body: &mut Value, keep: &[&str]| {
        if let Some(Value::Object(o)) = body.get_mut("item") {
            for (k, v) in o.iter_mut() {
                if !keep.contains(&k.as_str()) {
                    dummy(v);
                }
            }
        }
    };
    match endpoint {
        "/accounts/get" => item(body, &["item_id", "institution_id"]),
        "/auth/get" | "/transactions/get" => {
            if let Some(a) = body.get_mut("accounts") {
                dummy(a);
            }
            item(body, &[]);
        }
        "/accounts/balance/get" => {
            accounts_except(body, "balances");
            item(body, &[]);
        }
        "/identity/get" => {
            accounts_except(body, "owners");
            item(body, &[]);
        }
        "/institutions/get_by_id" => {
            if let Some(Value::Object(inst)) = body.get_mut("institution") {
                for k in ["products", "routing_numbers", "oauth"] {
                    if let Some(v) = inst.get_mut(k) {
                        dummy(v);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Keeps `State` in this module's vocabulary for the control endpoints.
pub fn state_item_view(state: &State, item_id: &str) -> Option<Value> {
    let item = state.items.get(item_id)?;
    let pending = item.tx.current.values().filter(|t| t.pending).count();
    Some(json!({
        "item_id": item.item_id,
        "institution_id": item.institution.id,
        "access_token": item.access_token,
        "webhook": item.webhook,
        "products": item.products,
        "error": item.error.as_ref().map(|e| &e.body.error_code),
        "removed": item.removed,
        "created_at": item.created_at,
        "consent_expiration_time": item.consent_expiration_time,
        "sync_started": item.sync_started,
        "transaction_count": item.tx.current.len(),
        "pending_count": pending,
        "accounts": item.accounts.iter().map(|a| json!({
            "account_id": a.account.account_id,
            "name": a.account.name,
            "mask": a.account.mask,
            "type": a.account.account_type,
            "subtype": a.account.subtype,
            "balances": a.account.balances,
        })).collect::<Vec<_>>(),
        "numbers": data::ach_numbers(&item.accounts),
    }))
}
