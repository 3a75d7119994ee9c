//! The queue service: stores jobs until a dispatcher has answered them.
//!
//! - [`backend`]: the storage contract ([`QueueBackend`]): enqueue, lease to a
//!   consumer, complete with a result, release a gone consumer's leases.
//! - [`memory`]: the in-memory backend (one process, `standalone`).
//! - [`redis_streams`]: the Redis Streams backend (durable, shared by several
//!   queue-service instances); [`redis_pool`]: its connections.
//! - [`waiters`]: callers blocked in `Call`, woken when their result arrives.
//! - [`credit`]: the [`CreditWindow`] that bounds the jobs a dispatcher holds.
//! - [`session`]: one dispatcher's `Dispatch` stream: credits, leasing, results.
//! - [`service`]: [`QueueService`], the logic behind the gRPC API, also used in
//!   process by `standalone`.
//! - [`grpc`]: the tonic server for `inferq.v1.QueueService`.

pub mod backend;
pub mod credit;
pub mod grpc;
pub mod memory;
pub mod redis_pool;
pub mod redis_streams;
pub mod service;
pub mod session;
pub mod waiters;

pub use backend::{BackendError, BackendOptions, DeadLetter, Lease, QueueBackend, QueueDepth};
pub use credit::CreditWindow;
pub use memory::MemoryBackend;
pub use redis_streams::{RedisBackend, RedisOptions};
pub use service::{CallError, QueueService};
pub use waiters::ResultWaiters;
