//! The Plaid HTTP client: every upstream call bankgraph makes goes through [`PlaidClient::post`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use rand::Rng;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use super::error::PlaidError;
use super::wire::*;

/// How `/transactions/get` is paged: Plaid's `offset`, or the proxy's `page` (seed 000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransactionsPaging {
    #[default]
    Offset,
    Page,
}

/// Everything the client needs to reach Plaid, Sandbox, the emulator or a proxy.
#[derive(Clone)]
pub struct PlaidClientConfig {
    /// e.g. `https://sandbox.plaid.com`, `http://127.0.0.1:8002`, `https://proxy/v1/plaid`.
    pub base_url: Url,
    pub client_id: String,
    pub secret: SecretString,
    /// Extra headers sent on every call (a proxy's client id and api key). Values are secret.
    pub extra_headers: Vec<(String, SecretString)>,
    /// Timeout of one attempt on ordinary endpoints.
    pub timeout: Duration,
    /// Timeout of one attempt on slow endpoints (live balance, transactions).
    pub slow_timeout: Duration,
    /// Retries after the first attempt, on failures where a retry is safe.
    pub max_retries: u32,
    /// First backoff; doubles each retry, with full jitter, capped at `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub transactions_paging: TransactionsPaging,
    /// Largest `count` for `/transactions/get` (Plaid 500, the proxy 100).
    pub transactions_get_max_count: u32,
    /// The largest response body read; a larger one is an error, and is not read into memory.
    pub max_response_bytes: usize,
}

impl std::fmt::Debug for PlaidClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaidClientConfig")
            .field("base_url", &self.base_url.as_str())
            .field("client_id", &self.client_id)
            .field("secret", &"[redacted]")
            .field("extra_headers", &self.extra_headers.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("slow_timeout", &self.slow_timeout)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl PlaidClientConfig {
    /// Defaults for everything but where and who.
    pub fn new(base_url: Url, client_id: impl Into<String>, secret: SecretString) -> Self {
        PlaidClientConfig {
            base_url,
            client_id: client_id.into(),
            secret,
            extra_headers: Vec::new(),
            timeout: Duration::from_secs(15),
            // The proxy times out at 30 s on these; Plaid documents sync as up to 8x slower.
            slow_timeout: Duration::from_secs(35),
            max_retries: 2,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(4),
            transactions_paging: TransactionsPaging::Offset,
            transactions_get_max_count: 500,
            max_response_bytes: MAX_RESPONSE_BYTES,
        }
    }
}

/// One Plaid endpoint and how to call it.
#[derive(Debug, Clone, Copy)]
struct Endpoint {
    path: &'static str,
    /// Uses `slow_timeout`.
    slow: bool,
    /// Safe to send twice: a retry after an ambiguous failure cannot do harm.
    retry_safe: bool,
}

const fn ep(path: &'static str, slow: bool, retry_safe: bool) -> Endpoint {
    Endpoint { path, slow, retry_safe }
}

const LINK_TOKEN_CREATE: Endpoint = ep("/link/token/create", false, true);
const LINK_TOKEN_GET: Endpoint = ep("/link/token/get", false, true);
// A public token is single use: if the first attempt reached Plaid, a second one fails and
// the item would be orphaned, so only a connection that never opened is retried.
const PUBLIC_TOKEN_EXCHANGE: Endpoint = ep("/item/public_token/exchange", false, false);
const ITEM_GET: Endpoint = ep("/item/get", false, true);
const ITEM_REMOVE: Endpoint = ep("/item/remove", false, true);
const ITEM_WEBHOOK_UPDATE: Endpoint = ep("/item/webhook/update", false, true);
const ACCOUNTS_GET: Endpoint = ep("/accounts/get", false, true);
const ACCOUNTS_BALANCE_GET: Endpoint = ep("/accounts/balance/get", true, true);
const AUTH_GET: Endpoint = ep("/auth/get", false, true);
const IDENTITY_GET: Endpoint = ep("/identity/get", true, true);
const TRANSACTIONS_SYNC: Endpoint = ep("/transactions/sync", true, true);
const TRANSACTIONS_GET: Endpoint = ep("/transactions/get", true, true);
const TRANSACTIONS_REFRESH: Endpoint = ep("/transactions/refresh", false, true);
const INSTITUTIONS_GET_BY_ID: Endpoint = ep("/institutions/get_by_id", false, true);
const WEBHOOK_KEY_GET: Endpoint = ep("/webhook_verification_key/get", false, true);
const SANDBOX_PUBLIC_TOKEN_CREATE: Endpoint = ep("/sandbox/public_token/create", false, false);
const SANDBOX_RESET_LOGIN: Endpoint = ep("/sandbox/item/reset_login", false, true);
const SANDBOX_FIRE_WEBHOOK: Endpoint = ep("/sandbox/item/fire_webhook", false, false);

/// The result of a public-token exchange; the access token stays secret.
pub struct Exchanged {
    pub access_token: SecretString,
    pub item_id: String,
    pub request_id: String,
}

impl std::fmt::Debug for Exchanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchanged")
            .field("access_token", &"[redacted]")
            .field("item_id", &self.item_id)
            .field("request_id", &self.request_id)
            .finish()
    }
}

/// A typed Plaid client. Cheap to clone.
#[derive(Clone)]
pub struct PlaidClient {
    http: reqwest::Client,
    inner: Arc<Inner>,
}

struct Inner {
    config: PlaidClientConfig,
    headers: HeaderMap,
    base: String,
}

impl std::fmt::Debug for PlaidClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaidClient").field("config", &self.inner.config).finish()
    }
}

impl PlaidClient {
    /// Builds the client; fails only on header values that HTTP cannot carry.
    pub fn new(config: PlaidClientConfig) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("bankgraph/", env!("CARGO_PKG_VERSION"))));
        headers.insert("plaid-version", HeaderValue::from_static(PLAID_VERSION));
        headers.insert("plaid-client-id", HeaderValue::from_str(&config.client_id)?);
        let mut secret = HeaderValue::from_str(config.secret.expose_secret())?;
        secret.set_sensitive(true);
        headers.insert("plaid-secret", secret);
        for (name, value) in &config.extra_headers {
            let mut v = HeaderValue::from_str(value.expose_secret())?;
            v.set_sensitive(true);
            headers.insert(HeaderName::from_bytes(name.as_bytes())?, v);
        }
        // No redirects: a redirect would resend the body (credentials, access tokens) to
        // wherever the response points.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let base = config.base_url.as_str().trim_end_matches('/').to_string();
        Ok(PlaidClient { http, inner: Arc::new(Inner { config, headers, base }) })
    }

    pub fn config(&self) -> &PlaidClientConfig {
        &self.inner.config
    }

    /// Sends one call: credentials and version headers, per-endpoint timeout, bounded retries
    /// with jittered backoff where a retry is safe, and Plaid's error object typed.
    #[tracing::instrument(name = "plaid.call", skip_all, fields(endpoint = endpoint.path))]
    async fn post<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        body: &Req,
    ) -> Result<Resp, PlaidError> {
        let cfg = &self.inner.config;
        let url = format!("{}{}", self.inner.base, endpoint.path);
        let body = serde_json::to_vec(body).map_err(|e| PlaidError::Decode {
            endpoint: endpoint.path,
            status: 0,
            detail: format!("request could not be encoded: {e}"),
        })?;
        let timeout = if endpoint.slow { cfg.slow_timeout } else { cfg.timeout };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let started = Instant::now();
            let sent = self
                .http
                .post(&url)
                .headers(self.inner.headers.clone())
                .timeout(timeout)
                .body(body.clone())
                .send()
                .await;
            let (result, retryable) = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match read_bounded(resp, cfg.max_response_bytes).await {
                        Ok(Some(bytes)) => {
                            let r = decode::<Resp>(endpoint, status, &bytes);
                            let retryable = status >= 500 && endpoint.retry_safe;
                            (r, retryable)
                        }
                        Ok(None) => {
                            let detail = format!("the response body is larger than {} bytes", cfg.max_response_bytes);
                            (Err(PlaidError::Decode { endpoint: endpoint.path, status, detail }), false)
                        }
                        Err(e) => {
                            let r = Err(transport(endpoint, attempt, &e));
                            (r, endpoint.retry_safe)
                        }
                    }
                }
                Err(e) => {
                    // A refused connection never reached Plaid: always safe to try again.
                    let never_sent = e.is_connect();
                    (Err(transport(endpoint, attempt, &e)), never_sent || endpoint.retry_safe)
                }
            };
            let elapsed_ms = started.elapsed().as_millis() as u64;
            metrics::histogram!(crate::metrics::PLAID_CALL_SECONDS, "endpoint" => endpoint.path)
                .record(started.elapsed().as_secs_f64());
            if let Err(err) = &result {
                let code = match err {
                    PlaidError::Api { body, .. } => body.error_code.clone(),
                    PlaidError::Timeout { .. } => "TIMEOUT".into(),
                    PlaidError::Transport { .. } => "TRANSPORT".into(),
                    PlaidError::Decode { .. } => "DECODE".into(),
                };
                metrics::counter!(crate::metrics::PLAID_ERRORS, "endpoint" => endpoint.path, "error_code" => code)
                    .increment(1);
            }
            match result {
                Ok(v) => {
                    tracing::debug!(attempt, elapsed_ms, "plaid call succeeded");
                    return Ok(v);
                }
                Err(err) if retryable && attempt <= cfg.max_retries => {
                    let wait = backoff(cfg, attempt);
                    tracing::warn!(attempt, elapsed_ms, error = %err, retry_in_ms = wait.as_millis() as u64,
                        "plaid call failed, retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(err) => {
                    tracing::debug!(attempt, elapsed_ms, error = %err, "plaid call failed");
                    return Err(err);
                }
            }
        }
    }

    pub async fn link_token_create(
        &self,
        request: &LinkTokenCreateRequest,
        access_token: Option<&SecretString>,
    ) -> Result<LinkTokenCreateResponse, PlaidError> {
        let mut request = request.clone();
        request.access_token = access_token.map(|t| t.expose_secret().to_string());
        self.post(LINK_TOKEN_CREATE, &request).await
    }

    pub async fn link_token_get(&self, link_token: &str) -> Result<LinkTokenGetResponse, PlaidError> {
        self.post(LINK_TOKEN_GET, &LinkTokenGetRequest { link_token: link_token.to_string() }).await
    }

    pub async fn item_public_token_exchange(&self, public_token: &SecretString) -> Result<Exchanged, PlaidError> {
        let req = PublicTokenExchangeRequest { public_token: public_token.expose_secret().to_string() };
        let r: PublicTokenExchangeResponse = self.post(PUBLIC_TOKEN_EXCHANGE, &req).await?;
        Ok(Exchanged { access_token: r.access_token.into(), item_id: r.item_id, request_id: r.request_id })
    }

    pub async fn item_get(&self, access_token: &SecretString) -> Result<ItemGetResponse, PlaidError> {
        self.post(ITEM_GET, &token_req(access_token)).await
    }

    pub async fn item_remove(&self, access_token: &SecretString) -> Result<RequestIdResponse, PlaidError> {
        self.post(ITEM_REMOVE, &token_req(access_token)).await
    }

    pub async fn item_webhook_update(
        &self,
        access_token: &SecretString,
        webhook: Option<&str>,
    ) -> Result<ItemWebhookUpdateResponse, PlaidError> {
        let req = ItemWebhookUpdateRequest {
            access_token: access_token.expose_secret().to_string(),
            webhook: webhook.map(str::to_string),
        };
        self.post(ITEM_WEBHOOK_UPDATE, &req).await
    }

    /// Cached accounts and balances (never a live balance call).
    pub async fn accounts_get(
        &self,
        access_token: &SecretString,
        account_ids: Option<Vec<String>>,
    ) -> Result<AccountsResponse, PlaidError> {
        self.post(ACCOUNTS_GET, &accounts_req(access_token, account_ids)).await
    }

    /// Live balances. Rate limited hard by Plaid (5/min per item in production).
    pub async fn accounts_balance_get(
        &self,
        access_token: &SecretString,
        account_ids: Option<Vec<String>>,
    ) -> Result<AccountsResponse, PlaidError> {
        self.post(ACCOUNTS_BALANCE_GET, &accounts_req(access_token, account_ids)).await
    }

    pub async fn auth_get(&self, access_token: &SecretString) -> Result<AuthGetResponse, PlaidError> {
        self.post(AUTH_GET, &accounts_req(access_token, None)).await
    }

    pub async fn identity_get(&self, access_token: &SecretString) -> Result<AccountsResponse, PlaidError> {
        self.post(IDENTITY_GET, &accounts_req(access_token, None)).await
    }

    /// One page of `/transactions/sync`. `count` is clamped to Plaid's 1..=500.
    pub async fn transactions_sync(
        &self,
        access_token: &SecretString,
        cursor: Option<&str>,
        count: u32,
    ) -> Result<TransactionsSyncResponse, PlaidError> {
        let req = TransactionsSyncRequest {
            access_token: access_token.expose_secret().to_string(),
            cursor: cursor.filter(|c| !c.is_empty()).map(str::to_string),
            count: Some(count.clamp(1, 500)),
            options: Some(TransactionsSyncOptions {
                include_personal_finance_category: Some(true),
                ..Default::default()
            }),
        };
        self.post(TRANSACTIONS_SYNC, &req).await
    }

    /// One page of `/transactions/get`, `offset` transactions in. With a proxy that pages by
    /// `page`, `offset` must be a multiple of `count`.
    pub async fn transactions_get(
        &self,
        access_token: &SecretString,
        start_date: NaiveDate,
        end_date: NaiveDate,
        count: u32,
        offset: u32,
    ) -> Result<TransactionsGetResponse, PlaidError> {
        let cfg = &self.inner.config;
        let count = count.clamp(1, cfg.transactions_get_max_count);
        let mut options = TransactionsGetOptions {
            count: Some(count),
            include_personal_finance_category: Some(true),
            ..Default::default()
        };
        match cfg.transactions_paging {
            TransactionsPaging::Offset => options.offset = Some(offset),
            TransactionsPaging::Page => options.page = Some(offset / count),
        }
        let req = TransactionsGetRequest {
            access_token: access_token.expose_secret().to_string(),
            start_date,
            end_date,
            options: Some(options),
        };
        self.post(TRANSACTIONS_GET, &req).await
    }

    pub async fn transactions_refresh(&self, access_token: &SecretString) -> Result<RequestIdResponse, PlaidError> {
        self.post(TRANSACTIONS_REFRESH, &token_req(access_token)).await
    }

    pub async fn institutions_get_by_id(
        &self,
        institution_id: &str,
        country_codes: &[String],
    ) -> Result<InstitutionsGetByIdResponse, PlaidError> {
        let req = InstitutionsGetByIdRequest {
            institution_id: institution_id.to_string(),
            country_codes: country_codes.to_vec(),
            options: None,
        };
        self.post(INSTITUTIONS_GET_BY_ID, &req).await
    }

    pub async fn webhook_verification_key_get(
        &self,
        key_id: &str,
    ) -> Result<WebhookVerificationKeyGetResponse, PlaidError> {
        self.post(WEBHOOK_KEY_GET, &WebhookVerificationKeyGetRequest { key_id: key_id.to_string() }).await
    }

    /// Sandbox only: a public token without Link.
    pub async fn sandbox_public_token_create(
        &self,
        request: &SandboxPublicTokenCreateRequest,
    ) -> Result<SecretString, PlaidError> {
        let r: SandboxPublicTokenCreateResponse = self.post(SANDBOX_PUBLIC_TOKEN_CREATE, request).await?;
        Ok(r.public_token.into())
    }

    /// Sandbox only: puts the item into `ITEM_LOGIN_REQUIRED`.
    pub async fn sandbox_item_reset_login(
        &self,
        access_token: &SecretString,
    ) -> Result<SandboxResetLoginResponse, PlaidError> {
        self.post(SANDBOX_RESET_LOGIN, &token_req(access_token)).await
    }

    /// Sandbox only: fires a webhook for the item.
    pub async fn sandbox_item_fire_webhook(
        &self,
        access_token: &SecretString,
        webhook_type: Option<&str>,
        webhook_code: &str,
    ) -> Result<SandboxFireWebhookResponse, PlaidError> {
        let req = SandboxFireWebhookRequest {
            access_token: access_token.expose_secret().to_string(),
            webhook_type: webhook_type.map(str::to_string),
            webhook_code: webhook_code.to_string(),
        };
        self.post(SANDBOX_FIRE_WEBHOOK, &req).await
    }
}

fn token_req(access_token: &SecretString) -> AccessTokenRequest {
    AccessTokenRequest { access_token: access_token.expose_secret().to_string() }
}

fn accounts_req(access_token: &SecretString, account_ids: Option<Vec<String>>) -> AccountsRequest {
    AccountsRequest {
        access_token: access_token.expose_secret().to_string(),
        options: account_ids.map(|ids| AccountIdsOptions { account_ids: Some(ids), ..Default::default() }),
    }
}

/// The largest Plaid response read by default. A sync page of 500 transactions is about 1 MB; anything
/// far beyond is not Plaid, and is not read into memory.
const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// The response body, or `None` once it grows past `max` (the rest is not read).
async fn read_bounded(mut resp: reqwest::Response, max: usize) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

fn decode<T: DeserializeOwned>(endpoint: Endpoint, status: u16, bytes: &[u8]) -> Result<T, PlaidError> {
    if status == 200 {
        return serde_json::from_slice(bytes).map_err(|e| PlaidError::Decode {
            endpoint: endpoint.path,
            status,
            detail: e.to_string(),
        });
    }
    match serde_json::from_slice::<PlaidErrorBody>(bytes) {
        Ok(body) => Err(PlaidError::Api { endpoint: endpoint.path, status, body: Box::new(body) }),
        Err(_) => Err(PlaidError::Decode {
            endpoint: endpoint.path,
            status,
            detail: "error response without Plaid's error object".into(),
        }),
    }
}

fn transport(endpoint: Endpoint, attempts: u32, e: &reqwest::Error) -> PlaidError {
    if e.is_timeout() {
        return PlaidError::Timeout { endpoint: endpoint.path, attempts };
    }
    // reqwest's Display names the URL; keep only the kind of failure.
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "connection dropped while reading the response"
    } else if e.is_request() {
        "request failed"
    } else {
        "transport error"
    };
    PlaidError::Transport { endpoint: endpoint.path, attempts, detail: kind.to_string() }
}

/// Exponential backoff with full jitter: uniform in `[d/2, d]`, `d = base * 2^(attempt-1)`.
fn backoff(cfg: &PlaidClientConfig, attempt: u32) -> Duration {
    let exp = cfg.backoff_base.saturating_mul(1u32 << (attempt - 1).min(16));
    let cap = exp.min(cfg.backoff_max);
    let ms = cap.as_millis() as u64;
    if ms < 2 {
        return cap;
    }
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut cfg = PlaidClientConfig::new("http://127.0.0.1:1".parse().unwrap(), "c", "s".to_string().into());
        cfg.backoff_base = Duration::from_millis(100);
        cfg.backoff_max = Duration::from_millis(300);
        for _ in 0..50 {
            let one = backoff(&cfg, 1);
            assert!(one >= Duration::from_millis(50) && one <= Duration::from_millis(100));
            let five = backoff(&cfg, 5);
            assert!(five >= Duration::from_millis(150) && five <= Duration::from_millis(300));
        }
    }

    #[test]
    fn config_debug_redacts_secrets() {
        let mut cfg =
            PlaidClientConfig::new("http://127.0.0.1:1".parse().unwrap(), "c", "topsecret".to_string().into());
        cfg.extra_headers.push(("Fuse-Api-Key".into(), "fusesecret".to_string().into()));
        let s = format!("{cfg:?}");
        assert!(!s.contains("topsecret") && !s.contains("fusesecret"));
    }
}
