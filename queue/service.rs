//! [`QueueService`]: the queue logic behind the gRPC API.
//!
//! `call` stores a job and waits for its result; `dispatch` runs one
//! dispatcher's stream (see [`super::session`]). The gRPC server
//! ([`super::grpc`]) and `standalone`'s in-process links both call these, so
//! the semantics (credits, redelivery, expiry) are the same either way.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tonic::Status;

use super::autoscale::QueueAutoscalers;
use super::eas::EasQueues;
use super::error::StoreError;
use super::jobs::{Enqueued, JobQueueSource, JobStore, ResultWaiters};
use super::registry::SessionRegistry;
use super::seen::{SeenKeys, KEY_LEN};
use super::session::{self, SessionOptions};
use super::source::{JobSource, QueueDepth, SourceError};
use crate::backoff::Backoff;
use crate::config::autoscale::ScalePolicy;
use crate::metrics;
use crate::proto::eas::INPUT_QUEUE_PREFIX;
use crate::proto::{
    unix_ms_now, CallError, DispatcherMessage, Job, JobResult, QueueMessage, QueueStats,
};

impl From<StoreError> for CallError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::QueueFull { .. } => CallError::QueueFull(e.to_string()),
            StoreError::Unavailable(m) => CallError::Unavailable(m),
            StoreError::IdConflict { .. } => CallError::Conflict(e.to_string()),
            StoreError::NothingToJoin { .. } => CallError::NothingToJoin(e.to_string()),
        }
    }
}

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// This instance's name; results for calls waiting here carry it in `reply_to`.
    pub instance_id: String,
    /// How dispatcher sessions behave.
    pub session: SessionOptions,
    /// A call with no deadline waits at most this long.
    pub max_call_wait: Duration,
    /// Whether a call waits for an unreachable store until its deadline.
    pub wait_for_store: bool,
    /// Most calls waiting for the store at once.
    pub max_calls_waiting_for_store: usize,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            instance_id: "local".into(),
            session: SessionOptions::default(),
            max_call_wait: Duration::from_secs(3600),
            wait_for_store: true,
            max_calls_waiting_for_store: 10_000,
        }
    }
}

pub struct QueueService {
    jobs: Arc<dyn JobStore>,
    seen: Arc<dyn SeenKeys>,
    /// The PAI-EAS services, when any are declared.
    eas: Option<Arc<EasQueues>>,
    waiters: Arc<ResultWaiters>,
    opts: ServiceOptions,
    sessions: Arc<SessionRegistry>,
    /// Places for calls waiting for the store (`max_calls_waiting_for_store`).
    store_waits: Semaphore,
    /// Each queue's desired dispatchers, when `Server.Autoscale` is set.
    autoscale: std::sync::OnceLock<Arc<QueueAutoscalers>>,
}

impl QueueService {
    /// The service over the job store `jobs`; with `eas`, also serving the
    /// PAI-EAS services.
    pub fn new(
        jobs: Arc<dyn JobStore>,
        seen: Arc<dyn SeenKeys>,
        waiters: Arc<ResultWaiters>,
        opts: ServiceOptions,
        eas: Option<Arc<EasQueues>>,
    ) -> Arc<Self> {
        let service = Arc::new(QueueService {
            jobs,
            seen,
            eas,
            waiters,
            store_waits: Semaphore::new(opts.max_calls_waiting_for_store),
            opts,
            sessions: Arc::default(),
            autoscale: std::sync::OnceLock::new(),
        });
        let hook: Arc<dyn metrics::Refresh> = service.clone();
        metrics::on_scrape(Arc::downgrade(&hook));
        service
    }

    /// Samples every queue's backlog each second and keeps its desired
    /// dispatcher count under `policy` (reported by `Stats` and the
    /// metrics), until `stop`. Once per service.
    pub fn start_autoscaling(self: &Arc<Self>, policy: ScalePolicy, stop: CancellationToken) {
        let scalers = QueueAutoscalers::new(policy);
        if self.autoscale.set(Arc::clone(&scalers)).is_ok() {
            tokio::spawn(scalers.run(Arc::clone(self), stop));
        }
    }

    /// Sets the gauges read from the store: each queue's length, leased
    /// jobs and oldest job's age, its dispatchers and their credits.
    async fn export_metrics(&self) {
        use metrics::queue as m;
        let depths = match self.jobs.depth(None).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "metrics: no queue depths");
                return;
            }
        };
        let now = unix_ms_now();
        let mut names = Vec::with_capacity(depths.len());
        for d in depths {
            let q = [d.queue.as_str()];
            m::LENGTH.with_label_values(&q).set(d.ready as i64);
            m::LEASED.with_label_values(&q).set(d.leased as i64);
            let age = if d.oldest_unix_ms > 0 {
                now.saturating_sub(d.oldest_unix_ms).max(0) / 1000
            } else {
                0
            };
            m::OLDEST_AGE.with_label_values(&q).set(age);
            names.push(d.queue);
        }
        if let Some(eas) = &self.eas {
            names.extend(eas.export_metrics().await);
        }
        for q in self.sessions.queues() {
            if !names.contains(&q) {
                m::LENGTH.with_label_values(&[q.as_str()]).set(0);
                names.push(q);
            }
        }
        self.sessions.export(&names);
    }

    pub fn eas(&self) -> Option<&Arc<EasQueues>> {
        self.eas.as_ref()
    }

    /// Where a Dispatch session for `queue` takes its jobs from.
    fn source_for(
        jobs: &Arc<dyn JobStore>,
        eas: Option<&Arc<EasQueues>>,
        queue: &str,
    ) -> Result<Arc<dyn JobSource>, SourceError> {
        if let Some(service) = queue.strip_prefix(INPUT_QUEUE_PREFIX) {
            let eas = eas.ok_or_else(|| SourceError::NoEasServices(queue.to_string()))?;
            let input = eas
                .input_source(service)
                .map_err(|_| SourceError::UnknownEasService(service.to_string()))?;
            return Ok(Arc::new(input));
        }
        Ok(Arc::new(JobQueueSource {
            store: Arc::clone(jobs),
            queue: queue.to_string(),
        }))
    }

    /// Stores `job` and waits for its result until `job.deadline_unix_ms`.
    pub async fn call(&self, job: Job) -> Result<JobResult, CallError> {
        let span = job.span();
        let answer = self.store_and_wait(job).instrument(span.clone()).await;
        span.in_scope(|| match &answer {
            Ok(_) => tracing::debug!("call answered"),
            Err(e) => tracing::debug!(error = %e, "call failed"),
        });
        answer
    }

    async fn store_and_wait(&self, mut job: Job) -> Result<JobResult, CallError> {
        if job.request_id.is_empty() || job.queue.is_empty() || job.api_path.is_empty() {
            return Err(CallError::Invalid(
                "job needs request_id, queue and api_path".into(),
            ));
        }
        let now = unix_ms_now();
        if job.is_expired(now) {
            return Err(CallError::DeadlineExceeded);
        }
        let wait = if job.deadline_unix_ms > 0 {
            Duration::from_millis((job.deadline_unix_ms - now) as u64)
        } else {
            self.opts.max_call_wait
        };
        let deadline = Instant::now() + wait;
        job.reply_to = self.opts.instance_id.clone();
        job.deliveries = 0;
        job.enqueued_unix_ms = now;
        let queue = job.queue.clone();
        // Register before enqueueing so that a fast result is not missed.
        let mut waiter = self.waiters.register(&job.request_id);
        match self.store(&job, deadline).await? {
            Enqueued::Done(result) => return Ok(result),
            Enqueued::Stored => {
                metrics::queue::ENQUEUED.with_label_values(&[&queue]).inc();
                tracing::debug!(%queue, "job stored");
            }
            Enqueued::Joined => {
                metrics::queue::JOINED.with_label_values(&[&queue]).inc();
                tracing::debug!(%queue, "joined the job stored under this id");
            }
        }
        match tokio::time::timeout_at(deadline, waiter.recv()).await {
            Ok(Some(result)) => Ok(result),
            Ok(None) => Err(CallError::ResultLost(
                "the call's registration went away unanswered".into(),
            )),
            Err(_) => Err(CallError::DeadlineExceeded),
        }
    }

    /// Stores `job`. While the store is unavailable, and the service is set
    /// to wait for it, retries with backoff (50 ms doubling to 1 s) until the
    /// next try would pass `deadline`; at most `max_calls_waiting_for_store`
    /// calls wait at once, the others are refused at once.
    async fn store(&self, job: &Job, deadline: Instant) -> Result<Enqueued, CallError> {
        let first = match self.jobs.enqueue(job).await {
            Err(StoreError::Unavailable(why)) if self.opts.wait_for_store => why,
            other => return Ok(other?),
        };
        let Ok(_place) = self.store_waits.try_acquire() else {
            return Err(CallError::Unavailable(format!(
                "{first} (and {} calls already wait for the store)",
                self.opts.max_calls_waiting_for_store
            )));
        };
        let _counted = WaitingForStore::count();
        tracing::debug!(request_id = %job.request_id, error = %first, "store unavailable; waiting for it");
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        let mut why = first;
        loop {
            let delay = backoff.next_delay();
            if Instant::now() + delay >= deadline {
                return Err(CallError::Unavailable(format!(
                    "{why} (waited until the call's deadline)"
                )));
            }
            tokio::time::sleep(delay).await;
            match self.jobs.enqueue(job).await {
                Err(StoreError::Unavailable(again)) => why = again,
                other => return Ok(other?),
            }
        }
    }

    /// Runs a dispatcher's stream: `inbound` carries its Hello, results and
    /// Drain; the returned channel carries Welcome and jobs to it.
    pub fn dispatch(
        self: &Arc<Self>,
        inbound: BoxStream<'static, Result<DispatcherMessage, Status>>,
    ) -> mpsc::Receiver<Result<QueueMessage, Status>> {
        let (tx, rx) = mpsc::channel(256);
        let (jobs, eas) = (Arc::clone(&self.jobs), self.eas.clone());
        let source_for: session::SourceFor =
            Box::new(move |queue| Self::source_for(&jobs, eas.as_ref(), queue));
        tokio::spawn(session::run(
            self.opts.session.clone(),
            source_for,
            Arc::clone(&self.sessions),
            inbound,
            tx,
        ));
        rx
    }

    /// Depths and connected dispatchers of one queue, or all.
    /// Remembers a signature digest for `ttl` (at most a day); false when
    /// it was already remembered.
    pub async fn mark_seen(&self, key: &[u8], ttl: Duration) -> Result<bool, CallError> {
        let key: [u8; KEY_LEN] = key.try_into().map_err(|_| {
            CallError::Invalid(format!("a seen key is {KEY_LEN} bytes, not {}", key.len()))
        })?;
        let ttl = ttl.clamp(Duration::from_millis(1), Duration::from_secs(86_400));
        Ok(self.seen.first_sighting(key, ttl).await?)
    }

    /// Whether this instance can serve: its job store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.jobs.ping().await
    }

    pub async fn stats(&self, queue: Option<&str>) -> Result<Vec<QueueStats>, StoreError> {
        let mut depths = if queue.is_some_and(|q| q.starts_with(INPUT_QUEUE_PREFIX)) {
            Vec::new()
        } else {
            self.jobs.depth(queue).await?
        };
        if let Some(eas) = &self.eas {
            depths.extend(eas.input_depths(queue).await?);
        }
        // Queues with dispatchers that the store has not seen a job for yet.
        for q in self.sessions.queues() {
            if queue.is_none_or(|only| only == q) && !depths.iter().any(|d| d.queue == q) {
                depths.push(QueueDepth {
                    queue: q,
                    ..QueueDepth::default()
                });
            }
        }
        Ok(depths
            .into_iter()
            .map(|d| QueueStats {
                dispatchers: self.sessions.serving(&d.queue) as u32,
                desired_dispatchers: self.autoscale.get().map(|a| a.desired(&d.queue)),
                queue: d.queue,
                ready: d.ready,
                leased: d.leased,
            })
            .collect())
    }
}

impl metrics::Refresh for QueueService {
    fn refresh(self: Arc<Self>) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move { self.export_metrics().await })
    }
}

/// One call counted in `inferq_queue_calls_waiting_for_store` while it lives.
struct WaitingForStore;

impl WaitingForStore {
    fn count() -> Self {
        metrics::queue::WAITING_FOR_STORE.inc();
        WaitingForStore
    }
}

impl Drop for WaitingForStore {
    fn drop(&mut self) {
        metrics::queue::WAITING_FOR_STORE.dec();
    }
}
