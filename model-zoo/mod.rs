//! The model zoo: the [`Model`] trait every served model implements, the
//! [`ModelSet`] a process serves, and ready models.
//!
//! A model is written once and used by two processes:
//! - the gateway calls [`Model::check`] (go-infer's `ApiEntry`) on each request
//!   before it is queued: cheap validation, no weights loaded;
//! - the dispatcher calls [`Model::init`] once at start, then [`Model::infer`]
//!   for every job, on a blocking thread.
//!
//! A user adds models in their own `main` with [`crate::run`], passing a
//! function that builds the list from the settings (see `examples/custom_model.rs`).

pub mod echo;
pub mod embedding;
pub mod http;
pub mod logistic;
mod model;
pub mod onnx_model;
pub mod onnx_runtime;
pub mod pmml;

pub use echo::Echo;
pub use model::{
    BatchCost, BatchPolicy, InitContext, Model, ModelError, ModelSet, Params, ServedModel,
};

use crate::config::{ModelSpec, Settings};

/// Builds the models a process serves from its settings.
pub type ModelFactory =
    std::sync::Arc<dyn Fn(&Settings) -> Result<Vec<Box<dyn Model>>, ModelError> + Send + Sync>;

/// The models `factory` builds for these settings; `init` loads their
/// weights (dispatchers), without it only their checks work (gateways).
pub fn build(
    factory: &ModelFactory,
    settings: &Settings,
    init: bool,
) -> Result<ModelSet, ModelError> {
    let models = factory(settings)?;
    let set = if init {
        ModelSet::initialised(models, &InitContext::for_settings(settings))
    } else {
        ModelSet::new(models)
    };
    let set = set?;
    if set.is_empty() {
        return Err(ModelError::new("no models are registered"));
    }
    Ok(set)
}

/// The zoo's models that need no files: what `inferq` serves by default.
pub fn default_models(settings: &Settings) -> Result<Vec<Box<dyn Model>>, ModelError> {
    let mut models: Vec<Box<dyn Model>> = vec![Box::new(Echo)];
    models.extend(from_settings(settings)?);
    Ok(models)
}

/// The models declared in the settings' `Models` section (parsed and
/// checked with the settings file).
pub fn from_settings(settings: &Settings) -> Result<Vec<Box<dyn Model>>, ModelError> {
    let mut models: Vec<Box<dyn Model>> = Vec::new();
    for (name, spec) in &settings.models {
        models.push(match spec {
            ModelSpec::Embedding(s) => Box::new(embedding::Embedding::new(name, s.clone())?),
            ModelSpec::Logistic(s) => Box::new(logistic::Logistic::new(name, s.clone())?),
            ModelSpec::Onnx(s) => Box::new(onnx_model::OnnxModel::new(name, s.clone())?),
            ModelSpec::Http(s) => Box::new(http::HttpModel::new(name, s.clone(), settings)?),
            ModelSpec::Pmml(s) => Box::new(pmml::PmmlModel::new(name, s.clone())?),
        });
    }
    Ok(models)
}

/// Embedding models by name, with their API paths: what `POST /v1/embeddings`
/// serves (the request's `model` is the name).
pub fn embedding_models(settings: &Settings) -> std::collections::BTreeMap<String, String> {
    settings
        .models
        .iter()
        .filter_map(|(name, spec)| match spec {
            ModelSpec::Embedding(s) => Some((name.clone(), s.api_path.clone())),
            _ => None,
        })
        .collect()
}
