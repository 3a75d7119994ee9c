//! The model zoo: the [`Model`] trait every served model implements, the
//! [`ModelSet`] a process serves, and ready models.
//!
//! A model is written once and used by two processes:
//! - the gateway calls [`Model::check`] (go-infer's `ApiEntry`) on each request
//!   before it is queued: cheap validation, no weights loaded;
//! - the dispatcher calls [`Model::init`] once at start, then [`Model::infer`]
//!   for every job, on a blocking thread.
//!
//! A user adds models in their own `main` with [`crate::cli::run`], passing a
//! function that builds the list from the settings (see `examples/custom_model.rs`).

pub mod echo;
mod model;

pub use echo::Echo;
pub use model::{InitContext, Model, ModelError, ModelSet, Params};

use crate::config::Settings;

/// Builds the models a process serves from its settings.
pub type ModelFactory =
    std::sync::Arc<dyn Fn(&Settings) -> Result<Vec<Box<dyn Model>>, ModelError> + Send + Sync>;

/// The zoo's models that need no files: what `inferq` serves by default.
pub fn default_models(_settings: &Settings) -> Result<Vec<Box<dyn Model>>, ModelError> {
    Ok(vec![Box::new(Echo)])
}
