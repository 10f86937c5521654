//! The emulator's memory: items, tokens, each item's transaction change log, and the webhooks
//! waiting to be sent. Everything here is synchronous and runs under one lock.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::data::{self, AccountFixture, InstitutionFixture, TransactionFactory};
use super::errors::ApiError;
use super::faults::{Faults, RateLimitMode, RateWindows};
use crate::plaid::wire::{Account, Item, LinkTokenCreateRequest, RemovedTransaction, Transaction};

/// One entry of an item's change log; a sync cursor is a position in this log.
#[derive(Debug, Clone)]
pub enum Change {
    Added(Arc<Transaction>),
    Modified(Arc<Transaction>),
    Removed { transaction_id: String, account_id: String },
}

/// An item's transactions: the ordered log of changes and the current set it adds up to.
#[derive(Debug, Default)]
pub struct TxBook {
    pub log: Vec<Change>,
    pub current: HashMap<String, Arc<Transaction>>,
    /// Bumped on every change made after the history was first loaded; a cursor issued
    /// mid-pagination under an older generation fails with the mutation error.
    pub generation: u64,
}

impl TxBook {
    fn add(&mut self, t: Transaction) {
        let t = Arc::new(t);
        self.current.insert(t.transaction_id.clone(), t.clone());
        self.log.push(Change::Added(t));
    }

    fn modify(&mut self, t: Transaction) {
        let t = Arc::new(t);
        self.current.insert(t.transaction_id.clone(), t.clone());
        self.log.push(Change::Modified(t));
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Transaction>> {
        let t = self.current.remove(id)?;
        self.log.push(Change::Removed { transaction_id: t.transaction_id.clone(), account_id: t.account_id.clone() });
        Some(t)
    }

    /// The current transactions, newest first (then by id, for a stable order).
    pub fn newest_first(&self) -> Vec<Arc<Transaction>> {
        let mut all: Vec<_> = self.current.values().cloned().collect();
        all.sort_by(|a, b| b.date.cmp(&a.date).then_with(|| a.transaction_id.cmp(&b.transaction_id)));
        all
    }
}

/// A position in an item's change log, as handed out in `next_cursor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub item_index: u64,
    pub pos: usize,
    pub generation: u64,
    /// Issued with `has_more: true`, i.e. in the middle of a pagination loop.
    pub paging: bool,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let raw = format!("v1:{}:{}:{}:{}", self.item_index, self.pos, self.generation, u8::from(self.paging));
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let mut parts = raw.split(':');
        if parts.next()? != "v1" {
            return None;
        }
        let c = Cursor {
            item_index: parts.next()?.parse().ok()?,
            pos: parts.next()?.parse().ok()?,
            generation: parts.next()?.parse().ok()?,
            paging: parts.next()? == "1",
        };
        parts.next().is_none().then_some(c)
    }
}

/// One item and everything the emulator knows about it.
#[derive(Debug)]
pub struct ItemRecord {
    pub item_id: String,
    pub index: u64,
    pub institution: &'static InstitutionFixture,
    pub access_token: String,
    pub webhook: Option<String>,
    pub products: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub error: Option<ApiError>,
    pub removed: bool,
    pub consent_expiration_time: Option<DateTime<Utc>>,
    pub accounts: Vec<AccountFixture>,
    pub tx: TxBook,
    /// `/transactions/sync` has been called: sync webhooks are switched on.
    pub sync_started: bool,
    pub last_webhook: Option<(DateTime<Utc>, String)>,
    pub last_successful_update: DateTime<Utc>,
    pub last_failed_update: Option<DateTime<Utc>>,
    pub rng: ChaCha8Rng,
    /// History generated but not yet "pulled from the bank" (see `State::history_delay`).
    pub pending_history: Option<Vec<Transaction>>,
}

impl ItemRecord {
    pub fn billed_products(&self) -> Vec<String> {
        self.products.iter().filter(|p| p.as_str() != "balance").cloned().collect()
    }

    /// The Item object; `error` is filled only where Plaid fills it (`/item/get`).
    pub fn to_wire(&self, with_error: bool) -> Item {
        let billed = self.billed_products();
        Item {
            item_id: self.item_id.clone(),
            institution_id: Some(self.institution.id.to_string()),
            webhook: self.webhook.clone(),
            error: if with_error { self.error.as_ref().map(|e| (*e.body).clone()) } else { None },
            available_products: self
                .institution
                .products
                .iter()
                .filter(|p| !billed.iter().any(|b| b == *p))
                .map(|p| p.to_string())
                .collect(),
            billed_products: billed.clone(),
            products: billed,
            consent_expiration_time: self.consent_expiration_time,
            update_type: "background".into(),
        }
    }

    pub fn accounts_wire(&self) -> Vec<Account> {
        self.accounts.iter().map(|a| a.account.clone()).collect()
    }

    /// Accounts that carry transactions (what `/transactions/sync` lists).
    pub fn transaction_accounts(&self) -> Vec<Account> {
        self.accounts.iter().filter(|a| a.has_transactions).map(|a| a.account.clone()).collect()
    }

    pub fn has_product(&self, p: &str) -> bool {
        self.products.iter().any(|x| x == p)
    }

    /// Applies a transaction's effect on the balances of its account.
    fn apply_to_balance(&mut self, t: &Transaction, posted_only: bool) {
        let Some(a) = self.accounts.iter_mut().find(|a| a.account.account_id == t.account_id) else {
            return;
        };
        let b = &mut a.account.balances;
        match a.account.account_type.as_str() {
            "credit" => {
                if !posted_only || !t.pending {
                    b.current = b.current.map(|c| c + t.amount);
                }
            }
            _ => {
                b.available = b.available.map(|v| v - t.amount);
                if !t.pending {
                    b.current = b.current.map(|c| c - t.amount);
                }
            }
        }
    }
}

/// One page of `/transactions/sync`.
#[derive(Debug)]
pub struct SyncPage {
    pub added: Vec<Transaction>,
    pub modified: Vec<Transaction>,
    pub removed: Vec<RemovedTransaction>,
    pub next_cursor: String,
    pub has_more: bool,
    /// False while the item's history is not available yet.
    pub ready: bool,
}

/// A webhook waiting to be sent.
#[derive(Debug, Clone)]
pub struct OutgoingWebhook {
    pub item_id: Option<String>,
    pub url: String,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct PublicTokenRecord {
    pub item_id: String,
    pub expires_at: DateTime<Utc>,
    pub used: bool,
}

#[derive(Debug, Clone)]
pub struct LinkTokenRecord {
    pub created_at: DateTime<Utc>,
    pub expiration: DateTime<Utc>,
    /// The request, without its access token.
    pub request: LinkTokenCreateRequest,
    /// Set in update mode.
    pub item_id: Option<String>,
}

/// Who logs in, from Sandbox's test credentials (plaid-reference §5.2).
#[derive(Debug, Clone, Default)]
pub struct TestUser {
    pub seed: Option<String>,
    pub transaction_count: Option<usize>,
    /// `microdeposits_good`: an Auth item whose checking account awaits automated
    /// micro-deposit verification.
    pub micro_deposits: bool,
}

/// The error codes a `user_good` password of `error_<CODE>` may force.
const FORCEABLE: &[&str] = &[
    "COUNTRY_NOT_SUPPORTED",
    "INSTITUTION_DOWN",
    "INSTITUTION_NOT_RESPONDING",
    "INSTITUTION_NO_LONGER_SUPPORTED",
    "INSUFFICIENT_CREDENTIALS",
    "INTERNAL_SERVER_ERROR",
    "INVALID_CREDENTIALS",
    "INVALID_MFA",
    "INVALID_SEND_METHOD",
    "ITEM_LOCKED",
    "ITEM_NOT_SUPPORTED",
    "MFA_NOT_SUPPORTED",
    "NO_ACCOUNTS",
    "PAYMENT_INVALID_RECIPIENT",
    "PRODUCTS_NOT_SUPPORTED",
    "USER_INPUT_TIMEOUT",
    "USER_SETUP_REQUIRED",
];

/// Checks Sandbox credentials. `user_good` with `pass_good` (or an MFA or reCAPTCHA password,
/// which succeed offline) logs in; `error_<CODE>` forces that error; `user_custom` takes a JSON
/// configuration with `seed` and the emulator's `transaction_count`.
pub fn login(username: &str, password: &str, oauth: bool) -> Result<TestUser, ApiError> {
    if oauth {
        return Ok(TestUser::default());
    }
    match username {
        "user_good" => {
            if let Some(code) = password.strip_prefix("error_") {
                return Err(if FORCEABLE.contains(&code) {
                    ApiError::code(code)
                } else {
                    ApiError::code("INVALID_CREDENTIALS")
                });
            }
            if password == "microdeposits_good" {
                return Ok(TestUser { micro_deposits: true, ..TestUser::default() });
            }
            let ok = password == "pass_good"
                || password == "credential_good"
                || password == "mfa_device"
                || password.starts_with("mfa_questions_")
                || password.starts_with("mfa_selections")
                || password.starts_with("{\"recaptcha\"");
            if ok { Ok(TestUser::default()) } else { Err(ApiError::code("INVALID_CREDENTIALS")) }
        }
        "user_custom" => {
            let cfg: Value = serde_json::from_str(password).map_err(|_| {
                ApiError::invalid_field("override_password for user_custom must be a JSON configuration")
            })?;
            if let Some(code) = cfg.get("force_error").and_then(Value::as_str) {
                return Err(ApiError::code(code));
            }
            let transaction_count =
                match cfg.get("transaction_count") {
                    None => None,
                    Some(v) => Some(v.as_u64().filter(|n| *n <= 1_000_000).ok_or_else(|| {
                        ApiError::invalid_field("transaction_count must be an integer from 0 to 1000000")
                    })? as usize),
                };
            Ok(TestUser {
                seed: cfg.get("seed").and_then(Value::as_str).map(str::to_string),
                transaction_count,
                micro_deposits: false,
            })
        }
        _ => Err(ApiError::code("INVALID_CREDENTIALS")),
    }
}

fn seed_from(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]))
}

/// How new activity is simulated on an item.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Advance {
    /// New transactions dated today (half of them pending).
    #[serde(default = "three")]
    pub new: usize,
    /// Post every pending transaction: its id is removed and a posted copy is added with
    /// `pending_transaction_id` pointing at it.
    #[serde(default = "yes")]
    pub post_pending: bool,
    /// Recategorise this many posted transactions.
    #[serde(default)]
    pub modify: usize,
    /// Remove this many posted transactions.
    #[serde(default)]
    pub remove: usize,
    /// Send the webhooks Plaid would send.
    #[serde(default = "yes")]
    pub webhooks: bool,
}

fn three() -> usize {
    3
}
fn yes() -> bool {
    true
}

impl Default for Advance {
    fn default() -> Self {
        Advance { new: 3, post_pending: true, modify: 0, remove: 0, webhooks: true }
    }
}

/// What an [`Advance`] changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AdvanceSummary {
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub removed: Vec<String>,
}

/// The whole emulator state.
pub struct State {
    pub items: HashMap<String, ItemRecord>,
    pub by_token: HashMap<String, String>,
    pub public_tokens: HashMap<String, PublicTokenRecord>,
    pub link_tokens: HashMap<String, LinkTokenRecord>,
    pub next_index: u64,
    pub seed: u64,
    pub faults: Faults,
    pub rate_mode: RateLimitMode,
    pub windows: RateWindows,
    pub outbox: Vec<OutgoingWebhook>,
    /// How long a new item's history takes to become available (0: at once).
    pub history_delay: std::time::Duration,
}

/// Whether a call reads data (fails while the item needs the user) or manages the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Data,
    Manage,
}

impl State {
    pub fn new(seed: u64) -> Self {
        State {
            items: HashMap::new(),
            by_token: HashMap::new(),
            public_tokens: HashMap::new(),
            link_tokens: HashMap::new(),
            next_index: 0,
            seed,
            faults: Faults::default(),
            rate_mode: RateLimitMode::Off,
            windows: RateWindows::default(),
            outbox: Vec::new(),
            history_delay: std::time::Duration::ZERO,
        }
    }

    /// Creates an item with its accounts and history; sends Plaid's creation webhooks.
    #[allow(clippy::too_many_arguments)]
    pub fn create_item(
        &mut self,
        now: DateTime<Utc>,
        institution: &'static InstitutionFixture,
        products: Vec<String>,
        webhook: Option<String>,
        user: TestUser,
        default_count: usize,
        history_days: u32,
    ) -> String {
        self.next_index += 1;
        let index = self.next_index;
        let seed = match &user.seed {
            Some(s) => seed_from(&[b"custom", s.as_bytes(), institution.id.as_bytes()]),
            None => seed_from(&[b"item", &self.seed.to_le_bytes(), &index.to_le_bytes()]),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let item_id = data::plaid_id(&mut rng);
        let mut accounts = data::accounts_for(institution, &mut rng);
        if user.micro_deposits {
            accounts.retain(|a| a.account.subtype.as_deref() == Some("checking"));
            for a in &mut accounts {
                a.account.verification_status = Some("pending_automatic_verification".into());
            }
        }
        let count = user.transaction_count.unwrap_or(default_count);
        let history = TransactionFactory::new(&accounts).history(&mut rng, now.date_naive(), history_days, count);
        let mut tx = TxBook::default();
        let recent = history.iter().filter(|t| t.date >= now.date_naive() - ChronoDuration::days(30)).count();
        let total = history.len();
        // With a readiness delay the history waits, as at Plaid, until `history_ready`.
        let pending_history = if self.history_delay.is_zero() {
            for t in history {
                tx.add(t);
            }
            None
        } else {
            Some(history)
        };
        let access_token = format!("access-sandbox-{}", uuid::Uuid::new_v4());
        let item = ItemRecord {
            item_id: item_id.clone(),
            index,
            institution,
            access_token: access_token.clone(),
            webhook,
            products,
            created_at: now,
            error: None,
            removed: false,
            consent_expiration_time: None,
            accounts,
            tx,
            sync_started: false,
            last_webhook: None,
            last_successful_update: now,
            last_failed_update: None,
            rng,
            pending_history,
        };
        let has_transactions = item.has_product("transactions") && self.history_delay.is_zero();
        self.by_token.insert(access_token, item_id.clone());
        self.items.insert(item_id.clone(), item);
        if has_transactions {
            self.queue(&item_id, "TRANSACTIONS", "INITIAL_UPDATE", json!({"error": null, "new_transactions": recent}));
            self.queue(
                &item_id,
                "TRANSACTIONS",
                "HISTORICAL_UPDATE",
                json!({"error": null, "new_transactions": total}),
            );
        }
        item_id
    }

    /// The history of an item becomes available: added to its log, announced by Plaid's
    /// webhooks (`SYNC_UPDATES_AVAILABLE` only once `/transactions/sync` has been called).
    pub fn history_ready(&mut self, item_id: &str) {
        let Some(item) = self.items.get_mut(item_id) else {
            return;
        };
        let Some(history) = item.pending_history.take() else {
            return;
        };
        let today = item.created_at.date_naive();
        let recent = history.iter().filter(|t| t.date >= today - ChronoDuration::days(30)).count();
        let total = history.len();
        for t in history {
            item.tx.add(t);
        }
        let (sync_started, has_transactions) = (item.sync_started, item.has_product("transactions"));
        if has_transactions {
            self.queue(item_id, "TRANSACTIONS", "INITIAL_UPDATE", json!({"error": null, "new_transactions": recent}));
            self.queue(item_id, "TRANSACTIONS", "HISTORICAL_UPDATE", json!({"error": null, "new_transactions": total}));
        }
        if sync_started {
            self.queue(
                item_id,
                "TRANSACTIONS",
                "SYNC_UPDATES_AVAILABLE",
                json!({"initial_update_complete": true, "historical_update_complete": true}),
            );
        }
    }

    pub fn issue_public_token(&mut self, item_id: &str, now: DateTime<Utc>) -> String {
        let token = format!("public-sandbox-{}", uuid::Uuid::new_v4());
        self.public_tokens.insert(
            token.clone(),
            PublicTokenRecord {
                item_id: item_id.to_string(),
                expires_at: now + ChronoDuration::minutes(30),
                used: false,
            },
        );
        token
    }

    /// Resolves an access token to its item, enforcing removal, rate limits and (for data
    /// calls) the item's error state.
    pub fn resolve(&mut self, token: &str, endpoint: &str, access: Access) -> Result<&mut ItemRecord, ApiError> {
        if !token.starts_with("access-sandbox-") {
            return Err(ApiError::with_message(
                "INVALID_ACCESS_TOKEN",
                "provided access token is in an invalid format. expected format: access-<environment>-<identifier>",
            ));
        }
        let item_id = self.by_token.get(token).cloned().ok_or_else(|| ApiError::code("INVALID_ACCESS_TOKEN"))?;
        if self.items.get(&item_id).is_none_or(|i| i.removed) {
            return Err(ApiError::code("ITEM_NOT_FOUND"));
        }
        if let Some(code) = self.windows.check(self.rate_mode, endpoint, &item_id) {
            return Err(ApiError::code(code));
        }
        let item = self.items.get_mut(&item_id).ok_or_else(|| ApiError::code("ITEM_NOT_FOUND"))?;
        if access == Access::Data
            && let Some(err) = &item.error
        {
            return Err(err.clone());
        }
        Ok(item)
    }

    /// Queues a webhook for an item, if it has a webhook URL.
    pub fn queue(&mut self, item_id: &str, webhook_type: &str, code: &str, extra: Value) -> bool {
        let Some(url) = self.items.get(item_id).and_then(|i| i.webhook.clone()) else {
            return false;
        };
        self.queue_to(Some(item_id), &url, webhook_type, code, extra);
        true
    }

    /// Queues a webhook to a given URL.
    pub fn queue_to(&mut self, item_id: Option<&str>, url: &str, webhook_type: &str, code: &str, extra: Value) {
        let mut body = json!({"webhook_type": webhook_type, "webhook_code": code});
        if let Some(id) = item_id {
            body["item_id"] = json!(id);
        }
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                body[k] = v;
            }
        }
        body["environment"] = json!("sandbox");
        self.outbox.push(OutgoingWebhook { item_id: item_id.map(str::to_string), url: url.to_string(), body });
    }

    /// Puts an item in an error state and tells it, as Plaid does with `ITEM: ERROR`.
    pub fn set_item_error(&mut self, item_id: &str, error: ApiError, now: DateTime<Utc>) {
        let body = error.for_webhook();
        if let Some(item) = self.items.get_mut(item_id) {
            item.error = Some(error);
            item.last_failed_update = Some(now);
        }
        self.queue(item_id, "ITEM", "ERROR", json!({"error": body}));
    }

    /// One page of `/transactions/sync` from `cursor`.
    pub fn sync_page(&mut self, item_id: &str, cursor: Option<&str>, count: usize) -> Result<SyncPage, ApiError> {
        let item = self.items.get_mut(item_id).ok_or_else(|| ApiError::code("ITEM_NOT_FOUND"))?;
        if item.pending_history.is_some() {
            // Not ready yet: no transactions and an empty cursor; the webhook comes when ready.
            item.sync_started = true;
            return Ok(SyncPage {
                added: vec![],
                modified: vec![],
                removed: vec![],
                next_cursor: String::new(),
                has_more: false,
                ready: false,
            });
        }
        let start = match cursor.filter(|c| !c.is_empty()) {
            None => 0,
            Some("now") => item.tx.log.len(),
            Some(c) => {
                let c = Cursor::decode(c)
                    .filter(|c| c.item_index == item.index && c.pos <= item.tx.log.len())
                    .ok_or_else(|| ApiError::invalid_field("cursor is not a valid cursor for this item"))?;
                if c.paging && c.generation != item.tx.generation {
                    return Err(ApiError::code("TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"));
                }
                c.pos
            }
        };
        let first_sync = !item.sync_started;
        item.sync_started = true;
        let end = (start + count).min(item.tx.log.len());
        let (mut added, mut modified, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        for change in &item.tx.log[start..end] {
            match change {
                Change::Added(t) => added.push((**t).clone()),
                Change::Modified(t) => modified.push((**t).clone()),
                Change::Removed { transaction_id, account_id } => removed.push(RemovedTransaction {
                    transaction_id: transaction_id.clone(),
                    account_id: Some(account_id.clone()),
                }),
            }
        }
        let has_more = end < item.tx.log.len();
        let next = Cursor { item_index: item.index, pos: end, generation: item.tx.generation, paging: has_more };
        if first_sync {
            // Plaid switches sync webhooks on with the first call; the history is ready at once.
            let id = item.item_id.clone();
            self.queue(
                &id,
                "TRANSACTIONS",
                "SYNC_UPDATES_AVAILABLE",
                json!({"initial_update_complete": true, "historical_update_complete": true}),
            );
        }
        Ok(SyncPage { added, modified, removed, next_cursor: next.encode(), has_more, ready: true })
    }

    /// Simulates new activity at the bank on one item.
    pub fn advance(&mut self, item_id: &str, spec: &Advance, now: DateTime<Utc>) -> Result<AdvanceSummary, ApiError> {
        let today = now.date_naive();
        let item = self.items.get_mut(item_id).ok_or_else(|| ApiError::code("ITEM_NOT_FOUND"))?;
        let mut summary = AdvanceSummary::default();
        let mut rng = item.rng.clone();
        if spec.post_pending {
            let mut pending: Vec<Arc<Transaction>> = item.tx.current.values().filter(|t| t.pending).cloned().collect();
            pending.sort_by(|a, b| a.transaction_id.cmp(&b.transaction_id));
            for p in pending {
                item.tx.remove(&p.transaction_id);
                let mut posted = (*p).clone();
                posted.transaction_id = data::plaid_id(&mut rng);
                posted.pending = false;
                posted.pending_transaction_id = Some(p.transaction_id.clone());
                posted.authorized_date = Some(p.date);
                posted.date = today.max(p.date);
                // Restaurants settle with the tip added.
                if posted.category.as_ref().is_some_and(|c| c.iter().any(|s| s == "Restaurants")) {
                    posted.amount = (posted.amount * rust_decimal::Decimal::new(118, 2)).round_dp(2);
                }
                item.apply_to_balance(&posted, true);
                summary.removed.push(p.transaction_id.clone());
                summary.added.push(posted.transaction_id.clone());
                item.tx.add(posted);
            }
        }
        if spec.modify > 0 || spec.remove > 0 {
            let mut posted: Vec<String> =
                item.tx.current.values().filter(|t| !t.pending).map(|t| t.transaction_id.clone()).collect();
            posted.sort();
            let chosen: Vec<String> = posted.choose_multiple(&mut rng, spec.modify + spec.remove).cloned().collect();
            let (to_modify, to_remove) = chosen.split_at(spec.modify.min(chosen.len()));
            for id in to_modify {
                if let Some(t) = item.tx.current.get(id) {
                    let mut t = (**t).clone();
                    t.category = Some(vec!["Shops".into(), "Discount Stores".into()]);
                    t.category_id = Some("19017000".into());
                    t.personal_finance_category = Some(crate::plaid::wire::PersonalFinanceCategory {
                        primary: "GENERAL_MERCHANDISE".into(),
                        detailed: "GENERAL_MERCHANDISE_DISCOUNT_STORES".into(),
                        confidence_level: None,
                    });
                    summary.modified.push(t.transaction_id.clone());
                    item.tx.modify(t);
                }
            }
            for id in to_remove {
                if item.tx.remove(id).is_some() {
                    summary.removed.push(id.clone());
                }
            }
        }
        let factory = TransactionFactory::new(&item.accounts);
        let mut fresh = Vec::new();
        for i in 0..spec.new {
            if let Some(t) = factory.make(&mut rng, today, i % 2 == 0) {
                fresh.push(t);
            }
        }
        for t in fresh {
            item.apply_to_balance(&t, false);
            summary.added.push(t.transaction_id.clone());
            item.tx.add(t);
        }
        item.rng = rng;
        let changed = !(summary.added.is_empty() && summary.modified.is_empty() && summary.removed.is_empty());
        if changed {
            item.tx.generation += 1;
            item.last_successful_update = now;
        }
        let sync_started = item.sync_started;
        if spec.webhooks && changed {
            if sync_started {
                self.queue(
                    item_id,
                    "TRANSACTIONS",
                    "SYNC_UPDATES_AVAILABLE",
                    json!({"initial_update_complete": true, "historical_update_complete": true}),
                );
            }
            if !summary.added.is_empty() {
                self.queue(
                    item_id,
                    "TRANSACTIONS",
                    "DEFAULT_UPDATE",
                    json!({"error": null, "new_transactions": summary.added.len()}),
                );
            }
            if !summary.removed.is_empty() {
                self.queue(
                    item_id,
                    "TRANSACTIONS",
                    "TRANSACTIONS_REMOVED",
                    json!({"error": null, "removed_transactions": summary.removed}),
                );
            }
        }
        Ok(summary)
    }
}

/// Turns a random source into a 15-character request id like Plaid's.
pub fn request_id() -> String {
    let mut rng = rand::rng();
    (0..15).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with_item(count: usize) -> (State, String) {
        let mut s = State::new(42);
        let inst = data::institution("ins_109508").unwrap();
        let id = s.create_item(
            Utc::now(),
            inst,
            vec!["transactions".into()],
            None,
            TestUser { seed: None, transaction_count: Some(count), micro_deposits: false },
            count,
            730,
        );
        (s, id)
    }

    /// Applies pages the way a client does, until `has_more` is false; returns the cursor.
    fn sync_into(
        s: &mut State,
        id: &str,
        set: &mut HashMap<String, Transaction>,
        cursor: Option<String>,
        count: usize,
    ) -> String {
        let mut cursor = cursor;
        loop {
            let page = s.sync_page(id, cursor.as_deref(), count).unwrap();
            for t in page.added.into_iter().chain(page.modified) {
                set.insert(t.transaction_id.clone(), t);
            }
            for t in page.removed {
                set.remove(&t.transaction_id);
            }
            cursor = Some(page.next_cursor);
            if !page.has_more {
                return cursor.unwrap_or_default();
            }
        }
    }

    #[test]
    fn a_delayed_history_is_empty_until_ready_then_announced() {
        let mut s = State::new(1);
        s.history_delay = std::time::Duration::from_millis(10);
        let inst = data::institution("ins_109508").unwrap();
        let user = TestUser { seed: None, transaction_count: Some(30), micro_deposits: false };
        let id = s.create_item(
            Utc::now(),
            inst,
            vec!["transactions".into()],
            Some("http://127.0.0.1:9/h".into()),
            user,
            30,
            730,
        );
        assert!(s.outbox.is_empty(), "nothing is announced before the data exists");
        let page = s.sync_page(&id, None, 100).unwrap();
        assert!(!page.ready && page.added.is_empty() && page.next_cursor.is_empty());
        s.history_ready(&id);
        let codes: Vec<_> = s.outbox.iter().map(|w| w.body["webhook_code"].as_str().unwrap().to_string()).collect();
        assert_eq!(codes, ["INITIAL_UPDATE", "HISTORICAL_UPDATE", "SYNC_UPDATES_AVAILABLE"]);
        let page = s.sync_page(&id, Some(""), 100).unwrap();
        assert_eq!(page.added.len(), 30);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor { item_index: 3, pos: 1200, generation: 4, paging: true };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert!(c.encode().len() <= 256);
        assert_eq!(Cursor::decode("not-a-cursor"), None);
    }

    #[test]
    fn syncing_to_the_end_yields_exactly_the_current_set_after_any_activity() {
        let (mut s, id) = state_with_item(250);
        let mut set = HashMap::new();
        let cursor = sync_into(&mut s, &id, &mut set, None, 100);
        assert_eq!(set.len(), 250);
        let summary = s
            .advance(&id, &Advance { new: 4, post_pending: true, modify: 3, remove: 2, webhooks: true }, Utc::now())
            .unwrap();
        assert_eq!(summary.modified.len(), 3);
        // A second round posts what the first left pending.
        s.advance(&id, &Advance::default(), Utc::now()).unwrap();
        sync_into(&mut s, &id, &mut set, Some(cursor), 7);
        let expected: std::collections::HashSet<_> = s.items[&id].tx.current.keys().cloned().collect();
        assert_eq!(set.keys().cloned().collect::<std::collections::HashSet<_>>(), expected);
        let posted: Vec<_> = set.values().filter(|t| t.pending_transaction_id.is_some()).collect();
        assert!(!posted.is_empty(), "pending transactions posted with a link to their pending id");
    }

    #[test]
    fn a_change_in_the_middle_of_pagination_fails_the_next_page() {
        let (mut s, id) = state_with_item(50);
        let page = s.sync_page(&id, None, 10).unwrap();
        assert!(page.has_more);
        let cursor = page.next_cursor;
        s.advance(&id, &Advance::default(), Utc::now()).unwrap();
        let err = s.sync_page(&id, Some(&cursor), 10).unwrap_err();
        assert_eq!(err.body.error_code, "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION");
        // Restarting from the beginning works.
        assert!(s.sync_page(&id, None, 10).is_ok());
    }

    #[test]
    fn sandbox_credentials_behave_as_documented() {
        assert!(login("user_good", "pass_good", false).is_ok());
        assert_eq!(login("user_good", "error_ITEM_LOCKED", false).unwrap_err().body.error_code, "ITEM_LOCKED");
        assert_eq!(login("user_good", "wrong", false).unwrap_err().body.error_code, "INVALID_CREDENTIALS");
        assert_eq!(
            login("user_custom", r#"{"seed":"abc","transaction_count":7}"#, false).unwrap().transaction_count,
            Some(7)
        );
        assert!(login("anyone", "", true).is_ok());
    }
}
