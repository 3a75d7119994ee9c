//! settings.yaml: go-infer's keys, as they are, plus inferq's own with defaults.
//!
//! An unmodified go-infer `settings.yaml` loads: the sections `API`, `Server`,
//! `ErrCode` and `Customer` keep go-infer's key names and meanings. inferq's own
//! keys sit beside them (e.g. `API.GrpcPort`, `Server.QueueListen`) and all
//! have defaults. Loading fails with one line naming the file and the key for a
//! missing file, a bad value or a wrong type; unknown keys are logged as
//! warnings so that typos are seen but old files keep working.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::codes::CodeEntry;

/// Why settings could not be loaded. Each renders as one line naming the key.
#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("settings file {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("settings file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole settings file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    #[serde(rename = "API")]
    pub api: ApiSettings,
    #[serde(rename = "Server")]
    pub server: ServerSettings,
    /// go-infer's error table: `Name: {code, msg}`.
    #[serde(rename = "ErrCode")]
    pub err_code: BTreeMap<String, CodeEntry>,
    /// Free settings for models (go-infer's `Customer`: model paths and the like).
    #[serde(rename = "Customer")]
    pub customer: BTreeMap<String, serde_yaml::Value>,
    /// Models built from settings, by name: `Kind: embedding | onnx` and the
    /// kind's own keys (see model-zoo/). The name is also the model name of
    /// the OpenAI-style API.
    #[serde(rename = "Models")]
    pub models: BTreeMap<String, serde_yaml::Value>,
    #[serde(rename = "OnnxRuntime")]
    pub onnx_runtime: OnnxRuntimeSettings,
    #[serde(rename = "OpenAI")]
    pub openai: OpenAiSettings,
    /// Asynchronous services (PAI-EAS queue service protocol), by name: each
    /// has an input queue at `/api/predict/<name>` and a sink queue at
    /// `/api/predict/<name>/sink`. Keys inside use EAS's names.
    #[serde(rename = "AsyncServices")]
    pub async_services: BTreeMap<String, AsyncServiceSettings>,
    /// Where the file was read from (set by the loader; relative model paths resolve against it).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// One asynchronous service: the model that answers its input queue, its
/// token and its queues, with the EAS service-config names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsyncServiceSettings {
    /// API path of the model that runs the input queue's items, e.g. `/api/lr`.
    pub model: String,
    /// The `Authorization` header clients must send; empty: no check.
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub queue: AsyncQueueSettings,
    #[serde(default)]
    pub rpc: AsyncRpcSettings,
}

/// EAS `queue.*` keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsyncQueueSettings {
    /// (inferq) Memory the service's two queues may use, in MB, shared by
    /// `sink.memory_ratio`. It turns a `max_length` into the largest item and
    /// a `max_payload_size` into the most items.
    pub memory_mb: u64,
    pub source: QueueSideSettings,
    pub sink: QueueSideSettings,
    /// 1, or 2 for a primary/standby pair (EAS); inferq's own redundancy is
    /// the Redis backend with several queue instances, so this is only checked.
    pub min_replica: u32,
}

impl Default for AsyncQueueSettings {
    fn default() -> Self {
        AsyncQueueSettings {
            memory_mb: 1024,
            source: QueueSideSettings::default(),
            sink: QueueSideSettings::default(),
            min_replica: 1,
        }
    }
}

/// EAS `queue.source.*` / `queue.sink.*` keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSideSettings {
    /// Most items held.
    pub max_length: Option<u64>,
    /// Largest item, in KB.
    pub max_payload_size: Option<u64>,
    /// When full: evict the oldest item (true) or refuse the put (false).
    pub auto_evict: bool,
    /// Sink only: its share of `memory_mb`; 0 turns the sink off, 1 the input.
    pub memory_ratio: Option<f64>,
}

/// EAS `rpc.*` keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsyncRpcSettings {
    /// Items of the input queue a dispatcher holds at once (its credits).
    pub worker_threads: u32,
}

impl Default for AsyncRpcSettings {
    fn default() -> Self {
        AsyncRpcSettings { worker_threads: 5 }
    }
}

/// The limits of one queue of an asynchronous service, resolved from the
/// settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// False when `sink.memory_ratio` turned this queue off.
    pub enabled: bool,
    pub max_length: u64,
    pub max_payload_bytes: u64,
    pub auto_evict: bool,
}

/// Items a queue holds when neither `max_length` nor `max_payload_size` is set.
pub const DEFAULT_ASYNC_MAX_LENGTH: u64 = 10_000;

impl AsyncServiceSettings {
    /// The input (`sink == false`) or sink queue's limits; an error names the key.
    pub fn limits(&self, sink: bool) -> Result<QueueLimits, (String, String)> {
        let (side, name) = if sink {
            (&self.queue.sink, "sink")
        } else {
            (&self.queue.source, "source")
        };
        let ratio = self.queue.sink.memory_ratio.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&ratio) {
            return Err((
                "queue.sink.memory_ratio".into(),
                "must be from 0 to 1".into(),
            ));
        }
        if !sink && side.memory_ratio.is_some() {
            return Err((
                "queue.source.memory_ratio".into(),
                "is not a key: the sink's memory_ratio divides the memory".into(),
            ));
        }
        let share = if sink { ratio } else { 1.0 - ratio };
        let memory = (self.queue.memory_mb as f64 * share * 1024.0 * 1024.0) as u64;
        let key = |k: &str| format!("queue.{name}.{k}");
        let (max_length, max_payload_bytes) = match (side.max_length, side.max_payload_size) {
            (Some(_), Some(_)) => {
                return Err((
                    key("max_length"),
                    "max_length and max_payload_size cannot both be set on one queue (one is derived from the other and the queue's memory)".into(),
                ))
            }
            (Some(0), None) => return Err((key("max_length"), "must be at least 1".into())),
            (None, Some(0)) => return Err((key("max_payload_size"), "must be at least 1 (KB)".into())),
            (Some(n), None) => (n, (memory / n).max(1)),
            (None, Some(kb)) => ((memory / (kb * 1024)).max(1), kb * 1024),
            (None, None) => (
                DEFAULT_ASYNC_MAX_LENGTH,
                (memory / DEFAULT_ASYNC_MAX_LENGTH).max(1),
            ),
        };
        Ok(QueueLimits {
            enabled: share > 0.0,
            max_length,
            max_payload_bytes,
            auto_evict: side.auto_evict,
        })
    }
}

/// Where the ONNX Runtime shared library is (loaded at run time).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OnnxRuntimeSettings {
    /// Path of `libonnxruntime.so` (relative to this file); empty: the
    /// `ORT_DYLIB_PATH` environment variable, else `.cache/models/libonnxruntime.so`
    /// under the working directory (where `scripts/fetch-models.sh` puts it).
    #[serde(rename = "Library")]
    pub library: String,
}

/// The OpenAI-style API (`POST /v1/embeddings`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OpenAiSettings {
    /// Bearer tokens accepted; empty: the API is off.
    #[serde(rename = "ApiKeys")]
    pub api_keys: Vec<String>,
}

/// The `API` section: the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ApiSettings {
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "Addr")]
    pub addr: String,
    /// go-infer's shared SM2 key: base64 of the 32-byte private scalar. The
    /// gateway derives the verifying public key from it.
    #[serde(rename = "SM2PrivateKey")]
    pub sm2_private_key: Option<String>,
    #[serde(rename = "AppIdSecret")]
    pub app_id_secret: BTreeMap<String, String>,
    /// Seconds; a request whose timestamp is further than this from now is refused.
    #[serde(rename = "RequestTimestampDiff")]
    pub request_timestamp_diff: f64,
    /// appIds allowed to send `signType: plain`.
    #[serde(rename = "AllowSignPlain")]
    pub allow_sign_plain: Vec<String>,

    // ---- inferq's own keys ----
    /// Per-appId SM2 public keys (hex or base64 of the SEC1 point `04‖x‖y`), so
    /// the server need not hold a client's private key. Checked before `SM2PrivateKey`.
    #[serde(rename = "SM2PublicKeys")]
    pub sm2_public_keys: BTreeMap<String, String>,
    /// Port of the public gRPC API (`inferq.v1.Predict`); 0 picks a free port. Addr as `Addr`.
    #[serde(rename = "GrpcPort")]
    pub grpc_port: Option<u16>,
    /// Largest request body accepted, in bytes.
    #[serde(rename = "MaxBodyBytes")]
    pub max_body_bytes: usize,
    /// Requests handled at once by one gateway; more wait.
    #[serde(rename = "MaxConcurrentRequests")]
    pub max_concurrent_requests: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            port: 5000,
            addr: "0.0.0.0".into(),
            sm2_private_key: None,
            app_id_secret: BTreeMap::new(),
            request_timestamp_diff: 300.0,
            allow_sign_plain: Vec::new(),
            sm2_public_keys: BTreeMap::new(),
            grpc_port: Some(5001),
            max_body_bytes: 1 << 20,
            max_concurrent_requests: 10_000,
        }
    }
}

/// Which store holds the queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// `standalone` uses memory, the split subcommands use Redis.
    #[default]
    Auto,
    Memory,
    Redis,
}

/// The `Server` section: queues and dispatchers.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    #[serde(rename = "RedisServer")]
    pub redis_server: String,
    #[serde(rename = "RedisPasswd")]
    pub redis_passwd: String,
    /// Base name of the request queues; queue N is `QueueName` + N.
    #[serde(rename = "QueueName")]
    pub queue_name: String,
    /// How many request queues a gateway spreads its requests over.
    #[serde(rename = "RequestQueueAmount")]
    pub request_queue_amount: u32,
    /// Seconds a synchronous call waits for its result.
    #[serde(rename = "MessageTimeout")]
    pub message_timeout: f64,
    /// Jobs one dispatcher holds at once (its credits).
    #[serde(rename = "MaxWorkers")]
    pub max_workers: u32,

    // ---- inferq's own keys ----
    /// `auto`, `memory` or `redis`.
    #[serde(rename = "Backend")]
    pub backend: BackendChoice,
    /// Where `inferq queue` listens (gRPC).
    #[serde(rename = "QueueListen")]
    pub queue_listen: String,
    /// The queue services gateways and dispatchers connect to.
    #[serde(rename = "QueueEndpoints")]
    pub queue_endpoints: Vec<String>,
    /// Where a dispatcher serves `/metrics` and `/healthz`; empty: not served.
    #[serde(rename = "DispatcherMetricsListen")]
    pub dispatcher_metrics_listen: String,
    /// Most jobs waiting in one queue; a put beyond it is refused (9702).
    #[serde(rename = "MaxQueueLength")]
    pub max_queue_length: usize,
    /// A job handed out this many times without a result goes to the dead letters (9998).
    #[serde(rename = "MaxDeliveries")]
    pub max_deliveries: u32,
    /// Seconds a dispatcher waits for its jobs in hand on SIGTERM before it exits anyway.
    #[serde(rename = "DrainTimeout")]
    pub drain_timeout: f64,
    /// Threads that run `Infer` in a dispatcher; 0: MaxWorkers.
    #[serde(rename = "InferThreads")]
    pub infer_threads: usize,
    /// Most pooled Redis connections per queue-service process.
    #[serde(rename = "RedisPoolSize")]
    pub redis_pool_size: usize,
    /// Prefix of every Redis key inferq uses.
    #[serde(rename = "RedisKeyPrefix")]
    pub redis_key_prefix: String,
    /// Seconds a job may stay with a consumer that stopped renewing it (a dead
    /// queue instance) before another takes it over.
    #[serde(rename = "ReclaimIdle")]
    pub reclaim_idle: f64,
    /// Seconds a result is kept for lookup by request id.
    #[serde(rename = "ResultTTL")]
    pub result_ttl: f64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            redis_server: "127.0.0.1:6379".into(),
            redis_passwd: String::new(),
            queue_name: "goinfer-synchronous-asynchronous-queue".into(),
            request_queue_amount: 1,
            message_timeout: 10.0,
            max_workers: 8,
            backend: BackendChoice::Auto,
            queue_listen: "127.0.0.1:5100".into(),
            queue_endpoints: vec!["http://127.0.0.1:5100".into()],
            dispatcher_metrics_listen: String::new(),
            max_queue_length: 100_000,
            max_deliveries: 3,
            drain_timeout: 30.0,
            infer_threads: 0,
            redis_pool_size: 32,
            redis_key_prefix: "inferq:".into(),
            reclaim_idle: 5.0,
            result_ttl: 300.0,
        }
    }
}

impl ServerSettings {
    /// The name of request queue `n`.
    pub fn queue(&self, n: u32) -> String {
        format!("{}{}", self.queue_name, n)
    }

    pub fn message_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.message_timeout)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout)
    }

    pub fn reclaim_idle(&self) -> Duration {
        Duration::from_secs_f64(self.reclaim_idle)
    }

    pub fn result_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.result_ttl)
    }
}

impl ApiSettings {
    pub fn http_addr(&self) -> String {
        format!("{}:{}", self.addr, self.port)
    }
    pub fn grpc_addr(&self) -> Option<String> {
        self.grpc_port.map(|p| format!("{}:{}", self.addr, p))
    }
}

impl Settings {
    /// Reads and checks a settings file.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut settings = Settings::from_yaml(&text, path)?;
        settings.source = Some(path.to_path_buf());
        Ok(settings)
    }

    /// Parses settings text; `path` names the file in errors.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Settings, SettingsError> {
        let invalid = |key: String, message: String| SettingsError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        // An empty file is an empty mapping, all defaults.
        let text = if text.trim().is_empty() { "{}" } else { text };
        let de = serde_yaml::Deserializer::from_str(text);
        let mut unknown = Vec::new();
        let mut record = |p: serde_ignored::Path<'_>| unknown.push(p.to_string());
        let de = serde_ignored::Deserializer::new(de, &mut record);
        let settings: Settings = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = first_line(&e.inner().to_string());
            invalid(key, message)
        })?;
        for key in unknown {
            tracing::warn!(file = %path.display(), key = %key, "unknown settings key ignored");
        }
        settings.validate().map_err(|(k, m)| invalid(k, m))?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
        if self.api.request_timestamp_diff < 0.0 || !self.api.request_timestamp_diff.is_finite() {
            return bad(
                "API.RequestTimestampDiff",
                "must be a non-negative number of seconds",
            );
        }
        if self.api.max_body_bytes == 0 {
            return bad("API.MaxBodyBytes", "must be at least 1");
        }
        if self.api.max_concurrent_requests == 0 {
            return bad("API.MaxConcurrentRequests", "must be at least 1");
        }
        if self.server.max_workers == 0 {
            return bad("Server.MaxWorkers", "must be at least 1");
        }
        if self.server.request_queue_amount == 0 {
            return bad("Server.RequestQueueAmount", "must be at least 1");
        }
        if !(self.server.message_timeout > 0.0 && self.server.message_timeout.is_finite()) {
            return bad(
                "Server.MessageTimeout",
                "must be a positive number of seconds",
            );
        }
        if !(self.server.drain_timeout >= 0.0 && self.server.drain_timeout.is_finite()) {
            return bad(
                "Server.DrainTimeout",
                "must be a non-negative number of seconds",
            );
        }
        if self.server.max_deliveries == 0 {
            return bad("Server.MaxDeliveries", "must be at least 1");
        }
        if self.server.redis_pool_size == 0 {
            return bad("Server.RedisPoolSize", "must be at least 1");
        }
        if !(self.server.reclaim_idle > 0.0 && self.server.reclaim_idle.is_finite()) {
            return bad("Server.ReclaimIdle", "must be a positive number of seconds");
        }
        if !(self.server.result_ttl > 0.0 && self.server.result_ttl.is_finite()) {
            return bad("Server.ResultTTL", "must be a positive number of seconds");
        }
        if self.server.max_queue_length == 0 {
            return bad("Server.MaxQueueLength", "must be at least 1");
        }
        if self.server.queue_listen.parse::<SocketAddr>().is_err() {
            return bad("Server.QueueListen", "must be host:port with an IP address");
        }
        if self.server.queue_endpoints.is_empty() {
            return bad(
                "Server.QueueEndpoints",
                "must name at least one queue service",
            );
        }
        for e in &self.server.queue_endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return bad(
                    "Server.QueueEndpoints",
                    "each must be an http:// or https:// URL",
                );
            }
        }
        if format!("{}:{}", self.api.addr, self.api.port)
            .parse::<SocketAddr>()
            .is_err()
        {
            return bad("API.Addr", "must be an IP address");
        }
        for (name, svc) in &self.async_services {
            let at = |k: &str| format!("AsyncServices.{name}.{k}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err((
                    format!("AsyncServices.{name}"),
                    "a service name is letters, digits, '.', '_' and '-'".into(),
                ));
            }
            if !svc.model.starts_with('/') {
                return bad(&at("model"), "must be a model's API path, like /api/lr");
            }
            if svc.rpc.worker_threads == 0 {
                return bad(&at("rpc.worker_threads"), "must be at least 1");
            }
            if svc.queue.memory_mb == 0 {
                return bad(&at("queue.memory_mb"), "must be at least 1");
            }
            if !(1..=2).contains(&svc.queue.min_replica) {
                return bad(&at("queue.min_replica"), "must be 1 or 2");
            }
            for sink in [false, true] {
                svc.limits(sink).map_err(|(k, m)| (at(&k), m))?;
            }
        }
        if !self.server.dispatcher_metrics_listen.is_empty()
            && self
                .server
                .dispatcher_metrics_listen
                .parse::<SocketAddr>()
                .is_err()
        {
            return bad(
                "Server.DispatcherMetricsListen",
                "must be host:port with an IP address",
            );
        }
        Ok(())
    }

    /// A `Customer` value as a string (go-infer keeps them as strings).
    pub fn customer_str(&self, key: &str) -> Option<String> {
        match self.customer.get(key)? {
            serde_yaml::Value::String(s) => Some(s.clone()),
            serde_yaml::Value::Number(n) => Some(n.to_string()),
            serde_yaml::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO_INFER: &str = r#"
# HTTP 服务端参数
API:
    Port: 5000
    Addr: 0.0.0.0
    SM2PrivateKey: "JShsBOJL0RgPAoPttEB1hgtPAvCikOl0V1oTOYL7k5U="
    AppIdSecret: { # 接口调用分配的 appid 和 sevret
        "3EA25569454745D01219080B779F021F" : "41DF0E6AE27B5282C07EF5124642A352",
    }
    RequestTimestampDiff: 300
    AllowSignPlain: ["3EA25569454745D01219080B779F021F"]

Server:
    RedisServer: "127.0.0.1:7480"
    RedisPasswd: "e18ffb7484f4d69c2acb40008471a71c"
    QueueName: "goinfer-synchronous-asynchronous-queue"
    RequestQueueAmount: 1 # 请求队列数量，要启动相同数量的server
    MessageTimeout: 10 # 推理计算最大等待时间
    MaxWorkers: 8 # 模型推理最大并发数

ErrCode:
    SignFail: {code: 9800, msg: "签名错误"}

Customer: {
    "BertModelPath" : "../../nlp/qa_demo/saved-model",
}
"#;

    #[test]
    fn go_infer_file_loads() {
        let s = Settings::from_yaml(GO_INFER, Path::new("s.yaml")).expect("loads");
        assert_eq!(s.api.port, 5000);
        assert_eq!(s.api.app_id_secret.len(), 1);
        assert_eq!(s.server.redis_server, "127.0.0.1:7480");
        assert_eq!(s.server.max_workers, 8);
        assert_eq!(s.server.queue(0), "goinfer-synchronous-asynchronous-queue0");
        assert_eq!(s.err_code["SignFail"].code, 9800);
        assert_eq!(
            s.customer_str("BertModelPath").as_deref(),
            Some("../../nlp/qa_demo/saved-model")
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = Settings::from_yaml("Server:\n  MaxWorkers: many\n", Path::new("s.yaml"))
            .expect_err("must fail");
        let line = err.to_string();
        assert!(line.contains("Server.MaxWorkers"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Settings::from_yaml("Server:\n  MaxWorkers: 0\n", Path::new("s.yaml"))
            .expect_err("must fail");
        assert!(err.to_string().contains("Server.MaxWorkers"));
    }

    #[test]
    fn unknown_keys_are_not_fatal() {
        let s = Settings::from_yaml("API:\n  Prot: 1\nExtra: 2\n", Path::new("s.yaml"))
            .expect("unknown keys only warn");
        assert_eq!(s.api.port, 5000);
    }

    fn async_service(queue: &str) -> Result<Settings, SettingsError> {
        let text = format!(
            "AsyncServices:\n  svc:\n    model: /api/lr\n    queue:\n      memory_mb: 100\n{queue}"
        );
        Settings::from_yaml(&text, Path::new("s.yaml"))
    }

    #[test]
    fn async_queue_limits_derive_from_memory() {
        let s = async_service("      source: {max_length: 100}\n      sink: {max_payload_size: 64, memory_ratio: 0.25}\n")
            .expect("valid");
        let svc = &s.async_services["svc"];
        let input = svc.limits(false).unwrap();
        assert_eq!(input.max_length, 100);
        assert_eq!(input.max_payload_bytes, 75 * 1024 * 1024 / 100);
        let sink = svc.limits(true).unwrap();
        assert_eq!(sink.max_payload_bytes, 64 * 1024);
        assert_eq!(sink.max_length, 25 * 1024 * 1024 / (64 * 1024));
        assert!(sink.enabled && input.enabled);
    }

    #[test]
    fn max_length_and_max_payload_size_together_stop_start_up() {
        let err =
            async_service("      sink: {max_length: 10, max_payload_size: 8}\n").expect_err("both");
        let line = err.to_string();
        assert!(
            line.contains("AsyncServices.svc.queue.sink.max_length"),
            "{line}"
        );
        assert!(line.contains("cannot both be set"), "{line}");
    }

    #[test]
    fn memory_ratio_turns_a_queue_off() {
        let s = async_service("      sink: {memory_ratio: 0}\n").expect("valid");
        assert!(!s.async_services["svc"].limits(true).unwrap().enabled);
        assert!(s.async_services["svc"].limits(false).unwrap().enabled);
        let s = async_service("      sink: {memory_ratio: 1}\n").expect("valid");
        assert!(!s.async_services["svc"].limits(false).unwrap().enabled);
        let err = async_service("      sink: {memory_ratio: 2}\n").expect_err("out of range");
        assert!(err.to_string().contains("memory_ratio"));
    }

    #[test]
    fn missing_file_is_one_line() {
        let err = Settings::load(Path::new("/nonexistent/settings.yaml")).expect_err("missing");
        assert!(err
            .to_string()
            .starts_with("settings file /nonexistent/settings.yaml"));
    }
}
