//! A socket's writer: its own task behind a bounded queue, each write bounded by
//! `WS_SEND_TIMEOUT_SECONDS`. The session never waits on a client that does not read: it
//! queues what has room, pulls no subscription events while the queue is full, drops pings
//! and pongs rather than queue them behind other messages, and closes with 1008 once a write
//! has waited past the timeout.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages waiting for the writer, at most (events are small; pongs are never queued behind
/// anything, so one large echoed payload at most waits here).
const QUEUE: usize = 32;

/// Why a message was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum NotSent {
    /// The client reads too slowly: the queue is full.
    Full,
    /// The writer has ended (the peer is gone, or a write timed out).
    Closed,
}

pub(super) struct Outbox {
    queue: mpsc::Sender<Message>,
    /// A write waited past the send timeout: the client does not read.
    pub(super) stalled: CancellationToken,
    /// A write failed: the peer is gone.
    pub(super) failed: CancellationToken,
    writer: tokio::task::JoinHandle<()>,
}

impl Outbox {
    pub(super) fn start(mut sink: SplitSink<WebSocket, Message>, send_timeout: Duration) -> Outbox {
        let (queue, mut rx) = mpsc::channel::<Message>(QUEUE);
        let (stalled, failed) = (CancellationToken::new(), CancellationToken::new());
        let writer = tokio::spawn({
            let (stalled, failed) = (stalled.clone(), failed.clone());
            async move {
                while let Some(message) = rx.recv().await {
                    let last = matches!(message, Message::Close(_));
                    match tokio::time::timeout(send_timeout, sink.send(message)).await {
                        Ok(Ok(())) if !last => {}
                        Ok(Ok(())) => return,
                        Ok(Err(_)) => return failed.cancel(),
                        Err(_) => return stalled.cancel(),
                    }
                }
            }
        });
        Outbox { queue, stalled, failed, writer }
    }

    /// Whether a message can be queued now.
    pub(super) fn has_room(&self) -> bool {
        self.queue.capacity() > 0
    }

    /// Queues a protocol message.
    pub(super) fn push(&self, message: Message) -> Result<(), NotSent> {
        self.queue.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => NotSent::Full,
            mpsc::error::TrySendError::Closed(_) => NotSent::Closed,
        })
    }

    /// Queues a ping or pong only when nothing else is waiting; otherwise it is dropped (a
    /// client flooding pings gets fewer pongs, never a longer queue).
    pub(super) fn offer(&self, message: Message) {
        if self.queue.capacity() == self.queue.max_capacity() {
            let _ = self.queue.try_send(message);
        }
    }

    /// Sends the close frame if the client reads it within `grace`, then ends the writer
    /// (dropping its half of the socket).
    pub(super) async fn close(self, frame: CloseFrame, grace: Duration) {
        let Outbox { queue, mut writer, .. } = self;
        let _ = queue.try_send(Message::Close(Some(frame)));
        drop(queue);
        if tokio::time::timeout(grace, &mut writer).await.is_err() {
            writer.abort();
        }
    }
}
