//! How the gateway reaches the asynchronous queues: in process (standalone)
//! or over the queue service's gRPC API, in the contract's (protobuf) terms.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use tonic::transport::Channel;
use tonic::Status;

use super::queue_link::RemoteQueueLink;
use crate::proto::queue_service_client::QueueServiceClient;
use crate::proto::{
    AsyncAttributesReply, AsyncAttributesRequest, AsyncCommitReply, AsyncCommitRequest,
    AsyncGetReply, AsyncGetRequest, AsyncPutReply, AsyncPutRequest, AsyncSearchReply,
    AsyncSearchRequest, AsyncWatchRequest,
};
use crate::queue::async_api::{self, ItemStream};
use crate::queue::async_service::AsyncQueues;

#[async_trait]
pub trait AsyncLink: Send + Sync + 'static {
    async fn put(&self, r: AsyncPutRequest) -> Result<AsyncPutReply, Status>;
    async fn get(&self, r: AsyncGetRequest) -> Result<AsyncGetReply, Status>;
    async fn commit(&self, r: AsyncCommitRequest) -> Result<AsyncCommitReply, Status>;
    async fn attributes(&self, r: AsyncAttributesRequest) -> Result<AsyncAttributesReply, Status>;
    async fn search(&self, r: AsyncSearchRequest) -> Result<AsyncSearchReply, Status>;
    /// Starts a watch; its claim is made before this returns, so a second
    /// watch of the same consumer fails here (ALREADY_EXISTS).
    async fn watch(&self, r: AsyncWatchRequest) -> Result<ItemStream, Status>;
}

/// In process, to the queue's [`AsyncQueues`].
pub struct LocalAsyncLink(pub Arc<AsyncQueues>);

#[async_trait]
impl AsyncLink for LocalAsyncLink {
    async fn put(&self, r: AsyncPutRequest) -> Result<AsyncPutReply, Status> {
        async_api::put(&self.0, r).await
    }
    async fn get(&self, r: AsyncGetRequest) -> Result<AsyncGetReply, Status> {
        async_api::get(&self.0, r).await
    }
    async fn commit(&self, r: AsyncCommitRequest) -> Result<AsyncCommitReply, Status> {
        async_api::commit(&self.0, r).await
    }
    async fn attributes(&self, r: AsyncAttributesRequest) -> Result<AsyncAttributesReply, Status> {
        async_api::attributes(&self.0, r).await
    }
    async fn search(&self, r: AsyncSearchRequest) -> Result<AsyncSearchReply, Status> {
        async_api::search(&self.0, r).await
    }
    async fn watch(&self, r: AsyncWatchRequest) -> Result<ItemStream, Status> {
        async_api::watch(&self.0, r).await
    }
}

impl RemoteQueueLink {
    /// Runs `op` on the queue instances in turn until one answers with
    /// something other than UNAVAILABLE (the request did not reach it).
    async fn on_any<T, F, Fut>(&self, op: F) -> Result<T, Status>
    where
        F: Fn(QueueServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut last = Status::unavailable("no queue endpoints");
        for client in self.clients_in_order() {
            match op(client).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if s.code() == tonic::Code::Unavailable => last = s,
                Err(s) => return Err(s),
            }
        }
        Err(last)
    }
}

#[async_trait]
impl AsyncLink for RemoteQueueLink {
    async fn put(&self, r: AsyncPutRequest) -> Result<AsyncPutReply, Status> {
        self.on_any(|mut c| {
            let r = r.clone();
            async move { c.async_put(r).await }
        })
        .await
    }
    async fn get(&self, r: AsyncGetRequest) -> Result<AsyncGetReply, Status> {
        self.on_any(|mut c| {
            let r = r.clone();
            async move { c.async_get(r).await }
        })
        .await
    }
    async fn commit(&self, r: AsyncCommitRequest) -> Result<AsyncCommitReply, Status> {
        self.on_any(|mut c| {
            let r = r.clone();
            async move { c.async_commit(r).await }
        })
        .await
    }
    async fn attributes(&self, r: AsyncAttributesRequest) -> Result<AsyncAttributesReply, Status> {
        self.on_any(|mut c| {
            let r = r.clone();
            async move { c.async_attributes(r).await }
        })
        .await
    }
    async fn search(&self, r: AsyncSearchRequest) -> Result<AsyncSearchReply, Status> {
        self.on_any(|mut c| {
            let r = r.clone();
            async move { c.async_search(r).await }
        })
        .await
    }
    async fn watch(&self, r: AsyncWatchRequest) -> Result<ItemStream, Status> {
        let stream = self
            .on_any(|mut c| {
                let r = r.clone();
                async move { c.async_watch(r).await }
            })
            .await?;
        Ok(stream.boxed())
    }
}
