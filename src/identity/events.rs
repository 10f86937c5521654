//! Live connection events. The table is the truth; wake-ups are only hints.
//!
//! One dispatcher per process reads the events committed after the last one it handed out,
//! in their order, and passes each to the subscribers of its user. It wakes when this process
//! commits events, when PostgreSQL `NOTIFY`s that another process did, and every few seconds
//! in case a wake-up was lost. A subscriber first reads what it missed from the table (a
//! reconnect with `after`), then takes live events; one that falls behind (its queue is full)
//! goes back to the table from its last event, so nothing is lost or repeated.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::store::Store;
use crate::db::EVENTS_CHANNEL;
use crate::domain::ConnectionEvent;
use crate::error::{AppError, AppResult};

/// Events read from the table at a time.
const PAGE: i64 = 500;
/// Live events queued for one user's subscribers before the slowest goes back to the table.
const QUEUE: usize = 64;
/// The dispatcher looks at the table at least this often, even without a wake-up.
const POLL: Duration = Duration::from_secs(2);

/// What a subscriber receives: events in order, or an error after which the stream ends.
pub type EventStream = BoxStream<'static, AppResult<ConnectionEvent>>;

/// An opened subscription: where it starts (the last event before it, or `after`), and its events.
pub struct Watching {
    pub start: i64,
    pub events: EventStream,
}

/// Where a subscription starts, and what it covers.
#[derive(Debug, Clone, Default)]
pub struct EventWatch {
    /// One connection, by Plaid item (resolved to the connection by the identity service).
    pub plaid_item_id: Option<String>,
    /// One connection, by id.
    pub connection_id: Option<String>,
    /// Resume after this event (`seq`: a stream reopened inside the service); `None`: live
    /// events only, unless `after_own` is set.
    pub after: Option<i64>,
    /// Resume after the caller's own event of this number (`user_seq`, the public eventId).
    pub after_own: Option<i64>,
}

const EXPIRED: &str =
    "Events after the given eventId are no longer kept; read the current state and subscribe again without after.";

type Routes = Mutex<HashMap<String, broadcast::Sender<Arc<ConnectionEvent>>>>;

/// The dispatcher's routes: one queue per user with subscribers in this process.
#[derive(Clone)]
pub struct EventHub {
    store: Store,
    routes: Arc<Routes>,
}

impl EventHub {
    pub fn new(store: Store) -> Self {
        EventHub { store, routes: Arc::default() }
    }

    /// Hands out events as they commit, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let local = self.store.events_signal();
        let mut cursor = loop {
            match self.store.event_log().await {
                Ok(log) => break log.last_seq,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "event dispatcher: reading the event log failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(POLL) => {}
                    }
                }
            }
        };
        let mut listener = None;
        loop {
            if listener.is_none()
                && let Some(url) = self.store.events_listen_url()
            {
                listener = listen(url).await;
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    // Every subscriber's stream ends: an RPC stream closes so that its gateway
                    // reopens it on another identity process, after its last event.
                    self.routes.lock().unwrap_or_else(|p| p.into_inner()).clear();
                    return;
                }
                _ = local.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                got = async { listener.as_mut().expect("guarded").recv().await }, if listener.is_some() => {
                    if let Err(e) = got {
                        tracing::warn!(error = %e, "event dispatcher: the LISTEN connection failed; reconnecting");
                        listener = None;
                    }
                }
            }
            loop {
                match self.store.events_after(cursor, None, None, PAGE).await {
                    Ok(batch) => {
                        let full = batch.len() as i64 == PAGE;
                        for e in batch {
                            cursor = e.seq;
                            self.dispatch(e);
                        }
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "event dispatcher: reading events failed; retrying");
                        break;
                    }
                }
            }
        }
    }

    fn dispatch(&self, event: ConnectionEvent) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = routes.get(&event.user_id) {
            if tx.receiver_count() == 0 {
                routes.remove(&event.user_id);
            } else {
                let _ = tx.send(Arc::new(event));
            }
        }
    }

    fn subscribe(&self, user_id: &str) -> Route {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let rx = routes.entry(user_id.to_string()).or_insert_with(|| broadcast::channel(QUEUE).0).subscribe();
        Route { rx: Some(rx), user_id: user_id.to_string(), routes: self.routes.clone() }
    }

    /// A user's events (of one connection, when `connection_id` is set), after `after` or from
    /// now on. Fails before the first event when `after` is older than the retention window or
    /// names no event.
    pub async fn watch(
        &self,
        user_id: &str,
        connection_id: Option<String>,
        after: Option<i64>,
        after_own: Option<i64>,
    ) -> AppResult<Watching> {
        // Subscribe before reading where the log stands: an event committed in between is
        // both in the table and in the queue, and the cursor keeps it from being sent twice.
        let route = self.subscribe(user_id);
        let log = self.store.event_log().await?;
        let after = match after_own {
            None => after,
            Some(own) => match self.store.event_resume_point(user_id, own, log.pruned_through).await? {
                Some(seq) => Some(seq),
                None => return Err(AppError::EventsExpired(EXPIRED.into())),
            },
        };
        let cursor = match after {
            Some(seq) if seq < log.pruned_through => {
                return Err(AppError::EventsExpired(EXPIRED.into()));
            }
            Some(seq) if seq > log.last_seq => {
                return Err(AppError::BadInput("after does not name an event of this service.".into()));
            }
            Some(seq) => seq,
            None => log.last_seq,
        };
        let watcher = Watcher {
            store: self.store.clone(),
            user_id: user_id.to_string(),
            connection_id,
            cursor,
            route,
            backlog: VecDeque::new(),
            catching_up: after.is_some(),
            failed: false,
        };
        let events = Box::pin(futures::stream::unfold(watcher, |mut w| async move { w.next().await.map(|e| (e, w)) }));
        Ok(Watching { start: cursor, events })
    }
}

async fn listen(url: &str) -> Option<sqlx::postgres::PgListener> {
    let connected = async {
        let mut l = sqlx::postgres::PgListener::connect(url).await?;
        l.listen(EVENTS_CHANNEL).await?;
        Ok::<_, sqlx::Error>(l)
    };
    match connected.await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "event dispatcher: could not LISTEN; polling until it can");
            None
        }
    }
}

/// A subscriber's place in its user's queue; leaving drops the queue when it was the last.
struct Route {
    rx: Option<broadcast::Receiver<Arc<ConnectionEvent>>>,
    user_id: String,
    routes: Arc<Routes>,
}

impl Drop for Route {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if routes.get(&self.user_id).is_some_and(|tx| tx.receiver_count() == 0) {
            routes.remove(&self.user_id);
        }
    }
}

struct Watcher {
    store: Store,
    user_id: String,
    connection_id: Option<String>,
    /// The last event sent (or the point the subscription started from).
    cursor: i64,
    route: Route,
    backlog: VecDeque<ConnectionEvent>,
    /// Reading the table rather than the queue.
    catching_up: bool,
    failed: bool,
}

impl Watcher {
    async fn next(&mut self) -> Option<AppResult<ConnectionEvent>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(e) = self.backlog.pop_front() {
                self.cursor = e.seq;
                return Some(Ok(e));
            }
            if self.catching_up {
                match self
                    .store
                    .events_after(self.cursor, Some(&self.user_id), self.connection_id.as_deref(), PAGE)
                    .await
                {
                    Ok(batch) => {
                        self.catching_up = batch.len() as i64 == PAGE;
                        self.backlog.extend(batch);
                        continue;
                    }
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(AppError::internal(e.context("reading connection events"))));
                    }
                }
            }
            let rx = self.route.rx.as_mut()?;
            match rx.recv().await {
                Ok(e) if e.seq > self.cursor => {
                    if self.connection_id.as_ref().is_none_or(|c| *c == e.connection_id) {
                        self.cursor = e.seq;
                        return Some(Ok((*e).clone()));
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
