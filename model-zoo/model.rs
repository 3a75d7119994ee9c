//! The `Model` trait and the set of models one process serves.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Settings;

/// Model parameters and outputs: a JSON object.
pub type Params = serde_json::Map<String, serde_json::Value>;

/// A model's refusal or failure. `code` replaces the generic code (9701 from
/// `check`, 9998 from `infer`) when the model has its own.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    pub code: Option<i32>,
    pub message: String,
    /// The job did not run (a model server refused the connection or went
    /// away before answering): the dispatcher gives it back to the queue,
    /// which delivers it again (up to `MaxDeliveries`), instead of answering.
    pub not_run: bool,
}

impl ModelError {
    pub fn new(message: impl Into<String>) -> Self {
        ModelError {
            code: None,
            message: message.into(),
            not_run: false,
        }
    }

    pub fn with_code(code: i32, message: impl Into<String>) -> Self {
        ModelError {
            code: Some(code),
            message: message.into(),
            not_run: false,
        }
    }

    /// The job was not run and should be delivered again.
    pub fn not_run(message: impl Into<String>) -> Self {
        ModelError {
            code: None,
            message: message.into(),
            not_run: true,
        }
    }
}

/// What `init` may read: the settings (go-infer's `Customer` map and inferq's
/// model settings) and the folder relative paths resolve against.
pub struct InitContext<'a> {
    pub settings: &'a Settings,
    pub base_dir: PathBuf,
}

impl<'a> InitContext<'a> {
    /// The context for `settings`: relative paths resolve against the folder
    /// of the file they were read from.
    pub fn for_settings(settings: &'a Settings) -> Self {
        let base_dir = settings
            .source
            .as_deref()
            .and_then(std::path::Path::parent)
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        InitContext { settings, base_dir }
    }
}

impl InitContext<'_> {
    /// Resolves a path from the settings against the settings file's folder.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }
}

/// A servable model (go-infer's `Model` interface).
///
/// ```
/// use inferq::model_zoo::{Model, ModelError, Params};
///
/// /// Answers {"upper": TEXT in capitals}.
/// struct Upper;
///
/// impl Model for Upper {
///     fn api_path(&self) -> &str {
///         "/api/upper"
///     }
///     fn check(&self, params: Params) -> Result<Params, ModelError> {
///         match params.get("text") {
///             Some(serde_json::Value::String(_)) => Ok(params),
///             _ => Err(ModelError::new("text: a string is required")),
///         }
///     }
///     fn infer(&self, _request_id: &str, params: Params) -> Result<Params, ModelError> {
///         let text = params["text"].as_str().unwrap_or_default();
///         let mut out = Params::new();
///         out.insert("upper".into(), text.to_uppercase().into());
///         Ok(out)
///     }
/// }
///
/// let mut p = Params::new();
/// p.insert("text".into(), "abc".into());
/// let p = Upper.check(p).unwrap();
/// assert_eq!(Upper.infer("r1", p).unwrap()["upper"], "ABC");
/// ```
pub trait Model: Send + Sync + 'static {
    /// The REST path the model is served at, e.g. `/api/echo`. Also its name
    /// on the queue and in the gRPC API.
    fn api_path(&self) -> &str;

    /// go-infer's `ApiEntry`: checks (and may normalise) the request's `data`
    /// on the gateway, before the job is queued. Must be cheap and must not
    /// need `init`. An error reaches the client as 9701 or the error's code.
    fn check(&self, params: Params) -> Result<Params, ModelError> {
        Ok(params)
    }

    /// Loads weights and the like; called once in each dispatcher before it
    /// takes jobs. A failure stops the dispatcher with that message.
    fn init(&mut self, _ctx: &InitContext<'_>) -> Result<(), ModelError> {
        Ok(())
    }

    /// Runs one job on a blocking thread. `params` are what `check` returned.
    /// An error reaches the client as 9998 or the error's code.
    fn infer(&self, request_id: &str, params: Params) -> Result<Params, ModelError>;

    /// Whether `infer` on these parameters takes microseconds and never
    /// blocks: the dispatcher then runs it on its async runtime instead of
    /// handing it to a blocking thread and back (two thread wake-ups per job,
    /// more than such a model's own work). Default: no.
    fn runs_inline(&self, _params: &Params) -> bool {
        false
    }

    /// Dynamic batching: when `Some`, the dispatcher groups this model's
    /// waiting jobs and calls [`Model::infer_batch`].
    fn batch_policy(&self) -> Option<BatchPolicy> {
        None
    }

    /// A job's size for batching (only asked when `batch_policy` is `Some`).
    fn batch_cost(&self, _params: &Params) -> BatchCost {
        BatchCost {
            items: 1,
            longest: 1,
        }
    }

    /// Runs jobs as one batch; one result per job, in order. The default runs
    /// them one by one.
    fn infer_batch(&self, jobs: Vec<(String, Params)>) -> Vec<Result<Params, ModelError>> {
        jobs.into_iter()
            .map(|(id, params)| self.infer(&id, params))
            .collect()
    }

    /// A model that runs in a server of its own (the `http` processor):
    /// when `Some`, the dispatcher awaits [`ServedModel::call`] instead of
    /// running `infer` on a blocking thread, and offers the queue no credits
    /// while the server is not ready.
    fn served(&self) -> Option<&dyn ServedModel> {
        None
    }
}

/// A model behind a server of its own, in any language, reached over the
/// network. Bodies are bytes: a PAI-EAS item's payload as the client put it,
/// or a job's checked parameters as a JSON object; the answer is the
/// server's response body.
#[async_trait::async_trait]
pub trait ServedModel: Send + Sync {
    /// Sends one job's body; the response body. A server that could not be
    /// reached answers [`ModelError::not_run`].
    async fn call(&self, request_id: &str, body: bytes::Bytes) -> Result<bytes::Bytes, ModelError>;

    /// Sends jobs as one batch (when the model has a `batch_policy`); one
    /// answer per job, in order.
    async fn call_batch(
        &self,
        jobs: Vec<(String, bytes::Bytes)>,
    ) -> Vec<Result<bytes::Bytes, ModelError>>;

    /// True while the server can take jobs.
    fn readiness(&self) -> tokio::sync::watch::Receiver<bool>;

    /// Keeps the server ready until `stop`: starts it (when the model owns
    /// its command), waits for its port, restarts it when it dies, probes it;
    /// on `stop`, stops it. Runs for the dispatcher's life.
    async fn supervise(&self, stop: tokio_util::sync::CancellationToken);
}

/// How a model's jobs may be batched (Triton's names where they exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most items (e.g. texts) in one batch.
    pub max_batch_size: usize,
    /// How long the first job of a batch may wait for others.
    pub max_queue_delay: std::time::Duration,
    /// Most padded tokens in one batch: longest item × items.
    pub max_batch_tokens: usize,
}

/// A job's share of a batch: how many items it brings and the longest one
/// (in tokens), which is what the batch is padded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchCost {
    pub items: usize,
    pub longest: usize,
}

/// The models one process serves, by API path.
#[derive(Clone, Default)]
pub struct ModelSet {
    by_path: HashMap<String, Arc<dyn Model>>,
}

impl ModelSet {
    /// Takes ownership of the models; two models on one path are an error.
    pub fn new(models: Vec<Box<dyn Model>>) -> Result<Self, ModelError> {
        let mut by_path = HashMap::new();
        for m in models {
            let path = m.api_path().to_string();
            if !path.starts_with('/') {
                return Err(ModelError::new(format!(
                    "model api path {path:?} must start with '/'"
                )));
            }
            if by_path.insert(path.clone(), Arc::from(m)).is_some() {
                return Err(ModelError::new(format!(
                    "two models are registered on {path}"
                )));
            }
        }
        Ok(ModelSet { by_path })
    }

    /// Like [`ModelSet::new`], calling `init` on each model first.
    pub fn initialised(
        models: Vec<Box<dyn Model>>,
        ctx: &InitContext<'_>,
    ) -> Result<Self, ModelError> {
        let mut ready = Vec::with_capacity(models.len());
        for mut m in models {
            let path = m.api_path().to_string();
            m.init(ctx)
                .map_err(|e| ModelError::new(format!("init of {path} failed: {e}")))?;
            tracing::info!(model = %path, "model initialised");
            ready.push(m);
        }
        ModelSet::new(ready)
    }

    pub fn get(&self, api_path: &str) -> Option<&Arc<dyn Model>> {
        self.by_path.get(api_path)
    }

    /// The API paths, sorted.
    pub fn paths(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_path.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Every model, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Model>> {
        self.by_path.values()
    }
}
