//! [`AsyncQueues`]: the asynchronous services (PAI-EAS queue service model)
//! on top of an [`AsyncStore`].
//!
//! Clients put items into a service's input queue and read results from its
//! sink (get, watch). Dispatchers take input items over the ordinary
//! `Dispatch` stream: a session whose Hello names `async:<service>` leases
//! from [`AsyncInput`] instead of a job queue, with the same credit window
//! (EAS's `rpc.worker_threads`). Completing an item removes it from the input
//! and writes its result to the sink in one store operation. While the sink is
//! full (and does not evict), no input item is handed out (backpressure).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::async_store::{
    wait_for_change, AsyncStore, Completion, Item, ItemState, Negative, NewItem, QueueRef,
    QueueStats, Selector, TakeOptions,
};
use super::backend::{BackendError, Lease, QueueDepth};
use super::session::JobSource;
use crate::config::{AsyncServiceSettings, QueueLimits, Settings};
use crate::proto::{job_result, Job, JobResult};

/// The prefix of a `Hello.queue` that names an asynchronous service's input.
pub const ASYNC_QUEUE_PREFIX: &str = "async:";

/// The `Hello.queue` (and `Stats`) name of `service`'s input queue.
pub fn input_queue_name(service: &str) -> String {
    format!("{ASYNC_QUEUE_PREFIX}{service}")
}

/// The tag that carries an item's request id.
pub const REQUEST_ID_TAG: &str = "requestId";

/// The request headers a client sends, as attributes name them.
pub const HEADER_USER: &str = "X-EAS-QueueService-Redis-Uid";
pub const HEADER_GROUP: &str = "X-EAS-QueueService-Redis-Gid";
pub const HEADER_PRIORITY: &str = "X-EAS-QueueService-Priority";

/// The longest `get` wait.
pub const MAX_GET_WAIT: Duration = Duration::from_secs(60);

/// Why an asynchronous-queue operation failed. The gateway maps each to an
/// HTTP status (404, 413, 429, 409, 400, 503).
#[derive(Debug, Clone, Error, PartialEq)]
pub enum AsyncError {
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

impl From<BackendError> for AsyncError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::QueueFull { queue, limit } => AsyncError::Full {
                queue,
                limit: limit as u64,
            },
            BackendError::Unavailable(m) => AsyncError::Unavailable(m),
        }
    }
}

/// One service as the queue sees it.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub model: String,
    pub input: QueueLimits,
    pub sink: QueueLimits,
}

impl ServiceSpec {
    pub fn from_settings(name: &str, s: &AsyncServiceSettings) -> Result<Self, String> {
        let limits = |sink| {
            s.limits(sink)
                .map_err(|(k, m)| format!("AsyncServices.{name}.{k}: {m}"))
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

pub struct AsyncQueues {
    store: Arc<dyn AsyncStore>,
    services: HashMap<String, ServiceSpec>,
    codes: ResultCodes,
}

impl AsyncQueues {
    pub fn new(
        store: Arc<dyn AsyncStore>,
        settings: &Settings,
        codes: ResultCodes,
    ) -> Result<Arc<Self>, String> {
        let services = settings
            .async_services
            .iter()
            .map(|(name, s)| Ok((name.clone(), ServiceSpec::from_settings(name, s)?)))
            .collect::<Result<_, String>>()?;
        Ok(Arc::new(AsyncQueues {
            store,
            services,
            codes,
        }))
    }

    pub fn service(&self, name: &str) -> Result<&ServiceSpec, AsyncError> {
        self.services
            .get(name)
            .ok_or_else(|| AsyncError::UnknownService(name.to_string()))
    }

    /// The service and the limits of queue `q`, if it is on.
    fn open(&self, q: &QueueRef) -> Result<(&ServiceSpec, QueueLimits), AsyncError> {
        let spec = self.service(&q.service)?;
        let limits = *spec.limits(q.sink);
        if !limits.enabled {
            return Err(AsyncError::QueueOff(q.name()));
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
    ) -> Result<(u64, String), AsyncError> {
        let (_, limits) = self.open(q)?;
        if data.len() as u64 > limits.max_payload_bytes {
            return Err(AsyncError::TooLarge {
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
        let index = self.store.put(q, item, &limits).await?;
        Ok((index, request_id))
    }

    /// Reads items, waiting up to `wait` for the first.
    pub async fn get(
        &self,
        q: &QueueRef,
        which: Selector,
        length: usize,
        tags: &BTreeMap<String, String>,
        delete: bool,
        wait: Duration,
    ) -> Result<Vec<Item>, AsyncError> {
        self.open(q)?;
        let until = Instant::now() + wait.min(MAX_GET_WAIT);
        let signal = self.store.signal(q);
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let found = self.store.get(q, &which, length, tags, delete).await?;
            let left = until.saturating_duration_since(Instant::now());
            if !found.is_empty() || left.is_zero() {
                return Ok(found);
            }
            wait_for_change(notified, self.store.poll_interval(), left).await;
        }
    }

    pub async fn commit(&self, q: &QueueRef, indexes: &[u64]) -> Result<u64, AsyncError> {
        self.open(q)?;
        Ok(self.store.remove(q, indexes).await?)
    }

    pub async fn reject(&self, q: &QueueRef, negative: Negative) -> Result<bool, AsyncError> {
        self.open(q)?;
        Ok(self.store.reject(q, negative).await?)
    }

    pub async fn truncate(&self, q: &QueueRef, before: u64) -> Result<u64, AsyncError> {
        self.open(q)?;
        Ok(self.store.truncate(q, before).await?)
    }

    /// The queue's attributes under EAS's names (all values strings).
    pub async fn attributes(&self, q: &QueueRef) -> Result<BTreeMap<String, String>, AsyncError> {
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

    pub async fn search(&self, q: &QueueRef, index: u64) -> Result<Option<ItemState>, AsyncError> {
        self.open(q)?;
        Ok(self.store.search(q, index).await?)
    }

    /// Starts a watch: items come on the returned channel. At most
    /// `spec.window` items are held and not committed (with auto commit,
    /// items are removed as they are sent). When the receiver is dropped
    /// the consumer's uncommitted items are ready again, to be sent on its
    /// next watch.
    pub async fn watch(
        self: &Arc<Self>,
        q: &QueueRef,
        spec: WatchSpec,
    ) -> Result<mpsc::Receiver<Result<Item, AsyncError>>, AsyncError> {
        self.open(q)?;
        if spec.window == 0 {
            return Err(AsyncError::Invalid("_window_ must be at least 1".into()));
        }
        if !self.store.claim_watch(q, &spec.consumer).await? {
            return Err(AsyncError::AlreadyWatching(spec.consumer));
        }
        let (tx, rx) = mpsc::channel(spec.window as usize);
        let this = Arc::clone(self);
        let q = q.clone();
        let span = tracing::info_span!("watch", queue = %q.name(), consumer = %spec.consumer);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                tracing::info!(
                    window = spec.window,
                    auto_commit = spec.auto_commit,
                    "watch started"
                );
                let why = this.run_watch(&q, &spec, &tx).await;
                if let Err(e) = this.store.release(&q, &spec.consumer).await {
                    tracing::warn!(error = %e, "could not release the watcher's items; they are ready again after the hold time");
                }
                let _ = this.store.end_watch(&q, &spec.consumer).await;
                tracing::info!(ended = %why, "watch ended");
            },
            span,
        ));
        Ok(rx)
    }

    async fn run_watch(
        &self,
        q: &QueueRef,
        spec: &WatchSpec,
        tx: &mpsc::Sender<Result<Item, AsyncError>>,
    ) -> String {
        let signal = self.store.signal(q);
        let none = QueueLimits {
            enabled: false,
            max_length: 0,
            max_payload_bytes: 0,
            auto_evict: true,
        };
        let mut failures = 0u32;
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let free = if spec.auto_commit {
                tx.capacity()
            } else {
                match self.store.held_by(q, &spec.consumer).await {
                    Ok(held) => (spec.window as u64).saturating_sub(held) as usize,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "watch: store unavailable; retrying");
                        0
                    }
                }
            };
            let mut sent = 0;
            if free > 0 {
                let opts = TakeOptions {
                    from: spec.from,
                    max: free,
                    tags: spec.tags.clone(),
                    auto_commit: spec.auto_commit,
                    sink_room: false,
                };
                match self.store.take(q, &spec.consumer, &opts, &none).await {
                    Ok(items) => {
                        failures = 0;
                        for item in items {
                            sent += 1;
                            if tx.send(Ok(item)).await.is_err() {
                                return "watcher gone".into();
                            }
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "watch: store unavailable; retrying");
                    }
                }
            }
            if failures > 0 {
                let pause = Duration::from_millis(100 * u64::from(failures.min(20)));
                tokio::select! {
                    _ = tx.closed() => return "watcher gone".into(),
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
            if sent > 0 && sent == free {
                // There may be more ready: look again at once.
                continue;
            }
            tokio::select! {
                _ = tx.closed() => return "watcher gone".into(),
                _ = wait_for_change(notified, self.store.poll_interval(), Duration::from_secs(1)) => {}
            }
        }
    }

    /// The job source of a `Dispatch` session for `service`'s input.
    pub fn input_source(self: &Arc<Self>, service: &str) -> Result<AsyncInput, String> {
        match self.services.get(service) {
            Some(spec) => Ok(AsyncInput {
                queues: Arc::clone(self),
                spec: spec.clone(),
                queue: input_queue_name(service),
            }),
            None => Err(format!("no asynchronous service {service:?} is declared")),
        }
    }

    /// Depths of the services' input queues that are on, under their
    /// `Hello.queue` names (`only`: just that one): ready = waiting, leased =
    /// held by a consumer.
    pub async fn input_depths(&self, only: Option<&str>) -> Result<Vec<QueueDepth>, BackendError> {
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
            });
        }
        Ok(depths)
    }
}

/// Turns a model's input payload into its parameters: a JSON object is passed
/// as it is, any other JSON value as `{"instances": value}`.
pub fn payload_params(data: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(other) => {
            let mut m = serde_json::Map::new();
            m.insert("instances".into(), other);
            Ok(m)
        }
        Err(e) => Err(format!("the payload is not JSON: {e}")),
    }
}

/// Turns a model's output into the sink payload: `{"predictions": X}` becomes
/// X; None when there is nothing to write (an empty output).
pub fn sink_payload(output_json: &[u8]) -> Option<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_slice(output_json).ok()?;
    let value = match value {
        serde_json::Value::Object(mut m) if m.len() == 1 && m.contains_key("predictions") => {
            m.remove("predictions").unwrap_or(serde_json::Value::Null)
        }
        v => v,
    };
    let empty = match &value {
        serde_json::Value::Null => true,
        serde_json::Value::Object(m) => m.is_empty(),
        serde_json::Value::String(s) => s.is_empty(),
        _ => false,
    };
    if empty {
        return None;
    }
    serde_json::to_vec(&value).ok()
}

/// The input queue of one service, as a `Dispatch` session's job source.
pub struct AsyncInput {
    queues: Arc<AsyncQueues>,
    spec: ServiceSpec,
    /// The Hello's queue name (`async:<service>`).
    queue: String,
}

impl AsyncInput {
    fn input(&self) -> QueueRef {
        QueueRef::input(&self.spec.name)
    }

    fn job(&self, item: Item) -> Job {
        Job {
            request_id: item.request_id,
            queue: self.queue.clone(),
            api_path: self.spec.model.clone(),
            params_json: item.data,
            deadline_unix_ms: 0,
            deliveries: item.deliveries,
            priority: item.priority,
            reply_to: String::new(),
            from_payload: true,
        }
    }

    fn completion(&self, lease: &Lease, result: &JobResult) -> Completion {
        let index = lease.tag.parse().unwrap_or(0);
        let rid = lease.job.request_id.clone();
        let mut tags = BTreeMap::new();
        tags.insert(REQUEST_ID_TAG.to_string(), rid.clone());
        let data = match &result.outcome {
            // The sink is turned off (memory_ratio 0): results are dropped.
            _ if !self.spec.sink.enabled => None,
            Some(job_result::Outcome::OutputJson(out)) => sink_payload(out),
            Some(job_result::Outcome::Error(e)) => {
                tags.insert("code".into(), e.code.to_string());
                serde_json::to_vec(&serde_json::json!({"code": e.code, "msg": e.message})).ok()
            }
            None => None,
        };
        Completion {
            index,
            result: data.map(|data| NewItem {
                request_id: rid,
                tags,
                data,
                priority: 0,
            }),
        }
    }
}

#[async_trait]
impl JobSource for AsyncInput {
    async fn lease(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Lease>, BackendError> {
        let store = &self.queues.store;
        let q = self.input();
        let opts = TakeOptions {
            from: 0,
            max,
            tags: BTreeMap::new(),
            auto_commit: false,
            sink_room: true,
        };
        let until = Instant::now() + wait;
        let signal = store.signal(&q);
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let items = store.take(&q, consumer, &opts, &self.spec.sink).await?;
            if !items.is_empty() {
                let mut leases = Vec::with_capacity(items.len());
                let mut dead = Vec::new();
                for item in items {
                    let tag = item.index.to_string();
                    let over = item.deliveries > self.queues.codes.max_deliveries;
                    let lease = Lease {
                        job: self.job(item),
                        tag,
                    };
                    if over {
                        tracing::error!(request_id = %lease.job.request_id, deliveries = lease.job.deliveries, "asynchronous item delivered too often without an answer; its error goes to the sink");
                        let r = JobResult::error(
                            &lease.job.request_id,
                            self.queues.codes.dead_letter,
                            format!(
                                "given up after {} deliveries without an answer",
                                lease.job.deliveries - 1
                            ),
                        );
                        dead.push((lease, r));
                    } else {
                        leases.push(lease);
                    }
                }
                if !dead.is_empty() {
                    self.complete_batch(&dead).await?;
                }
                if !leases.is_empty() {
                    return Ok(leases);
                }
                continue;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            wait_for_change(notified, store.poll_interval(), left).await;
        }
    }

    async fn complete_batch(&self, done: &[(Lease, JobResult)]) -> Result<(), BackendError> {
        let completions: Vec<Completion> =
            done.iter().map(|(l, r)| self.completion(l, r)).collect();
        self.queues
            .store
            .complete(&self.spec.name, &completions)
            .await
    }

    async fn release(&self, consumer: &str) -> Result<usize, BackendError> {
        Ok(self.queues.store.release(&self.input(), consumer).await? as usize)
    }
}
