//! `AsyncServices`: PAI-EAS asynchronous services, with EAS's key names
//! (`model`, `token`, `queue.source|sink.*`, `rpc.worker_threads`), and the
//! limits and spec each resolves to.

use serde::Deserialize;

use super::KeyError;

/// One asynchronous service: the model that answers its input queue, its
/// token and its queues, with the EAS service-config names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EasServiceSettings {
    /// API path of the model that runs the input queue's items, e.g. `/api/lr`.
    pub model: String,
    /// The `Authorization` header clients must send; empty: no check.
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub queue: EasQueueSettings,
    #[serde(default)]
    pub rpc: EasRpcSettings,
}

/// EAS `queue.*` keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EasQueueSettings {
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

impl Default for EasQueueSettings {
    fn default() -> Self {
        EasQueueSettings {
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
pub struct EasRpcSettings {
    /// Items of the input queue a dispatcher holds at once (its credits).
    pub worker_threads: u32,
}

impl Default for EasRpcSettings {
    fn default() -> Self {
        EasRpcSettings { worker_threads: 5 }
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
pub const DEFAULT_EAS_MAX_LENGTH: u64 = 10_000;

impl EasServiceSettings {
    /// The input (`sink == false`) or sink queue's limits; an error names the key.
    pub fn limits(&self, sink: bool) -> Result<QueueLimits, KeyError> {
        let (side, name) = if sink {
            (&self.queue.sink, "sink")
        } else {
            (&self.queue.source, "source")
        };
        let ratio = self.queue.sink.memory_ratio.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&ratio) {
            return Err(KeyError::new(
                "queue.sink.memory_ratio",
                "must be from 0 to 1",
            ));
        }
        if !sink && side.memory_ratio.is_some() {
            return Err(KeyError::new(
                "queue.source.memory_ratio",
                "is not a key: the sink's memory_ratio divides the memory",
            ));
        }
        let share = if sink { ratio } else { 1.0 - ratio };
        let memory = (self.queue.memory_mb as f64 * share * 1024.0 * 1024.0) as u64;
        let key = |k: &str| format!("queue.{name}.{k}");
        let (max_length, max_payload_bytes) = match (side.max_length, side.max_payload_size) {
            (Some(_), Some(_)) => {
                return Err(KeyError::new(
                    key("max_length"),
                    "max_length and max_payload_size cannot both be set on one queue (one is derived from the other and the queue's memory)",
                ))
            }
            (Some(0), None) => return Err(KeyError::new(key("max_length"), "must be at least 1")),
            (None, Some(0)) => {
                return Err(KeyError::new(key("max_payload_size"), "must be at least 1 (KB)"))
            }
            (Some(n), None) => (n, (memory / n).max(1)),
            (None, Some(kb)) => ((memory / (kb * 1024)).max(1), kb * 1024),
            (None, None) => (
                DEFAULT_EAS_MAX_LENGTH,
                (memory / DEFAULT_EAS_MAX_LENGTH).max(1),
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

/// One service as the queue and the gateway see it: its model and its
/// queues' limits, resolved from the settings.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub model: String,
    pub input: QueueLimits,
    pub sink: QueueLimits,
}

impl ServiceSpec {
    /// The spec of service `name`; an error names the key from the top.
    pub fn from_settings(name: &str, s: &EasServiceSettings) -> Result<Self, KeyError> {
        let limits = |sink| {
            s.limits(sink)
                .map_err(|e| e.under(&format!("AsyncServices.{name}")))
        };
        Ok(ServiceSpec {
            name: name.to_string(),
            model: s.model.clone(),
            input: limits(false)?,
            sink: limits(true)?,
        })
    }

    pub fn limits(&self, sink: bool) -> &QueueLimits {
        if sink {
            &self.sink
        } else {
            &self.input
        }
    }
}
