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

use serde::Deserialize;
use thiserror::Error;

use crate::codes::CodeEntry;

pub mod autoscale;
pub mod eas;
pub mod models;
pub mod sections;
pub mod service_file;

pub use eas::{
    EasQueueSettings, EasRpcSettings, EasServiceSettings, QueueLimits, QueueSideSettings,
    ServiceSpec, DEFAULT_EAS_MAX_LENGTH,
};
pub use models::ModelSpec;
pub use sections::{
    ApiSettings, BackendChoice, OnnxRuntimeSettings, OpenAiSettings, RateLimitSettings,
    ReplaySettings, ServerSettings, StoreKind, TlsSettings,
};

/// A bad value, with the key that holds it (dotted from its section).
#[derive(Debug, Clone, Error, PartialEq)]
#[error("{key}: {message}")]
pub struct KeyError {
    pub key: String,
    pub message: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        KeyError {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same error with its key under `parent` (`parent.key`).
    pub fn under(self, parent: &str) -> Self {
        KeyError {
            key: format!("{parent}.{}", self.key),
            message: self.message,
        }
    }
}

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
    #[serde(rename = "TLS")]
    pub tls: TlsSettings,
    /// go-infer's error table: `Name: {code, msg}`.
    #[serde(rename = "ErrCode")]
    pub err_code: BTreeMap<String, CodeEntry>,
    /// Free settings for models (go-infer's `Customer`: model paths and the like).
    #[serde(rename = "Customer")]
    pub customer: BTreeMap<String, serde_yaml::Value>,
    /// Models built from settings, by name: `Kind: embedding | onnx | lr` and
    /// the kind's own keys ([`models`]). The name is also the model name of
    /// the OpenAI-style API.
    #[serde(rename = "Models")]
    pub models: BTreeMap<String, ModelSpec>,
    #[serde(rename = "OnnxRuntime")]
    pub onnx_runtime: OnnxRuntimeSettings,
    #[serde(rename = "OpenAI")]
    pub openai: OpenAiSettings,
    /// Asynchronous services (PAI-EAS queue service protocol), by name: each
    /// has an input queue at `/api/predict/<name>` and a sink queue at
    /// `/api/predict/<name>/sink`. Keys inside use EAS's names.
    #[serde(rename = "AsyncServices")]
    pub async_services: BTreeMap<String, EasServiceSettings>,
    /// Where the file was read from (set by the loader; relative model paths resolve against it).
    #[serde(skip)]
    pub source: Option<PathBuf>,
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
        settings.validate().map_err(|e| invalid(e.key, e.message))?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), KeyError> {
        let bad = |k: &str, m: &str| Err(KeyError::new(k, m));
        if self.api.request_timestamp_diff < 0.0 || !self.api.request_timestamp_diff.is_finite() {
            return bad(
                "API.RequestTimestampDiff",
                "must be a non-negative number of seconds",
            );
        }
        if !self.server.autoscale.trim().is_empty() {
            if let Err(e) = autoscale::ScalePolicy::parse(&self.server.autoscale) {
                return bad("Server.Autoscale", &e.to_string());
            }
        }
        if self.api.max_body_bytes == 0 {
            return bad("API.MaxBodyBytes", "must be at least 1");
        }
        if self.api.max_concurrent_requests == 0 {
            return bad("API.MaxConcurrentRequests", "must be at least 1");
        }
        for (key, n) in [
            ("API.MaxInFlightBytes", self.api.max_in_flight_bytes),
            ("API.MaxConnections", self.api.max_connections),
            ("API.Http2MaxStreams", self.api.http2_max_streams as usize),
            ("Server.MaxResultBytes", self.server.max_result_bytes),
            (
                "Server.QueueMaxStreams",
                self.server.queue_max_streams as usize,
            ),
        ] {
            if n == 0 {
                return bad(key, "must be at least 1");
            }
        }
        for (key, secs) in [
            ("API.BodyReadTimeout", self.api.body_read_timeout),
            ("API.HeaderReadTimeout", self.api.header_read_timeout),
            ("API.IdleTimeout", self.api.idle_timeout),
            ("API.KeepAliveInterval", self.api.keep_alive_interval),
        ] {
            if !(secs > 0.0 && secs.is_finite() && secs < 1e9) {
                return bad(key, "must be a positive number of seconds");
            }
        }
        if self.tls.cert_file.is_empty() != self.tls.key_file.is_empty() {
            return bad("TLS.KeyFile", "CertFile and KeyFile are set together");
        }
        if crate::proto::client::InternalToken::new(&self.server.internal_token).is_err() {
            return bad(
                "Server.InternalToken",
                "must be printable ASCII without spaces",
            );
        }
        if !self.api.admin_listen.is_empty() && self.api.admin_listen.parse::<SocketAddr>().is_err()
        {
            return bad("API.AdminListen", "must be host:port with an IP address");
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
                return Err(KeyError::new(
                    format!("AsyncServices.{name}"),
                    "a service name is letters, digits, '.', '_' and '-'",
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
            ServiceSpec::from_settings(name, svc)?;
        }
        for (key, value) in [
            (
                "Server.DispatcherMetricsListen",
                &self.server.dispatcher_metrics_listen,
            ),
            (
                "Server.QueueMetricsListen",
                &self.server.queue_metrics_listen,
            ),
        ] {
            if !value.is_empty() && value.parse::<SocketAddr>().is_err() {
                return bad(key, "must be host:port with an IP address");
            }
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
    fn tls_and_token_settings_are_checked() {
        let err = Settings::from_yaml("TLS:\n  CertFile: c.pem\n", Path::new("s.yaml"))
            .expect_err("a certificate without its key");
        assert!(err.to_string().contains("TLS.KeyFile"), "{err}");
        let err = Settings::from_yaml("Server:\n  InternalToken: \"a b\"\n", Path::new("s.yaml"))
            .expect_err("a token with a space");
        assert!(err.to_string().contains("Server.InternalToken"), "{err}");
        let s = Settings::from_yaml(
            "TLS:\n  CertFile: c.pem\n  KeyFile: k.pem\n  Public: false\n",
            Path::new("s.yaml"),
        )
        .expect("valid");
        assert!(!s.tls.public && s.tls.internal, "Internal defaults to true");
    }

    #[test]
    fn the_shipped_settings_files_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for dir in ["config", "deploy/layouts"] {
            let mut n = 0;
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    Settings::load(&path).unwrap_or_else(|e| panic!("{e}"));
                    n += 1;
                }
            }
            assert!(n > 0, "no settings files in {dir}");
        }
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

    #[test]
    fn models_are_typed_by_kind_and_errors_name_the_key() {
        let ok = "Models:\n  m:\n    Kind: lr\n    ApiPath: /api/m\n    Coefficients: {a: 1.5}\n";
        let s = Settings::from_yaml(ok, Path::new("s.yaml")).expect("valid");
        match &s.models["m"] {
            ModelSpec::Logistic(l) => assert_eq!(l.coefficients["a"], 1.5),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.models["m"].api_path(), "/api/m");

        let cases = [
            ("Models:\n  m:\n    ApiPath: /api/m\n", "Kind is missing"),
            ("Models:\n  m:\n    Kind: sas\n", "unknown kind"),
            (
                "Models:\n  m:\n    Kind: pmml\n    ApiPath: /x\n",
                "missing field `Model`",
            ),
            (
                "Models:\n  m:\n    Kind: embedding\n    Batch: {MaxBatchSize: many}\n",
                "Batch.MaxBatchSize",
            ),
            (
                "Models:\n  m:\n    Kind: lr\n    ApiPath: /x\n    Coefficients: {}\n    Typo: 1\n",
                "Typo",
            ),
        ];
        for (yaml, says) in cases {
            let line = Settings::from_yaml(yaml, Path::new("s.yaml"))
                .expect_err(yaml)
                .to_string();
            assert!(line.contains("Models.m"), "{line}");
            assert!(line.contains(says), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }
}
