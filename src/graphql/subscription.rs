//! The contract's subscription: live connection events, served over WebSocket
//! (`graphql-transport-ws`, see `http::ws`). The identity service decides what the caller may
//! see; this layer only translates and counts.

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, Subscription as SubscriptionRoot};
use futures::{Stream, StreamExt};

use super::GqlResult;
use super::guards::{RequireScope, caller};
use super::inputs::PlaidConnectionEventsInput;
use super::types::PlaidConnectionEvent;
use crate::auth::MANAGE_PAYMENT;
use crate::identity::IdentityService;

pub struct Subscription;

/// Live events.
#[SubscriptionRoot]
impl Subscription {
    /// The caller's connection events, in order: LINKED, the first sync's progress and
    /// HISTORY_READY, later TRANSACTIONS_UPDATED and BALANCES_UPDATED, STATUS_CHANGED, REMOVED.
    /// With `after`, every event after that one first (nothing is lost across reconnects within
    /// EVENT_RETENTION_HOURS; older gives EVENTS_EXPIRED), then live ones.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)")]
    async fn plaid_connection_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which connection, and where to resume (all the caller's, live, when omitted).")]
        input: Option<PlaidConnectionEventsInput>,
    ) -> async_graphql::Result<impl Stream<Item = GqlResult<PlaidConnectionEvent>> + use<>> {
        let user = caller(ctx)?.to_string();
        let watch = input.unwrap_or_default().watch()?;
        let identity = ctx.data_unchecked::<Arc<dyn IdentityService>>();
        let watching = identity.connection_events(&user, watch).await.map_err(|e| e.extend())?;
        let state = Watched { events: watching.events, failed: false, _active: Active::new() };
        // After an error the subscription completes (the client resubscribes with `after`). A
        // stream the identity service ends without one (it is shutting down) does not
        // complete: the socket closes as going away, and the client reconnects.
        Ok(futures::stream::unfold(state, |mut w| async move {
            if w.failed {
                return None;
            }
            match w.events.next().await {
                Some(Ok(e)) => {
                    metrics::counter!(crate::metrics::EVENTS_DELIVERED).increment(1);
                    let lag = (chrono::Utc::now() - e.occurred_at).to_std().unwrap_or_default();
                    metrics::histogram!(crate::metrics::EVENT_DELIVERY_LAG_SECONDS).record(lag.as_secs_f64());
                    Some((Ok(PlaidConnectionEvent::from(&e)), w))
                }
                Some(Err(e)) => {
                    w.failed = true;
                    Some((Err(e.extend()), w))
                }
                None => futures::future::pending().await,
            }
        }))
    }
}

struct Watched {
    events: crate::identity::EventStream,
    failed: bool,
    _active: Active,
}

/// One active subscription, counted while it lives.
struct Active;

impl Active {
    fn new() -> Self {
        metrics::gauge!(crate::metrics::SUBSCRIPTIONS).increment(1.0);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::SUBSCRIPTIONS).decrement(1.0);
    }
}
