//! Event streams from the identity service: `WatchConnectionEvents`, reopened after the last
//! event delivered when it breaks, so a restart or a dead endpoint loses nothing.

use std::time::{Duration, Instant};

use futures::StreamExt;

use super::{Lane, PROBE_EVERY, RemoteIdentity, Retry, TOO_SLOW, UNAVAILABLE};
use crate::domain::ConnectionEvent;
use crate::error::{AppError, AppResult};
use crate::identity::{EventWatch, Watching};
use crate::rpc::convert as c;
use crate::rpc::pb;
use crate::rpc::status::{Failure, from_status};

/// How long a broken event stream may take to reopen before the subscriber is told.
const RESUME_WITHIN: Duration = Duration::from_secs(10);

impl RemoteIdentity {
    /// Opens the stream (within the request's deadline, retried once like a read). When it
    /// breaks, it is opened again after the last event received, so a restart or a dead
    /// endpoint of the identity service loses nothing; when it cannot be reopened within
    /// [`RESUME_WITHIN`], the subscriber gets UPSTREAM_UNAVAILABLE (and resumes itself).
    pub(super) async fn watch_events(&self, user_id: &str, watch: EventWatch) -> AppResult<Watching> {
        let (start, stream) = self.open_events(user_id, &watch, watch.after, watch.after_own).await?;
        let resume = Resume {
            remote: self.clone(),
            user_id: user_id.to_string(),
            watch,
            last: start,
            stream: Some(stream),
            done: false,
        };
        let events = futures::stream::unfold(resume, |mut r| async move { r.next().await.map(|e| (e, r)) }).boxed();
        Ok(Watching { start, events })
    }

    /// Opens an event stream and reads its first message, the position it starts from.
    async fn open_events(
        &self,
        user_id: &str,
        watch: &EventWatch,
        after: Option<i64>,
        after_own: Option<i64>,
    ) -> AppResult<(i64, tonic::Streaming<pb::WatchedEvent>)> {
        let msg = pb::WatchConnectionEventsRequest {
            user_id: user_id.to_string(),
            platform_item_id: watch.plaid_item_id.clone(),
            connection_id: watch.connection_id.clone(),
            after,
            after_own,
        };
        let mut stream = self
            .call_on(
                crate::trace::current(),
                Lane::Stream,
                "WatchConnectionEvents",
                Retry::Once,
                msg,
                |mut cl, r| async move { cl.watch_connection_events(r).await },
            )
            .await?;
        let first = tokio::time::timeout(self.inner.fallback_deadline, stream.message()).await;
        match first {
            Ok(Ok(Some(pb::WatchedEvent { cursor, event: None }))) => Ok((cursor, stream)),
            Ok(Ok(_)) => Err(AppError::internal(anyhow::anyhow!(
                "identity RPC: an event stream did not start with its position"
            ))),
            Ok(Err(status)) => Err(match from_status(status) {
                Failure::Answer(e) => e,
                _ => AppError::Upstream(UNAVAILABLE.into()),
            }),
            Err(_) => Err(AppError::Upstream(TOO_SLOW.into())),
        }
    }
}

/// An event stream that reopens itself after the last event it delivered.
struct Resume {
    remote: RemoteIdentity,
    user_id: String,
    watch: EventWatch,
    /// The stream's position: the last event delivered, or where it started.
    last: i64,
    stream: Option<tonic::Streaming<pb::WatchedEvent>>,
    /// An error was delivered: the stream is over.
    done: bool,
}

impl Resume {
    async fn next(&mut self) -> Option<AppResult<ConnectionEvent>> {
        let event = self.next_event().await;
        if matches!(event, Some(Err(_))) {
            self.done = true;
        }
        event
    }

    async fn next_event(&mut self) -> Option<AppResult<ConnectionEvent>> {
        if self.done {
            return None;
        }
        let mut broken_since: Option<Instant> = None;
        loop {
            let Some(stream) = self.stream.as_mut() else {
                let since = *broken_since.get_or_insert_with(Instant::now);
                match self.remote.open_events(&self.user_id, &self.watch, Some(self.last), None).await {
                    Ok((_, s)) => {
                        tracing::info!(after = self.last, "identity event stream reopened");
                        self.stream = Some(s);
                    }
                    Err(AppError::Upstream(_)) if since.elapsed() < RESUME_WITHIN => {
                        tokio::time::sleep(PROBE_EVERY).await;
                    }
                    Err(e) => return Some(Err(e)),
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(pb::WatchedEvent { cursor, event: Some(e) })) => {
                    let event = c::from_event(e, &self.user_id);
                    if event.is_ok() {
                        self.last = cursor;
                    }
                    return Some(event);
                }
                Ok(Some(pb::WatchedEvent { event: None, .. })) => {}
                // The service ended it (it is shutting down): reopen, elsewhere when it can.
                Ok(None) => self.stream = None,
                Err(status) => match from_status(status) {
                    Failure::Answer(e) => return Some(Err(e)),
                    Failure::Connection(_) | Failure::Other(_) => {
                        tracing::warn!(after = self.last, "identity event stream broke; reopening");
                        self.stream = None;
                    }
                    Failure::Refused(_) => return Some(Err(AppError::Upstream(UNAVAILABLE.into()))),
                },
            }
        }
    }
}
