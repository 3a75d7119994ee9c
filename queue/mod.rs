//! The queue service: stores work until a dispatcher has answered it.
//!
//! Two kinds of queue, each with its store contract and backends:
//! - [`jobs`]: go-infer's synchronous calls ([`jobs::JobStore`]: memory,
//!   Redis Streams);
//! - [`eas`]: the PAI-EAS asynchronous queues, input and sink
//!   ([`eas::EasStore`]: memory, Redis with one Lua script).
//!
//! What serves them:
//! - [`service`]: [`QueueService`], the logic behind the gRPC API (also
//!   called in process by `standalone`): `Call`, `Dispatch`, `Stats`;
//! - [`session`]: one dispatcher's `Dispatch` stream, leasing from a
//!   [`source::JobSource`] within its [`credit::CreditWindow`];
//!   [`registry`]: the sessions connected;
//! - [`grpc`]: the tonic server for `inferq.v1.QueueService`;
//! - [`redis`]: what both Redis stores share (options, connections, replies);
//! - [`autoscale`]: each queue's desired dispatcher count from its backlog
//!   (`Server.Autoscale`);
//! - [`error`]: [`StoreError`], how a store operation fails;
//! - [`build`]: a queue service as the settings describe it.

pub mod autoscale;
pub mod build;
pub mod credit;
pub mod eas;
pub mod error;
pub mod grpc;
pub mod jobs;
pub mod redis;
pub mod registry;
pub mod seen;
pub mod service;
pub mod session;
pub mod source;

pub use credit::CreditWindow;
pub use error::StoreError;
pub use jobs::{
    DeadLetter, Enqueued, JobStore, JobStoreOptions, MemoryJobStore, RedisJobStore, ResultWaiters,
};
pub use redis::RedisOptions;
pub use service::{QueueService, ServiceOptions};
pub use source::{JobSource, Lease, QueueDepth};

#[cfg(test)]
mod tests;
