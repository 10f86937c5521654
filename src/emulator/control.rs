//! `/emulator/…`: what is ours and not Plaid's. Completing a Link session offline, simulating
//! activity at the bank, firing any webhook, faults, rate limits, the clock and key rotation.
//! These endpoints take no credentials: the emulator is a test double on a private address.

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Emulator;
use super::data;
use super::errors::ApiError;
use super::faults::{FaultRule, RateLimitMode};
use super::handlers::{parse, state_item_view};
use chrono::{DateTime, Utc};

use super::EmulatorConfig;
use super::data::InstitutionFixture;
use super::state::{Advance, LinkTokenRecord, State, TestUser, login};

pub fn router() -> Router<Emulator> {
    control_routes().layer(axum::middleware::from_fn(loopback_only))
}

/// The control API takes no credentials: only a peer on this machine may use it, whatever
/// address the emulator listens on. A peer the server cannot name is refused too.
async fn loopback_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    if peer.is_some_and(|ip| ip.is_loopback()) {
        return next.run(req).await;
    }
    let body = json!({
        "error_type": "INVALID_REQUEST",
        "error_code": "FORBIDDEN",
        "error_message": "the emulator's control API answers loopback peers only",
    });
    (StatusCode::FORBIDDEN, Json(body)).into_response()
}

fn control_routes() -> Router<Emulator> {
    Router::new()
        .route("/emulator/health", get(|| async { Json(json!({"ok": true})) }))
        .route("/emulator/link/complete", post(link_complete))
        .route("/emulator/items/{item_id}", get(item_view))
        .route("/emulator/items/{item_id}/transactions", get(item_transactions))
        .route("/emulator/items/{item_id}/transactions/advance", post(advance))
        .route("/emulator/items/{item_id}/webhook", post(fire))
        .route("/emulator/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/emulator/settings", get(get_settings).post(set_settings))
        .route("/emulator/clock/advance", post(advance_clock))
        .route("/emulator/webhook_keys/rotate", post(rotate_key))
        .route("/emulator/webhooks", get(deliveries))
}

/// An error from a control endpoint, in Plaid's shape.
fn fail(e: ApiError) -> Response {
    (e.status, Json(e.body)).into_response()
}

fn not_found(item_id: &str) -> Response {
    fail(ApiError::with_message("ITEM_NOT_FOUND", format!("the emulator has no item {item_id}")))
}

#[derive(Deserialize)]
struct LinkComplete {
    link_token: String,
    #[serde(default)]
    institution_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Stands in for a user finishing Link: a new item for a create-mode token, a repaired item
/// for an update-mode token. Answers what Link's `onSuccess` would get.
async fn link_complete(AxState(emu): AxState<Emulator>, Json(body): Json<Value>) -> Response {
    let req: LinkComplete = match parse(body) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let now = emu.now();
    let cfg = emu.config().clone();
    let result = (|| {
        let mut state = emu.state();
        let rec = state
            .link_tokens
            .get(&req.link_token)
            .cloned()
            .filter(|r| r.expiration > now)
            .ok_or_else(|| ApiError::code("INVALID_LINK_TOKEN"))?;
        let inst = match &rec.item_id {
            Some(item_id) => {
                state
                    .items
                    .get(item_id)
                    .filter(|i| !i.removed)
                    .ok_or_else(|| ApiError::code("ITEM_NOT_FOUND"))?
                    .institution
            }
            None => {
                let inst_id = req.institution_id.as_deref().unwrap_or("ins_109508");
                data::institution(inst_id).ok_or_else(|| ApiError::code("INVALID_INSTITUTION"))?
            }
        };
        if rec.item_id.is_none()
            && let Some(code) = inst.creation_error
        {
            return Err(ApiError::code(code));
        }
        let user = login(
            req.username.as_deref().unwrap_or("user_good"),
            req.password.as_deref().unwrap_or("pass_good"),
            inst.oauth,
        )?;
        finish_link(&mut state, &cfg, &rec, inst, user, now, &uuid::Uuid::new_v4().to_string())
    })();
    emu.after_link(result.as_ref().ok());
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => fail(e),
    }
}

/// The end of a Link session, in Link's browser flow and in `/emulator/link/complete`: a new
/// item for a create-mode token, the item repaired for an update-mode one; a public token,
/// and Link's `onSuccess` metadata. The caller has checked the user's credentials.
pub(crate) fn finish_link(
    state: &mut State,
    cfg: &EmulatorConfig,
    rec: &LinkTokenRecord,
    inst: &'static InstitutionFixture,
    user: TestUser,
    now: DateTime<Utc>,
    link_session_id: &str,
) -> Result<Value, ApiError> {
    let item_id = match &rec.item_id {
        Some(item_id) => {
            let item =
                state.items.get_mut(item_id).filter(|i| !i.removed).ok_or_else(|| ApiError::code("ITEM_NOT_FOUND"))?;
            if item.error.as_ref().is_some_and(|e| e.body.error_code == "USER_PERMISSION_REVOKED") {
                return Err(ApiError::code("USER_PERMISSION_REVOKED"));
            }
            item.error = None;
            item.consent_expiration_time = None;
            item.last_successful_update = now;
            item_id.clone()
        }
        None => {
            let products = rec.request.products.clone().unwrap_or_default();
            if products.iter().any(|p| !inst.products.contains(&p.as_str())) {
                return Err(ApiError::code("PRODUCTS_NOT_SUPPORTED"));
            }
            state.create_item(
                now,
                inst,
                products,
                rec.request.webhook.clone().filter(|w| !w.is_empty()),
                user,
                cfg.transactions_per_item,
                cfg.history_days,
            )
        }
    };
    let public_token = state.issue_public_token(&item_id, now);
    let item = state.items.get(&item_id).ok_or_else(|| ApiError::code("ITEM_NOT_FOUND"))?;
    Ok(json!({
        "public_token": public_token,
        "item_id": item_id,
        "update_mode": rec.item_id.is_some(),
        "metadata": {
            "institution": {"name": item.institution.name, "institution_id": item.institution.id},
            "accounts": item.accounts.iter().map(|a| json!({
                "id": a.account.account_id,
                "name": a.account.name,
                "mask": a.account.mask,
                "type": a.account.account_type,
                "subtype": a.account.subtype,
                "verification_status": a.account.verification_status,
                "class_type": null,
            })).collect::<Vec<_>>(),
            "account": null,
            "account_id": null,
            "transfer_status": null,
            "link_session_id": link_session_id,
        },
    }))
}

async fn item_view(AxState(emu): AxState<Emulator>, Path(item_id): Path<String>) -> Response {
    match state_item_view(&emu.state(), &item_id) {
        Some(v) => Json(v).into_response(),
        None => not_found(&item_id),
    }
}

/// The item's current transactions, newest first: what a correct sync must end up with.
async fn item_transactions(AxState(emu): AxState<Emulator>, Path(item_id): Path<String>) -> Response {
    let state = emu.state();
    match state.items.get(&item_id) {
        Some(item) => {
            let all: Vec<_> = item.tx.newest_first().into_iter().map(|t| (*t).clone()).collect();
            Json(json!({"item_id": item_id, "transactions": all})).into_response()
        }
        None => not_found(&item_id),
    }
}

async fn advance(
    AxState(emu): AxState<Emulator>,
    Path(item_id): Path<String>,
    body: Option<Json<Advance>>,
) -> Response {
    let spec = body.map(|Json(a)| a).unwrap_or_default();
    let now = emu.now();
    let result = emu.state().advance(&item_id, &spec, now);
    emu.flush_outbox();
    match result {
        Ok(summary) => Json(summary).into_response(),
        Err(_) => not_found(&item_id),
    }
}

#[derive(Deserialize)]
struct Fire {
    webhook_type: String,
    webhook_code: String,
    /// For `ITEM`/`ERROR`: the error code (default `ITEM_LOGIN_REQUIRED`).
    #[serde(default)]
    error_code: Option<String>,
    /// For `USER_ACCOUNT_REVOKED`.
    #[serde(default)]
    account_id: Option<String>,
}

/// Sends any webhook, with the state change Plaid would make for it: `ITEM`/`ERROR` sets the
/// error, `PENDING_EXPIRATION` sets `consent_expiration_time` 7 days out,
/// `USER_PERMISSION_REVOKED` revokes, `LOGIN_REPAIRED` clears the error.
async fn fire(AxState(emu): AxState<Emulator>, Path(item_id): Path<String>, Json(f): Json<Fire>) -> Response {
    let now = emu.now();
    let sent = {
        let mut state = emu.state();
        let Some(item) = state.items.get_mut(&item_id) else {
            return not_found(&item_id);
        };
        if item.webhook.is_none() {
            return fail(ApiError::code("SANDBOX_WEBHOOK_INVALID"));
        }
        let extra = match (f.webhook_type.as_str(), f.webhook_code.as_str()) {
            ("ITEM", "ERROR") | ("ITEM", "USER_PERMISSION_REVOKED") => {
                let code = if f.webhook_code == "ERROR" {
                    f.error_code.clone().unwrap_or_else(|| "ITEM_LOGIN_REQUIRED".into())
                } else {
                    "USER_PERMISSION_REVOKED".into()
                };
                let err = ApiError::code(&code);
                let body = err.for_webhook();
                item.error = Some(err);
                item.last_failed_update = Some(now);
                json!({"error": body})
            }
            ("ITEM", "PENDING_EXPIRATION") => {
                let at = now + chrono::Duration::days(7);
                item.consent_expiration_time = Some(at);
                json!({"consent_expiration_time": at})
            }
            ("ITEM", "LOGIN_REPAIRED") => {
                item.error = None;
                json!({})
            }
            ("ITEM", "USER_ACCOUNT_REVOKED") => json!({"account_id": f.account_id}),
            ("ITEM", "NEW_ACCOUNTS_AVAILABLE") => json!({"error": null}),
            ("ITEM", "PENDING_DISCONNECT") => {
                json!({"reason": "INSTITUTION_MIGRATION", "disconnect_time": now + chrono::Duration::days(7)})
            }
            ("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE") => {
                json!({"initial_update_complete": true, "historical_update_complete": true})
            }
            _ => json!({}),
        };
        state.queue(&item_id, &f.webhook_type, &f.webhook_code, extra)
    };
    emu.flush_outbox();
    Json(json!({"webhook_fired": sent})).into_response()
}

async fn list_faults(AxState(emu): AxState<Emulator>) -> Response {
    Json(json!({"faults": emu.state().faults.list()})).into_response()
}

async fn add_fault(AxState(emu): AxState<Emulator>, Json(body): Json<Value>) -> Response {
    match parse::<FaultRule>(body) {
        Ok(rule) => {
            let rule = emu.state().faults.add(rule);
            (StatusCode::CREATED, Json(rule)).into_response()
        }
        Err(e) => fail(e),
    }
}

async fn clear_faults(AxState(emu): AxState<Emulator>) -> Response {
    let mut state = emu.state();
    state.faults.clear();
    state.windows.clear();
    Json(json!({"faults": []})).into_response()
}

#[derive(Deserialize)]
struct Settings {
    #[serde(default)]
    rate_limits: Option<RateLimitMode>,
    /// How long a new item's history takes to become available.
    #[serde(default)]
    history_delay_ms: Option<u64>,
}

fn settings_view(state: &super::state::State) -> Value {
    json!({"rate_limits": state.rate_mode, "history_delay_ms": state.history_delay.as_millis() as u64})
}

async fn get_settings(AxState(emu): AxState<Emulator>) -> Response {
    Json(settings_view(&emu.state())).into_response()
}

async fn set_settings(AxState(emu): AxState<Emulator>, Json(body): Json<Value>) -> Response {
    match parse::<Settings>(body) {
        Ok(s) => {
            let mut state = emu.state();
            if let Some(mode) = s.rate_limits {
                state.rate_mode = mode;
                state.windows.clear();
            }
            if let Some(ms) = s.history_delay_ms {
                state.history_delay = std::time::Duration::from_millis(ms.min(3_600_000));
            }
            Json(settings_view(&state)).into_response()
        }
        Err(e) => fail(e),
    }
}

#[derive(Deserialize)]
struct Clock {
    seconds: i64,
}

/// Moves the emulator's clock (token expiry, webhook `iat`); negative moves it back.
async fn advance_clock(AxState(emu): AxState<Emulator>, Json(c): Json<Clock>) -> Response {
    emu.shared.clock_offset.fetch_add(c.seconds, std::sync::atomic::Ordering::Relaxed);
    Json(json!({"now": emu.now()})).into_response()
}

async fn rotate_key(AxState(emu): AxState<Emulator>) -> Response {
    match emu.rotate_key() {
        Ok(kid) => Json(json!({"kid": kid})).into_response(),
        Err(_) => fail(ApiError::code("INTERNAL_SERVER_ERROR")),
    }
}

async fn deliveries(AxState(emu): AxState<Emulator>) -> Response {
    Json(json!({"webhooks": emu.deliveries()})).into_response()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn status(app: &Router, method: &str, path: &str, peer: Option<&str>) -> StatusCode {
        let mut req = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        if let Some(p) = peer {
            req.extensions_mut().insert(ConnectInfo(p.parse::<SocketAddr>().unwrap()));
        }
        app.clone().oneshot(req).await.unwrap().status()
    }

    /// The control API takes no credentials, so only this machine may use it: a peer from
    /// anywhere else (or one the server cannot name) gets 403 on every control route, while
    /// Plaid's API and Link's pages still answer it.
    #[tokio::test]
    async fn the_control_api_answers_loopback_peers_only() {
        let app = Emulator::new(EmulatorConfig::default()).unwrap().router();
        for peer in ["127.0.0.1:50000", "[::1]:50000"] {
            assert_eq!(status(&app, "GET", "/emulator/health", Some(peer)).await, StatusCode::OK, "{peer}");
        }
        for peer in [Some("192.0.2.7:50000"), Some("[2001:db8::7]:50000"), None] {
            for (method, path) in [
                ("GET", "/emulator/health"),
                ("POST", "/emulator/clock/advance"),
                ("GET", "/emulator/faults"),
                ("POST", "/emulator/webhook_keys/rotate"),
            ] {
                assert_eq!(
                    status(&app, method, path, peer).await,
                    StatusCode::FORBIDDEN,
                    "{method} {path} from {peer:?}"
                );
            }
        }
        // Plaid's API still answers (here: a body error, not a refusal of the peer).
        let remote = Some("192.0.2.7:50000");
        assert_eq!(status(&app, "POST", "/link/token/create", remote).await, StatusCode::BAD_REQUEST);
    }
}
