//! The asynchronous queues in the contract's terms (`async.proto`): requests
//! in, replies or gRPC statuses out. The queue's gRPC server and the
//! gateway's in-process link both call these, so the semantics are the same.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::service::{EasError, EasQueues, WatchSpec};
use super::store::{Item, ItemState, Negative, QueueRef, Selector};
pub use crate::proto::eas::MAX_GET_LENGTH;
pub use crate::proto::ItemStream;
use crate::proto::{
    async_commit_request, AsyncAttributesReply, AsyncAttributesRequest, AsyncCommitReply,
    AsyncCommitRequest, AsyncGetReply, AsyncGetRequest, AsyncItem, AsyncPutReply, AsyncPutRequest,
    AsyncQueueRef, AsyncSearchReply, AsyncSearchRequest, AsyncWatchRequest,
};

impl From<EasError> for Status {
    fn from(e: EasError) -> Self {
        let m = e.to_string();
        match e {
            EasError::UnknownService(_) => Status::not_found(m),
            EasError::QueueOff(_) => Status::failed_precondition(m),
            EasError::TooLarge { .. } => Status::out_of_range(m),
            EasError::Full { .. } => Status::resource_exhausted(m),
            EasError::AlreadyWatching(_) => Status::already_exists(m),
            EasError::Invalid(_) => Status::invalid_argument(m),
            EasError::Unavailable(_) => Status::unavailable(m),
        }
    }
}

fn queue_ref(q: Option<AsyncQueueRef>) -> Result<QueueRef, Status> {
    let q = q.ok_or_else(|| Status::invalid_argument("queue is missing"))?;
    if q.service.is_empty() {
        return Err(Status::invalid_argument("queue.service is empty"));
    }
    Ok(QueueRef {
        service: q.service,
        sink: q.sink,
    })
}

pub fn to_proto(item: Item) -> AsyncItem {
    AsyncItem {
        index: item.index,
        tags: item.tags.into_iter().collect(),
        data: item.data,
        message: String::new(),
    }
}

fn sorted(tags: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    tags.into_iter().collect()
}

pub async fn put(aq: &EasQueues, r: AsyncPutRequest) -> Result<AsyncPutReply, Status> {
    let q = queue_ref(r.queue)?;
    let (index, request_id) = aq.put(&q, r.data, sorted(r.tags), r.priority).await?;
    Ok(AsyncPutReply { index, request_id })
}

pub async fn get(aq: &EasQueues, r: AsyncGetRequest) -> Result<AsyncGetReply, Status> {
    let q = queue_ref(r.queue)?;
    let which = if !r.request_id.is_empty() {
        Selector::RequestId(r.request_id)
    } else if r.index < 0 {
        Selector::Newest
    } else {
        Selector::From(r.index as u64)
    };
    let length = r.length.clamp(1, MAX_GET_LENGTH) as usize;
    let items = aq
        .get(
            &q,
            which,
            length,
            &sorted(r.tags),
            r.auto_delete,
            Duration::from_millis(r.timeout_ms),
        )
        .await?;
    Ok(AsyncGetReply {
        items: items.into_iter().map(to_proto).collect(),
    })
}

pub async fn commit(aq: &EasQueues, r: AsyncCommitRequest) -> Result<AsyncCommitReply, Status> {
    use async_commit_request::Kind;
    let q = queue_ref(r.queue)?;
    let kind = Kind::try_from(r.kind).map_err(|_| Status::invalid_argument("unknown kind"))?;
    let count = match kind {
        Kind::Commit | Kind::Delete => aq.commit(&q, &r.indexes).await?,
        Kind::Negative => {
            let [index] = r.indexes[..] else {
                return Err(Status::invalid_argument(
                    "a negative commit names exactly one index",
                ));
            };
            let negative = Negative {
                index,
                code: r.code,
                reason: r.reason,
            };
            u64::from(aq.reject(&q, negative).await?)
        }
        Kind::Truncate => {
            let [before] = r.indexes[..] else {
                return Err(Status::invalid_argument("truncate names exactly one index"));
            };
            aq.truncate(&q, before).await?
        }
    };
    Ok(AsyncCommitReply { count })
}

pub async fn attributes(
    aq: &EasQueues,
    r: AsyncAttributesRequest,
) -> Result<AsyncAttributesReply, Status> {
    let q = queue_ref(r.queue)?;
    Ok(AsyncAttributesReply {
        attributes: aq.attributes(&q).await?.into_iter().collect(),
    })
}

pub async fn search(aq: &EasQueues, r: AsyncSearchRequest) -> Result<AsyncSearchReply, Status> {
    let q = queue_ref(r.queue)?;
    let mut reply = AsyncSearchReply::default();
    match aq.search(&q, r.index).await? {
        None => {}
        Some(ItemState::Ready { ahead }) => {
            reply.found = true;
            reply.wait_count = ahead;
        }
        Some(ItemState::Held { consumer }) => {
            reply.found = true;
            reply.is_pending = true;
            reply.consumer = consumer;
        }
        Some(ItemState::Rejected(n)) => {
            reply.found = true;
            reply.rejected = true;
            reply.code = n.code;
            reply.reason = n.reason;
        }
    }
    Ok(reply)
}

pub async fn watch(aq: &Arc<EasQueues>, r: AsyncWatchRequest) -> Result<ItemStream, Status> {
    let q = queue_ref(r.queue)?;
    if r.consumer.is_empty() {
        return Err(Status::invalid_argument("consumer is empty"));
    }
    let spec = WatchSpec {
        consumer: r.consumer,
        from: r.index,
        window: r.window,
        auto_commit: r.auto_commit,
        tags: sorted(r.tags),
    };
    let rx = aq.watch(&q, spec).await?;
    Ok(ReceiverStream::new(rx)
        .map(|r| r.map(to_proto).map_err(Status::from))
        .boxed())
}
