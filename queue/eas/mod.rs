//! The PAI-EAS queues: each asynchronous service has an input queue, which
//! dispatchers take items from, and a sink queue, which its results go to
//! and clients read from (get, watch).
//!
//! - [`store`]: the storage contract [`EasStore`] (items ready or held by a
//!   consumer, committed or released), with [`memory`] and [`redis`]
//!   (one Lua script, `redis.lua`) behind it;
//! - [`service`]: [`EasQueues`]: services, limits, put, get (waiting), commit;
//!   [`watch`]: watches with their windows;
//! - [`input`]: [`EasInput`], a service's input as a dispatcher session's job
//!   source, with backpressure from the sink;
//! - [`api`]: the same operations in the contract's (protobuf) terms, for the
//!   queue's gRPC server and standalone's in-process link.

pub mod api;
pub mod input;
pub mod memory;
pub mod redis;
pub mod service;
pub mod store;
pub mod watch;

pub use input::EasInput;
pub use memory::MemoryEasStore;
pub use redis::RedisEasStore;
pub use service::{EasError, EasQueues, ResultCodes, WatchSpec};
pub use store::EasStore;
