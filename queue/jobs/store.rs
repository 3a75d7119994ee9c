//! [`JobStore`]: the storage contract of the job queues (go-infer's
//! synchronous calls), with [`super::memory`] and [`super::redis`] behind it.
//!
//! Shaped for durable, acknowledged delivery (the Redis Streams backend has the
//! same shape as the in-memory one): a job is stored by `enqueue`, handed to a
//! consumer by `lease` and stays stored, leased, until `complete` records its
//! result and removes it. If the consumer goes away first, `release` puts its
//! leased jobs back at the head of the queue for another consumer. So a job is
//! delivered at least once; each delivery is counted in `Job.deliveries`, and a
//! job delivered `max_deliveries` times without a result is dead-lettered and
//! answered with InferFail instead of being handed out again.
//!
//! Storing is idempotent by request id: a second store of an id that is
//! stored (a gateway's resend to another queue instance, a client's repeated
//! idempotency key) stores nothing and waits for the first one's result; one
//! whose result is still kept gets that result. So failover never runs a job
//! twice on its own account.

use std::time::Duration;

use crate::proto::{Job, JobResult};
use crate::queue::error::StoreError;
use crate::queue::source::{Lease, QueueDepth};
use async_trait::async_trait;

/// Limits and identity of a job store.
#[derive(Debug, Clone)]
pub struct JobStoreOptions {
    /// The queue-service instance this backend belongs to (matches `Job.reply_to`).
    pub instance_id: String,
    /// Most ready jobs in one queue.
    pub max_queue_length: usize,
    /// Deliveries before a job is dead-lettered.
    pub max_deliveries: u32,
    /// The code a dead-lettered job is answered with (InferFail).
    pub dead_letter_code: i32,
    /// How long results are kept for lookup by id.
    pub result_ttl: Duration,
    /// Most results kept.
    pub max_results: usize,
    /// Most bytes of results kept (memory store; Redis expires them by time).
    pub max_result_bytes: usize,
}

impl Default for JobStoreOptions {
    fn default() -> Self {
        JobStoreOptions {
            instance_id: "local".into(),
            max_queue_length: 100_000,
            max_deliveries: 3,
            dead_letter_code: 9998,
            result_ttl: Duration::from_secs(300),
            max_results: 100_000,
            max_result_bytes: 64 << 20,
        }
    }
}

/// What storing a job did.
#[derive(Debug, Clone, PartialEq)]
pub enum Enqueued {
    /// Stored: it will run.
    Stored,
    /// A job with this request id (and fingerprint) is already stored; this
    /// call waits for its result.
    Joined,
    /// The request id's result is still kept: the answer, at once.
    Done(JobResult),
}

/// A job that was given up on, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The backend's id of the dead letter (the dead-letter stream entry id in
    /// Redis; the request id in memory).
    pub id: String,
    pub job: Job,
    pub reason: String,
    /// When it was dead-lettered (unix ms).
    pub at_unix_ms: i64,
}

#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// A short name for logs: "memory", "redis".
    fn kind(&self) -> &'static str;

    /// Stores `job` in `job.queue`: at the tail, or ahead of normal jobs when
    /// `job.priority > 0`, unless its request id is stored already (then
    /// `Joined`, or `IdConflict` when [`Job::fingerprint`] differs) or its
    /// result is kept (`Done`). Refused with `QueueFull` when the queue is at
    /// its limit; with `job.join_only`, stores nothing new (`NothingToJoin`).
    async fn enqueue(&self, job: &Job) -> Result<Enqueued, StoreError>;

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
    ) -> Result<Vec<Lease>, StoreError>;

    /// Records `result` for a leased job, removes the job and wakes the caller
    /// waiting for it (the instance named by `job.reply_to`).
    async fn complete(&self, lease: &Lease, result: JobResult) -> Result<(), StoreError>;

    /// Completes several leases at once (the Redis backend stores them in one
    /// round trip). All or nothing: on error none counts as stored, and
    /// storing them again is harmless.
    async fn complete_batch(&self, done: &[(Lease, JobResult)]) -> Result<(), StoreError> {
        for (lease, result) in done {
            self.complete(lease, result.clone()).await?;
        }
        Ok(())
    }

    /// Records the result of a job `queue` stores that no lease of the caller
    /// covers: a dispatcher's answer sent again after the stream it came for
    /// was lost (its queue instance died). Stored and delivered when the
    /// request id is stored and has no result yet; the job, wherever it is
    /// held, is then not run again. False when nothing was stored.
    async fn complete_unleased(&self, queue: &str, result: JobResult) -> Result<bool, StoreError>;

    /// Returns every job `consumer` holds in `queue` to the head of the queue
    /// (ahead of jobs never delivered); the number returned.
    async fn release(&self, queue: &str, consumer: &str) -> Result<usize, StoreError>;

    /// Whether the store answers now.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Depths of `queue`, or of every known queue when `None`.
    async fn depth(&self, queue: Option<&str>) -> Result<Vec<QueueDepth>, StoreError>;

    /// The stored result of a request, while it is kept.
    async fn result(&self, request_id: &str) -> Result<Option<JobResult>, StoreError>;

    /// Up to `max` dead letters of `queue`, oldest first.
    async fn dead_letters(&self, queue: &str, max: usize) -> Result<Vec<DeadLetter>, StoreError>;

    /// Puts dead letters of `queue` back at the tail of the queue with their
    /// delivery count and deadline cleared (the caller is long gone; the result
    /// is kept for lookup by id): those with the given ids, or all when `ids`
    /// is empty. Returns how many were re-queued.
    async fn requeue_dead(&self, queue: &str, ids: &[String]) -> Result<usize, StoreError>;
}
