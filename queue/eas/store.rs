//! The storage contract of asynchronous queues (the PAI-EAS queue service's
//! model): [`EasStore`].
//!
//! An asynchronous service has two queues, its input and its sink. Each holds
//! items with an index (increasing within the queue), a payload, string tags
//! and a request id. An item is *ready* until a consumer takes it, then *held*
//! by that consumer until it is committed (removed) or released (ready again,
//! for the next consumer). Consumers are watchers (a websocket client's id)
//! and, on an input queue, dispatcher sessions.
//!
//! A held item whose holder stops renewing it (its queue instance died) is
//! ready again after the hold time, so nothing is lost with an instance.
//!
//! The memory store ([`super::memory`]) and the Redis store
//! ([`super::redis`]) implement the same contract; one conformance
//! suite runs on both.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::config::QueueLimits;
use crate::queue::error::StoreError;

/// A queue of an asynchronous service: its input or its sink.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueRef {
    pub service: String,
    pub sink: bool,
}

impl QueueRef {
    pub fn input(service: &str) -> Self {
        QueueRef {
            service: service.to_string(),
            sink: false,
        }
    }
    pub fn sink(service: &str) -> Self {
        QueueRef {
            service: service.to_string(),
            sink: true,
        }
    }
    /// `svc` or `svc/sink`, as in the URL.
    pub fn name(&self) -> String {
        if self.sink {
            format!("{}/sink", self.service)
        } else {
            self.service.clone()
        }
    }
}

/// One item of a queue.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Item {
    pub index: u64,
    pub request_id: String,
    pub tags: BTreeMap<String, String>,
    pub data: Vec<u8>,
    /// 0 normal, 1 high: high-priority items are taken first.
    pub priority: u32,
    /// How many times a consumer took it.
    pub deliveries: u32,
}

/// An item to store.
#[derive(Debug, Clone, Default)]
pub struct NewItem {
    pub request_id: String,
    pub tags: BTreeMap<String, String>,
    pub data: Vec<u8>,
    pub priority: u32,
}

/// How much one `get` returns: at most `items` items and, beyond the first,
/// at most `bytes` bytes of payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GetLimit {
    pub items: usize,
    pub bytes: usize,
}

impl GetLimit {
    /// `items` items, within the server's byte cap.
    pub fn items(items: usize) -> Self {
        GetLimit {
            items,
            bytes: crate::proto::eas::MAX_GET_BYTES,
        }
    }
}

/// Which items a `get` reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// Up to `length` items from this index on.
    From(u64),
    /// The newest item.
    Newest,
    /// The item with this request id.
    RequestId(String),
}

/// How a consumer takes items.
#[derive(Debug, Clone)]
pub struct TakeOptions {
    /// Items with a smaller index are skipped.
    pub from: u64,
    pub max: usize,
    /// Only items carrying all these tags.
    pub tags: BTreeMap<String, String>,
    /// Remove items as they are taken instead of holding them.
    pub auto_commit: bool,
    /// Stop taking from an input queue while its sink is full (backpressure).
    pub sink_room: bool,
}

/// What [`EasStore::attributes`] reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    pub length: u64,
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    /// Items held by a consumer.
    pub held: u64,
    /// Consumers holding items or watching.
    pub consumers: u64,
    /// Negative commits recorded.
    pub negatives: u64,
    pub last_negative: Option<Negative>,
}

/// A consumer's rejection of an item.
#[derive(Debug, Clone, PartialEq)]
pub struct Negative {
    pub index: u64,
    pub code: i32,
    pub reason: String,
}

/// Where an item stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemState {
    /// Waiting; `ahead` items would be taken before it.
    Ready {
        ahead: u64,
    },
    Held {
        consumer: String,
    },
    /// Not in the queue any more: rejected by a consumer.
    Rejected(Negative),
}

/// The answer of a completed input item: its result, or nothing for the sink
/// (an empty result).
#[derive(Debug, Clone)]
pub struct Completion {
    pub index: u64,
    /// None: nothing is written to the sink.
    pub result: Option<NewItem>,
}

#[async_trait]
pub trait EasStore: Send + Sync + 'static {
    fn kind(&self) -> &'static str;

    /// Stores an item; its index. With `limits.auto_evict` a full queue drops
    /// its oldest ready item first; otherwise a full queue refuses with
    /// `QueueFull`.
    async fn put(
        &self,
        q: &QueueRef,
        item: NewItem,
        limits: &QueueLimits,
    ) -> Result<u64, StoreError>;

    /// Reads items without taking them, within `limit`; with `delete`
    /// the items returned (only they) are removed.
    async fn get(
        &self,
        q: &QueueRef,
        which: &Selector,
        limit: GetLimit,
        tags: &BTreeMap<String, String>,
        delete: bool,
    ) -> Result<Vec<Item>, StoreError>;

    /// Takes ready items for `consumer`, in priority then index order, and
    /// holds them for it (or removes them, with `auto_commit`). With
    /// `sink_room` (an input queue), takes no more than the sink has room for,
    /// counting items already held. Does not wait.
    async fn take(
        &self,
        q: &QueueRef,
        consumer: &str,
        opts: &TakeOptions,
        sink_limits: &QueueLimits,
    ) -> Result<Vec<Item>, StoreError>;

    /// Removes items (commit or delete); how many were there.
    async fn remove(&self, q: &QueueRef, indexes: &[u64]) -> Result<u64, StoreError>;

    /// Removes an item and records the consumer's rejection.
    async fn reject(&self, q: &QueueRef, negative: Negative) -> Result<bool, StoreError>;

    /// Removes every item with an index below `before`; how many.
    async fn truncate(&self, q: &QueueRef, before: u64) -> Result<u64, StoreError>;

    /// Makes the items `consumer` holds ready again; how many.
    async fn release(&self, q: &QueueRef, consumer: &str) -> Result<u64, StoreError>;

    /// How many items `consumer` holds.
    async fn held_by(&self, q: &QueueRef, consumer: &str) -> Result<u64, StoreError>;

    /// Removes input items and writes their results to the sink, at once. An
    /// item no longer in the input (truncated, or completed by another
    /// consumer after a redelivery) writes nothing.
    async fn complete(&self, service: &str, done: &[Completion]) -> Result<(), StoreError>;

    async fn stats(&self, q: &QueueRef) -> Result<QueueStats, StoreError>;

    /// The index of the newest item ever put into `q` (0: none yet); an item
    /// put later has a larger one. Lets a waiting get look at new items only.
    async fn newest_index(&self, q: &QueueRef) -> Result<u64, StoreError>;

    /// Where item `index` stands; None when unknown.
    async fn search(&self, q: &QueueRef, index: u64) -> Result<Option<ItemState>, StoreError>;

    /// Claims the single watch of `consumer` on `q`; false when another
    /// watch of that consumer is running.
    async fn claim_watch(&self, q: &QueueRef, consumer: &str) -> Result<bool, StoreError>;

    async fn end_watch(&self, q: &QueueRef, consumer: &str) -> Result<(), StoreError>;

    /// Notified when this process changes `q` (an item put, removed or
    /// released). Enable a `notified()` future before looking, then wait on it.
    fn signal(&self, q: &QueueRef) -> Arc<Notify>;

    /// How often to look again without a signal: other processes sharing the
    /// store do not signal this one. None: signals tell everything.
    fn poll_interval(&self) -> Option<Duration>;
}

/// The change signals of a store's queues.
#[derive(Default)]
pub struct ChangeSignals(Mutex<HashMap<QueueRef, Arc<Notify>>>);

impl ChangeSignals {
    pub fn get(&self, q: &QueueRef) -> Arc<Notify> {
        Arc::clone(self.0.lock().entry(q.clone()).or_default())
    }

    pub fn notify(&self, q: &QueueRef) {
        if let Some(n) = self.0.lock().get(q) {
            n.notify_waiters();
        }
    }
}

/// Waits until `signal` fires (a `notified()` enabled before the caller
/// looked) or, for a shared store, its poll interval passes.
pub async fn wait_for_change(
    notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    poll: Option<Duration>,
    at_most: Duration,
) {
    let limit = poll.map_or(at_most, |p| p.min(at_most));
    let _ = tokio::time::timeout(limit, notified).await;
}
