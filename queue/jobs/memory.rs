//! The in-memory backend: queues in this process, for `standalone` and tests.
//!
//! Each queue is two lanes (priority 1 before priority 0) of ready jobs plus a
//! map of leased jobs by request id. Leasing waits on a [`Notify`] that every
//! enqueue and release signals; nothing polls. Nothing survives the process:
//! for durability use the Redis backend.
//!
//! Request ids stored (ready or leased, in any queue) are kept with their
//! fingerprints, so storing is idempotent by request id (see
//! [`JobStore::enqueue`]); kept results carry theirs too. The first result of
//! a request id is the one kept and delivered.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::store::{DeadLetter, Enqueued, JobStore, JobStoreOptions};
use super::waiters::ResultWaiters;
use crate::metrics;
use crate::proto::{unix_ms_now, Job, JobResult};
use crate::queue::error::StoreError;
use crate::queue::source::{Lease, QueueDepth};

#[derive(Default)]
struct Lanes {
    high: VecDeque<Job>,
    normal: VecDeque<Job>,
    /// request id -> (consumer, job)
    leased: HashMap<String, (String, Job)>,
    dead: Vec<DeadLetter>,
}

impl Lanes {
    fn ready(&self) -> usize {
        self.high.len() + self.normal.len()
    }

    fn stored(&self) -> usize {
        self.ready() + self.leased.len()
    }

    fn pop(&mut self) -> Option<Job> {
        self.high.pop_front().or_else(|| self.normal.pop_front())
    }

    fn push_back(&mut self, job: Job) {
        if job.priority > 0 {
            self.high.push_back(job)
        } else {
            self.normal.push_back(job)
        }
    }

    fn push_front(&mut self, job: Job) {
        if job.priority > 0 {
            self.high.push_front(job)
        } else {
            self.normal.push_front(job)
        }
    }

    fn remove_ready(&mut self, request_id: &str) {
        self.high.retain(|j| j.request_id != request_id);
        self.normal.retain(|j| j.request_id != request_id);
    }
}

struct MemQueue {
    lanes: Mutex<Lanes>,
    wake: Notify,
}

/// Results kept for lookup by request id, oldest first out: by age
/// (`result_ttl`), count (`max_results`) and bytes (`max_result_bytes`).
#[derive(Default)]
struct ResultStore {
    by_id: HashMap<String, Kept>,
    order: VecDeque<(Instant, String)>,
    bytes: usize,
}

/// A kept result and the fingerprint of the job it answers.
struct Kept {
    result: JobResult,
    fingerprint: String,
}

/// What a kept result costs: its encoded size and its id twice.
fn result_cost(r: &JobResult) -> usize {
    use prost::Message;
    r.encoded_len() + 2 * r.request_id.len() + 64
}

pub struct MemoryJobStore {
    opts: JobStoreOptions,
    queues: Mutex<HashMap<String, Arc<MemQueue>>>,
    /// Request ids stored now (ready or leased) -> their job's fingerprint.
    /// Locked before a queue's lanes, never while holding them.
    stored: Mutex<HashMap<String, String>>,
    results: Mutex<ResultStore>,
    waiters: Arc<ResultWaiters>,
}

impl MemoryJobStore {
    pub fn new(opts: JobStoreOptions, waiters: Arc<ResultWaiters>) -> Self {
        MemoryJobStore {
            opts,
            queues: Mutex::new(HashMap::new()),
            stored: Mutex::new(HashMap::new()),
            results: Mutex::new(ResultStore::default()),
            waiters,
        }
    }

    fn queue(&self, name: &str) -> Arc<MemQueue> {
        let mut qs = self.queues.lock();
        Arc::clone(qs.entry(name.to_string()).or_insert_with(|| {
            Arc::new(MemQueue {
                lanes: Mutex::new(Lanes::default()),
                wake: Notify::new(),
            })
        }))
    }

    /// Keeps `result` unless one is kept for its request id already; returns
    /// the one kept (the first), which is what every caller gets.
    fn store_result(&self, result: JobResult, fingerprint: String) -> JobResult {
        let now = Instant::now();
        let cost = result_cost(&result);
        let mut store = self.results.lock();
        if let Some(first) = store.by_id.get(&result.request_id) {
            return first.result.clone();
        }
        while let Some((t, _)) = store.order.front() {
            if now.duration_since(*t) < self.opts.result_ttl
                && store.order.len() < self.opts.max_results
                && store.bytes.saturating_add(cost) <= self.opts.max_result_bytes
            {
                break;
            }
            if let Some((_, id)) = store.order.pop_front() {
                if let Some(old) = store.by_id.remove(&id) {
                    store.bytes = store.bytes.saturating_sub(result_cost(&old.result));
                }
            }
        }
        if cost > self.opts.max_result_bytes {
            // Larger than the whole budget: delivered to its caller, not kept.
            return result;
        }
        store.bytes += cost;
        store.by_id.insert(
            result.request_id.clone(),
            Kept {
                result: result.clone(),
                fingerprint,
            },
        );
        store.order.push_back((now, result.request_id.clone()));
        result
    }

    /// Drops the kept result of `request_id` (a dead letter sent round again).
    fn forget_result(&self, request_id: &str) {
        let mut store = self.results.lock();
        if let Some(old) = store.by_id.remove(request_id) {
            store.bytes = store.bytes.saturating_sub(result_cost(&old.result));
        }
    }

    /// The job of `request_id` is answered: no longer stored, its result
    /// kept (the first one wins) and delivered to its callers.
    fn finish(&self, request_id: &str, result: JobResult) {
        let fingerprint = self.stored.lock().remove(request_id).unwrap_or_default();
        let first = self.store_result(result, fingerprint);
        self.waiters.deliver(first);
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn enqueue(&self, job: &Job) -> Result<Enqueued, StoreError> {
        let fingerprint = job.fingerprint();
        let conflict = || StoreError::IdConflict {
            request_id: job.request_id.clone(),
        };
        let q = {
            let mut stored = self.stored.lock();
            if let Some(first) = stored.get(&job.request_id) {
                return if *first == fingerprint {
                    Ok(Enqueued::Joined)
                } else {
                    Err(conflict())
                };
            }
            if let Some(kept) = self.results.lock().by_id.get(&job.request_id) {
                return if kept.fingerprint == fingerprint {
                    Ok(Enqueued::Done(kept.result.clone()))
                } else {
                    Err(conflict())
                };
            }
            if job.join_only {
                return Err(StoreError::NothingToJoin {
                    request_id: job.request_id.clone(),
                });
            }
            let q = self.queue(&job.queue);
            let mut lanes = q.lanes.lock();
            if lanes.stored() >= self.opts.max_queue_length {
                return Err(StoreError::QueueFull {
                    queue: job.queue.clone(),
                    limit: self.opts.max_queue_length,
                });
            }
            stored.insert(job.request_id.clone(), fingerprint);
            lanes.push_back(job.clone());
            drop(lanes);
            q
        };
        q.wake.notify_waiters();
        Ok(Enqueued::Stored)
    }

    async fn lease(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Lease>, StoreError> {
        let q = self.queue(queue);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = q.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut out = Vec::new();
            let mut dead = Vec::new();
            {
                let mut lanes = q.lanes.lock();
                while out.len() < max {
                    let Some(mut job) = lanes.pop() else { break };
                    job.deliveries += 1;
                    if job.deliveries > self.opts.max_deliveries {
                        let reason = format!(
                            "given up after {} deliveries without a result",
                            self.opts.max_deliveries
                        );
                        lanes.dead.push(DeadLetter {
                            id: job.request_id.clone(),
                            job: job.clone(),
                            reason: reason.clone(),
                            at_unix_ms: unix_ms_now(),
                        });
                        dead.push((job, reason));
                        continue;
                    }
                    lanes
                        .leased
                        .insert(job.request_id.clone(), (consumer.to_string(), job.clone()));
                    out.push(Lease {
                        job,
                        tag: String::new(),
                    });
                }
            }
            for (job, reason) in dead {
                metrics::queue::DEAD_LETTERED
                    .with_label_values(&[queue])
                    .inc();
                tracing::warn!(request_id = %job.request_id, queue, %reason, "job dead-lettered");
                let r = JobResult::error(&job.request_id, self.opts.dead_letter_code, reason);
                self.finish(&job.request_id, r);
            }
            if !out.is_empty() {
                return Ok(out);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn complete(&self, lease: &Lease, result: JobResult) -> Result<(), StoreError> {
        let q = self.queue(&lease.job.queue);
        {
            let mut lanes = q.lanes.lock();
            if lanes.leased.remove(&lease.job.request_id).is_none() {
                // Released meanwhile: it may be waiting for redelivery; the
                // answer is here, so it need not run again.
                lanes.remove_ready(&lease.job.request_id);
            }
        }
        self.finish(&lease.job.request_id, result);
        Ok(())
    }

    async fn complete_unleased(&self, queue: &str, result: JobResult) -> Result<bool, StoreError> {
        if !self.stored.lock().contains_key(&result.request_id) {
            return Ok(false);
        }
        {
            let q = self.queue(queue);
            let mut lanes = q.lanes.lock();
            lanes.leased.remove(&result.request_id);
            lanes.remove_ready(&result.request_id);
        }
        let id = result.request_id.clone();
        self.finish(&id, result);
        Ok(true)
    }

    async fn release(&self, queue: &str, consumer: &str) -> Result<usize, StoreError> {
        let q = self.queue(queue);
        let n = {
            let mut lanes = q.lanes.lock();
            let ids: Vec<String> = lanes
                .leased
                .iter()
                .filter(|(_, (c, _))| c == consumer)
                .map(|(id, _)| id.clone())
                .collect();
            let mut jobs: Vec<Job> = ids
                .iter()
                .filter_map(|id| lanes.leased.remove(id).map(|(_, j)| j))
                .collect();
            // Oldest delivery first at the head: ids are UUIDv7, time-ordered.
            jobs.sort_by(|a, b| b.request_id.cmp(&a.request_id));
            let n = jobs.len();
            for j in jobs {
                lanes.push_front(j);
            }
            n
        };
        if n > 0 {
            q.wake.notify_waiters();
        }
        Ok(n)
    }

    async fn depth(&self, queue: Option<&str>) -> Result<Vec<QueueDepth>, StoreError> {
        let names: Vec<String> = match queue {
            Some(q) => vec![q.to_string()],
            None => {
                let mut v: Vec<String> = self.queues.lock().keys().cloned().collect();
                v.sort();
                v
            }
        };
        Ok(names
            .into_iter()
            .map(|name| {
                let q = self.queue(&name);
                let lanes = q.lanes.lock();
                let oldest = lanes
                    .high
                    .front()
                    .into_iter()
                    .chain(lanes.normal.front())
                    .chain(lanes.leased.values().map(|(_, job)| job))
                    .map(|job| job.enqueued_unix_ms)
                    .filter(|&t| t > 0)
                    .min()
                    .unwrap_or(0);
                QueueDepth {
                    queue: name,
                    ready: lanes.ready() as u64,
                    leased: lanes.leased.len() as u64,
                    oldest_unix_ms: oldest,
                }
            })
            .collect())
    }

    async fn result(&self, request_id: &str) -> Result<Option<JobResult>, StoreError> {
        Ok(self
            .results
            .lock()
            .by_id
            .get(request_id)
            .map(|k| k.result.clone()))
    }

    async fn dead_letters(&self, queue: &str, max: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let q = self.queue(queue);
        let lanes = q.lanes.lock();
        Ok(lanes.dead.iter().take(max).cloned().collect())
    }

    async fn requeue_dead(&self, queue: &str, ids: &[String]) -> Result<usize, StoreError> {
        let q = self.queue(queue);
        let back: Vec<DeadLetter> = {
            let mut lanes = q.lanes.lock();
            let dead = std::mem::take(&mut lanes.dead);
            let (back, keep): (Vec<_>, Vec<_>) = dead
                .into_iter()
                .partition(|d| ids.is_empty() || ids.contains(&d.id));
            lanes.dead = keep;
            back
        };
        let n = back.len();
        for d in back {
            let mut job = d.job;
            job.deliveries = 0;
            job.deadline_unix_ms = 0;
            // Its dead-letter answer goes, so that the run's result is kept.
            self.forget_result(&job.request_id);
            self.stored
                .lock()
                .insert(job.request_id.clone(), job.fingerprint());
            q.lanes.lock().push_back(job);
        }
        if n > 0 {
            q.wake.notify_waiters();
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, priority: u32) -> Job {
        Job {
            request_id: id.into(),
            queue: "q".into(),
            api_path: "/api/echo".into(),
            params_json: b"{}".to_vec(),
            deadline_unix_ms: 0,
            deliveries: 0,
            priority,
            reply_to: "local".into(),
            from_payload: false,
            join_only: false,
            ..Job::default()
        }
    }

    fn backend(max_len: usize, max_deliveries: u32) -> (MemoryJobStore, Arc<ResultWaiters>) {
        let w = ResultWaiters::new();
        let b = MemoryJobStore::new(
            JobStoreOptions {
                max_queue_length: max_len,
                max_deliveries,
                ..JobStoreOptions::default()
            },
            Arc::clone(&w),
        );
        (b, w)
    }

    const NO_WAIT: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn fifo_with_priority_lane_and_bounded() {
        let (b, _) = backend(3, 3);
        b.enqueue(&job("a", 0)).await.unwrap();
        b.enqueue(&job("b", 0)).await.unwrap();
        b.enqueue(&job("c", 1)).await.unwrap();
        let full = b.enqueue(&job("d", 0)).await.unwrap_err();
        assert!(matches!(full, StoreError::QueueFull { limit: 3, .. }));
        let got = b.lease("q", "c1", 10, NO_WAIT).await.unwrap();
        let ids: Vec<_> = got.iter().map(|l| l.job.request_id.as_str()).collect();
        assert_eq!(ids, ["c", "a", "b"]);
        assert!(got.iter().all(|l| l.job.deliveries == 1));
    }

    #[tokio::test]
    async fn lease_respects_max_and_complete_wakes_the_caller_once() {
        let (b, w) = backend(10, 3);
        let mut waiter = w.register("a");
        b.enqueue(&job("a", 0)).await.unwrap();
        b.enqueue(&job("b", 0)).await.unwrap();
        let first = b.lease("q", "c1", 1, NO_WAIT).await.unwrap();
        assert_eq!(first.len(), 1);
        let d = b.depth(Some("q")).await.unwrap();
        assert_eq!((d[0].ready, d[0].leased), (1, 1));
        b.complete(&first[0], JobResult::output("a", b"{}".to_vec()))
            .await
            .unwrap();
        assert_eq!(waiter.recv().await.unwrap().request_id, "a");
        assert!(b.result("a").await.unwrap().is_some(), "kept for lookup");
        let d = b.depth(Some("q")).await.unwrap();
        assert_eq!((d[0].ready, d[0].leased), (1, 0));
    }

    #[tokio::test]
    async fn released_jobs_come_back_first_and_dead_letter_after_max_deliveries() {
        let (b, w) = backend(10, 2);
        let mut waiter = w.register("a");
        b.enqueue(&job("a", 0)).await.unwrap();
        b.enqueue(&job("b", 0)).await.unwrap();
        let l = b.lease("q", "c1", 1, NO_WAIT).await.unwrap();
        assert_eq!(l[0].job.request_id, "a");
        assert_eq!(b.release("q", "c1").await.unwrap(), 1);
        let l = b.lease("q", "c2", 1, NO_WAIT).await.unwrap();
        assert_eq!(
            (l[0].job.request_id.as_str(), l[0].job.deliveries),
            ("a", 2)
        );
        assert_eq!(b.release("q", "c2").await.unwrap(), 1);
        // Third delivery would pass max_deliveries=2: dead-lettered and answered.
        let l = b.lease("q", "c3", 1, NO_WAIT).await.unwrap();
        assert_eq!(l[0].job.request_id, "b");
        let r = waiter.recv().await.unwrap();
        assert!(matches!(
            r.outcome,
            Some(crate::proto::job_result::Outcome::Error(ref e)) if e.code == 9998
        ));
        assert_eq!(b.dead_letters("q", 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_waiting_lease_is_woken_by_enqueue_and_times_out_empty() {
        let (b, _) = backend(10, 3);
        let b = Arc::new(b);
        let empty = b
            .lease("q", "c1", 1, Duration::from_millis(30))
            .await
            .unwrap();
        assert!(empty.is_empty());
        let b2 = Arc::clone(&b);
        let waiting =
            tokio::spawn(async move { b2.lease("q", "c1", 4, Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.enqueue(&job("x", 0)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("woken, not polled")
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 1);
    }

    #[tokio::test]
    async fn kept_results_stay_within_their_byte_cap_oldest_out_first() {
        let b = MemoryJobStore::new(
            JobStoreOptions {
                max_result_bytes: 10_000,
                ..JobStoreOptions::default()
            },
            ResultWaiters::new(),
        );
        let result = |id: &str, size: usize| JobResult {
            request_id: id.into(),
            outcome: Some(crate::proto::job_result::Outcome::OutputJson(vec![
                b'x';
                size
            ])),
        };
        for n in 0..100 {
            b.store_result(result(&format!("r{n}"), 1_000), String::new());
        }
        let kept = b.results.lock().bytes;
        assert!(kept <= 10_000, "{kept} bytes kept");
        assert!(b.result("r0").await.unwrap().is_none(), "oldest gone");
        assert!(b.result("r99").await.unwrap().is_some(), "newest kept");
        b.store_result(result("huge", 20_000), String::new());
        assert!(
            b.result("huge").await.unwrap().is_none(),
            "over the whole cap: not kept"
        );
        assert!(b.results.lock().bytes <= 10_000);
    }
}
