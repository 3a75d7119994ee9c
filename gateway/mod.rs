//! The gateway: where clients come in. It checks a request and hands it to
//! the queue through the contract's links ([`crate::proto::QueueLink`],
//! [`crate::proto::EasLink`]); it never names the queue's own types.
//!
//! The front doors:
//! - [`http`]: the axum router (go-infer's REST API, `/metrics`, `/healthz`,
//!   and the routes below) and its tower layers; [`request`]: the request id,
//!   its span, and bounded body reads, shared by every HTTP route;
//! - [`grpc`]: the public `inferq.v1.Predict` gRPC service;
//! - [`openai`]: `POST /v1/embeddings` in OpenAI's shape;
//! - [`eas`]: the PAI-EAS asynchronous API (HTTP, WebSocket, and gRPC in
//!   [`eas::grpc`]), one handler per operation.
//!
//! go-infer's envelope:
//! - [`envelope`]: the request and response envelopes;
//! - [`signature`]: the signed string, SHA256 and SM2 signatures;
//! - [`auth`]: [`Authenticator`]: appIds, secrets, keys, the timestamp window;
//! - [`replay`]: which signatures are refused when seen again;
//! - [`core`]: [`Gateway`]: authenticate, run the model's parameter check,
//!   call the queue, map every failure to its code. Shared by REST and gRPC.
//!
//! What bounds a client: [`budget`] (bytes of bodies in flight), [`rate`]
//! (requests per second per appId, token or key), [`crate::clip`] (client
//! strings in messages and logs); connections are bounded by
//! [`crate::serve::connections`].
//!
//! And the way out: [`link`]: [`RemoteQueueLink`], the gRPC client of the
//! queue service. [`server`] serves a gateway on its listeners.

pub mod auth;
pub mod budget;
pub mod core;
pub mod eas;
pub mod envelope;
pub mod grpc;
pub mod http;
pub mod idempotency;
pub mod link;
pub mod openai;
pub mod rate;
pub mod replay;
pub mod request;
pub mod server;
pub mod signature;

pub use self::auth::Authenticator;
pub use self::core::{Failure, Gateway};
pub use self::link::RemoteQueueLink;

/// A new request id: a UUIDv7 (time-ordered, 74 random bits) as 32 hex digits,
/// unique across gateways without coordination.
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
