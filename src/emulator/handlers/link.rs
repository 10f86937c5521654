//! Link: Link tokens, public tokens and their exchange, institutions.

use chrono::Duration as ChronoDuration;
use serde_json::{Value, json};

use super::{Call, parse};
use crate::emulator::Emulator;
use crate::emulator::data::{self, InstitutionFixture};
use crate::emulator::errors::ApiError;
use crate::emulator::state::{Access, LinkTokenRecord, login};
use crate::plaid::wire::*;

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

pub(super) fn check_url(field: &str, value: &str, allow_query: bool) -> Result<(), ApiError> {
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

pub(super) fn link_token_create(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
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
        if !emu.config().redirect_uris.iter().any(|u| u == r) {
            return Err(ApiError::invalid_field(
                "redirect_uri must be an OAuth redirect URI registered for this client (Plaid: the dashboard's \
                 allowed redirect URIs; the emulator: PLAID_EMULATOR_REDIRECT_URIS or PLAID_REDIRECT_URI)",
            ));
        }
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

pub(super) fn link_token_get(emu: &Emulator, _call: &Call, body: Value) -> Result<Value, ApiError> {
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

pub(super) fn sandbox_public_token_create(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
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

pub(super) fn item_public_token_exchange(emu: &Emulator, call: &Call, body: Value) -> Result<Value, ApiError> {
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

pub(super) fn institutions_get_by_id(_emu: &Emulator, _call: &Call, body: Value) -> Result<Value, ApiError> {
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
