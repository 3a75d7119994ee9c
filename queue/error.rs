//! [`StoreError`]: how an operation of either store (job queues, PAI-EAS
//! queues) fails. Callers branch on it: `QueueFull` is the client's 9702 (or
//! 429), `Unavailable` is retried or reported as 9702 (or 503).

use thiserror::Error;

/// Why a store operation failed. Callers branch on it: `QueueFull` is the
/// client's 9702, `Unavailable` is retried or reported as 9702.
///
/// A queue's limit counts every job it stores: waiting and leased.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum StoreError {
    #[error("queue {queue} is full ({limit} jobs waiting)")]
    QueueFull { queue: String, limit: usize },
    #[error("queue store unavailable: {0}")]
    Unavailable(String),
    /// The request id is stored with other parameters (an idempotency key
    /// used again for another request).
    #[error("request id {request_id} is already stored with other parameters")]
    IdConflict { request_id: String },
    /// A join-only store found nothing under the request id.
    #[error("nothing stored under request id {request_id} to join")]
    NothingToJoin { request_id: String },
}
