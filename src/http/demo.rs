//! `GET /demo`: one page that runs the whole journey through the public GraphQL API (sign in,
//! Link, accounts, balances, transactions, refresh, relink, address, removal), with no build
//! step and no request anywhere but this server and Link's script.
//!
//! Two helpers exist only for it: `POST /demo/token` mints a short-lived caller token for a
//! typed user name, and only with the generated development JWT secret (never when a real JWT
//! setting is configured); `POST /demo/login-required` asks the in-process emulator to put one of
//! the caller's items into `ITEM_LOGIN_REQUIRED`, so that relinking can be tried.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::refusal::Refusal;
use crate::auth::{AuthState, MANAGE_PAYMENT};
use crate::config::{JwtConfig, JwtKey};
use crate::emulator::Emulator;
use crate::identity::AccountFilter;

/// Plaid's own script, used with real Plaid keys.
pub const PLAID_LINK_SCRIPT: &str = "https://cdn.plaid.com/link/v2/stable/link-initialize.js";
/// How long a demo token lives (shorter when `JWT_MAX_LIFETIME_SECONDS` says so).
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Demo callers are `demo:<name>`, apart from callers with real tokens.
const DEMO_SUBJECT_PREFIX: &str = "demo:";
/// The largest body a demo helper reads.
const MAX_BODY: usize = 4 * 1024;

/// What the demo needs: where Link's script is, and the offline helpers when they exist.
pub struct Demo {
    /// The page's Content-Security-Policy: this origin, and Link's script's.
    csp: HeaderValue,
    page: String,
    /// Minting demo tokens: only with the generated development secret.
    minter: Option<Minter>,
    emulator: Option<Emulator>,
}

struct Minter {
    secret: SecretString,
    issuer: Option<String>,
    audience: Option<String>,
    ttl: Duration,
}

impl Demo {
    /// The demo for this gateway: Link from the in-process emulator when there is one, else
    /// Plaid's CDN.
    pub fn new(auth: &JwtConfig, emulator: Option<(String, Emulator)>) -> anyhow::Result<Demo> {
        let (link_script, emulator) = match emulator {
            Some((url, emu)) => (format!("{}/link/v2/stable/link-initialize.js", url.trim_end_matches('/')), Some(emu)),
            None => (PLAID_LINK_SCRIPT.to_string(), None),
        };
        let link_origin = url::Url::parse(&link_script)?.origin().ascii_serialization();
        let csp = HeaderValue::from_str(&format!(
            "default-src 'none'; script-src 'self' {link_origin}; frame-src {link_origin}; connect-src 'self'; \
             style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ))?;
        let minter = match (&auth.key, auth.development) {
            (JwtKey::Secret(secret), true) => Some(Minter {
                secret: secret.clone(),
                issuer: auth.issuer.clone(),
                audience: auth.audience.clone(),
                ttl: auth.max_lifetime.map_or(DEMO_TOKEN_TTL, |m| m.min(DEMO_TOKEN_TTL)),
            }),
            _ => None,
        };
        let page = include_str!("../../assets/demo/index.html")
            .replace("{{link_script}}", &escape(&link_script))
            .replace("{{dev_sign_in}}", if minter.is_some() { "true" } else { "false" })
            .replace("{{emulator}}", if emulator.is_some() { "true" } else { "false" });
        Ok(Demo { csp, page, minter, emulator })
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `GET /demo`.
pub async fn page(State(state): State<AppState>) -> Response {
    let Some(demo) = state.demo.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], demo.page.clone()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, demo.csp.clone());
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /demo/assets/{file}`.
pub async fn asset(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    if state.demo.is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (content_type, text) = match name.as_str() {
        "demo.js" => ("text/javascript; charset=utf-8", include_str!("../../assets/demo/demo.js")),
        "demo.css" => ("text/css; charset=utf-8", include_str!("../../assets/demo/demo.css")),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let mut r = ([(header::CONTENT_TYPE, content_type)], text).into_response();
    r.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// A small JSON body, read within `MAX_BODY` bytes and the request timeout.
async fn json_body<T: for<'de> Deserialize<'de>>(headers: &HeaderMap, body: Body) -> Result<T, Refusal> {
    Refusal::unless_json(headers)?;
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            crate::error::code::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("The body is larger than {MAX_BODY} bytes."),
        )
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|_| Refusal::bad_request("json", "The body is not the expected JSON object."))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    user: String,
}

/// A demo user name: 1 to 40 letters, digits, `.`, `_` or `-` (it becomes Plaid's
/// `client_user_id`, which must not be an email or a phone number).
fn valid_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && name.chars().any(|c| c.is_ascii_alphabetic())
}

/// `POST /demo/token` `{"user": "alice"}` → `{"token", "expiresAt", "sub"}`.
pub async fn token(
    State(state): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(minter) = state.demo.as_ref().and_then(|d| d.minter.as_ref()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(p) = peer
        && let Err(wait) = state.limiters.check_ip(state.proxies.client(p.0.0.ip(), &headers))
    {
        return Refusal::rate_limited(wait, "address").into_response();
    }
    let req: TokenRequest = match json_body(&headers, body).await {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let name = req.user.trim();
    if !valid_name(name) {
        return Refusal::bad_request(
            "user",
            "The user name must be 1 to 40 letters, digits, '.', '_' or '-', with at least one letter.",
        )
        .into_response();
    }
    let sub = format!("{DEMO_SUBJECT_PREFIX}{name}");
    let minted = crate::auth::mint_hs256(
        minter.secret.expose_secret().as_bytes(),
        &sub,
        MANAGE_PAYMENT,
        minter.ttl,
        minter.issuer.as_deref(),
        minter.audience.as_deref(),
    );
    match minted {
        Ok(token) => {
            let expires = chrono::Utc::now() + chrono::Duration::seconds(minter.ttl.as_secs() as i64);
            let mut r = Json(json!({"token": token, "sub": sub, "expiresAt": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}))
                .into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "could not mint a demo token");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LoginRequired {
    platform_item_id: String,
}

/// `POST /demo/login-required` `{"platformItemId"}` with the caller's token: the emulator puts
/// that item (the caller's, still linked) into `ITEM_LOGIN_REQUIRED` and tells bankgraph by
/// webhook, as Plaid would.
pub async fn login_required(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let Some(emu) = state.demo.as_ref().and_then(|d| d.emulator.as_ref()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let caller = match state.auth.authenticate(&headers).await {
        AuthState::Authenticated(c) if c.scopes.contains(MANAGE_PAYMENT) => c,
        _ => {
            return Refusal::new(
                StatusCode::UNAUTHORIZED,
                crate::error::code::UNAUTHENTICATED,
                "unauthenticated",
                "A valid bearer token with the MANAGE_PAYMENT scope is required.",
            )
            .into_response();
        }
    };
    if let Err(wait) = state.limiters.check_user(&caller.user_id) {
        return Refusal::rate_limited(wait, "user").into_response();
    }
    let req: LoginRequired = match json_body(&headers, body).await {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let filter = AccountFilter { plaid_item_id: Some(req.platform_item_id.clone()), ..Default::default() };
    let owned = match state.identity.accounts(&caller.user_id, filter).await {
        Ok(accounts) => !accounts.is_empty(),
        Err(e) => {
            tracing::warn!(error = %e, "demo: could not read the caller's accounts");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    // Someone else's item and an unknown one get the same answer.
    if !owned || !emu.reset_login(&req.platform_item_id) {
        return Refusal::new(
            StatusCode::NOT_FOUND,
            crate::error::code::NOT_FOUND,
            "not_found",
            crate::identity::NO_ACTIVE_CONNECTION,
        )
        .into_response();
    }
    Json(json!({"ok": true})).into_response()
}
