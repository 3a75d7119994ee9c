//! The Redis Streams backend: durable queues that several queue-service
//! instances share.
//!
//! Keys (prefix `inferq:` by default):
//! - `q:<queue>:hi`, `q:<queue>:lo`: one stream per priority lane, each with
//!   the consumer group `inferq`. A job is one entry (`job` = the protobuf
//!   `Job`). The lease tag is `<lane>|<entry id>`.
//! - `dead:<queue>`: the dead-letter stream (`job`, `reason`, `at`).
//! - `result:<request id>`: the protobuf `JobResult`, kept `result_ttl`.
//! - `done:<instance id>`: the pub/sub channel that wakes callers waiting in
//!   that queue-service instance; the message is the `JobResult`.
//! - `queues`: the set of queue names (for stats).
//!
//! Delivery: `lease` reads new entries with XREADGROUP under the consumer name
//! of the dispatcher's session, so an entry stays in the group's pending list
//! until `complete` stores the result, acknowledges (XACK) and deletes (XDEL)
//! the entry and publishes the result, all in one MULTI. Entries pending with a
//! consumer that is gone are reclaimed by XAUTOCLAIM once idle `reclaim_idle`:
//! a dead dispatcher's jobs are released at once by its session (moved to the
//! `released` consumer with a huge idle time), a dead queue instance's jobs
//! after the idle time. While a job is held its idle time is reset every
//! `reclaim_idle / 3`, so long jobs are not taken away. Redis' delivery count
//! becomes `Job.deliveries`; past `max_deliveries` the job goes to the dead
//! letters and its caller gets InferFail.
//!
//! Connections (see [`crate::queue::redis::pool`]): commands go over a few pooled,
//! multiplexed connections; each consumer's blocking XREADGROUP gets its own
//! connection (a blocked connection must not be shared), and the instance's
//! pub/sub subscription one more. When Redis is unreachable
//! every operation fails with `Unavailable`, and the subscription reconnects
//! with backoff, then looks up the results of every caller still waiting (a
//! notification may have been missed while it was away).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use prost::Message;
use redis::aio::MultiplexedConnection;
use redis::{Script, Value};
use tokio_util::sync::CancellationToken;

use super::store::{DeadLetter, JobStore, JobStoreOptions};
use super::waiters::ResultWaiters;
use crate::queue::error::StoreError;
use crate::queue::redis::pool::{unavailable, HotConnection, RedisConnections};
use crate::queue::redis::reply;
pub use crate::queue::redis::RedisOptions;
use crate::queue::source::{Lease, QueueDepth};

mod dead_letters;
mod lease;
mod wake;

use crate::backoff::Backoff;
use crate::metrics;
use crate::proto::{unix_ms_now, Job, JobResult};
use lease::{parse_tag, Entry};

const GROUP: &str = "inferq";
/// The consumer that released jobs are parked under until reclaimed.
const RELEASED: &str = "released";
/// Idle time given to released jobs so that the next XAUTOCLAIM takes them.
const RELEASED_IDLE_MS: i64 = 1_000_000_000_000;
const LANES: [&str; 2] = ["hi", "lo"];
/// Most dead letters kept per queue.
const DEAD_LETTER_MAXLEN: usize = 100_000;

/// Which scan position and when, for XAUTOCLAIM on one queue.
struct ReclaimState {
    due: Instant,
    cursors: [String; 2],
}

pub struct RedisJobStore {
    opts: RedisOptions,
    jobs: JobStoreOptions,
    conns: RedisConnections,
    waiters: Arc<ResultWaiters>,
    /// Queues whose consumer groups are known to exist.
    groups: Mutex<HashSet<String>>,
    /// Each consumer's connection for blocking reads.
    blocking: Mutex<HashMap<String, MultiplexedConnection>>,
    /// Lease tags held by each (queue, consumer), to renew their idle time.
    held: Mutex<HashMap<(String, String), HashSet<String>>>,
    reclaim: Mutex<HashMap<String, ReclaimState>>,
    enqueue_script: Script,
    read_script: Script,
    release_script: Script,
}

fn is_nogroup(e: &redis::RedisError) -> bool {
    e.to_string().contains("NOGROUP")
}

const ENQUEUE_LUA: &str = include_str!("enqueue.lua");

const READ_LUA: &str = include_str!("read.lua");

const RELEASE_LUA: &str = include_str!("release.lua");

impl RedisJobStore {
    /// Builds the pool (connections are made on first use) and starts the
    /// result subscription and the lease renewal; both stop with `stop`.
    pub fn start(
        opts: RedisOptions,
        jobs: JobStoreOptions,
        waiters: Arc<ResultWaiters>,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, StoreError> {
        let conns = RedisConnections::new(opts.connection_info()?, opts.pool_size)?;
        let backend = Arc::new(RedisJobStore {
            opts,
            jobs,
            conns,
            waiters,
            groups: Mutex::new(HashSet::new()),
            blocking: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            reclaim: Mutex::new(HashMap::new()),
            enqueue_script: Script::new(ENQUEUE_LUA),
            read_script: Script::new(READ_LUA),
            release_script: Script::new(RELEASE_LUA),
        });
        tokio::spawn(Arc::clone(&backend).subscribe_results(stop.clone()));
        tokio::spawn(Arc::clone(&backend).renew_leases(stop));
        Ok(backend)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.opts.key_prefix)
    }

    fn lane_key(&self, queue: &str, lane: usize) -> String {
        self.key(&format!("q:{queue}:{}", LANES[lane]))
    }

    fn dead_key(&self, queue: &str) -> String {
        self.key(&format!("dead:{queue}"))
    }

    fn result_key(&self, request_id: &str) -> String {
        self.key(&format!("result:{request_id}"))
    }

    fn done_channel(&self, instance: &str) -> String {
        self.key(&format!("done:{instance}"))
    }

    /// A connection for one command or pipeline.
    async fn conn(&self) -> Result<HotConnection<'_>, StoreError> {
        self.conns.get().await
    }

    /// Waits until Redis answers a PING, logging while it does not; false
    /// when `stop` came first.
    pub async fn wait_until_reachable(&self, stop: &CancellationToken) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut logged = false;
        loop {
            let ping = async {
                let mut c = self.conn().await?;
                redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .map_err(unavailable)
            };
            match ping.await {
                Ok(_) => {
                    tracing::info!(redis = %self.opts.display_addr(), "redis reachable");
                    return true;
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(redis = %self.opts.display_addr(), error = %e, "redis unreachable; retrying with backoff (calls get 9702 meanwhile)");
                        logged = true;
                    }
                }
            }
            if !backoff.wait(stop).await {
                return false;
            }
        }
    }

    async fn ensure_groups(&self, queue: &str) -> Result<(), StoreError> {
        if self.groups.lock().contains(queue) {
            return Ok(());
        }
        let mut c = self.conn().await?;
        for lane in 0..LANES.len() {
            let r = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.lane_key(queue, lane))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async::<()>(&mut c)
                .await;
            match r {
                Ok(()) => {}
                Err(e) if e.to_string().contains("BUSYGROUP") => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        self.groups.lock().insert(queue.to_string());
        Ok(())
    }

    /// Forgets that `queue`'s groups exist after Redis said NOGROUP (it lost
    /// its data), so they are made again.
    fn forget_groups(&self, queue: &str, e: &redis::RedisError) {
        if is_nogroup(e) {
            self.groups.lock().remove(queue);
        }
    }

    /// Acknowledges a stream entry and deletes it from its lane.
    fn remove_entry_cmds(&self, p: &mut redis::Pipeline, queue: &str, lane: usize, id: &str) {
        let key = self.lane_key(queue, lane);
        p.cmd("XACK")
            .arg(&key)
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(&key)
            .arg(id)
            .ignore();
    }

    /// Store the result, acknowledge and delete the entry, wake the caller.
    fn finish_cmds(
        &self,
        p: &mut redis::Pipeline,
        queue: &str,
        lane: usize,
        id: &str,
        job: &Job,
        result: &JobResult,
    ) {
        let bytes = result.encode_to_vec();
        p.cmd("SET")
            .arg(self.result_key(&job.request_id))
            .arg(&bytes)
            .arg("PX")
            .arg(self.jobs.result_ttl.as_millis() as u64)
            .arg("NX")
            .ignore();
        self.remove_entry_cmds(p, queue, lane, id);
        if !job.reply_to.is_empty() {
            p.cmd("PUBLISH")
                .arg(self.done_channel(&job.reply_to))
                .arg(bytes)
                .ignore();
        }
    }
}

#[async_trait]
impl JobStore for RedisJobStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn enqueue(&self, job: Job) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        // Lua's KEYS are 1-based.
        let lane = lane_of(&job) + 1;
        let id: Option<String> = self
            .enqueue_script
            .key(self.lane_key(&job.queue, 0))
            .key(self.lane_key(&job.queue, 1))
            .key(self.key("queues"))
            .arg(self.jobs.max_queue_length)
            .arg(lane)
            .arg(job.encode_to_vec())
            .arg(&job.queue)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        match id {
            Some(_) => Ok(()),
            None => Err(StoreError::QueueFull {
                queue: job.queue.clone(),
                limit: self.jobs.max_queue_length,
            }),
        }
    }

    async fn lease(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Lease>, StoreError> {
        self.lease_jobs(queue, consumer, max, wait).await
    }

    async fn complete(&self, lease: &Lease, result: JobResult) -> Result<(), StoreError> {
        self.complete_batch(&[(lease.clone(), result)]).await
    }

    async fn complete_batch(&self, done: &[(Lease, JobResult)]) -> Result<(), StoreError> {
        // No longer renewed from here on, even if storing fails: a job whose
        // result cannot be stored is reclaimed after the idle time.
        {
            let mut held = self.held.lock();
            for set in held.values_mut() {
                for (lease, _) in done {
                    set.remove(&lease.tag);
                }
            }
            held.retain(|_, s| !s.is_empty());
        }
        let mut p = redis::pipe();
        p.atomic();
        for (lease, result) in done {
            let (lane, id) = parse_tag(&lease.tag)
                .ok_or_else(|| StoreError::Unavailable(format!("bad lease tag {:?}", lease.tag)))?;
            self.finish_cmds(&mut p, &lease.job.queue, lane, id, &lease.job, result);
        }
        let mut c = self.conn().await?;
        p.query_async::<()>(&mut c).await.map_err(unavailable)?;
        Ok(())
    }

    async fn release(&self, queue: &str, consumer: &str) -> Result<usize, StoreError> {
        // Close the blocking connection first: a read still blocked there
        // would otherwise deliver to this consumer after we looked.
        self.blocking.lock().remove(consumer);
        self.held
            .lock()
            .remove(&(queue.to_string(), consumer.to_string()));
        let mut c = self.conn().await?;
        let mut n = 0usize;
        for lane in 0..LANES.len() {
            let r = self
                .release_script
                .key(self.lane_key(queue, lane))
                .arg(GROUP)
                .arg(consumer)
                .arg(RELEASED)
                .arg(RELEASED_IDLE_MS)
                .invoke_async::<i64>(&mut c)
                .await;
            match r {
                Ok(k) => n += k.max(0) as usize,
                Err(e) if is_nogroup(&e) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        if n > 0 {
            self.reclaim_soon(queue);
        }
        Ok(n)
    }

    async fn depth(&self, queue: Option<&str>) -> Result<Vec<QueueDepth>, StoreError> {
        let names: Vec<String> = match queue {
            Some(q) => vec![q.to_string()],
            None => {
                let mut c = self.conn().await?;
                let mut v: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(self.key("queues"))
                    .query_async(&mut c)
                    .await
                    .map_err(unavailable)?;
                v.sort();
                v
            }
        };
        let mut out = Vec::new();
        for name in names {
            self.ensure_groups(&name).await?;
            let mut p = redis::pipe();
            for lane in 0..LANES.len() {
                let key = self.lane_key(&name, lane);
                p.cmd("XLEN").arg(&key).cmd("XPENDING").arg(&key).arg(GROUP);
            }
            let mut c = self.conn().await?;
            let v: Vec<Value> = match p.query_async(&mut c).await {
                Ok(v) => v,
                Err(e) => {
                    self.forget_groups(&name, &e);
                    return Err(unavailable(e));
                }
            };
            let mut stored = 0u64;
            let mut leased = 0u64;
            for pair in v.chunks(2) {
                if let [Value::Int(len), pending] = pair {
                    stored += (*len).max(0) as u64;
                    if let Value::Array(summary) = pending {
                        if let Some(Value::Int(n)) = summary.first() {
                            leased += (*n).max(0) as u64;
                        }
                    }
                }
            }
            out.push(QueueDepth {
                queue: name,
                ready: stored.saturating_sub(leased),
                leased,
            });
        }
        Ok(out)
    }

    async fn result(&self, request_id: &str) -> Result<Option<JobResult>, StoreError> {
        let mut c = self.conn().await?;
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.result_key(request_id))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        match v {
            None => Ok(None),
            Some(b) => JobResult::decode(b.as_slice())
                .map(Some)
                .map_err(|e| StoreError::Unavailable(format!("stored result unreadable: {e}"))),
        }
    }

    async fn dead_letters(&self, queue: &str, max: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.list_dead(queue, max).await
    }

    async fn requeue_dead(&self, queue: &str, ids: &[String]) -> Result<usize, StoreError> {
        self.requeue(queue, ids).await
    }
}

/// The lane a job goes to: `hi` (0) for priority > 0, else `lo` (1).
fn lane_of(job: &Job) -> usize {
    if job.priority > 0 {
        0
    } else {
        1
    }
}
