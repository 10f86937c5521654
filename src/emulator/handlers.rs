//! Plaid's endpoints. Each handler takes the parsed JSON body (credentials already checked)
//! and returns the response body without `request_id`, which the dispatcher adds.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Emulator;
use super::data::{self, InstitutionFixture};
use super::errors::ApiError;
use super::state::{Access, Advance, LinkTokenRecord, State, login};
use crate::plaid::wire::*;

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

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|_| ApiError::code("INTERNAL_SERVER_ERROR"))
}

const LANGUAGES: &[&str] = &["da", "nl", "en", "et", "fr", "de", "it", "lv", "lt", "no", "pl", "pt", "ro", "es", "sv"];
const COUNTRIES: &[&str] =
    &["US", "GB", "ES", "NL", "FR", "IE", "CA", "DE", "IT", "PL", "DK", "NO", "SE", "EE", "LT", "LV", "PT"];
const LINK_PRODUCTS: &[&str] = &[
    "assets",
    "auth",
    "employment",
    "identity",
    "income_verification",
    "identity_verification",
    "investments",
    "liabilities",
    "payment_initiation",
    "standing_orders",
    "transactions",
    "transfer",
    "signal",
];

fn check_countries(codes: &[String]) -> Result<(), ApiError> {
    if codes.is_empty() {
        return Err(ApiError::invalid_field("country_codes must contain at least one country code"));
    }
    match codes.iter().find(|c| !COUNTRIES.contains(&c.as_str())) {
        Some(bad) => Err(ApiError::invalid_field(format!("country_codes contains an unsupported country code: {bad}"))),
        None => Ok(()),
    }
}

fn check_url(field: &str, value: &str, allow_query: bool) -> Result<(), ApiError> {
    let url = url::Url::parse(value).map_err(|_| ApiError::invalid_field(format!("{field} must be a valid URL")))?;
    let local = matches!(url.host_str(), Some("localhost") | Some("127.0.0.1") | Some("[::1]"));
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && (local || field == "webhook"));
    if !scheme_ok {
        return Err(ApiError::invalid_field(format!(
            "{field} must use https (http is allowed only for localhost in Sandbox)"
        )));
    }
    if !allow_query && (url.query().is_some() || url.fragment().is_some()) {
        return Err(ApiError::invalid_field(format!("{field} must not contain query parameters or a fragment")));
    }
    Ok(())
}

fn looks_like_pii(s: &str) -> bool {
    let digits = s.chars().filter(|c| c.is_ascii_digit()).count();
    (s.contains('@') && s.contains('.'))
        || (digits >= 10 && s.chars().all(|c| c.is_ascii_digit() || "+-() ".contains(c)))
}

fn link_token_create(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    let mut req: LinkTokenCreateRequest = parse(body)?;
    if req.client_name.trim().is_empty() {
        return Err(ApiError::invalid_field("client_name must be a non-empty string"));
    }
    if !LANGUAGES.contains(&req.language.as_str()) {
        return Err(ApiError::invalid_field(format!("language must be one of {}", LANGUAGES.join(", "))));
    }
    check_countries(&req.country_codes)?;
    if req.user.client_user_id.trim().is_empty() {
        return Err(ApiError::invalid_field("user.client_user_id must be a non-empty string"));
    }
    if looks_like_pii(&req.user.client_user_id) {
        return Err(ApiError::invalid_field(
            "user.client_user_id must not contain personally identifiable information",
        ));
    }
    if let Some(w) = req.webhook.as_deref().filter(|w| !w.is_empty()) {
        check_url("webhook", w, true)?;
    }
    if let Some(r) = req.redirect_uri.as_deref() {
        check_url("redirect_uri", r, false)?;
    }
    let mut state = emu.state();
    let item_id = match req.access_token.take() {
        Some(token) => Some(state.resolve(&token, &call.endpoint, Access::Manage)?.item_id.clone()),
        None => {
            let products = req.products.as_deref().unwrap_or_default();
            if products.is_empty() || products.iter().any(|p| !LINK_PRODUCTS.contains(&p.as_str())) {
                return Err(ApiError::code("INVALID_PRODUCT"));
            }
            None
        }
    };
    let lifetime = if item_id.is_some() { ChronoDuration::minutes(30) } else { ChronoDuration::hours(4) };
    let token = format!("link-sandbox-{}", uuid::Uuid::new_v4());
    let expiration = call.now + lifetime;
    state
        .link_tokens
        .insert(token.clone(), LinkTokenRecord { created_at: call.now, expiration, request: req, item_id });
    Ok(json!({"link_token": token, "expiration": expiration}))
}

fn link_token_get(emu: &Emulator, _call: &Call, body: Value) -> Result<Value, ApiError> {
    let req: LinkTokenGetRequest = parse(body)?;
    let state = emu.state();
    let rec = state.link_tokens.get(&req.link_token).ok_or_else(|| ApiError::code("INVALID_LINK_TOKEN"))?;
    let r = &rec.request;
    let mut metadata = json!({
        "initial_products": r.products.clone().unwrap_or_default(),
        "webhook": r.webhook,
        "country_codes": r.country_codes,
        "language": r.language,
        "redirect_uri": r.redirect_uri,
        "client_name": r.client_name,
    });
    if let Some(filters) = &r.account_filters {
        metadata["account_filters"] = filters.clone();
    }
    Ok(json!({
        "link_token": req.link_token,
        "created_at": rec.created_at,
        "expiration": rec.expiration,
        "metadata": metadata,
    }))
}

fn institution_for(id: &str) -> Result<&'static InstitutionFixture, ApiError> {
    data::institution(id).ok_or_else(|| ApiError::code("INVALID_INSTITUTION"))
}

const SANDBOX_PRODUCTS: &[&str] = &[
    "assets",
    "auth",
    "balance",
    "employment",
    "identity",
    "income_verification",
    "identity_verification",
    "investments",
    "liabilities",
    "payment_initiation",
    "standing_orders",
    "transactions",
    "transfer",
];

/// Checks products against what the institution supports.
fn check_products(inst: &InstitutionFixture, products: &[String], allowed: &[&str]) -> Result<(), ApiError> {
    if products.is_empty() || products.iter().any(|p| !allowed.contains(&p.as_str())) {
        return Err(ApiError::code("INVALID_PRODUCT"));
    }
    if products.iter().any(|p| !inst.products.contains(&p.as_str())) {
        return Err(ApiError::code("PRODUCTS_NOT_SUPPORTED"));
    }
    Ok(())
}

fn sandbox_public_token_create(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    let req: SandboxPublicTokenCreateRequest = parse(body)?;
    let inst = institution_for(&req.institution_id)?;
    if inst.oauth {
        return Err(ApiError::invalid_field(
            "/sandbox/public_token/create cannot create items at OAuth institutions; use a non-OAuth institution",
        ));
    }
    check_products(inst, &req.initial_products, SANDBOX_PRODUCTS)?;
    let opts = req.options.unwrap_or_default();
    if let Some(w) = opts.webhook.as_deref().filter(|w| !w.is_empty()) {
        check_url("webhook", w, true)?;
    }
    if let Some(code) = inst.creation_error {
        return Err(ApiError::code(code));
    }
    let user = login(
        opts.override_username.as_deref().unwrap_or("user_good"),
        opts.override_password.as_deref().unwrap_or("pass_good"),
        false,
    )?;
    let cfg = emu.config();
    let mut state = emu.state();
    let item_id = state.create_item(
        call.now,
        inst,
        req.initial_products,
        opts.webhook.filter(|w| !w.is_empty()),
        user,
        cfg.transactions_per_item,
        cfg.history_days,
    );
    let token = state.issue_public_token(&item_id, call.now);
    drop(state);
    emu.schedule_history(&item_id);
    Ok(json!({"public_token": token}))
}

fn item_public_token_exchange(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    let req: PublicTokenExchangeRequest = parse(body)?;
    if !req.public_token.starts_with("public-sandbox-") {
        return Err(ApiError::with_message(
            "INVALID_PUBLIC_TOKEN",
            "provided public token is in an invalid format. expected format: public-<environment>-<identifier>",
        ));
    }
    let mut state = emu.state();
    let rec = state.public_tokens.get_mut(&req.public_token).ok_or_else(|| ApiError::code("INVALID_PUBLIC_TOKEN"))?;
    if rec.used || rec.expires_at <= call.now {
        return Err(ApiError::code("INVALID_PUBLIC_TOKEN"));
    }
    rec.used = true;
    let item_id = rec.item_id.clone();
    let item =
        state.items.get(&item_id).filter(|i| !i.removed).ok_or_else(|| ApiError::code("INVALID_PUBLIC_TOKEN"))?;
    Ok(json!({"access_token": item.access_token, "item_id": item.item_id}))
}

fn token(body: &Value) -> Result<String, ApiError> {
    match body.get("access_token") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::invalid_field("access_token must be a string")),
        None => Err(ApiError::missing(&["access_token"])),
    }
}

fn item_get(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
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

fn item_remove(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    let mut state = emu.state();
    let item = state.resolve(&token(&body)?, &call.endpoint, Access::Manage)?;
    item.removed = true;
    Ok(json!({}))
}

fn item_webhook_update(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
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

/// The accounts a call asked for (`options.account_ids`), or all.
fn select_accounts(all: Vec<Account>, options: Option<&AccountIdsOptions>) -> Result<Vec<Account>, ApiError> {
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

fn accounts_response(emu: &Emulator, call: &Call, body: Value, identity: bool) -> Result<Value, ApiError> {
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

fn accounts_get(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    accounts_response(emu, call, body, false)
}

fn accounts_balance_get(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    accounts_response(emu, call, body, false)
}

fn identity_get(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    accounts_response(emu, call, body, true)
}

fn auth_get(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
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

fn transactions_sync(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
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

fn transactions_get(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
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

fn transactions_refresh(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
    let mut state = emu.state();
    let item = state.resolve(&token(&body)?, &call.endpoint, Access::Data)?;
    let id = item.item_id.clone();
    state.advance(&id, &Advance::default(), call.now)?;
    Ok(json!({}))
}

fn institutions_get_by_id(_emu: &Emulator, _call: &Call, body: Value) -> Result<Value, ApiError> {
    let req: InstitutionsGetByIdRequest = parse(body)?;
    if req.institution_id.is_empty() {
        return Err(ApiError::invalid_field("institution_id must be at least 1 character"));
    }
    check_countries(&req.country_codes)?;
    let inst = institution_for(&req.institution_id)?;
    if !req.country_codes.iter().any(|c| inst.country_codes.contains(&c.as_str())) {
        return Err(ApiError::code("INVALID_INSTITUTION"));
    }
    Ok(json!({"institution": inst.to_wire()}))
}

fn webhook_verification_key_get(emu: &Emulator, _call: &Call, body: Value) -> Result<Value, ApiError> {
    let req: WebhookVerificationKeyGetRequest = parse(body)?;
    let key = emu.jwk(&req.key_id).ok_or_else(|| ApiError::code("INVALID_WEBHOOK_VERIFICATION_KEY_ID"))?;
    Ok(json!({"key": key}))
}

fn sandbox_item_reset_login(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
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

fn sandbox_item_fire_webhook(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
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
