//! [`TimedJobStore`]: a [`JobStore`] whose operations are timed and whose
//! failures are counted (`inferq_redis_command_duration_seconds`,
//! `inferq_redis_command_errors_total`, by operation). Wraps the Redis
//! store; a lease's wait for jobs is not a command's latency, so leases
//! count errors only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::store::{DeadLetter, Enqueued, JobStore};
use crate::metrics::queue as m;
use crate::proto::{Job, JobResult};
use crate::queue::error::StoreError;
use crate::queue::source::{Lease, QueueDepth};

pub struct TimedJobStore {
    inner: Arc<dyn JobStore>,
}

impl TimedJobStore {
    pub fn wrap(inner: Arc<dyn JobStore>) -> Arc<dyn JobStore> {
        Arc::new(TimedJobStore { inner })
    }
}

/// Records one operation's time, or its failure.
fn record<T>(op: &str, started: Instant, r: Result<T, StoreError>) -> Result<T, StoreError> {
    match &r {
        Err(StoreError::Unavailable(_)) => m::REDIS_ERRORS.with_label_values(&[op]).inc(),
        _ => m::REDIS_DURATION
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64()),
    }
    r
}

#[async_trait]
impl JobStore for TimedJobStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn enqueue(&self, job: &Job) -> Result<Enqueued, StoreError> {
        let t = Instant::now();
        record("enqueue", t, self.inner.enqueue(job).await)
    }
    async fn lease(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Lease>, StoreError> {
        let r = self.inner.lease(queue, consumer, max, wait).await;
        if r.is_err() {
            m::REDIS_ERRORS.with_label_values(&["lease"]).inc();
        }
        r
    }
    async fn complete(&self, lease: &Lease, result: JobResult) -> Result<(), StoreError> {
        let t = Instant::now();
        record("complete", t, self.inner.complete(lease, result).await)
    }
    async fn complete_batch(&self, done: &[(Lease, JobResult)]) -> Result<(), StoreError> {
        let t = Instant::now();
        record("complete", t, self.inner.complete_batch(done).await)
    }
    async fn complete_unleased(&self, queue: &str, result: JobResult) -> Result<bool, StoreError> {
        let t = Instant::now();
        let r = self.inner.complete_unleased(queue, result).await;
        record("complete_unleased", t, r)
    }
    async fn release(&self, queue: &str, consumer: &str) -> Result<usize, StoreError> {
        let t = Instant::now();
        record("release", t, self.inner.release(queue, consumer).await)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        let t = Instant::now();
        record("ping", t, self.inner.ping().await)
    }
    async fn depth(&self, queue: Option<&str>) -> Result<Vec<QueueDepth>, StoreError> {
        let t = Instant::now();
        record("depth", t, self.inner.depth(queue).await)
    }
    async fn result(&self, request_id: &str) -> Result<Option<JobResult>, StoreError> {
        let t = Instant::now();
        record("result", t, self.inner.result(request_id).await)
    }
    async fn dead_letters(&self, queue: &str, max: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters(queue, max).await
    }
    async fn requeue_dead(&self, queue: &str, ids: &[String]) -> Result<usize, StoreError> {
        self.inner.requeue_dead(queue, ids).await
    }
}
