//! The offline Plaid emulator: Plaid's Sandbox API over real HTTP, close enough that Plaid's
//! own SDKs work against it unchanged, with deterministic data, signed webhooks, and faults on
//! demand. Everything that is ours and not Plaid's lives under `/emulator/`; the proxy flavour
//! of seed 000 is served under `/v1/plaid/`.

mod control;
pub mod data;
pub mod drive;
pub mod errors;
pub mod faults;
mod handlers;
pub(crate) mod link_web;
pub mod state;
pub mod webhooks;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use self::errors::ApiError;
use self::faults::FaultKind;
use self::handlers::Call;
use self::state::{OutgoingWebhook, State};
use self::webhooks::{DeliveryPolicy, DeliveryRecord, SigningKey};
use crate::plaid::wire::Jwk;

/// How the emulator behaves. Every field has a default; see `bankgraph plaid-emulator --help`.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The only `client_id` accepted.
    pub client_id: String,
    /// The only Sandbox `secret` accepted.
    pub secret: String,
    /// Proxy mode (seed 000): the `Fuse-Client-Id` required under `/v1/plaid`.
    pub proxy_client_id: String,
    /// Proxy mode: the `Fuse-Api-Key` required under `/v1/plaid`.
    pub proxy_api_key: String,
    /// Seed of all generated data.
    pub seed: u64,
    /// Transactions generated for a new item (a `user_custom` configuration may override).
    pub transactions_per_item: usize,
    /// Days of history generated (24 months).
    pub history_days: u32,
    pub webhook_policy: DeliveryPolicy,
    /// The OAuth redirect URIs registered for the client (Plaid's dashboard list): any other
    /// `redirect_uri` is INVALID_FIELD.
    pub redirect_uris: Vec<String>,
}

/// The credentials the emulator accepts unless configured otherwise.
pub const DEFAULT_CLIENT_ID: &str = "emulator_client_id";
pub const DEFAULT_SECRET: &str = "emulator_sandbox_secret";
pub const DEFAULT_PROXY_CLIENT_ID: &str = "emulator_fuse_client_id";
pub const DEFAULT_PROXY_API_KEY: &str = "emulator_fuse_api_key";
/// The redirect URIs registered unless configured otherwise: the demo's on the default
/// address, and the one the tests and examples configure.
pub const DEFAULT_REDIRECT_URIS: &[&str] =
    &["http://localhost:8000/demo", "http://127.0.0.1:8000/demo", "https://app.example.com/plaid/oauth"];

/// Refuses to serve the emulator on an address other hosts can reach unless `allow_remote`
/// (EMULATOR_ALLOW_REMOTE): it takes no credentials for its control API, and any secret.
pub fn check_bind(addr: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || allow_remote {
        return Ok(());
    }
    Err(format!(
        "PLAID_EMULATOR_ADDR is {addr}, not a loopback address: the Plaid emulator is a test double that other hosts \
         must not reach. Bind it to 127.0.0.1, or set EMULATOR_ALLOW_REMOTE=true to serve it there anyway (its \
         control API still answers loopback only)."
    ))
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            client_id: DEFAULT_CLIENT_ID.into(),
            secret: DEFAULT_SECRET.into(),
            proxy_client_id: DEFAULT_PROXY_CLIENT_ID.into(),
            proxy_api_key: DEFAULT_PROXY_API_KEY.into(),
            seed: 20_200_914,
            transactions_per_item: 1_500,
            history_days: 730,
            webhook_policy: DeliveryPolicy {
                timeout: Duration::from_secs(10),
                retries: 2,
                retry_delay: Duration::from_secs(5),
            },
            redirect_uris: DEFAULT_REDIRECT_URIS.iter().map(|u| u.to_string()).collect(),
        }
    }
}

struct Shared {
    config: EmulatorConfig,
    state: Mutex<State>,
    /// Seconds added to the wall clock (`/emulator/clock/advance`).
    clock_offset: AtomicI64,
    /// Signing keys; the last one signs, older ones may be expired but are still served.
    keys: RwLock<Vec<SigningKey>>,
    deliveries: Mutex<VecDeque<DeliveryRecord>>,
    next_delivery: AtomicU64,
    http: reqwest::Client,
}

/// A handle on one emulator. Cheap to clone.
#[derive(Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
}

impl Emulator {
    pub fn new(config: EmulatorConfig) -> anyhow::Result<Self> {
        let key = SigningKey::generate(Utc::now().timestamp())?;
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
        Ok(Emulator {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(config.seed)),
                config,
                clock_offset: AtomicI64::new(0),
                keys: RwLock::new(vec![key]),
                deliveries: Mutex::new(VecDeque::new()),
                next_delivery: AtomicU64::new(0),
                http,
            }),
        })
    }

    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.config
    }

    /// The emulator's clock: the wall clock plus any offset set by a test.
    pub fn now(&self) -> DateTime<Utc> {
        // Whole seconds, as Plaid writes its timestamps.
        let now = Utc::now().trunc_subsecs(0);
        now + chrono::Duration::seconds(self.shared.clock_offset.load(Ordering::Relaxed))
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough data for an emulator.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The public key with this `kid`, current or retired.
    pub fn jwk(&self, kid: &str) -> Option<Jwk> {
        let keys = self.shared.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.iter().find(|k| k.jwk.kid == kid).map(|k| k.jwk.clone())
    }

    /// The `kid` that signs webhooks now.
    pub fn current_kid(&self) -> String {
        let keys = self.shared.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.last().map(|k| k.jwk.kid.clone()).unwrap_or_default()
    }

    /// Starts signing with a new key and marks the old ones expired.
    pub fn rotate_key(&self) -> anyhow::Result<String> {
        let now = self.now().timestamp();
        let key = SigningKey::generate(now)?;
        let kid = key.jwk.kid.clone();
        let mut keys = self.shared.keys.write().unwrap_or_else(|p| p.into_inner());
        for k in keys.iter_mut() {
            k.jwk.expired_at.get_or_insert(now);
        }
        keys.push(key);
        Ok(kid)
    }

    /// Signs `body` with the current key, as `Plaid-Verification`.
    pub fn sign(&self, body: &[u8]) -> anyhow::Result<String> {
        let keys = self.shared.keys.read().unwrap_or_else(|p| p.into_inner());
        let key = keys.last().ok_or_else(|| anyhow::anyhow!("no signing key"))?;
        key.sign(body, self.now().timestamp())
    }

    /// The axum router: Plaid's API at `/`, the proxy flavour at `/v1/plaid`, controls at
    /// `/emulator`.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(control::router())
            .merge(link_web::router())
            .route("/v1/plaid/{*path}", post(proxy_entry))
            .route("/{*path}", post(plaid_entry))
            .with_state(self.clone())
    }

    /// Makes a new item's history available after the configured delay (at once if none).
    pub(crate) fn schedule_history(&self, item_id: &str) {
        let delay = self.state().history_delay;
        if delay.is_zero() {
            return;
        }
        let (emu, id) = (self.clone(), item_id.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            emu.state().history_ready(&id);
            emu.flush_outbox();
        });
    }

    /// What `/sandbox/item/reset_login` does, by item id: the item needs its user to log in
    /// again (the demo's "login required" button). False when there is no such live item.
    pub fn reset_login(&self, item_id: &str) -> bool {
        let now = self.now();
        let mut state = self.state();
        if state.items.get(item_id).is_none_or(|i| i.removed) {
            return false;
        }
        state.set_item_error(item_id, ApiError::code("ITEM_LOGIN_REQUIRED"), now);
        drop(state);
        self.flush_outbox();
        true
    }

    /// After Link finished (or failed): a new item's history on its way, webhooks sent.
    pub(crate) fn after_link(&self, done: Option<&Value>) {
        if let Some(v) = done
            && v["update_mode"] == false
            && let Some(id) = v["item_id"].as_str()
        {
            self.schedule_history(id);
        }
        self.flush_outbox();
    }

    /// Sends the webhooks that state changes queued, each in its own task.
    fn flush_outbox(&self) {
        let outgoing = std::mem::take(&mut self.state().outbox);
        for w in outgoing {
            let emu = self.clone();
            tokio::spawn(async move { emu.deliver(w).await });
        }
    }

    async fn deliver(&self, w: OutgoingWebhook) {
        let body = webhooks::body_bytes(&w.body);
        let text = |k: &str| w.body.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let id = self.shared.next_delivery.fetch_add(1, Ordering::Relaxed) + 1;
        let mut record = DeliveryRecord {
            id,
            item_id: w.item_id.clone(),
            webhook_type: text("webhook_type"),
            webhook_code: text("webhook_code"),
            url: w.url.clone(),
            attempts: 0,
            last_status: None,
            delivered: false,
        };
        let policy = &self.shared.config.webhook_policy;
        for attempt in 0..=policy.retries {
            if attempt > 0 {
                tokio::time::sleep(policy.retry_delay).await;
            }
            record.attempts += 1;
            // Each attempt is signed afresh: a retry minutes later must still pass the 5-minute check.
            let Ok(jwt) = self.sign(&body) else { break };
            let sent = self
                .shared
                .http
                .post(&w.url)
                .header(header::CONTENT_TYPE, "application/json")
                .header("Plaid-Verification", jwt)
                .timeout(policy.timeout)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) => {
                    record.last_status = Some(r.status().as_u16());
                    if r.status() == StatusCode::OK {
                        record.delivered = true;
                        break;
                    }
                }
                Err(e) => tracing::debug!(url = %w.url, error = %e, "webhook delivery failed"),
            }
        }
        if let Some(item_id) = &w.item_id
            && let Some(item) = self.state().items.get_mut(item_id)
        {
            item.last_webhook = Some((self.now(), record.webhook_code.clone()));
        }
        tracing::info!(id, code = %record.webhook_code, delivered = record.delivered, attempts = record.attempts, "webhook sent");
        let mut log = self.shared.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() >= 10_000 {
            log.pop_front();
        }
        log.push_back(record);
    }

    /// Every webhook sent so far (the last 10,000).
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.shared.deliveries.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}

async fn plaid_entry(
    AxState(emu): AxState<Emulator>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    dispatch(emu, false, format!("/{path}"), headers, body).await
}

async fn proxy_entry(
    AxState(emu): AxState<Emulator>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    dispatch(emu, true, format!("/{path}"), headers, body).await
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Plaid credentials come in headers or in the body; a header wins when both are sent.
fn check_credentials(
    cfg: &EmulatorConfig,
    headers: &HeaderMap,
    body: &mut serde_json::Map<String, Value>,
) -> Result<(), ApiError> {
    let from_body = |v: Option<Value>| v.and_then(|v| v.as_str().map(str::to_string));
    let body_id = from_body(body.remove("client_id"));
    let body_secret = from_body(body.remove("secret"));
    let id = header_str(headers, "plaid-client-id").map(str::to_string).or(body_id);
    let secret = header_str(headers, "plaid-secret").map(str::to_string).or(body_secret);
    match (id, secret) {
        (None, None) => Err(ApiError::missing(&["client_id", "secret"])),
        (None, _) => Err(ApiError::missing(&["client_id"])),
        (_, None) => Err(ApiError::missing(&["secret"])),
        (Some(id), Some(secret)) if id == cfg.client_id && secret == cfg.secret => Ok(()),
        _ => Err(ApiError::code("INVALID_API_KEYS")),
    }
}

fn error_response(mut e: ApiError, request_id: &str) -> Response {
    e.body.request_id = Some(request_id.to_string());
    (e.status, axum::Json(e.body)).into_response()
}

async fn dispatch(emu: Emulator, proxy: bool, endpoint: String, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = state::request_id();
    let outcome = handle(&emu, proxy, &endpoint, &headers, &body).await;
    emu.flush_outbox();
    match outcome {
        Ok(Outcome::Body(mut value)) => {
            if proxy {
                handlers::apply_placeholders(&endpoint, &mut value);
            }
            value["request_id"] = Value::String(request_id);
            (StatusCode::OK, axum::Json(value)).into_response()
        }
        Ok(Outcome::Drop) => {
            // Headers go out, then the connection breaks before any body.
            let stream = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "fault: dropped"))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(stream))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Err(e) => {
            tracing::debug!(%endpoint, code = %e.body.error_code, "emulator answered an error");
            error_response(e, &request_id)
        }
    }
}

enum Outcome {
    Body(Value),
    Drop,
}

async fn handle(
    emu: &Emulator,
    proxy: bool,
    endpoint: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Outcome, ApiError> {
    let cfg = emu.config();
    if proxy {
        let ok = header_str(headers, "fuse-client-id") == Some(cfg.proxy_client_id.as_str())
            && header_str(headers, "fuse-api-key") == Some(cfg.proxy_api_key.as_str());
        if !ok {
            return Err(ApiError::with_message(
                "INVALID_API_KEYS",
                "invalid or missing Fuse-Client-Id or Fuse-Api-Key header",
            ));
        }
    }
    let mut value: Value = serde_json::from_slice(body).map_err(|_| ApiError::code("INVALID_BODY"))?;
    let Value::Object(map) = &mut value else {
        return Err(ApiError::code("INVALID_BODY"));
    };
    check_credentials(cfg, headers, map)?;
    let handler = handlers::lookup(endpoint).ok_or_else(|| ApiError::code("NOT_FOUND"))?;
    let injected = emu.state().faults.take(endpoint);
    for fault in injected {
        match fault {
            FaultKind::Latency { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            FaultKind::HttpError { status } => {
                return Err(ApiError::code(if status == 503 {
                    "PLANNED_MAINTENANCE"
                } else {
                    "INTERNAL_SERVER_ERROR"
                }));
            }
            FaultKind::PlaidError { error_code } => return Err(ApiError::code(&error_code)),
            FaultKind::RateLimit => return Err(ApiError::code(faults::rate_limit_code(endpoint))),
            FaultKind::DropConnection => return Ok(Outcome::Drop),
        }
    }
    let call = Call { endpoint: endpoint.to_string(), now: emu.now(), proxy };
    handler(emu, &call, value).map(Outcome::Body)
}

/// An emulator serving on a socket.
pub struct RunningEmulator {
    pub addr: SocketAddr,
    pub emulator: Emulator,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningEmulator {
    /// Binds `addr` (port 0 picks a free port) and serves until stopped or dropped.
    pub async fn start(config: EmulatorConfig, addr: SocketAddr) -> anyhow::Result<Self> {
        let emulator = Emulator::new(config)?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        // The peer's address reaches the handlers: the control API answers loopback only.
        let app = emulator.router().into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "plaid emulator stopped with an error");
            }
        });
        Ok(RunningEmulator { addr, emulator, shutdown: Some(tx), task: Some(task) })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and waits for in-flight calls.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Serves until the task ends (for the CLI).
    pub async fn wait(mut self) {
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
