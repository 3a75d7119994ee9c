//! A PAI-EAS `service.json`, as the asynchronous-inference document writes
//! it, turned into settings: one asynchronous service (its input and sink
//! queues at `/api/predict/<name>`) and the model that answers it, at
//! `/api/<name>`.
//!
//! - `"processor": "pmml"` with a local `model_path`: a `pmml` model;
//! - `"containers": [{"command", "port"}]` with `metadata.rpc.proxy_path`:
//!   the HTTP processor, which runs `command` and POSTs each item to
//!   `http://127.0.0.1:<port><proxy_path>`;
//! - `metadata.rpc.worker_threads`: the credits (items in flight);
//!   `metadata.rpc.keepalive`: the longest a call may take (ms);
//! - the `queue.*` keys as the document names them (dotted or nested);
//! - `token`: the token clients send (PAI-EAS assigns one when it creates a
//!   service; inferq reads it from this key, which it adds to the file).
//!
//! Keys that only mean something to PAI-EAS's scheduler (`cpu`, `memory`,
//! `instance`, `image`, …) are listed once at start as ignored, never
//! dropped silently; a key nobody knows is listed the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::eas::{EasQueueSettings, EasRpcSettings, EasServiceSettings, QueueSideSettings};
use super::models::{HttpSettings, ModelSpec, PmmlSettings};
use super::Settings;

/// Why a service file cannot start a service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceFileError {
    #[error("service file {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("service file {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Keys PAI-EAS's scheduler reads and inferq has nothing to do with.
const SCHEDULER_KEYS: &[&str] = &[
    "metadata.cpu",
    "metadata.gpu",
    "metadata.memory",
    "metadata.instance",
    "metadata.resource",
    "metadata.qos",
    "metadata.region",
    "queue.cpu",
    "containers[].image",
    "cloud",
    "storage",
];

/// What a service file adds to the settings.
#[derive(Debug, Clone)]
pub struct ServiceFile {
    pub name: String,
    pub model: ModelSpec,
    pub service: EasServiceSettings,
    /// Keys read and not honoured, in the file's order.
    pub ignored: Vec<String>,
}

impl ServiceFile {
    /// Reads `path`; relative paths in it resolve against its folder.
    pub fn load(path: &Path) -> Result<ServiceFile, ServiceFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServiceFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|(key, message)| ServiceFileError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        })
    }

    /// Parses a service file's text; an error names the key.
    pub fn parse(text: &str) -> Result<ServiceFile, (String, String)> {
        let err = |k: &str, m: &str| (k.to_string(), m.to_string());
        let root: Value =
            serde_json::from_str(text).map_err(|e| err("", &format!("not JSON: {e}")))?;
        let Value::Object(_) = root else {
            return Err(err("", "must be a JSON object"));
        };
        // Every key as a dotted path: `"queue.source.max_length": 10` and
        // `"queue": {"source": {"max_length": 10}}` are the same key.
        let mut keys = BTreeMap::new();
        let mut order = Vec::new();
        flatten("", &root, &mut keys, &mut order);
        let mut used: Vec<&str> = Vec::new();
        let mut take = |k: &'static str| {
            used.push(k);
            keys.get(k).cloned()
        };
        let string = |k: &str, v: Option<Value>| -> Result<Option<String>, (String, String)> {
            match v {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(err(k, "must be a string")),
            }
        };
        let uint = |k: &str, v: Option<Value>| -> Result<Option<u64>, (String, String)> {
            match v {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .map(Some)
                    .ok_or_else(|| err(k, "must be a whole number")),
            }
        };
        let boolean = |k: &str, v: Option<Value>| -> Result<bool, (String, String)> {
            match v {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(b),
                Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
                Some(_) => Err(err(k, "must be true or false")),
            }
        };

        let name = string("name", take("name"))?.ok_or_else(|| err("name", "is required"))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(err("name", "must be letters, digits, '_' or '-'"));
        }
        match string("metadata.type", take("metadata.type"))?.as_deref() {
            Some("Async") => {}
            Some(other) => {
                return Err(err(
                    "metadata.type",
                    &format!("is {other:?}: inferq serves service files of type Async"),
                ))
            }
            None => return Err(err("metadata.type", "is required (Async)")),
        }
        let token = string("token", take("token"))?.unwrap_or_default();
        let worker_threads = uint(
            "metadata.rpc.worker_threads",
            take("metadata.rpc.worker_threads"),
        )?
        .unwrap_or(EasRpcSettings::default().worker_threads as u64);
        let worker_threads = u32::try_from(worker_threads)
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| err("metadata.rpc.worker_threads", "must be from 1 to 10000"))?;
        let keepalive = uint("metadata.rpc.keepalive", take("metadata.rpc.keepalive"))?;
        let proxy_path = string("metadata.rpc.proxy_path", take("metadata.rpc.proxy_path"))?;
        let api_path = format!("/api/{name}");

        let processor = string("processor", take("processor"))?;
        let model_path = string("model_path", take("model_path"))?;
        let containers = take("containers");
        let model = match (processor.as_deref(), containers) {
            (Some(_), Some(_)) => {
                return Err(err("containers", "a service has a processor or containers, not both"))
            }
            (Some("pmml"), None) => {
                let path = model_path.ok_or_else(|| err("model_path", "is required for the pmml processor"))?;
                let local = path.strip_prefix("file://").unwrap_or(&path);
                if local.contains("://") {
                    return Err(err(
                        "model_path",
                        "must be a local file: inferq does not download models (fetch it first, then give its path)",
                    ));
                }
                ModelSpec::Pmml(PmmlSettings {
                    api_path: api_path.clone(),
                    model: local.to_string(),
                })
            }
            (Some(other), None) => {
                return Err(err(
                    "processor",
                    &format!("{other:?} is not a processor inferq has (pmml, or containers for your own server)"),
                ))
            }
            (None, Some(Value::Array(list))) => {
                if list.len() != 1 {
                    return Err(err("containers", "inferq runs one container's command"));
                }
                let c = &list[0];
                let command = c
                    .get("command")
                    .or_else(|| c.get("script"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| err("containers[0].command", "is required: inferq runs it"))?;
                let port = c
                    .get("port")
                    .and_then(|p| p.as_u64().or_else(|| p.as_str().and_then(|s| s.parse().ok())))
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p > 0)
                    .ok_or_else(|| err("containers[0].port", "must be a port number"))?;
                let path = proxy_path.unwrap_or_else(|| "/".to_string());
                if !path.starts_with('/') {
                    return Err(err("metadata.rpc.proxy_path", "must start with '/'"));
                }
                let env = match c.get("env") {
                    None => BTreeMap::new(),
                    Some(Value::Array(vars)) => vars
                        .iter()
                        .filter_map(|v| {
                            Some((
                                v.get("name")?.as_str()?.to_string(),
                                v.get("value")?.as_str()?.to_string(),
                            ))
                        })
                        .collect(),
                    Some(_) => return Err(err("containers[0].env", "must be a list of {name, value}")),
                };
                ModelSpec::Http(HttpSettings {
                    api_path: api_path.clone(),
                    url: format!("http://127.0.0.1:{port}{path}"),
                    command: Some(command),
                    work_dir: None,
                    env,
                    timeout_ms: keepalive.unwrap_or(600_000).max(1),
                    start_timeout_s: 120,
                    max_response_bytes: 64 << 20,
                    content_type: "application/json".into(),
                    batch: None,
                })
            }
            (None, Some(_)) => return Err(err("containers", "must be a list")),
            (None, None) => {
                return Err(err(
                    "processor",
                    "a service needs a processor (pmml) or containers (your own server)",
                ))
            }
        };

        let side = |prefix: &'static str,
                    take: &mut dyn FnMut(&'static str) -> Option<Value>|
         -> Result<QueueSideSettings, (String, String)> {
            let keys: [&'static str; 4] = match prefix {
                "source" => [
                    "queue.source.max_length",
                    "queue.source.max_payload_size",
                    "queue.source.auto_evict",
                    "queue.source.memory_ratio",
                ],
                _ => [
                    "queue.sink.max_length",
                    "queue.sink.max_payload_size",
                    "queue.sink.auto_evict",
                    "queue.sink.memory_ratio",
                ],
            };
            let ratio = match take(keys[3]) {
                None => None,
                Some(v) => Some(v.as_f64().ok_or_else(|| err(keys[3], "must be a number"))?),
            };
            Ok(QueueSideSettings {
                max_length: uint(keys[0], take(keys[0]))?,
                max_payload_size: uint(keys[1], take(keys[1]))?,
                auto_evict: boolean(keys[2], take(keys[2]))?,
                memory_ratio: ratio,
            })
        };
        let source = side("source", &mut take)?;
        let sink = side("sink", &mut take)?;
        let mut queue = EasQueueSettings {
            source,
            sink,
            ..EasQueueSettings::default()
        };
        if let Some(mb) = uint("queue.memory", take("queue.memory"))? {
            queue.memory_mb = mb;
        }
        if let Some(n) = uint("queue.min_replica", take("queue.min_replica"))? {
            queue.min_replica = u32::try_from(n).map_err(|_| err("queue.min_replica", "1 or 2"))?;
        }
        let service = EasServiceSettings {
            model: api_path,
            token,
            queue,
            rpc: EasRpcSettings { worker_threads },
        };
        // The service's limits, checked now, with the file's key names.
        service
            .limits(false)
            .and_then(|_| service.limits(true))
            .map_err(|e| (e.key, e.message))?;
        let used: Vec<&str> = used;
        let ignored = order
            .into_iter()
            .filter(|k| !used.contains(&k.as_str()))
            .map(|k| {
                if SCHEDULER_KEYS.contains(&k.as_str()) {
                    format!("{k} (PAI-EAS scheduling)")
                } else {
                    format!("{k} (not a key inferq knows)")
                }
            })
            .collect();
        Ok(ServiceFile {
            name,
            model,
            service,
            ignored,
        })
    }

    /// Adds the service and its model to `settings`; relative paths resolve
    /// against `file`'s folder. Says once which keys were ignored.
    pub fn apply(self, settings: &mut Settings, file: &Path) {
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut model = self.model;
        match &mut model {
            ModelSpec::Pmml(p) if Path::new(&p.model).is_relative() => {
                p.model = base.join(&p.model).to_string_lossy().into_owned();
            }
            ModelSpec::Http(h) => h.work_dir = Some(base.to_string_lossy().into_owned()),
            _ => {}
        }
        for key in &self.ignored {
            tracing::warn!(file = %file.display(), key = %key, "service file key ignored");
        }
        if self.service.token.is_empty() {
            tracing::warn!(file = %file.display(), "the service file has no token: clients are not checked (add \"token\")");
        }
        settings.models.insert(self.name.clone(), model);
        settings.async_services.insert(self.name, self.service);
    }
}

/// Every leaf of `v` as a dotted path (arrays are leaves; the container
/// list's keys are listed as `containers[].key` for the ignored report).
fn flatten(prefix: &str, v: &Value, keys: &mut BTreeMap<String, Value>, order: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, keys, order);
            }
        }
        Value::Array(items) if prefix == "containers" => {
            keys.insert(prefix.to_string(), v.clone());
            for item in items {
                if let Value::Object(m) = item {
                    for k in m.keys() {
                        let path = format!("containers[].{k}");
                        if !matches!(k.as_str(), "command" | "script" | "port" | "env")
                            && !order.contains(&path)
                        {
                            order.push(path);
                        }
                    }
                }
            }
        }
        leaf => {
            keys.insert(prefix.to_string(), leaf.clone());
            order.push(prefix.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PMML: &str = r#"{ "name": "pmmlasync", "processor": "pmml",
      "model_path": "lr.pmml",
      "metadata": { "type": "Async", "cpu": 4, "instance": 1 },
      "queue.source.max_length": 1024, "queue.source.auto_evict": true,
      "token": "t0ken" }"#;

    const IMAGE: &str = r#"{ "name": "imageasync",
      "containers": [ { "image": "registry-vpc.cn-shanghai.aliyuncs.com/eas/x:1",
                        "command": "/data/eas/ENV/bin/python /data/eas/app.py",
                        "port": 8000 } ],
      "metadata": { "type": "Async", "rpc.proxy_path": "/data/model",
                    "rpc.worker_threads": 4, "instance": 1 } }"#;

    #[test]
    fn the_documents_pmml_example_is_a_pmml_model_and_a_service() {
        let f = ServiceFile::parse(PMML).expect("parsed");
        assert_eq!(f.name, "pmmlasync");
        match &f.model {
            ModelSpec::Pmml(p) => assert_eq!(
                (p.api_path.as_str(), p.model.as_str()),
                ("/api/pmmlasync", "lr.pmml")
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(f.service.token, "t0ken");
        assert_eq!(f.service.queue.source.max_length, Some(1024));
        assert!(f.service.queue.source.auto_evict);
        assert_eq!(
            f.ignored,
            vec![
                "metadata.cpu (PAI-EAS scheduling)",
                "metadata.instance (PAI-EAS scheduling)"
            ]
        );
    }

    #[test]
    fn the_documents_image_example_is_the_http_processor() {
        let f = ServiceFile::parse(IMAGE).expect("parsed");
        match &f.model {
            ModelSpec::Http(h) => {
                assert_eq!(h.url, "http://127.0.0.1:8000/data/model");
                assert_eq!(
                    h.command.as_deref(),
                    Some("/data/eas/ENV/bin/python /data/eas/app.py")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.service.rpc.worker_threads, 4);
        assert!(
            f.ignored
                .iter()
                .any(|k| k.starts_with("containers[].image")),
            "{:?}",
            f.ignored
        );
        assert!(
            f.ignored.iter().any(|k| k.starts_with("metadata.instance")),
            "{:?}",
            f.ignored
        );
    }

    #[test]
    fn what_cannot_start_a_service_is_refused_with_its_key() {
        let key = |text: &str| ServiceFile::parse(text).expect_err("refused").0;
        assert_eq!(
            key(r#"{"name": "a", "processor": "pmml", "metadata": {"type": "Async"}}"#),
            "model_path"
        );
        assert_eq!(
            key(
                r#"{"name": "a", "processor": "pmml", "model_path": "http://x/lr.pmml", "metadata": {"type": "Async"}}"#
            ),
            "model_path"
        );
        assert_eq!(
            key(r#"{"name": "a", "processor": "tensorflow", "metadata": {"type": "Async"}}"#),
            "processor"
        );
        assert_eq!(
            key(r#"{"name": "a", "processor": "pmml", "model_path": "x"}"#),
            "metadata.type"
        );
        assert_eq!(
            key(
                r#"{"name": "a", "processor": "pmml", "model_path": "x", "metadata": {"type": "Async"}, "queue.source.max_length": 1, "queue.source.max_payload_size": 1}"#
            ),
            "queue.source.max_length"
        );
        assert_eq!(key(r#"{"name": "a/b"}"#), "name");
    }
}
