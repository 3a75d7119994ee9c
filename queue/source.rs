//! [`JobSource`]: where a dispatcher session's jobs come from — a job queue
//! ([`crate::queue::jobs::JobQueueSource`]) or a PAI-EAS service's input
//! queue ([`crate::queue::eas::EasInput`]) — and the [`Lease`] it hands out.

use std::time::Duration;

use async_trait::async_trait;

use crate::proto::{Job, JobResult};
use crate::queue::error::StoreError;

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
    /// When the oldest job stored (waiting or leased) was stored, unix ms;
    /// 0 when the queue is empty or the store cannot tell.
    pub oldest_unix_ms: i64,
}

/// A session leases from a source, completes what it leased and, when its
/// stream ends, releases what it still holds.
#[async_trait]
pub trait JobSource: Send + Sync + 'static {
    /// Up to `max` jobs for `consumer`, waiting up to `wait` for the first.
    async fn lease(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Lease>, StoreError>;
    /// Stores results; all or nothing.
    async fn complete_batch(&self, done: &[(Lease, JobResult)]) -> Result<(), StoreError>;
    /// Records a result that none of the caller's leases covers (a
    /// dispatcher's answer to a job of a stream it lost); true when it was
    /// stored. Sources that cannot do that store nothing: the job is run
    /// again where it is redelivered.
    async fn complete_unleased(&self, _result: JobResult) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Returns the consumer's jobs to the queue; how many.
    async fn release(&self, consumer: &str) -> Result<usize, StoreError>;
}

/// Why a Dispatch stream's Hello names no queue this service has.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SourceError {
    #[error("{0}: this queue service has no PAI-EAS services")]
    NoEasServices(String),
    #[error("no PAI-EAS service {0:?} is declared")]
    UnknownEasService(String),
}
