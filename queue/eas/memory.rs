//! [`MemoryEasStore`]: asynchronous queues in this process's memory
//! (`standalone`). Holds never expire here: a consumer's holds end with
//! `release`, and the whole store ends with the process.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::store::{
    ChangeSignals, Completion, EasStore, GetLimit, Item, ItemState, Negative, NewItem, QueueRef,
    QueueStats, Selector, TakeOptions,
};
use crate::config::QueueLimits;
use crate::queue::error::StoreError;

/// Most negative commits remembered per queue.
const NEGATIVES_KEPT: usize = 1000;

#[derive(Default)]
struct Queue {
    next_index: u64,
    items: BTreeMap<u64, Item>,
    /// Ready items by lane (0 high, 1 normal).
    ready: [BTreeSet<u64>; 2],
    holder: HashMap<u64, String>,
    by_request: HashMap<String, u64>,
    negatives: BTreeMap<u64, Negative>,
    negative_count: u64,
    watchers: HashSet<String>,
}

fn lane(priority: u32) -> usize {
    if priority > 0 {
        0
    } else {
        1
    }
}

fn has_tags(item: &Item, tags: &BTreeMap<String, String>) -> bool {
    tags.iter().all(|(k, v)| item.tags.get(k) == Some(v))
}

impl Queue {
    fn insert(&mut self, item: NewItem) -> u64 {
        self.next_index += 1;
        let index = self.next_index;
        self.ready[lane(item.priority)].insert(index);
        if !item.request_id.is_empty() {
            self.by_request.insert(item.request_id.clone(), index);
        }
        self.items.insert(
            index,
            Item {
                index,
                request_id: item.request_id,
                tags: item.tags,
                data: item.data,
                priority: item.priority,
                deliveries: 0,
            },
        );
        index
    }

    fn remove(&mut self, index: u64) -> Option<Item> {
        let item = self.items.remove(&index)?;
        self.ready[lane(item.priority)].remove(&index);
        self.holder.remove(&index);
        if self.by_request.get(&item.request_id) == Some(&index) {
            self.by_request.remove(&item.request_id);
        }
        Some(item)
    }

    /// Makes room for one more item, or says it is full.
    fn room(&mut self, q: &QueueRef, limits: &QueueLimits) -> Result<(), StoreError> {
        while self.items.len() as u64 >= limits.max_length {
            let oldest_ready = self.ready[0].union(&self.ready[1]).next().copied();
            match (limits.auto_evict, oldest_ready) {
                (true, Some(i)) => {
                    self.remove(i);
                    crate::metrics::queue::EAS_EVICTIONS
                        .with_label_values(&[
                            q.service.as_str(),
                            crate::metrics::queue::eas_queue_label(q.sink),
                        ])
                        .inc();
                }
                _ => {
                    return Err(StoreError::QueueFull {
                        queue: q.name(),
                        limit: limits.max_length as usize,
                    })
                }
            }
        }
        Ok(())
    }
}

#[derive(Default)]
pub struct MemoryEasStore {
    queues: Mutex<HashMap<QueueRef, Queue>>,
    signals: ChangeSignals,
}

impl MemoryEasStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, q: &QueueRef, f: impl FnOnce(&mut Queue) -> T) -> T {
        let mut queues = self.queues.lock();
        f(queues.entry(q.clone()).or_default())
    }

    /// Wakes those waiting on `q`; a change in a sink also wakes its input,
    /// which may be waiting for room (backpressure).
    fn notify(&self, q: &QueueRef) {
        self.signals.notify(q);
        if q.sink {
            self.signals.notify(&QueueRef::input(&q.service));
        }
    }
}

#[async_trait]
impl EasStore for MemoryEasStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn put(
        &self,
        q: &QueueRef,
        item: NewItem,
        limits: &QueueLimits,
    ) -> Result<u64, StoreError> {
        let index = self.with(q, |queue| {
            queue.room(q, limits)?;
            Ok::<_, StoreError>(queue.insert(item))
        })?;
        self.notify(q);
        Ok(index)
    }

    async fn get(
        &self,
        q: &QueueRef,
        which: &Selector,
        limit: GetLimit,
        tags: &BTreeMap<String, String>,
        delete: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let length = limit.items;
        let found = self.with(q, |queue| {
            let indexes: Vec<u64> = match which {
                Selector::From(from) => queue
                    .items
                    .range(from..)
                    .filter(|(_, it)| has_tags(it, tags))
                    .take(length)
                    .map(|(i, _)| *i)
                    .collect(),
                Selector::Newest => queue
                    .items
                    .iter()
                    .rev()
                    .find(|(_, it)| has_tags(it, tags))
                    .map(|(i, _)| vec![*i])
                    .unwrap_or_default(),
                Selector::RequestId(r) => queue
                    .by_request
                    .get(r)
                    .filter(|i| queue.items.get(i).is_some_and(|it| has_tags(it, tags)))
                    .map(|i| vec![*i])
                    .unwrap_or_default(),
            };
            let mut bytes = 0usize;
            let mut out = Vec::new();
            for i in indexes {
                let Some(size) = queue.items.get(&i).map(|it| it.data.len()) else {
                    continue;
                };
                if !out.is_empty() && bytes.saturating_add(size) > limit.bytes {
                    break;
                }
                bytes = bytes.saturating_add(size);
                let item = if delete {
                    queue.remove(i)
                } else {
                    queue.items.get(&i).cloned()
                };
                out.extend(item);
            }
            out
        });
        if delete && !found.is_empty() {
            self.notify(q);
        }
        Ok(found)
    }

    async fn take(
        &self,
        q: &QueueRef,
        consumer: &str,
        opts: &TakeOptions,
        sink_limits: &QueueLimits,
    ) -> Result<Vec<Item>, StoreError> {
        let mut max = opts.max;
        if opts.sink_room && sink_limits.enabled && !sink_limits.auto_evict {
            let sink_len = self.with(&QueueRef::sink(&q.service), |s| s.items.len() as u64);
            let held = self.with(q, |queue| queue.holder.len() as u64);
            let room = sink_limits.max_length.saturating_sub(sink_len + held);
            max = max.min(room as usize);
        }
        if max == 0 {
            return Ok(Vec::new());
        }
        let taken = self.with(q, |queue| {
            let mut chosen = Vec::new();
            for l in 0..2 {
                for &i in queue.ready[l].range(opts.from..) {
                    if chosen.len() >= max {
                        break;
                    }
                    if queue
                        .items
                        .get(&i)
                        .is_some_and(|it| has_tags(it, &opts.tags))
                    {
                        chosen.push(i);
                    }
                }
            }
            let mut out = Vec::with_capacity(chosen.len());
            for i in chosen {
                if opts.auto_commit {
                    if let Some(mut it) = queue.remove(i) {
                        it.deliveries += 1;
                        out.push(it);
                    }
                } else if let Some(it) = queue.items.get_mut(&i) {
                    it.deliveries += 1;
                    queue.ready[lane(it.priority)].remove(&i);
                    queue.holder.insert(i, consumer.to_string());
                    out.push(it.clone());
                }
            }
            out
        });
        if opts.auto_commit && !taken.is_empty() {
            self.notify(q);
        }
        Ok(taken)
    }

    async fn remove(&self, q: &QueueRef, indexes: &[u64]) -> Result<u64, StoreError> {
        let n = self.with(q, |queue| {
            indexes
                .iter()
                .filter(|i| queue.remove(**i).is_some())
                .count() as u64
        });
        if n > 0 {
            self.notify(q);
        }
        Ok(n)
    }

    async fn reject(&self, q: &QueueRef, negative: Negative) -> Result<bool, StoreError> {
        let found = self.with(q, |queue| {
            let found = queue.remove(negative.index).is_some();
            if found {
                queue.negative_count += 1;
                queue.negatives.insert(negative.index, negative);
                while queue.negatives.len() > NEGATIVES_KEPT {
                    queue.negatives.pop_first();
                }
            }
            found
        });
        if found {
            self.notify(q);
        }
        Ok(found)
    }

    async fn truncate(&self, q: &QueueRef, before: u64) -> Result<u64, StoreError> {
        let n = self.with(q, |queue| {
            let doomed: Vec<u64> = queue.items.range(..before).map(|(i, _)| *i).collect();
            for i in &doomed {
                queue.remove(*i);
            }
            doomed.len() as u64
        });
        if n > 0 {
            self.notify(q);
        }
        Ok(n)
    }

    async fn release(&self, q: &QueueRef, consumer: &str) -> Result<u64, StoreError> {
        let n = self.with(q, |queue| {
            let mine: Vec<u64> = queue
                .holder
                .iter()
                .filter(|(_, c)| c.as_str() == consumer)
                .map(|(i, _)| *i)
                .collect();
            for i in &mine {
                queue.holder.remove(i);
                if let Some(it) = queue.items.get(i) {
                    queue.ready[lane(it.priority)].insert(*i);
                }
            }
            mine.len() as u64
        });
        if n > 0 {
            self.notify(q);
        }
        Ok(n)
    }

    async fn held_by(&self, q: &QueueRef, consumer: &str) -> Result<u64, StoreError> {
        Ok(self.with(q, |queue| {
            queue
                .holder
                .values()
                .filter(|c| c.as_str() == consumer)
                .count() as u64
        }))
    }

    async fn complete(&self, service: &str, done: &[Completion]) -> Result<(), StoreError> {
        let input = QueueRef::input(service);
        let sink = QueueRef::sink(service);
        let mut queues = self.queues.lock();
        let mut results = Vec::new();
        {
            let q = queues.entry(input.clone()).or_default();
            for c in done {
                if q.remove(c.index).is_some() {
                    if let Some(r) = &c.result {
                        results.push(r.clone());
                    }
                }
            }
        }
        let s = queues.entry(sink.clone()).or_default();
        let wrote = !results.is_empty();
        for r in results {
            s.insert(r);
        }
        drop(queues);
        self.notify(&input);
        if wrote {
            self.notify(&sink);
        }
        Ok(())
    }

    async fn newest_index(&self, q: &QueueRef) -> Result<u64, StoreError> {
        Ok(self.with(q, |queue| queue.next_index))
    }

    async fn stats(&self, q: &QueueRef) -> Result<QueueStats, StoreError> {
        Ok(self.with(q, |queue| {
            let mut consumers: HashSet<&str> = queue.holder.values().map(String::as_str).collect();
            consumers.extend(queue.watchers.iter().map(String::as_str));
            QueueStats {
                length: queue.items.len() as u64,
                first_index: queue.items.keys().next().copied(),
                last_index: queue.items.keys().next_back().copied(),
                held: queue.holder.len() as u64,
                consumers: consumers.len() as u64,
                negatives: queue.negative_count,
                last_negative: queue.negatives.values().next_back().cloned(),
            }
        }))
    }

    async fn search(&self, q: &QueueRef, index: u64) -> Result<Option<ItemState>, StoreError> {
        Ok(self.with(q, |queue| {
            if let Some(n) = queue.negatives.get(&index) {
                return Some(ItemState::Rejected(n.clone()));
            }
            let item = queue.items.get(&index)?;
            if let Some(c) = queue.holder.get(&index) {
                return Some(ItemState::Held {
                    consumer: c.clone(),
                });
            }
            let ahead = if item.priority > 0 {
                queue.ready[0].range(..index).count()
            } else {
                queue.ready[0].len() + queue.ready[1].range(..index).count()
            };
            Some(ItemState::Ready {
                ahead: ahead as u64,
            })
        }))
    }

    async fn claim_watch(&self, q: &QueueRef, consumer: &str) -> Result<bool, StoreError> {
        Ok(self.with(q, |queue| queue.watchers.insert(consumer.to_string())))
    }

    async fn end_watch(&self, q: &QueueRef, consumer: &str) -> Result<(), StoreError> {
        self.with(q, |queue| queue.watchers.remove(consumer));
        Ok(())
    }

    fn signal(&self, q: &QueueRef) -> Arc<Notify> {
        self.signals.get(q)
    }

    fn poll_interval(&self) -> Option<Duration> {
        None
    }
}
