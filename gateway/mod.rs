//! The gateway: where clients come in.
//!
//! - [`envelope`]: go-infer's request and response envelopes.
//! - [`signature`]: the signed string, SHA256 and SM2 signatures.
//! - [`auth`]: [`Authenticator`]: appIds, secrets, keys, the timestamp window.
//! - [`core`]: [`Gateway`]: authenticate, run the model's parameter check,
//!   call the queue, map every failure to its code. Shared by REST and gRPC.
//! - [`http`]: the axum router (REST, `/metrics`, `/healthz`) and its tower layers.
//! - [`grpc`]: the public `inferq.v1.Predict` gRPC service.
//! - [`openai`]: `POST /v1/embeddings` in OpenAI's shape.
//! - [`eas`]: the asynchronous API, wire-compatible with the PAI-EAS queue
//!   service (HTTP and WebSocket); [`async_grpc`]: the same for gRPC clients.
//! - [`queue_link`]: how the gateway reaches the queue service (gRPC, or in
//!   process); [`async_link`]: the same for the asynchronous queues.

pub mod async_grpc;
pub mod async_link;
pub mod auth;
pub mod core;
pub mod eas;
pub mod envelope;
pub mod grpc;
pub mod http;
pub mod openai;
pub mod queue_link;
pub mod signature;

pub use self::auth::Authenticator;
pub use self::core::{Failure, Gateway};
pub use self::queue_link::{LocalQueueLink, QueueLink, RemoteQueueLink};

/// A new request id: a UUIDv7 (time-ordered, 74 random bits) as 32 hex digits,
/// unique across gateways without coordination.
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
