//! The dispatcher: a node that holds models and runs the jobs the queue sends.
//!
//! - [`link`]: how the node reaches the queue's `Dispatch` stream: over gRPC
//!   ([`RemoteDispatchLink`]) or in process for `standalone` ([`LocalDispatchLink`]).
//! - [`node`]: [`DispatcherNode`]: Hello, the credit window, running `Infer` on
//!   blocking threads, reconnecting with backoff, draining on SIGTERM.
//! - [`batcher`]: dynamic batching for models that ask for it.

pub mod batcher;
pub mod link;
pub mod node;

pub use link::{DispatchLink, LocalDispatchLink, RemoteDispatchLink};
pub use node::{DispatcherNode, NodeOptions};
