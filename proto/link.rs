//! The links: how the gateway and the dispatcher reach the queue service.
//!
//! These traits, with the messages of `inferq/v1/*.proto`, are the whole
//! contract between the three components. The gateway and the dispatcher hold
//! an `Arc<dyn …Link>` and never name the queue's types: in a split
//! deployment the link is a gRPC client (`gateway::link`, `dispatcher::link`);
//! in `standalone` it is an in-process adapter to the same queue service
//! (`crate::standalone`), carrying the same messages.

use futures::stream::BoxStream;
use thiserror::Error;
use tonic::Status;

use super::{
    AsyncAttributesReply, AsyncAttributesRequest, AsyncCommitReply, AsyncCommitRequest,
    AsyncGetReply, AsyncGetRequest, AsyncItem, AsyncPutReply, AsyncPutRequest, AsyncSearchReply,
    AsyncSearchRequest, AsyncWatchRequest, DispatcherMessage, Job, JobResult, QueueMessage,
    QueueStats,
};

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
    /// The request id is stored with other parameters (9813).
    #[error("{0}")]
    Conflict(String),
    /// A join-only call found no job or result under its request id.
    #[error("{0}")]
    NothingToJoin(String),
}

impl CallError {
    /// Whether the job may not have been stored, or its answer may still
    /// come from another queue instance: the call is worth resending (under
    /// the same request id; storing is idempotent).
    pub fn is_retryable(&self) -> bool {
        matches!(self, CallError::Unavailable(_) | CallError::ResultLost(_))
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
            CallError::Conflict(m) => Status::already_exists(m.clone()),
            CallError::NothingToJoin(m) => Status::not_found(m.clone()),
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
            Code::AlreadyExists => CallError::Conflict(s.message().to_string()),
            Code::NotFound => CallError::NothingToJoin(s.message().to_string()),
            // Not connected: nothing was sent.
            Code::Unavailable => CallError::Unavailable(s.message().to_string()),
            // The queue would not take it from us (internal token): nothing
            // was stored, and another instance may be configured alike.
            Code::Unauthenticated | Code::PermissionDenied => {
                CallError::Unavailable(format!("refused by the queue: {}", s.message()))
            }
            _ => CallError::ResultLost(format!("{:?}: {}", s.code(), s.message())),
        }
    }
}

/// The gateway's link for synchronous calls (`QueueService.Call`).
#[async_trait::async_trait]
pub trait QueueLink: Send + Sync + 'static {
    /// Enqueues `job` and waits for its result until `job.deadline_unix_ms`.
    async fn call(&self, job: Job) -> Result<JobResult, CallError>;

    /// Remembers `key` (a SHA-256 digest) for `ttl` across the deployment;
    /// false when it was already remembered (`QueueService.MarkSeen`).
    async fn mark_seen(&self, key: [u8; 32], ttl: std::time::Duration) -> Result<bool, CallError>;

    /// Whether a queue service can serve now (`QueueService.Ping`): the
    /// gateway's readiness.
    async fn ping(&self) -> Result<(), CallError>;

    /// Every queue's depth and the dispatchers connected for it, summed over
    /// the queue instances that answer (`QueueService.Stats`): whether a
    /// model can be served (`/v2/models/{name}/ready`).
    async fn stats(&self) -> Result<Vec<QueueStats>, CallError>;
}

/// The items of a watch, as the queue sends them.
pub type ItemStream = BoxStream<'static, Result<AsyncItem, Status>>;

/// The gateway's link to the PAI-EAS queues (`QueueService.Async*`).
#[async_trait::async_trait]
pub trait EasLink: Send + Sync + 'static {
    async fn put(&self, r: AsyncPutRequest) -> Result<AsyncPutReply, Status>;
    async fn get(&self, r: AsyncGetRequest) -> Result<AsyncGetReply, Status>;
    async fn commit(&self, r: AsyncCommitRequest) -> Result<AsyncCommitReply, Status>;
    async fn attributes(&self, r: AsyncAttributesRequest) -> Result<AsyncAttributesReply, Status>;
    async fn search(&self, r: AsyncSearchRequest) -> Result<AsyncSearchReply, Status>;
    /// Starts a watch; its claim is made before this returns, so a second
    /// watch of the same consumer fails here (ALREADY_EXISTS).
    async fn watch(&self, r: AsyncWatchRequest) -> Result<ItemStream, Status>;
}

/// What the queue sends down a Dispatch stream.
pub type Inbound = BoxStream<'static, Result<QueueMessage, Status>>;

/// The dispatcher's link (`QueueService.Dispatch`).
#[async_trait::async_trait]
pub trait DispatchLink: Send + Sync + 'static {
    /// Opens a Dispatch stream that sends what `outbound` yields.
    async fn open(
        &self,
        outbound: tokio::sync::mpsc::Receiver<DispatcherMessage>,
    ) -> Result<Inbound, Status>;

    /// Where it connects, for logs.
    fn describe(&self) -> String;
}
