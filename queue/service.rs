//! [`QueueService`]: the queue logic behind the gRPC API.
//!
//! `call` stores a job and waits for its result; `dispatch` runs one
//! dispatcher's stream (see [`super::session`]). The gRPC server
//! ([`super::grpc`]) and `standalone`'s in-process links both call these, so
//! the semantics (credits, redelivery, expiry) are the same either way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use parking_lot::Mutex;
use thiserror::Error;
use tokio::sync::mpsc;
use tonic::Status;

use super::async_service::{AsyncQueues, ASYNC_QUEUE_PREFIX};
use super::backend::{BackendError, QueueBackend};
use super::session::{self, BackendQueue, JobSource};
use super::waiters::ResultWaiters;
use crate::metrics;
use crate::proto::{unix_ms_now, DispatcherMessage, Job, JobResult, QueueMessage, QueueStats};

/// Why a `Call` got no result. The gateway maps each to a client code.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum CallError {
    /// The queue is at its limit (9702).
    #[error("{0}")]
    QueueFull(String),
    /// The job could not be stored: backend or queue service unreachable (9702).
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The job was sent but its result could not be received (9703).
    #[error("result lost: {0}")]
    ResultLost(String),
    /// No result before the deadline (9997).
    #[error("no result before the deadline")]
    DeadlineExceeded,
    /// The request itself is malformed.
    #[error("invalid call: {0}")]
    Invalid(String),
}

impl From<BackendError> for CallError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::QueueFull { .. } => CallError::QueueFull(e.to_string()),
            BackendError::Unavailable(m) => CallError::Unavailable(m),
        }
    }
}

impl From<CallError> for Status {
    fn from(e: CallError) -> Self {
        match &e {
            CallError::QueueFull(m) => Status::resource_exhausted(m.clone()),
            CallError::Unavailable(_) => Status::unavailable(e.to_string()),
            CallError::ResultLost(_) => Status::internal(e.to_string()),
            CallError::DeadlineExceeded => Status::deadline_exceeded(e.to_string()),
            CallError::Invalid(m) => Status::invalid_argument(m.clone()),
        }
    }
}

impl From<Status> for CallError {
    fn from(s: Status) -> Self {
        use tonic::Code;
        match s.code() {
            Code::ResourceExhausted => CallError::QueueFull(s.message().to_string()),
            Code::DeadlineExceeded => CallError::DeadlineExceeded,
            Code::InvalidArgument => CallError::Invalid(s.message().to_string()),
            // Not connected: nothing was sent.
            Code::Unavailable => CallError::Unavailable(s.message().to_string()),
            _ => CallError::ResultLost(format!("{:?}: {}", s.code(), s.message())),
        }
    }
}

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// This instance's name; results for calls waiting here carry it in `reply_to`.
    pub instance_id: String,
    /// How long one lease request waits for a job before it is renewed.
    pub lease_wait: Duration,
    /// Code for jobs dropped because their caller's deadline passed (QueueTimeout).
    pub expired_code: i32,
    /// How long a new Dispatch stream may take to send Hello.
    pub hello_timeout: Duration,
    /// A call with no deadline waits at most this long.
    pub max_call_wait: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            instance_id: "local".into(),
            lease_wait: Duration::from_secs(5),
            expired_code: 9997,
            hello_timeout: Duration::from_secs(10),
            max_call_wait: Duration::from_secs(3600),
        }
    }
}

/// A connected dispatcher, as the queue sees it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub node_id: String,
    pub queue: String,
    pub window: u32,
}

pub struct QueueService {
    pub(crate) backend: Arc<dyn QueueBackend>,
    /// The asynchronous services (EAS queues), when any are declared.
    pub(crate) async_queues: Option<Arc<AsyncQueues>>,
    pub(crate) waiters: Arc<ResultWaiters>,
    pub(crate) opts: ServiceOptions,
    sessions: Mutex<HashMap<String, SessionInfo>>,
}

impl QueueService {
    /// The service over `backend`; with `async_queues`, also serving the
    /// asynchronous services.
    pub fn new(
        backend: Arc<dyn QueueBackend>,
        waiters: Arc<ResultWaiters>,
        opts: ServiceOptions,
        async_queues: Option<Arc<AsyncQueues>>,
    ) -> Arc<Self> {
        Arc::new(QueueService {
            backend,
            async_queues,
            waiters,
            opts,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    pub fn backend(&self) -> &Arc<dyn QueueBackend> {
        &self.backend
    }

    pub fn async_queues(&self) -> Option<&Arc<AsyncQueues>> {
        self.async_queues.as_ref()
    }

    /// Where a Dispatch session for `queue` takes its jobs from.
    pub(crate) fn source_for(&self, queue: &str) -> Result<Arc<dyn JobSource>, String> {
        if let Some(service) = queue.strip_prefix(ASYNC_QUEUE_PREFIX) {
            let aq = self.async_queues.as_ref().ok_or_else(|| {
                format!("{queue}: this queue service has no asynchronous services")
            })?;
            return Ok(Arc::new(aq.input_source(service)?));
        }
        Ok(Arc::new(BackendQueue {
            backend: Arc::clone(&self.backend),
            queue: queue.to_string(),
        }))
    }

    /// Stores `job` and waits for its result until `job.deadline_unix_ms`.
    pub async fn call(&self, mut job: Job) -> Result<JobResult, CallError> {
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
        job.reply_to = self.opts.instance_id.clone();
        job.deliveries = 0;
        // Register before enqueueing so that a fast result is not missed.
        let mut waiter = self.waiters.register(&job.request_id);
        self.backend.enqueue(job).await?;
        metrics::QUEUE_ENQUEUED.inc();
        match tokio::time::timeout(wait, waiter.recv()).await {
            Ok(Some(result)) => Ok(result),
            Ok(None) => Err(CallError::ResultLost(
                "a newer call with the same request id replaced this one".into(),
            )),
            Err(_) => Err(CallError::DeadlineExceeded),
        }
    }

    /// Runs a dispatcher's stream: `inbound` carries its Hello, results and
    /// Drain; the returned channel carries Welcome and jobs to it.
    pub fn dispatch(
        self: &Arc<Self>,
        inbound: BoxStream<'static, Result<DispatcherMessage, Status>>,
    ) -> mpsc::Receiver<Result<QueueMessage, Status>> {
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(session::run(Arc::clone(self), inbound, tx));
        rx
    }

    /// Depths and connected dispatchers of one queue, or all.
    pub async fn stats(&self, queue: Option<&str>) -> Result<Vec<QueueStats>, BackendError> {
        let mut depths = if queue.is_some_and(|q| q.starts_with(ASYNC_QUEUE_PREFIX)) {
            Vec::new()
        } else {
            self.backend.depth(queue).await?
        };
        if let Some(aq) = &self.async_queues {
            depths.extend(aq.input_depths(queue).await?);
        }
        let sessions = self.sessions.lock();
        Ok(depths
            .into_iter()
            .map(|d| QueueStats {
                dispatchers: sessions.values().filter(|s| s.queue == d.queue).count() as u32,
                queue: d.queue,
                ready: d.ready,
                leased: d.leased,
            })
            .collect())
    }

    pub(crate) fn register_session(&self, id: &str, info: SessionInfo) {
        self.sessions.lock().insert(id.to_string(), info);
        metrics::QUEUE_DISPATCHERS.add(1);
    }

    pub(crate) fn unregister_session(&self, id: &str) {
        if self.sessions.lock().remove(id).is_some() {
            metrics::QUEUE_DISPATCHERS.add(-1);
        }
    }

    /// The dispatchers connected now.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions.lock().values().cloned().collect()
    }
}
