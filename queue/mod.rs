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
//! - [`async_store`]: the contract of asynchronous (PAI-EAS) queues, input and
//!   sink, with [`async_memory`] and [`async_redis`] behind it;
//!   [`async_service`]: those queues' service (put, get, watch, and handing
//!   input items to dispatchers as jobs); [`async_api`]: the same in the
//!   contract's (protobuf) terms.
//! - [`grpc`]: the tonic server for `inferq.v1.QueueService`.

pub mod async_api;
pub mod async_memory;
pub mod async_redis;
pub mod async_service;
pub mod async_store;
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
