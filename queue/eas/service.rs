//! [`EasQueues`]: the asynchronous services (PAI-EAS queue service model)
//! on top of an [`EasStore`].
//!
//! Clients put items into a service's input queue and read results from its
//! sink (get here, watch in [`super::watch`]). Dispatchers take input items
//! over the ordinary `Dispatch` stream: a session whose Hello names
//! `async:<service>` leases from [`super::EasInput`] instead of a job queue,
//! with the same credit window (EAS's `rpc.worker_threads`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

use super::store::{
    wait_for_change, EasStore, GetLimit, Item, ItemState, Negative, NewItem, QueueRef, QueueStats,
    Selector,
};
use crate::config::{KeyError, QueueLimits, ServiceSpec, Settings};
use crate::metrics::queue as m;
use crate::proto::eas::{
    input_queue_name, HEADER_GROUP, HEADER_PRIORITY, HEADER_USER, REQUEST_ID_TAG,
};
use crate::queue::error::StoreError;
use crate::queue::source::QueueDepth;

/// The longest `get` wait.
pub const MAX_GET_WAIT: Duration = Duration::from_secs(60);

/// Why an asynchronous-queue operation failed. The gateway maps each to an
/// HTTP status (404, 413, 429, 409, 400, 503).
#[derive(Debug, Clone, Error, PartialEq)]
pub enum EasError {
    #[error("unknown asynchronous service {0:?}")]
    UnknownService(String),
    #[error("the {0} queue is turned off (queue.sink.memory_ratio)")]
    QueueOff(String),
    #[error(
        "payload of {size} bytes is over the {queue} queue's max_payload_size ({limit} bytes)"
    )]
    TooLarge {
        queue: String,
        size: usize,
        limit: u64,
    },
    #[error("queue {queue} is full ({limit} items) and does not evict (auto_evict: false)")]
    Full { queue: String, limit: u64 },
    #[error("consumer {0:?} is already watching this queue")]
    AlreadyWatching(String),
    #[error("{0}")]
    Invalid(String),
    #[error("queue store unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for EasError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::QueueFull { queue, limit } => EasError::Full {
                queue,
                limit: limit as u64,
            },
            StoreError::Unavailable(m) => EasError::Unavailable(m),
            // Not returned by the PAI-EAS stores (items are not keyed by
            // caller-chosen ids); mapped for completeness.
            e @ (StoreError::IdConflict { .. } | StoreError::NothingToJoin { .. }) => {
                EasError::Invalid(e.to_string())
            }
        }
    }
}

/// What a watch asks for.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub consumer: String,
    pub from: u64,
    pub window: u32,
    pub auto_commit: bool,
    pub tags: BTreeMap<String, String>,
}

/// How the outcome of an input item becomes its sink item.
#[derive(Debug, Clone, Copy)]
pub struct ResultCodes {
    /// Given to items delivered `max_deliveries` times without an answer.
    pub dead_letter: i32,
    pub max_deliveries: u32,
}

pub struct EasQueues {
    pub(super) store: Arc<dyn EasStore>,
    services: HashMap<String, ServiceSpec>,
    pub(super) codes: ResultCodes,
}

impl EasQueues {
    pub fn new(
        store: Arc<dyn EasStore>,
        settings: &Settings,
        codes: ResultCodes,
    ) -> Result<Arc<Self>, KeyError> {
        let services = settings
            .async_services
            .iter()
            .map(|(name, s)| Ok((name.clone(), ServiceSpec::from_settings(name, s)?)))
            .collect::<Result<_, KeyError>>()?;
        Ok(Arc::new(EasQueues {
            store,
            services,
            codes,
        }))
    }

    pub fn service(&self, name: &str) -> Result<&ServiceSpec, EasError> {
        self.services
            .get(name)
            .ok_or_else(|| EasError::UnknownService(name.to_string()))
    }

    /// The service and the limits of queue `q`, if it is on.
    pub(super) fn open(&self, q: &QueueRef) -> Result<(&ServiceSpec, QueueLimits), EasError> {
        let spec = self.service(&q.service)?;
        let limits = *spec.limits(q.sink);
        if !limits.enabled {
            return Err(EasError::QueueOff(q.name()));
        }
        Ok((spec, limits))
    }

    /// Stores an item; its index and request id. Items get the tag
    /// `requestId`; `request_id` is made here unless given.
    pub async fn put(
        &self,
        q: &QueueRef,
        data: Vec<u8>,
        mut tags: BTreeMap<String, String>,
        priority: u32,
    ) -> Result<(u64, String), EasError> {
        let (_, limits) = self.open(q)?;
        let labels = [q.service.as_str(), m::eas_queue_label(q.sink)];
        if data.len() as u64 > limits.max_payload_bytes {
            m::EAS_REFUSALS
                .with_label_values(&[labels[0], labels[1], "too_large"])
                .inc();
            return Err(EasError::TooLarge {
                queue: q.name(),
                size: data.len(),
                limit: limits.max_payload_bytes,
            });
        }
        let request_id = uuid::Uuid::now_v7().to_string();
        tags.insert(REQUEST_ID_TAG.into(), request_id.clone());
        let item = NewItem {
            request_id: request_id.clone(),
            tags,
            data,
            priority: priority.min(1),
        };
        let index = match self.store.put(q, item, &limits).await {
            Ok(index) => index,
            Err(e) => {
                if matches!(e, StoreError::QueueFull { .. }) {
                    m::EAS_REFUSALS
                        .with_label_values(&[labels[0], labels[1], "full"])
                        .inc();
                }
                return Err(e.into());
            }
        };
        m::EAS_PUTS.with_label_values(&labels).inc();
        Ok((index, request_id))
    }

    /// Reads items, waiting up to `wait` for the first. While it waits, each
    /// wake looks only at the items put since the last look (none of the
    /// older ones matched, and an item's tags do not change), so a put costs
    /// a waiting get O(1), not a scan of the queue.
    pub async fn get(
        &self,
        q: &QueueRef,
        which: Selector,
        length: usize,
        tags: &BTreeMap<String, String>,
        delete: bool,
        wait: Duration,
    ) -> Result<Vec<Item>, EasError> {
        self.open(q)?;
        m::EAS_GETS
            .with_label_values(&[q.service.as_str(), m::eas_queue_label(q.sink)])
            .inc();
        let until = Instant::now() + wait.min(MAX_GET_WAIT);
        let signal = self.store.signal(q);
        let mut which = which;
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let waiting = !until.saturating_duration_since(Instant::now()).is_zero();
            // Read before the scan: every item up to it is scanned now.
            let newest = match (&which, waiting) {
                (Selector::From(_) | Selector::Newest, true) => {
                    Some(self.store.newest_index(q).await?)
                }
                _ => None,
            };
            let found = self
                .store
                .get(q, &which, GetLimit::items(length), tags, delete)
                .await?;
            let left = until.saturating_duration_since(Instant::now());
            if !found.is_empty() || left.is_zero() {
                return Ok(found);
            }
            if let Some(newest) = newest {
                // Nothing up to `newest` matched: the next look starts past
                // it (for Newest too: any later match is the newest one).
                let next = newest.saturating_add(1);
                which = match which {
                    Selector::From(from) => Selector::From(from.max(next)),
                    _ => Selector::From(next),
                };
            }
            wait_for_change(notified, self.store.poll_interval(), left).await;
        }
    }

    pub async fn commit(&self, q: &QueueRef, indexes: &[u64]) -> Result<u64, EasError> {
        self.open(q)?;
        Ok(self.store.remove(q, indexes).await?)
    }

    pub async fn reject(&self, q: &QueueRef, negative: Negative) -> Result<bool, EasError> {
        self.open(q)?;
        Ok(self.store.reject(q, negative).await?)
    }

    pub async fn truncate(&self, q: &QueueRef, before: u64) -> Result<u64, EasError> {
        self.open(q)?;
        Ok(self.store.truncate(q, before).await?)
    }

    /// The queue's attributes under EAS's names (all values strings).
    pub async fn attributes(&self, q: &QueueRef) -> Result<BTreeMap<String, String>, EasError> {
        let (_, limits) = self.open(q)?;
        let stats: QueueStats = self.store.stats(q).await?;
        let mut a = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            a.insert(k.to_string(), v);
        };
        set("stream.length", stats.length.to_string());
        if let Some(i) = stats.first_index {
            set("stream.firstEntry", i.to_string());
        }
        if let Some(i) = stats.last_index {
            set("stream.lastEntry", i.to_string());
        }
        set("stream.approxMaxLength", limits.max_length.to_string());
        set("stream.pending", stats.held.to_string());
        set("stream.negativeCount", stats.negatives.to_string());
        if let Some(n) = &stats.last_negative {
            set(
                "stream.lastNegative",
                serde_json::json!({"index": n.index, "code": n.code, "reason": n.reason})
                    .to_string(),
            );
        }
        set("consumers.status.total", stats.consumers.to_string());
        set("meta.name", q.name());
        set("meta.backend", self.store.kind().to_string());
        set("meta.state", "Normal".into());
        set("meta.maxPayloadBytes", limits.max_payload_bytes.to_string());
        set("meta.autoEvict", limits.auto_evict.to_string());
        set("meta.header.user", HEADER_USER.into());
        set("meta.header.group", HEADER_GROUP.into());
        set("meta.header.priority", HEADER_PRIORITY.into());
        Ok(a)
    }

    pub async fn search(&self, q: &QueueRef, index: u64) -> Result<Option<ItemState>, EasError> {
        self.open(q)?;
        Ok(self.store.search(q, index).await?)
    }

    /// Sets the length and held gauges of every service's queues that are
    /// on; the input queues' `Hello.queue` names.
    pub async fn export_metrics(&self) -> Vec<String> {
        let mut inputs = Vec::new();
        for s in self.services.values() {
            for (q, on) in [
                (QueueRef::input(&s.name), s.input.enabled),
                (QueueRef::sink(&s.name), s.sink.enabled),
            ] {
                if !on {
                    continue;
                }
                let Ok(stats) = self.store.stats(&q).await else {
                    continue;
                };
                let labels = [s.name.as_str(), m::eas_queue_label(q.sink)];
                m::EAS_LENGTH
                    .with_label_values(&labels)
                    .set(stats.length as i64);
                m::EAS_HELD
                    .with_label_values(&labels)
                    .set(stats.held as i64);
            }
            if s.input.enabled {
                inputs.push(input_queue_name(&s.name));
            }
        }
        inputs
    }

    /// Depths of the services' input queues that are on, under their
    /// `Hello.queue` names (`only`: just that one): ready = waiting, leased =
    /// held by a consumer.
    pub async fn input_depths(&self, only: Option<&str>) -> Result<Vec<QueueDepth>, StoreError> {
        let mut names: Vec<&str> = self
            .services
            .values()
            .filter(|s| s.input.enabled)
            .map(|s| s.name.as_str())
            .collect();
        names.sort();
        let mut depths = Vec::new();
        for service in names {
            let queue = input_queue_name(service);
            if only.is_some_and(|q| q != queue) {
                continue;
            }
            let s = self.store.stats(&QueueRef::input(service)).await?;
            depths.push(QueueDepth {
                queue,
                ready: s.length.saturating_sub(s.held),
                leased: s.held,
                oldest_unix_ms: 0,
            });
        }
        Ok(depths)
    }
}
