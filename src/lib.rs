//! inferq: model-inference serving.
//!
//! A request's path: a client calls the **gateway** (REST with go-infer's
//! signed envelope, gRPC, the PAI-EAS queue API or OpenAI's embeddings); the
//! gateway checks it and calls the **queue** service, which stores the job
//! until a **dispatcher** holding the model has pulled it over its
//! credit-limited stream, run it and sent the result back. Models come from
//! the **model zoo** or from the user's own code.
//!
//! The folders at the top of the repository are the modules of this crate:
//! `gateway/`, `queue/`, `dispatcher/`, `model-zoo/`, and `proto/`, the
//! contract between them (the protobuf messages and the link traits).
//! Gateway and dispatcher depend on the contract, never on the queue; only
//! [`standalone`] wires all three in one process. See ARCHITECTURE.md.

pub mod backoff;
pub mod clip;
pub mod codes;
pub mod config;
pub mod metrics;
pub mod serve;
pub mod telemetry;

#[path = "../proto/mod.rs"]
pub mod proto;

#[path = "../gateway/mod.rs"]
pub mod gateway;

#[path = "../queue/mod.rs"]
pub mod queue;

#[path = "../dispatcher/mod.rs"]
pub mod dispatcher;

#[path = "../model-zoo/mod.rs"]
pub mod model_zoo;

pub mod cli;
pub mod fuzzing;
pub mod standalone;
pub mod supervisor;

pub use cli::run;
pub use model_zoo::{Model, ModelError, Params};
