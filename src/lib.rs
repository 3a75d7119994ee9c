//! inferq: model-inference serving.
//!
//! A request's path: a client calls the **gateway** (REST with go-infer's
//! signed envelope, or gRPC); the gateway checks it and calls the **queue**
//! service, which stores the job until a **dispatcher** holding the model has
//! pulled it over its credit-limited stream, run it and sent the result back.
//! Models come from the **model zoo** or from the user's own code.
//!
//! The folders at the top of the repository are the modules of this crate:
//! `gateway/`, `queue/`, `dispatcher/`, `model-zoo/`; `proto/` holds the
//! contract between them. See ARCHITECTURE.md.

pub mod backoff;
pub mod codes;
pub mod config;
pub mod metrics;
pub mod proto;
pub mod serve;

#[path = "../gateway/mod.rs"]
pub mod gateway;

#[path = "../queue/mod.rs"]
pub mod queue;

#[path = "../dispatcher/mod.rs"]
pub mod dispatcher;

#[path = "../model-zoo/mod.rs"]
pub mod model_zoo;

#[path = "../bench/mod.rs"]
pub mod bench;

pub mod cli;

pub use cli::run;
pub use model_zoo::{Model, ModelError, Params};
