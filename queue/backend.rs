//! The storage contract of the queue service.
//!
//! Shaped for durable, acknowledged delivery (the Redis Streams backend has the
//! same shape as the in-memory one): a job is stored by `enqueue`, handed to a
//! consumer by `lease` and stays stored, leased, until `complete` records its
//! result and removes it. If the consumer goes away first, `release` puts its
//! leased jobs back at the head of the queue for another consumer. So a job is
//! delivered at least once; each delivery is counted in `Job.deliveries`, and a
//! job delivered `max_deliveries` times without a result is dead-lettered and
//! answered with InferFail instead of being handed out again.

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use crate::proto::{Job, JobResult};

/// Why a backend operation failed. Callers branch on it: `QueueFull` is the
/// client's 9702, `Unavailable` is retried or reported as 9702.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum BackendError {
    #[error("queue {queue} is full ({limit} jobs waiting)")]
    QueueFull { queue: String, limit: usize },
    #[error("queue backend unavailable: {0}")]
    Unavailable(String),
}

/// A job handed to a consumer, with the backend's handle for completing it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub job: Job,
    /// Backend-specific handle (the stream entry id for Redis; empty in memory).
    pub tag: String,
}

/// Depth of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub queue: String,
    /// Waiting to be delivered.
    pub ready: u64,
    /// Delivered, not yet completed.
    pub leased: u64,
}

#[async_trait]
pub trait QueueBackend: Send + Sync + 'static {
    /// A short name for logs: "memory", "redis".
    fn kind(&self) -> &'static str;

    /// Stores `job` in `job.queue`: at the tail, or ahead of normal jobs when
    /// `job.priority > 0`. Refused with `QueueFull` when the queue is at its limit.
    async fn enqueue(&self, job: Job) -> Result<(), BackendError>;

    /// Hands up to `max` jobs of `queue` to `consumer`, waiting up to `wait`
    /// for the first one (an empty vector when none came). Increments each
    /// job's `deliveries`. Cancel-safe: a lease future dropped before it
    /// returns leases nothing that `release` would not return.
    async fn lease(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Lease>, BackendError>;

    /// Records `result` for a leased job, removes the job and wakes the caller
    /// waiting for it (the instance named by `job.reply_to`).
    async fn complete(&self, lease: &Lease, result: JobResult) -> Result<(), BackendError>;

    /// Returns every job `consumer` holds in `queue` to the head of the queue;
    /// the number returned.
    async fn release(&self, queue: &str, consumer: &str) -> Result<usize, BackendError>;

    /// Depths of `queue`, or of every known queue when `None`.
    async fn depth(&self, queue: Option<&str>) -> Result<Vec<QueueDepth>, BackendError>;

    /// The stored result of a request, while it is kept.
    async fn result(&self, request_id: &str) -> Result<Option<JobResult>, BackendError>;
}
