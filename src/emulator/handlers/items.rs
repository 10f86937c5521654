//! Items: `/item/*`, the webhook verification key, and the Sandbox's item controls.

use serde_json::{Value, json};

use super::link::check_url;
use super::{Call, parse, token};
use crate::emulator::Emulator;
use crate::emulator::errors::ApiError;
use crate::emulator::state::{Access, Advance};
use crate::plaid::wire::*;

pub(super) fn item_get(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    let mut state = emu.state();
    let item = state.resolve(&token(&body)?, &call.endpoint, Access::Manage)?;
    Ok(json!({
        "item": item.to_wire(true),
        "status": {
            "transactions": {
                "last_successful_update": item.last_successful_update,
                "last_failed_update": item.last_failed_update,
            },
            "last_webhook": item.last_webhook.as_ref().map(|(at, code)| json!({"sent_at": at, "code_sent": code})),
        },
    }))
}

pub(super) fn item_remove(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    let mut state = emu.state();
    let item = state.resolve(&token(&body)?, &call.endpoint, Access::Manage)?;
    item.removed = true;
    Ok(json!({}))
}

pub(super) fn item_webhook_update(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    let req: ItemWebhookUpdateRequest = parse(body)?;
    let webhook = req.webhook.filter(|w| !w.is_empty());
    if let Some(w) = webhook.as_deref() {
        check_url("webhook", w, true)?;
    }
    let mut state = emu.state();
    let item = state.resolve(&req.access_token, &call.endpoint, Access::Manage)?;
    item.webhook = webhook.clone();
    let wire = item.to_wire(false);
    let id = item.item_id.clone();
    if let Some(url) = webhook {
        state.queue_to(
            Some(&id),
            &url,
            "ITEM",
            "WEBHOOK_UPDATE_ACKNOWLEDGED",
            json!({"new_webhook_url": url, "error": null}),
        );
    }
    Ok(json!({"item": wire}))
}

pub(super) fn webhook_verification_key_get(emu: &Emulator, _call: &Call, body: Value) -> Result<Value, ApiError> {
    let req: WebhookVerificationKeyGetRequest = parse(body)?;
    let key = emu.jwk(&req.key_id).ok_or_else(|| ApiError::code("INVALID_WEBHOOK_VERIFICATION_KEY_ID"))?;
    Ok(json!({"key": key}))
}

pub(super) fn sandbox_item_reset_login(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    let mut state = emu.state();
    let item = state.resolve(&token(&body)?, &call.endpoint, Access::Manage)?;
    let id = item.item_id.clone();
    state.set_item_error(&id, ApiError::code("ITEM_LOGIN_REQUIRED"), call.now);
    Ok(json!({"reset_login": true}))
}

const FIREABLE: &[(&str, &str, &str)] = &[
    // (code, default webhook_type, required product)
    ("DEFAULT_UPDATE", "TRANSACTIONS", "transactions"),
    ("SYNC_UPDATES_AVAILABLE", "TRANSACTIONS", "transactions"),
    ("RECURRING_TRANSACTIONS_UPDATE", "TRANSACTIONS", "transactions"),
    ("NEW_ACCOUNTS_AVAILABLE", "ITEM", ""),
    ("AUTH_DATA_UPDATE", "AUTH", "auth"),
    ("PRODUCT_READY", "ASSETS", "assets"),
    ("ERROR", "ASSETS", "assets"),
];

pub(super) fn sandbox_item_fire_webhook(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    let req: SandboxFireWebhookRequest = parse(body)?;
    let Some(&(code, default_type, product)) = FIREABLE.iter().find(|f| f.0 == req.webhook_code) else {
        let codes: Vec<&str> = FIREABLE.iter().map(|f| f.0).collect();
        return Err(ApiError::invalid_field(format!("webhook_code must be one of {}", codes.join(", "))));
    };
    let webhook_type = req.webhook_type.clone().unwrap_or_else(|| default_type.to_string());
    let mut state = emu.state();
    let item = state.resolve(&req.access_token, &call.endpoint, Access::Manage)?;
    if item.webhook.is_none() {
        return Err(ApiError::code("SANDBOX_WEBHOOK_INVALID"));
    }
    if !product.is_empty() && !item.has_product(product) {
        return Err(ApiError::code("SANDBOX_PRODUCT_NOT_ENABLED"));
    }
    let id = item.item_id.clone();
    let account_ids: Vec<String> = item.accounts.iter().map(|a| a.account.account_id.clone()).collect();
    match code {
        // New activity, and the webhooks that announce it.
        "DEFAULT_UPDATE" => {
            state.advance(&id, &Advance { post_pending: false, ..Advance::default() }, call.now)?;
        }
        "SYNC_UPDATES_AVAILABLE" => {
            state.queue(
                &id,
                &webhook_type,
                code,
                json!({"initial_update_complete": true, "historical_update_complete": true}),
            );
        }
        "RECURRING_TRANSACTIONS_UPDATE" => {
            state.queue(&id, &webhook_type, code, json!({"account_ids": account_ids}));
        }
        "AUTH_DATA_UPDATE" => {
            let updated: serde_json::Map<String, Value> =
                account_ids.iter().take(1).map(|a| (a.clone(), json!(["ACCOUNT_NUMBER"]))).collect();
            state.queue(
                &id,
                &webhook_type,
                code,
                json!({"account_ids_with_new_auth": [], "account_ids_with_updated_auth": updated, "error": null}),
            );
        }
        "NEW_ACCOUNTS_AVAILABLE" => {
            state.queue(&id, &webhook_type, code, json!({"error": null}));
        }
        "PRODUCT_READY" => {
            state.queue(&id, &webhook_type, code, json!({"asset_report_id": uuid::Uuid::new_v4().to_string()}));
        }
        _ => {
            let err = ApiError::code("PRODUCT_NOT_READY").for_webhook();
            state.queue(
                &id,
                &webhook_type,
                code,
                json!({"asset_report_id": uuid::Uuid::new_v4().to_string(), "error": err}),
            );
        }
    }
    Ok(json!({"webhook_fired": true}))
}
