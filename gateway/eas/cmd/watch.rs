//! `GET ?_watch_=true` with a WebSocket upgrade: the queue's items as binary
//! DataFrameProto frames, at most `_window_` (the queue caps it at 1000) held
//! and not committed, from `_index_`, committed as sent with `_auto_commit_`;
//! `_index_only_` sends the items without their data. The consumer id is the
//! `X-EAS-QueueService-Redis-Uid` header; one watch per consumer.
//!
//! `_auto_commit_` commits an item once its frame is written to the socket,
//! not when the queue hands it out: the queue holds it for the watch like any
//! other until then, so a watcher that goes away loses none of the items
//! that were on their way to it (they are ready for its next watch).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Response;
use futures::StreamExt;
use prost::Message as _;
use tokio::time::Instant;

use crate::gateway::eas::{ApiError, Query};
use crate::proto::eas::HEADER_USER;
use crate::proto::{
    async_commit_request::Kind, AsyncCommitRequest, AsyncQueueRef, AsyncWatchRequest, EasLink,
    ItemStream,
};

pub struct Watch {
    upgrade: WebSocketUpgrade,
    request: AsyncWatchRequest,
    index_only: bool,
}

impl Watch {
    pub async fn parse(q: &Query, parts: &mut Parts) -> Result<Self, ApiError> {
        let consumer = parts
            .headers
            .get(HEADER_USER)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "{HEADER_USER} (the consumer id) is required to watch"
                ))
            })?
            .to_string();
        let upgrade = WebSocketUpgrade::from_request_parts(parts, &())
            .await
            .map_err(|e| ApiError::bad(format!("a watch is a WebSocket upgrade: {e}")))?
            // A watcher sends nothing but control frames: small messages only.
            .max_message_size(64 << 10)
            .max_frame_size(64 << 10);
        let window = q.number::<u32>("_window_")?.unwrap_or(1);
        if window == 0 {
            return Err(ApiError::bad("_window_ must be at least 1"));
        }
        Ok(Watch {
            upgrade,
            index_only: q.flag("_index_only_")?,
            request: AsyncWatchRequest {
                queue: None,
                consumer,
                index: q.number::<u64>("_index_")?.unwrap_or(0),
                window,
                auto_commit: q.flag("_auto_commit_")?,
                tags: q.tags(),
            },
        })
    }

    pub async fn apply(
        self,
        link: &Arc<dyn EasLink>,
        queue: AsyncQueueRef,
    ) -> Result<Response, ApiError> {
        // Auto commit is done here, as each frame goes out: the queue holds
        // the items meanwhile.
        let commit_as_sent = self.request.auto_commit.then(|| AsCommitted {
            link: Arc::clone(link),
            queue: queue.clone(),
        });
        let request = AsyncWatchRequest {
            queue: Some(queue),
            auto_commit: false,
            ..self.request
        };
        // Claims the watch now, so a second one is refused before upgrading.
        let items = link.watch(request).await?;
        let index_only = self.index_only;
        Ok(self
            .upgrade
            .on_upgrade(move |socket| send_items(socket, items, index_only, commit_as_sent)))
    }
}

/// Where an auto-commit watch commits the items it has sent.
struct AsCommitted {
    link: Arc<dyn EasLink>,
    queue: AsyncQueueRef,
}

impl AsCommitted {
    /// Commits the item at `index`. When that fails the item stays held
    /// and is ready again when the watch ends: delivered again, not lost.
    async fn commit(&self, index: u64) {
        let r = self
            .link
            .commit(AsyncCommitRequest {
                queue: Some(self.queue.clone()),
                indexes: vec![index],
                kind: Kind::Commit as i32,
                ..Default::default()
            })
            .await;
        if let Err(status) = r {
            tracing::warn!(index, error = %status.message(), "auto commit failed; the item is delivered again");
        }
    }
}

/// How long one frame may take to go out before the watch is ended (a
/// client that stops reading gives its items back for its next watch).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Pings go out this often; a client silent for three of them is gone.
const PING_EVERY: Duration = Duration::from_secs(15);

/// Sends the watch's items as binary DataFrameProto frames until either
/// side ends. The socket is read throughout, so pings are answered and a
/// close is seen at once; ending drops the item stream, which releases the
/// consumer's uncommitted items for its next watch. A frame that cannot be
/// sent within [`SEND_TIMEOUT`], or a client that answers nothing (not even
/// our pings) for three [`PING_EVERY`]s, ends the watch.
async fn send_items(
    mut socket: WebSocket,
    mut items: ItemStream,
    index_only: bool,
    commit_as_sent: Option<AsCommitted>,
) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            // A close already read ends the watch before another item goes.
            biased;
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => heard = Instant::now(),
            },
            item = items.next() => match item {
                Some(Ok(mut it)) => {
                    if index_only {
                        it.data.clear();
                    }
                    let index = it.index;
                    let frame = Message::Binary(it.encode_to_vec().into());
                    if !send_within(&mut socket, frame).await {
                        return;
                    }
                    if let Some(c) = &commit_as_sent {
                        c.commit(index).await;
                    }
                }
                Some(Err(status)) => {
                    tracing::warn!(error = %status.message(), "watch ended by the queue");
                    let _ = send_within(&mut socket, Message::Close(None)).await;
                    return;
                }
                None => {
                    let _ = send_within(&mut socket, Message::Close(None)).await;
                    return;
                }
            },
            _ = ping.tick() => {
                if heard.elapsed() > 3 * PING_EVERY {
                    tracing::info!("watch ended: the client answers nothing");
                    return;
                }
                if !send_within(&mut socket, Message::Ping(Default::default())).await {
                    return;
                }
            }
        }
    }
}

/// Sends one frame within [`SEND_TIMEOUT`]; false when it could not.
async fn send_within(socket: &mut WebSocket, frame: Message) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(frame)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::info!("watch ended: the client does not read");
            false
        }
    }
}
