//! The emulator's memory: items, tokens, each item's transaction change log, and the webhooks
//! waiting to be sent. Everything here is synchronous and runs under one lock.
//!
//! `items.rs` holds an item and its change log, `history.rs` the sync pages and simulated
//! activity read from that log, `cursors.rs` the sync cursor, `users.rs` Sandbox's test users.

mod cursors;
mod history;
mod items;
mod users;

use std::collections::HashMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::data::{self, InstitutionFixture, TransactionFactory};
use super::errors::ApiError;
use super::faults::{Faults, RateLimitMode, RateWindows};
use crate::plaid::wire::LinkTokenCreateRequest;

pub use cursors::Cursor;
pub use history::{Advance, AdvanceSummary, SyncPage};
pub use items::{Change, ItemRecord, TxBook};
use users::seed_from;
pub use users::{TestUser, login};

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
    /// Link sessions in a browser (`link_web`).
    pub link_sessions: crate::emulator::link_web::session::LinkSessions,
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
            link_sessions: Default::default(),
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
        if let Some(masks) = &user.accounts {
            accounts.retain(|a| a.account.mask.as_ref().is_some_and(|m| masks.contains(m)));
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
}

/// Turns a random source into a 15-character request id like Plaid's.
pub fn request_id() -> String {
    let mut rng = rand::rng();
    (0..15).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plaid::wire::Transaction;

    fn state_with_item(count: usize) -> (State, String) {
        let mut s = State::new(42);
        let inst = data::institution("ins_109508").unwrap();
        let id = s.create_item(
            Utc::now(),
            inst,
            vec!["transactions".into()],
            None,
            TestUser { seed: None, transaction_count: Some(count), micro_deposits: false, accounts: None },
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
        let user = TestUser { seed: None, transaction_count: Some(30), micro_deposits: false, accounts: None };
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
