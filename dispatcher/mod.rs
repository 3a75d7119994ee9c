//! The dispatcher: a node that holds models and runs the jobs the queue sends.
//! It reaches the queue only through [`crate::proto::DispatchLink`].
//!
//! - [`node`]: [`DispatcherNode`]: Hello, the credit window, running jobs,
//!   reconnecting with backoff, draining on SIGTERM;
//! - `infer`: one job's in-process model, on a blocking thread or, when the
//!   model says it is quick, on the runtime;
//! - [`batcher`]: dynamic batching for models that ask for it;
//! - [`answer`]: a job's outcome as its result on the stream;
//! - `sent`: the last answers sent on a stream, sent again after it is lost;
//! - [`nodes`]: the nodes a dispatcher process runs, from the settings;
//! - [`servers`]: the model servers those nodes' models run in, kept alive
//!   for the process's life;
//! - [`link`]: [`RemoteDispatchLink`], the gRPC client of the Dispatch stream.

pub mod answer;
pub mod batcher;
mod infer;
pub mod link;
pub mod node;
pub mod nodes;
mod sent;
pub mod servers;

pub use link::RemoteDispatchLink;
pub use node::{DispatcherNode, NodeOptions};
pub use servers::ModelServers;

#[cfg(test)]
mod tests;
