//! The Redis Streams backend: durable queues that several queue-service
//! instances share.
//!
//! Keys (prefix `inferq:` by default):
//! - `q:<queue>:back`, `q:<queue>:hi`, `q:<queue>:lo`: one stream per lane,
//!   each with the consumer group `inferq`, read in that order. A job is one
//!   entry (`job` = the protobuf `Job`, `rid` = its request id). `back`
//!   holds jobs handed back (their session ended, or their queue instance
//!   died), with their deliveries so far in `d`: they go to the next free
//!   credit ahead of new jobs. The lease tag is `<lane>|<entry id>`.
//! - `job:<id>`: the request id's marker while its job is stored and as long
//!   as its result is kept, its value the job's fingerprint: storing is
//!   idempotent by request id (`enqueue.lua`).
//! - `reply:<id>`: the instances with a caller waiting for the result.
//! - `result:<request id>`: the protobuf `JobResult`, kept `result_ttl`.
//! - `done:<instance id>`: the pub/sub channel that wakes callers waiting in
//!   that queue-service instance; the message is the `JobResult`.
//! - `dead:<queue>`: the dead-letter stream (`job`, `reason`, `at`).
//! - `queues`: the set of queue names (for stats).
//!
//! Delivery: `lease` reads new entries with XREADGROUP under the consumer name
//! of the dispatcher's session, so an entry stays in the group's pending list
//! until `complete` stores the result, acknowledges (XACK) and deletes (XDEL)
//! the entry and publishes the result to every other instance in
//! `reply:<id>`, all in one script (`finish.lua`); callers waiting in the
//! completing instance itself are woken directly. When a session ends its entries move to the
//! `back` lane at once (`return.lua`), which wakes every blocked reader of
//! every instance. While a job is held its idle time is reset every
//! `reclaim_idle / 3`; entries idle past `reclaim_idle` belong to a dead
//! queue instance, and the first lease of any instance after that moves all
//! of them to `back` (the same script). Deliveries past `max_deliveries` go to
//! the dead letters and their caller gets InferFail.
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

use super::store::{DeadLetter, Enqueued, JobStore, JobStoreOptions};
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
/// The lanes, in the order reads take them.
const LANES: [&str; 3] = ["back", "hi", "lo"];
/// The lane of jobs handed back.
const BACK: usize = 0;
/// Most entries one takeover moves (another follows at once when it was full).
const TAKEOVER_BATCH: usize = 1000;
/// How long a request id's marker outlives its deadline, for calls without one.
const NO_DEADLINE_MS: i64 = 86_400_000;
/// Most dead letters kept per queue.
const DEAD_LETTER_MAXLEN: usize = 100_000;

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
    /// When each queue's next takeover of a dead instance's holds is due.
    takeover_due: Mutex<HashMap<String, Instant>>,
    enqueue_script: Script,
    read_script: Script,
    return_script: Script,
    finish_script: Script,
}

fn is_nogroup(e: &redis::RedisError) -> bool {
    e.to_string().contains("NOGROUP")
}

const ENQUEUE_LUA: &str = include_str!("enqueue.lua");

const READ_LUA: &str = include_str!("read.lua");

const RETURN_LUA: &str = include_str!("return.lua");

const FINISH_LUA: &str = include_str!("finish.lua");

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
            takeover_due: Mutex::new(HashMap::new()),
            enqueue_script: Script::new(ENQUEUE_LUA),
            read_script: Script::new(READ_LUA),
            return_script: Script::new(RETURN_LUA),
            finish_script: Script::new(FINISH_LUA),
        });
        tokio::spawn(Arc::clone(&backend).subscribe_results(stop.clone()));
        tokio::spawn(Arc::clone(&backend).renew_leases(stop));
        Ok(backend)
    }

    /// The prefix and `parts`, in one allocation (keys are built per job).
    fn key_of(&self, parts: &[&str]) -> String {
        let prefix = &self.opts.key_prefix;
        let len = prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut key = String::with_capacity(len);
        key.push_str(prefix);
        for p in parts {
            key.push_str(p);
        }
        key
    }

    fn key(&self, rest: &str) -> String {
        self.key_of(&[rest])
    }

    fn lane_key(&self, queue: &str, lane: usize) -> String {
        self.key_of(&["q:", queue, ":", LANES[lane]])
    }

    fn dead_key(&self, queue: &str) -> String {
        self.key_of(&["dead:", queue])
    }

    fn result_key(&self, request_id: &str) -> String {
        self.key_of(&["result:", request_id])
    }

    fn done_channel(&self, instance: &str) -> String {
        self.key_of(&["done:", instance])
    }

    fn marker_key(&self, request_id: &str) -> String {
        self.key_of(&["job:", request_id])
    }

    fn reply_key(&self, request_id: &str) -> String {
        self.key_of(&["reply:", request_id])
    }

    /// The lanes of `queue`, in `LANES` order, as a script's first keys.
    fn lane_keys(&self, queue: &str) -> [String; 3] {
        [0, 1, 2].map(|lane| self.lane_key(queue, lane))
    }

    /// A connection for one command or pipeline.
    async fn conn(&self) -> Result<HotConnection<'_>, StoreError> {
        self.conns.get().await
    }

    /// Waits until Redis answers a PING, logging while it does not; false
    /// when `stop` came first.
    pub async fn wait_until_reachable(&self, stop: &CancellationToken) -> bool {
        // Capped at 1 s: callers waiting for results hear them within a
        // second of Redis's return.
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
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
                        tracing::warn!(redis = %self.opts.display_addr(), error = %e, "redis unreachable; retrying with backoff (calls wait for it until their deadline, if Server.WaitForStore)");
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

    /// Runs `finish.lua` for `done`: per job, the entry (when a lease
    /// covers it) acknowledged and deleted, the first result stored and
    /// published to the instances waiting for it. How many were stored.
    pub(super) async fn finish(&self, done: &[Finished<'_>]) -> Result<usize, StoreError> {
        if done.is_empty() {
            return Ok(0);
        }
        let mut inv = self.finish_script.prepare_invoke();
        inv.arg(GROUP)
            .arg(self.jobs.result_ttl.as_millis() as u64)
            .arg(self.key("done:"))
            .arg(&self.jobs.instance_id);
        for f in done {
            inv.key(self.lane_key(f.queue, f.lane))
                .key(self.result_key(f.request_id))
                .key(self.marker_key(f.request_id))
                .key(self.reply_key(f.request_id))
                .arg(f.entry)
                .arg(f.result.encode_to_vec())
                .arg(if f.entry.is_empty() { "1" } else { "0" });
        }
        let mut c = self.conn().await?;
        let reply: Vec<usize> = inv.invoke_async(&mut c).await.map_err(unavailable)?;
        let (stored, here) = reply
            .split_first()
            .map_or((0, &[][..]), |(n, rest)| (*n, rest));
        // Callers waiting in this instance: woken here, not through Redis.
        for f in here.iter().filter_map(|&i| done.get(i)) {
            self.waiters.deliver(f.result.clone());
        }
        Ok(stored)
    }
}

/// One job to complete with `finish.lua`.
pub(super) struct Finished<'a> {
    pub(super) queue: &'a str,
    pub(super) lane: usize,
    /// The stream entry id; empty when no lease covers the result.
    pub(super) entry: &'a str,
    pub(super) request_id: &'a str,
    pub(super) result: &'a JobResult,
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

    async fn enqueue(&self, job: &Job) -> Result<Enqueued, StoreError> {
        // The marker lives until the deadline, then as long as a result;
        // the waiting instances' set until a little past the deadline.
        let to_deadline = if job.deadline_unix_ms > 0 {
            (job.deadline_unix_ms - unix_ms_now()).max(0)
        } else {
            NO_DEADLINE_MS
        };
        let result_ttl = i64::try_from(self.jobs.result_ttl.as_millis()).unwrap_or(i64::MAX);
        let marker_ttl = to_deadline.saturating_add(result_ttl).max(1);
        let reply_ttl = to_deadline.saturating_add(10_000);
        let mut c = self.conn().await?;
        // Lua's KEYS are 1-based.
        let reply: Vec<Value> = self
            .enqueue_script
            // back, hi, lo: the lanes in read order.
            .key(&self.lane_keys(&job.queue)[..])
            .key(self.key("queues"))
            .key(self.marker_key(&job.request_id))
            .key(self.result_key(&job.request_id))
            .key(self.reply_key(&job.request_id))
            .arg(self.jobs.max_queue_length)
            .arg(lane_of(job) + 1)
            .arg(job.encode_to_vec())
            .arg(&job.queue)
            .arg(&job.request_id)
            .arg(job.fingerprint())
            .arg(marker_ttl)
            .arg(&self.jobs.instance_id)
            .arg(reply_ttl)
            .arg(if job.join_only { "1" } else { "0" })
            .arg(GROUP)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        let word = reply.first().and_then(reply::string).unwrap_or_default();
        match word.as_str() {
            "stored" => Ok(Enqueued::Stored),
            "joined" => Ok(Enqueued::Joined),
            "done" => {
                let bytes = reply.get(1).and_then(reply::bytes).unwrap_or_default();
                JobResult::decode(bytes.as_slice())
                    .map(Enqueued::Done)
                    .map_err(|e| StoreError::Unavailable(format!("stored result unreadable: {e}")))
            }
            "full" => Err(StoreError::QueueFull {
                queue: job.queue.clone(),
                limit: self.jobs.max_queue_length,
            }),
            "conflict" => Err(StoreError::IdConflict {
                request_id: job.request_id.clone(),
            }),
            "missing" => Err(StoreError::NothingToJoin {
                request_id: job.request_id.clone(),
            }),
            other => Err(StoreError::Unavailable(format!(
                "unexpected reply {other:?} from the enqueue script"
            ))),
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
        let mut finished = Vec::with_capacity(done.len());
        for (lease, result) in done {
            let (lane, id) = parse_tag(&lease.tag)
                .ok_or_else(|| StoreError::Unavailable(format!("bad lease tag {:?}", lease.tag)))?;
            finished.push(Finished {
                queue: &lease.job.queue,
                lane,
                entry: id,
                request_id: &lease.job.request_id,
                result,
            });
        }
        self.finish(&finished).await?;
        Ok(())
    }

    async fn complete_unleased(&self, queue: &str, result: JobResult) -> Result<bool, StoreError> {
        let stored = self
            .finish(&[Finished {
                queue,
                lane: BACK,
                entry: "",
                request_id: &result.request_id,
                result: &result,
            }])
            .await?;
        Ok(stored > 0)
    }

    async fn release(&self, queue: &str, consumer: &str) -> Result<usize, StoreError> {
        // Close the blocking connection first: a read still blocked there
        // would otherwise deliver to this consumer after we looked.
        self.blocking.lock().remove(consumer);
        self.held
            .lock()
            .remove(&(queue.to_string(), consumer.to_string()));
        let (moved, _answered) = self.hand_back(queue, consumer, 0).await?;
        Ok(moved)
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
                p.cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1);
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
            let mut oldest = 0i64;
            for triple in v.chunks(3) {
                if let Some(t) = triple.get(2).and_then(first_entry_ms) {
                    oldest = if oldest == 0 { t } else { oldest.min(t) };
                }
                if let [Value::Int(len), pending, ..] = triple {
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
                oldest_unix_ms: oldest,
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

/// The lane a new job goes to: `hi` for priority > 0, else `lo`.
fn lane_of(job: &Job) -> usize {
    if job.priority > 0 {
        1
    } else {
        2
    }
}

/// The milliseconds part of the first entry id of an XRANGE reply (a stream
/// id is `<unix ms>-<seq>`), if there is an entry.
fn first_entry_ms(reply: &Value) -> Option<i64> {
    let Value::Array(entries) = reply else {
        return None;
    };
    let Value::Array(entry) = entries.first()? else {
        return None;
    };
    let id = match entry.first()? {
        Value::BulkString(b) => std::str::from_utf8(b).ok()?,
        Value::SimpleString(s) => s.as_str(),
        _ => return None,
    };
    id.split_once('-')?.0.parse().ok()
}
