//! Plaid Link in a browser, offline: `link-initialize.js` at Plaid's path defines
//! `Plaid.create`, whose `open()` shows Link's screens in an iframe of this origin; the iframe
//! drives a [`session`] through the JSON endpoints below; OAuth institutions send the user to
//! a bank page here. Apps use the same code as with Plaid's own script.

pub mod session;

use axum::extract::{DefaultBodyLimit, Query, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Emulator;
use super::errors::ApiError;
use super::handlers::parse;
use super::state::request_id;

/// Link's own pages load only from this origin. Any page may embed Link (that is its job).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self' data:; base-uri 'none'; form-action 'none'";

const LINK_HTML: &str = include_str!("../../../assets/link/link.html");

pub fn router() -> Router<Emulator> {
    Router::new()
        .route(
            "/link/v2/stable/link-initialize.js",
            get(|| async { script(include_str!("../../../assets/link/link-initialize.js")) }),
        )
        .route("/link/v2/stable/link.html", get(|| async { page(LINK_HTML.to_string()) }))
        .route("/link/v2/stable/link.js", get(|| async { script(include_str!("../../../assets/link/link.js")) }))
        .route("/link/v2/stable/link.css", get(|| async { style(include_str!("../../../assets/link/link.css")) }))
        .route("/link/oauth/bank", get(bank_page))
        .route("/link/oauth/bank.js", get(|| async { script(include_str!("../../../assets/link/bank.js")) }))
        .route("/link/web/session", post(start))
        .route("/link/web/institution", post(institution))
        .route("/link/web/credentials", post(credentials))
        .route("/link/web/mfa", post(mfa))
        .route("/link/web/accounts", post(accounts))
        .route("/link/web/oauth_status", post(oauth_status))
        .route("/link/oauth/authorize", post(authorize))
        .layer(DefaultBodyLimit::max(16 * 1024))
}

fn with_type(body: String, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn script(text: &'static str) -> Response {
    with_type(text.to_string(), "text/javascript; charset=utf-8")
}

fn style(text: &'static str) -> Response {
    with_type(text.to_string(), "text/css; charset=utf-8")
}

fn page(html: String) -> Response {
    let mut r = with_type(html, "text/html; charset=utf-8");
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// A step's answer, with Plaid's `request_id`; an error in Plaid's shape and status.
fn answer(result: Result<Value, ApiError>) -> Response {
    let id = request_id();
    match result {
        Ok(mut v) => {
            v["request_id"] = Value::String(id);
            Json(v).into_response()
        }
        Err(mut e) => {
            e.body.request_id = Some(id);
            (e.status, Json(e.body)).into_response()
        }
    }
}

fn body<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    parse(v)
}

#[derive(Deserialize)]
struct Start {
    link_token: String,
    #[serde(default)]
    received_redirect_uri: Option<String>,
}

async fn start(AxState(emu): AxState<Emulator>, Json(v): Json<Value>) -> Response {
    let result = body::<Start>(v).and_then(|r| session::start(&emu, &r.link_token, r.received_redirect_uri.as_deref()));
    // An OAuth redirect may finish Link here.
    emu.after_link(result.as_ref().ok().and_then(|v| v.get("resumed")));
    answer(result)
}

#[derive(Deserialize)]
struct Pick {
    link_session_id: String,
    institution_id: String,
}

async fn institution(AxState(emu): AxState<Emulator>, Json(v): Json<Value>) -> Response {
    answer(body::<Pick>(v).and_then(|r| session::select_institution(&emu, &r.link_session_id, &r.institution_id)))
}

#[derive(Deserialize)]
struct Credentials {
    link_session_id: String,
    username: String,
    password: String,
}

async fn credentials(AxState(emu): AxState<Emulator>, Json(v): Json<Value>) -> Response {
    let result =
        body::<Credentials>(v).and_then(|r| session::credentials(&emu, &r.link_session_id, &r.username, &r.password));
    emu.after_link(result.as_ref().ok());
    answer(result)
}

#[derive(Deserialize)]
struct Answers {
    link_session_id: String,
    answers: Vec<String>,
}

async fn mfa(AxState(emu): AxState<Emulator>, Json(v): Json<Value>) -> Response {
    let result = body::<Answers>(v).and_then(|r| session::mfa(&emu, &r.link_session_id, &r.answers));
    emu.after_link(result.as_ref().ok());
    answer(result)
}

#[derive(Deserialize)]
struct Accounts {
    link_session_id: String,
    masks: Vec<String>,
}

async fn accounts(AxState(emu): AxState<Emulator>, Json(v): Json<Value>) -> Response {
    let result = body::<Accounts>(v).and_then(|r| session::select_accounts(&emu, &r.link_session_id, r.masks));
    emu.after_link(result.as_ref().ok());
    answer(result)
}

#[derive(Deserialize)]
struct SessionOnly {
    link_session_id: String,
}

async fn oauth_status(AxState(emu): AxState<Emulator>, Json(v): Json<Value>) -> Response {
    let result = body::<SessionOnly>(v).and_then(|r| session::oauth_status(&emu, &r.link_session_id));
    emu.after_link(result.as_ref().ok());
    answer(result)
}

#[derive(Deserialize)]
struct Authorize {
    oauth_state_id: String,
    allow: bool,
}

async fn authorize(AxState(emu): AxState<Emulator>, Json(v): Json<Value>) -> Response {
    answer(
        body::<Authorize>(v)
            .and_then(|r| session::oauth_authorize(&emu, &r.oauth_state_id, r.allow))
            .map(|redirect| json!({"redirect": redirect})),
    )
}

#[derive(Deserialize)]
struct BankQuery {
    oauth_state_id: String,
}

/// The OAuth institution's own login page, where the user authorises (or refuses) sharing.
async fn bank_page(AxState(emu): AxState<Emulator>, Query(q): Query<BankQuery>) -> Response {
    let Some(name) = session::oauth_bank(&emu, &q.oauth_state_id) else {
        return (StatusCode::NOT_FOUND, "This OAuth session is unknown, finished or expired.").into_response();
    };
    let html = include_str!("../../../assets/link/bank.html")
        .replace("{{institution}}", &escape(name))
        .replace("{{state}}", &escape(&q.oauth_state_id));
    page(html)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}
