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
pub mod embedding;
pub mod logistic;
mod model;
pub mod onnx_model;
pub mod onnx_runtime;

pub use echo::Echo;
pub use model::{BatchCost, BatchPolicy, InitContext, Model, ModelError, ModelSet, Params};

use crate::config::Settings;

/// Builds the models a process serves from its settings.
pub type ModelFactory =
    std::sync::Arc<dyn Fn(&Settings) -> Result<Vec<Box<dyn Model>>, ModelError> + Send + Sync>;

/// The zoo's models that need no files: what `inferq` serves by default.
pub fn default_models(settings: &Settings) -> Result<Vec<Box<dyn Model>>, ModelError> {
    let mut models: Vec<Box<dyn Model>> = vec![Box::new(Echo)];
    models.extend(from_settings(settings)?);
    Ok(models)
}

/// The kinds of model that settings can declare under `Models`.
const KINDS: &str = "embedding, onnx, lr";

fn kind_of(name: &str, spec: &serde_yaml::Value) -> Result<String, ModelError> {
    match spec.get("Kind").and_then(serde_yaml::Value::as_str) {
        Some(k) => Ok(k.to_string()),
        None => Err(ModelError::new(format!(
            "Models.{name}.Kind is missing (one of: {KINDS})"
        ))),
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    name: &str,
    spec: &serde_yaml::Value,
) -> Result<T, ModelError> {
    serde_path_to_error::deserialize(spec.clone())
        .map_err(|e| ModelError::new(format!("Models.{name}.{}: {}", e.path(), e.inner())))
}

/// The models declared in the settings' `Models` section.
pub fn from_settings(settings: &Settings) -> Result<Vec<Box<dyn Model>>, ModelError> {
    let mut models: Vec<Box<dyn Model>> = Vec::new();
    for (name, spec) in &settings.models {
        match kind_of(name, spec)?.as_str() {
            "embedding" => models.push(Box::new(embedding::Embedding::new(
                name,
                parse(name, spec)?,
            )?)),
            "lr" => models.push(Box::new(logistic::Logistic::new(name, parse(name, spec)?)?)),
            "onnx" => models.push(Box::new(onnx_model::OnnxModel::new(
                name,
                parse(name, spec)?,
            )?)),
            other => {
                return Err(ModelError::new(format!(
                    "Models.{name}.Kind: unknown kind {other:?} (one of: {KINDS})"
                )))
            }
        }
    }
    Ok(models)
}

/// Embedding models by name, with their API paths: what `POST /v1/embeddings`
/// serves (the request's `model` is the name).
pub fn embedding_models(settings: &Settings) -> std::collections::BTreeMap<String, String> {
    settings
        .models
        .iter()
        .filter(|(name, spec)| kind_of(name, spec).is_ok_and(|k| k == "embedding"))
        .filter_map(|(name, spec)| {
            parse::<embedding::EmbeddingSettings>(name, spec)
                .ok()
                .map(|s| (name.clone(), s.api_path))
        })
        .collect()
}
