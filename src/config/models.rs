//! `Models`: the models built from settings, one entry a model, typed by its
//! `Kind` and parsed once, with the file: an error names the key
//! (`Models.<name>.<key>`) like every other setting. Each kind's keys are
//! documented with its model in `model-zoo/`.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// The kinds of model that settings can declare under `Models`.
pub const KINDS: &str = "embedding, onnx, lr, http, pmml";

/// One entry of `Models`.
#[derive(Debug, Clone)]
pub enum ModelSpec {
    /// `Kind: embedding` (model-zoo/embedding.rs).
    Embedding(EmbeddingSettings),
    /// `Kind: onnx` (model-zoo/onnx_model.rs).
    Onnx(OnnxSettings),
    /// `Kind: lr` (model-zoo/logistic.rs).
    Logistic(LogisticSettings),
    /// `Kind: http`, the HTTP processor (model-zoo/http/).
    Http(HttpSettings),
    /// `Kind: pmml` (model-zoo/pmml/).
    Pmml(PmmlSettings),
}

impl ModelSpec {
    /// The API path the model is served at.
    pub fn api_path(&self) -> &str {
        match self {
            ModelSpec::Embedding(s) => &s.api_path,
            ModelSpec::Onnx(s) => &s.api_path,
            ModelSpec::Logistic(s) => &s.api_path,
            ModelSpec::Http(s) => &s.api_path,
            ModelSpec::Pmml(s) => &s.api_path,
        }
    }
}

impl<'de> Deserialize<'de> for ModelSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut value = serde_yaml::Value::deserialize(d)?;
        let kind = match value.as_mapping_mut().and_then(|m| m.remove("Kind")) {
            Some(serde_yaml::Value::String(k)) => k,
            Some(_) => return Err(D::Error::custom(format!("Kind must be one of: {KINDS}"))),
            None => {
                return Err(D::Error::custom(format!(
                    "Kind is missing (one of: {KINDS})"
                )))
            }
        };
        fn typed<T: serde::de::DeserializeOwned, E: serde::de::Error>(
            value: serde_yaml::Value,
        ) -> Result<T, E> {
            serde_path_to_error::deserialize(value).map_err(|e| {
                let inner = e.inner().to_string();
                let line = inner.lines().next().unwrap_or_default().to_string();
                match e.path().to_string().as_str() {
                    "." => E::custom(line),
                    path => E::custom(format!("{path}: {line}")),
                }
            })
        }
        match kind.as_str() {
            "embedding" => typed(value).map(ModelSpec::Embedding),
            "onnx" => typed(value).map(ModelSpec::Onnx),
            "lr" => typed(value).map(ModelSpec::Logistic),
            "http" => typed(value).map(ModelSpec::Http),
            "pmml" => typed(value).map(ModelSpec::Pmml),
            other => Err(D::Error::custom(format!(
                "Kind: unknown kind {other:?} (one of: {KINDS})"
            ))),
        }
    }
}

// ---- embedding ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Mean,
    Cls,
}

/// Dynamic batching settings of a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSettings {
    #[serde(rename = "MaxBatchSize")]
    pub max_batch_size: usize,
    #[serde(rename = "MaxQueueDelayUs")]
    pub max_queue_delay_us: u64,
    #[serde(rename = "MaxBatchTokens")]
    pub max_batch_tokens: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_batch_size: 32,
            max_queue_delay_us: 2000,
            max_batch_tokens: 8192,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddingSettings {
    #[serde(rename = "ApiPath")]
    pub api_path: String,
    #[serde(rename = "Model")]
    pub model: String,
    #[serde(rename = "Tokenizer")]
    pub tokenizer: String,
    /// Name of the model output holding token vectors [batch, seq, dim].
    #[serde(rename = "Output")]
    pub output: String,
    #[serde(rename = "MaxLength")]
    pub max_length: usize,
    #[serde(rename = "Truncate")]
    pub truncate: bool,
    #[serde(rename = "Pooling")]
    pub pooling: Pooling,
    #[serde(rename = "Normalize")]
    pub normalize: bool,
    #[serde(rename = "IntraThreads")]
    pub intra_threads: usize,
    /// ONNX Runtime sessions, so that this many batches can run at once (set
    /// `Server.InferThreads` to match).
    #[serde(rename = "Sessions")]
    pub sessions: usize,
    #[serde(rename = "MaxTextsPerRequest")]
    pub max_texts_per_request: usize,
    #[serde(rename = "Batch")]
    pub batch: BatchSettings,
}

impl Default for EmbeddingSettings {
    fn default() -> Self {
        EmbeddingSettings {
            api_path: "/api/embedding".into(),
            model: String::new(),
            tokenizer: String::new(),
            output: "last_hidden_state".into(),
            max_length: 256,
            truncate: true,
            pooling: Pooling::Mean,
            normalize: true,
            intra_threads: 0,
            sessions: 1,
            max_texts_per_request: 256,
            batch: BatchSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Float32,
    Float64,
    Int32,
    Int64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Dtype")]
    pub dtype: Dtype,
    /// Dimensions; -1 for any size.
    #[serde(rename = "Shape")]
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxSettings {
    #[serde(rename = "ApiPath")]
    pub api_path: String,
    #[serde(rename = "Model")]
    pub model: String,
    #[serde(rename = "IntraThreads", default)]
    pub intra_threads: usize,
    #[serde(rename = "Inputs")]
    pub inputs: Vec<InputSpec>,
    #[serde(rename = "Outputs", default)]
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogisticSettings {
    #[serde(rename = "ApiPath")]
    pub api_path: String,
    #[serde(rename = "Coefficients")]
    pub coefficients: BTreeMap<String, f64>,
    #[serde(rename = "Intercept", default)]
    pub intercept: f64,
}

/// `Kind: http`: a model served by its own HTTP server (model-zoo/http/).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    #[serde(rename = "ApiPath")]
    pub api_path: String,
    /// Where each job is POSTed, path included (PAI-EAS `rpc.proxy_path`):
    /// `http://127.0.0.1:8000/data/model`.
    #[serde(rename = "Url")]
    pub url: String,
    /// When set, the dispatcher runs this command line (with `sh -c`) as the
    /// server, restarts it when it dies and stops it on drain.
    #[serde(rename = "Command", default)]
    pub command: Option<String>,
    /// The command's working folder (relative to the settings file).
    #[serde(rename = "WorkDir", default)]
    pub work_dir: Option<String>,
    /// Environment variables for the command.
    #[serde(rename = "Env", default)]
    pub env: BTreeMap<String, String>,
    /// Longest a call may take.
    #[serde(rename = "TimeoutMs", default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest the command may take to open its port.
    #[serde(rename = "StartTimeoutS", default = "default_start_timeout_s")]
    pub start_timeout_s: u64,
    /// Largest response body taken.
    #[serde(rename = "MaxResponseBytes", default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// The `Content-Type` of go-infer and gRPC jobs' bodies (PAI-EAS items
    /// are sent as `application/octet-stream`: bytes as the client put them).
    #[serde(rename = "ContentType", default = "default_content_type")]
    pub content_type: String,
    /// When set, jobs are batched: bodies POSTed as one JSON list, answers
    /// matched by position (`MaxBatchTokens` is not used).
    #[serde(rename = "Batch", default)]
    pub batch: Option<BatchSettings>,
}

fn default_http_timeout_ms() -> u64 {
    60_000
}

fn default_start_timeout_s() -> u64 {
    120
}

fn default_max_response_bytes() -> usize {
    64 << 20
}

fn default_content_type() -> String {
    "application/json".into()
}

/// `Kind: pmml`: a PMML file scored in process (model-zoo/pmml/).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PmmlSettings {
    #[serde(rename = "ApiPath")]
    pub api_path: String,
    /// The PMML file (relative to the settings file).
    #[serde(rename = "Model")]
    pub model: String,
}
