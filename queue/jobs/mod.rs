//! The job queues: go-infer's synchronous calls. A caller's job is stored,
//! leased to a dispatcher session, and completed with its result, which
//! wakes the caller.
//!
//! - [`store`]: the storage contract [`JobStore`], with [`memory`] (one
//!   process) and [`redis`] (Redis Streams, shared by several queue
//!   instances; Lua scripts as `.lua` files beside it) behind it;
//! - [`timed`]: a store's operations timed and failures counted (metrics);
//! - [`waiters`]: callers blocked in `Call`, woken when their result arrives;
//! - [`JobQueueSource`]: one job queue as a dispatcher session's job source.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::proto::JobResult;
use crate::queue::error::StoreError;
use crate::queue::source::{JobSource, Lease};

pub mod memory;
pub mod redis;
pub mod store;
pub mod timed;
pub mod waiters;

pub use memory::MemoryJobStore;
pub use redis::RedisJobStore;
pub use store::{DeadLetter, Enqueued, JobStore, JobStoreOptions};
pub use waiters::ResultWaiters;

/// One job queue of a [`JobStore`], as a dispatcher session's job source.
pub struct JobQueueSource {
    pub store: Arc<dyn JobStore>,
    pub queue: String,
}

#[async_trait]
impl JobSource for JobQueueSource {
    async fn lease(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Lease>, StoreError> {
        self.store.lease(&self.queue, consumer, max, wait).await
    }
    async fn complete_batch(&self, done: &[(Lease, JobResult)]) -> Result<(), StoreError> {
        self.store.complete_batch(done).await
    }
    async fn complete_unleased(&self, result: JobResult) -> Result<bool, StoreError> {
        self.store.complete_unleased(&self.queue, result).await
    }
    async fn release(&self, consumer: &str) -> Result<usize, StoreError> {
        self.store.release(&self.queue, consumer).await
    }
}
