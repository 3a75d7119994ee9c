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
//! Connections (see [`super::redis_pool`]): commands go over a few pooled,
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
use redis::{IntoConnectionInfo, Script, Value};
use tokio_util::sync::CancellationToken;

use super::backend::{BackendError, BackendOptions, DeadLetter, Lease, QueueBackend, QueueDepth};
use super::redis_pool::{unavailable, HotConnection, RedisConnections};
use super::waiters::ResultWaiters;
use crate::backoff::Backoff;
use crate::metrics;
use crate::proto::{unix_ms_now, Job, JobResult};

const GROUP: &str = "inferq";
/// The consumer that released jobs are parked under until reclaimed.
const RELEASED: &str = "released";
/// Idle time given to released jobs so that the next XAUTOCLAIM takes them.
const RELEASED_IDLE_MS: i64 = 1_000_000_000_000;
const LANES: [&str; 2] = ["hi", "lo"];
/// Most dead letters kept per queue.
const DEAD_LETTER_MAXLEN: usize = 100_000;

/// How to reach Redis and how to use it.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `host:port` (go-infer's `RedisServer`) or a `redis://` / `rediss://` URL
    /// (which may carry an ACL user name and password).
    pub server: String,
    /// go-infer's `RedisPasswd` (requirepass); overrides a URL's password.
    pub password: String,
    /// Most pooled connections.
    pub pool_size: usize,
    /// A job pending this long with a consumer that does not renew it is
    /// handed to another one.
    pub reclaim_idle: Duration,
    /// Prefix of every key.
    pub key_prefix: String,
    pub backend: BackendOptions,
}

impl RedisOptions {
    /// The address as shown in logs (no password).
    pub fn display_addr(&self) -> String {
        match self.server.split_once('@') {
            Some((scheme_auth, host)) => {
                let scheme = scheme_auth.split("://").next().unwrap_or("redis");
                format!("{scheme}://{host}")
            }
            None => self.server.clone(),
        }
    }

    pub(crate) fn connection_info(&self) -> Result<redis::ConnectionInfo, BackendError> {
        let url = if self.server.contains("://") {
            self.server.clone()
        } else {
            format!("redis://{}", self.server)
        };
        let info = url.as_str().into_connection_info().map_err(|e| {
            BackendError::Unavailable(format!("bad Redis address {}: {e}", self.display_addr()))
        })?;
        if self.password.is_empty() {
            return Ok(info);
        }
        let settings = info.redis_settings().clone().set_password(&self.password);
        Ok(info.set_redis_settings(settings))
    }
}

/// Which scan position and when, for XAUTOCLAIM on one queue.
struct ReclaimState {
    due: Instant,
    cursors: [String; 2],
}

pub struct RedisBackend {
    opts: RedisOptions,
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

/// Stores a job if the queue has room; returns the entry id or nil when full.
const ENQUEUE_LUA: &str = r#"
local n = redis.call('XLEN', KEYS[1]) + redis.call('XLEN', KEYS[2])
if n >= tonumber(ARGV[1]) then return false end
redis.call('SADD', KEYS[3], ARGV[4])
return redis.call('XADD', KEYS[tonumber(ARGV[2])], '*', 'job', ARGV[3])
"#;

/// Reads up to ARGV[3] new entries, high lane first, without blocking.
/// Returns a flat list: lane, id, job, lane, id, job, ...
const READ_LUA: &str = r#"
local out = {}
local n = tonumber(ARGV[3])
for i = 1, 2 do
  if n <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n, 'STREAMS', KEYS[i], '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      out[#out + 1] = i - 1
      out[#out + 1] = e[1]
      out[#out + 1] = e[2][2]
      n = n - 1
    end
  end
end
return out
"#;

/// Moves every entry a consumer holds to the `released` consumer with a huge
/// idle time (so XAUTOCLAIM takes it next), then deletes the consumer. One
/// script, so no entry is left with a deleted consumer.
const RELEASE_LUA: &str = r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1000, ARGV[2])
if #p > 0 then
  local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0}
  for _, e in ipairs(p) do args[#args + 1] = e[1] end
  args[#args + 1] = 'IDLE'
  args[#args + 1] = ARGV[4]
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))
end
if redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])[1] == nil then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return #p
"#;

/// One stream entry as read: which lane, its id, the job.
struct Entry {
    lane: usize,
    id: String,
    job: Job,
}

impl RedisBackend {
    /// Builds the pool (connections are made on first use) and starts the
    /// result subscription and the lease renewal; both stop with `stop`.
    pub fn start(
        opts: RedisOptions,
        waiters: Arc<ResultWaiters>,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, BackendError> {
        let conns = RedisConnections::new(opts.connection_info()?, opts.pool_size)?;
        let backend = Arc::new(RedisBackend {
            opts,
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
    async fn conn(&self) -> Result<HotConnection<'_>, BackendError> {
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

    async fn ensure_groups(&self, queue: &str) -> Result<(), BackendError> {
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

    fn decode_job(bytes: &[u8], id: &str) -> Result<Job, BackendError> {
        Job::decode(bytes)
            .map_err(|e| BackendError::Unavailable(format!("stream entry {id} is not a job: {e}")))
    }

    /// New entries, without blocking.
    async fn read_new(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Entry>, BackendError> {
        let mut c = self.conn().await?;
        let r = self
            .read_script
            .key(self.lane_key(queue, 0))
            .key(self.lane_key(queue, 1))
            .arg(GROUP)
            .arg(consumer)
            .arg(max)
            .invoke_async::<Vec<Value>>(&mut c)
            .await;
        let flat = match r {
            Ok(v) => v,
            Err(e) => {
                self.forget_groups(queue, &e);
                return Err(unavailable(e));
            }
        };
        let mut out = Vec::new();
        for chunk in flat.chunks(3) {
            let [lane, id, job] = chunk else { continue };
            let lane = match lane {
                Value::Int(i) => (*i as usize).min(1),
                _ => 1,
            };
            let id = value_string(id).unwrap_or_default();
            let Some(bytes) = value_bytes(job) else {
                continue;
            };
            let job = Self::decode_job(&bytes, &id)?;
            out.push(Entry { lane, id, job });
        }
        Ok(out)
    }

    /// Waits up to `wait` for one new entry on either lane, on the consumer's
    /// own connection.
    async fn read_blocking(
        &self,
        queue: &str,
        consumer: &str,
        wait: Duration,
    ) -> Result<Vec<Entry>, BackendError> {
        let existing = self.blocking.lock().get(consumer).cloned();
        let mut conn = match existing {
            Some(c) => c,
            None => {
                let c = self.conns.dedicated().await?;
                self.blocking.lock().insert(consumer.to_string(), c.clone());
                c
            }
        };
        let block_ms = wait.as_millis().max(1) as u64;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(self.lane_key(queue, 0))
            .arg(self.lane_key(queue, 1))
            .arg(">")
            .arg(">");
        let read = cmd.query_async::<Value>(&mut conn);
        let reply = match tokio::time::timeout(wait + Duration::from_secs(3), read).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                self.blocking.lock().remove(consumer);
                self.forget_groups(queue, &e);
                return Err(unavailable(e));
            }
            Err(_) => {
                self.blocking.lock().remove(consumer);
                return Err(BackendError::Unavailable(
                    "redis: blocking read did not return".into(),
                ));
            }
        };
        let mut out = Vec::new();
        for (key, entries) in stream_reply(reply) {
            let lane = if key == self.lane_key(queue, 0) { 0 } else { 1 };
            for (id, fields) in entries {
                if let Some(bytes) = field(&fields, "job") {
                    out.push(Entry {
                        lane,
                        job: Self::decode_job(&bytes, &id)?,
                        id,
                    });
                }
            }
        }
        Ok(out)
    }

    /// A blocking read on both lanes may return one entry from each; beyond
    /// `max`, keep the high lane's and give the others straight back,
    /// uncounted (RETRYCOUNT 0), for the next reclaim.
    async fn give_back_extra(
        &self,
        queue: &str,
        mut got: Vec<Entry>,
        max: usize,
    ) -> Result<Vec<Entry>, BackendError> {
        if got.len() <= max {
            return Ok(got);
        }
        got.sort_by_key(|e| e.lane);
        let extra = got.split_off(max);
        let mut c = self.conn().await?;
        for e in extra {
            redis::cmd("XCLAIM")
                .arg(self.lane_key(queue, e.lane))
                .arg(GROUP)
                .arg(RELEASED)
                .arg(0)
                .arg(&e.id)
                .arg("IDLE")
                .arg(RELEASED_IDLE_MS)
                .arg("RETRYCOUNT")
                .arg(0)
                .arg("JUSTID")
                .query_async::<()>(&mut c)
                .await
                .map_err(unavailable)?;
        }
        self.reclaim_soon(queue);
        Ok(got)
    }

    /// Takes over up to `max` entries idle past `reclaim_idle` (their consumer
    /// is gone or released them), with their delivery counts.
    async fn reclaim(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<(Entry, u32)>, BackendError> {
        let cursors = {
            let mut all = self.reclaim.lock();
            let st = all
                .entry(queue.to_string())
                .or_insert_with(|| ReclaimState {
                    due: Instant::now(),
                    cursors: ["0-0".into(), "0-0".into()],
                });
            if Instant::now() < st.due {
                return Ok(Vec::new());
            }
            st.due = Instant::now() + self.reclaim_interval();
            st.cursors.clone()
        };
        let mut c = self.conn().await?;
        let mut out = Vec::new();
        for (lane, cursor) in cursors.iter().enumerate() {
            if out.len() >= max {
                break;
            }
            let key = self.lane_key(queue, lane);
            let r = redis::cmd("XAUTOCLAIM")
                .arg(&key)
                .arg(GROUP)
                .arg(consumer)
                .arg(self.opts.reclaim_idle.as_millis() as u64)
                .arg(cursor)
                .arg("COUNT")
                .arg(max - out.len())
                .query_async::<Value>(&mut c)
                .await;
            let reply = match r {
                Ok(v) => v,
                Err(e) => {
                    self.forget_groups(queue, &e);
                    return Err(unavailable(e));
                }
            };
            let Value::Array(parts) = reply else { continue };
            let next = parts.first().and_then(value_string).unwrap_or("0-0".into());
            if let Some(st) = self.reclaim.lock().get_mut(queue) {
                st.cursors[lane] = next;
            }
            let Some(Value::Array(entries)) = parts.get(1) else {
                continue;
            };
            let mut claimed = Vec::new();
            for e in entries {
                if let Some((id, fields)) = entry(e) {
                    if let Some(bytes) = field(&fields, "job") {
                        claimed.push(Entry {
                            lane,
                            job: Self::decode_job(&bytes, &id)?,
                            id,
                        });
                    }
                }
            }
            if claimed.is_empty() {
                continue;
            }
            let mut p = redis::pipe();
            for e in &claimed {
                p.cmd("XPENDING")
                    .arg(&key)
                    .arg(GROUP)
                    .arg(&e.id)
                    .arg(&e.id)
                    .arg(1);
            }
            let counts: Vec<Value> = p.query_async(&mut c).await.map_err(unavailable)?;
            for (e, count) in claimed.into_iter().zip(counts) {
                let n = pending_count(&count).unwrap_or(1);
                out.push((e, n));
            }
        }
        if !out.is_empty() {
            tracing::info!(
                queue,
                consumer,
                reclaimed = out.len(),
                "reclaimed jobs of a gone consumer"
            );
        }
        Ok(out)
    }

    fn reclaim_interval(&self) -> Duration {
        (self.opts.reclaim_idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Makes the next `lease` on `queue` (in this instance) reclaim at once.
    fn reclaim_soon(&self, queue: &str) {
        if let Some(st) = self.reclaim.lock().get_mut(queue) {
            st.due = Instant::now();
            st.cursors = ["0-0".into(), "0-0".into()];
        }
    }

    /// Gives up on a job: dead letter, answer InferFail, acknowledge.
    async fn dead_letter(&self, queue: &str, e: &Entry, reason: &str) -> Result<(), BackendError> {
        let result = JobResult::error(
            &e.job.request_id,
            self.opts.backend.dead_letter_code,
            reason,
        );
        let mut p = redis::pipe();
        p.atomic()
            .cmd("XADD")
            .arg(self.dead_key(queue))
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_LETTER_MAXLEN)
            .arg("*")
            .arg("job")
            .arg(e.job.encode_to_vec())
            .arg("reason")
            .arg(reason)
            .arg("at")
            .arg(unix_ms_now())
            .ignore();
        self.finish_cmds(&mut p, queue, e.lane, &e.id, &e.job, &result);
        let mut c = self.conn().await?;
        p.query_async::<()>(&mut c).await.map_err(unavailable)?;
        metrics::QUEUE_DEAD_LETTERED.inc();
        tracing::warn!(request_id = %e.job.request_id, queue, %reason, "job dead-lettered");
        Ok(())
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
        let key = self.lane_key(queue, lane);
        p.cmd("SET")
            .arg(self.result_key(&job.request_id))
            .arg(&bytes)
            .arg("PX")
            .arg(self.opts.backend.result_ttl.as_millis() as u64)
            .arg("NX")
            .ignore()
            .cmd("XACK")
            .arg(&key)
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(&key)
            .arg(id)
            .ignore();
        if !job.reply_to.is_empty() {
            p.cmd("PUBLISH")
                .arg(self.done_channel(&job.reply_to))
                .arg(bytes)
                .ignore();
        }
    }

    fn hold(&self, queue: &str, consumer: &str, tag: &str) {
        self.held
            .lock()
            .entry((queue.to_string(), consumer.to_string()))
            .or_default()
            .insert(tag.to_string());
    }

    /// Keeps the jobs this instance's consumers hold from being reclaimed:
    /// every `reclaim_idle / 3`, reset their idle time (XCLAIM to the same
    /// consumer, JUSTID: the delivery count is unchanged).
    async fn renew_leases(self: Arc<Self>, stop: CancellationToken) {
        let period = (self.opts.reclaim_idle / 3).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let snapshot: Vec<((String, String), Vec<String>)> = self
                .held
                .lock()
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
                .collect();
            if snapshot.is_empty() {
                continue;
            }
            let mut p = redis::pipe();
            for ((queue, consumer), tags) in &snapshot {
                for lane in 0..LANES.len() {
                    let ids: Vec<&str> = tags
                        .iter()
                        .filter_map(|t| parse_tag(t))
                        .filter(|(l, _)| *l == lane)
                        .map(|(_, id)| id)
                        .collect();
                    if ids.is_empty() {
                        continue;
                    }
                    p.cmd("XCLAIM")
                        .arg(self.lane_key(queue, lane))
                        .arg(GROUP)
                        .arg(consumer)
                        .arg(0)
                        .arg(&ids)
                        .arg("JUSTID")
                        .ignore();
                }
            }
            let r = async {
                let mut c = self.conn().await?;
                p.query_async::<()>(&mut c).await.map_err(unavailable)
            };
            if let Err(e) = r.await {
                tracing::warn!(error = %e, "could not renew leases");
            }
        }
    }

    /// Receives results for callers waiting in this instance.
    async fn subscribe_results(self: Arc<Self>, stop: CancellationToken) {
        let channel = self.done_channel(&self.opts.backend.instance_id);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut was_down = false;
        loop {
            if !self.wait_until_reachable(&stop).await {
                return;
            }
            let sub = async {
                let mut ps = self.conns.pubsub().await?;
                ps.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            let mut pubsub = match sub.await {
                Ok(ps) => ps,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to results; retrying");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.reset();
            if was_down {
                tracing::info!("result subscription back");
            }
            // Results stored while not subscribed were not heard: look them up.
            self.sweep_waiters().await;
            let mut messages = pubsub.on_message();
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = messages.next() => m,
                };
                let Some(msg) = msg else { break };
                match JobResult::decode(msg.get_payload_bytes()) {
                    Ok(r) => {
                        self.waiters.deliver(r);
                    }
                    Err(e) => tracing::warn!(error = %e, "undecodable result notification"),
                }
            }
            was_down = true;
            tracing::warn!("result subscription lost; reconnecting");
        }
    }

    async fn sweep_waiters(&self) {
        let ids = self.waiters.ids();
        for chunk in ids.chunks(500) {
            let keys: Vec<String> = chunk.iter().map(|id| self.result_key(id)).collect();
            let r = async {
                let mut c = self.conn().await?;
                redis::cmd("MGET")
                    .arg(&keys)
                    .query_async::<Vec<Option<Vec<u8>>>>(&mut c)
                    .await
                    .map_err(unavailable)
            };
            match r.await {
                Ok(values) => {
                    for v in values.into_iter().flatten() {
                        if let Ok(r) = JobResult::decode(v.as_slice()) {
                            self.waiters.deliver(r);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not look up results of waiting callers");
                    return;
                }
            }
        }
    }
}

#[async_trait]
impl QueueBackend for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn enqueue(&self, job: Job) -> Result<(), BackendError> {
        let mut c = self.conn().await?;
        // Lua's KEYS are 1-based.
        let lane = lane_of(&job) + 1;
        let id: Option<String> = self
            .enqueue_script
            .key(self.lane_key(&job.queue, 0))
            .key(self.lane_key(&job.queue, 1))
            .key(self.key("queues"))
            .arg(self.opts.backend.max_queue_length)
            .arg(lane)
            .arg(job.encode_to_vec())
            .arg(&job.queue)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        match id {
            Some(_) => Ok(()),
            None => Err(BackendError::QueueFull {
                queue: job.queue.clone(),
                limit: self.opts.backend.max_queue_length,
            }),
        }
    }

    async fn lease(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Lease>, BackendError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.ensure_groups(queue).await?;
        // Each round that hands nothing out dead-lettered at least one job,
        // so this ends; the cap only bounds one call's work.
        for _ in 0..64 {
            let mut entries: Vec<(Entry, u32)> = self.reclaim(queue, consumer, max).await?;
            if entries.len() < max {
                let fresh = self.read_new(queue, consumer, max - entries.len()).await?;
                entries.extend(fresh.into_iter().map(|e| (e, 1)));
            }
            if entries.is_empty() {
                // Wake up in time for the next reclaim: jobs of a gone
                // consumer must not wait for a quiet queue's long poll.
                let wait = wait.min(self.reclaim_interval());
                let got = self.read_blocking(queue, consumer, wait).await?;
                let got = self.give_back_extra(queue, got, max).await?;
                entries.extend(got.into_iter().map(|e| (e, 1)));
            }
            if entries.is_empty() {
                return Ok(Vec::new());
            }
            let mut out = Vec::with_capacity(entries.len());
            for (mut e, deliveries) in entries {
                if deliveries > self.opts.backend.max_deliveries {
                    let reason = format!(
                        "given up after {} deliveries without a result",
                        self.opts.backend.max_deliveries
                    );
                    self.dead_letter(queue, &e, &reason).await?;
                    continue;
                }
                e.job.deliveries = deliveries;
                let tag = format!("{}|{}", e.lane, e.id);
                self.hold(queue, consumer, &tag);
                out.push(Lease { job: e.job, tag });
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
        Ok(Vec::new())
    }

    async fn complete(&self, lease: &Lease, result: JobResult) -> Result<(), BackendError> {
        self.complete_batch(&[(lease.clone(), result)]).await
    }

    async fn complete_batch(&self, done: &[(Lease, JobResult)]) -> Result<(), BackendError> {
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
            let (lane, id) = parse_tag(&lease.tag).ok_or_else(|| {
                BackendError::Unavailable(format!("bad lease tag {:?}", lease.tag))
            })?;
            self.finish_cmds(&mut p, &lease.job.queue, lane, id, &lease.job, result);
        }
        let mut c = self.conn().await?;
        p.query_async::<()>(&mut c).await.map_err(unavailable)?;
        Ok(())
    }

    async fn release(&self, queue: &str, consumer: &str) -> Result<usize, BackendError> {
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

    async fn depth(&self, queue: Option<&str>) -> Result<Vec<QueueDepth>, BackendError> {
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

    async fn result(&self, request_id: &str) -> Result<Option<JobResult>, BackendError> {
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
                .map_err(|e| BackendError::Unavailable(format!("stored result unreadable: {e}"))),
        }
    }

    async fn dead_letters(&self, queue: &str, max: usize) -> Result<Vec<DeadLetter>, BackendError> {
        let mut c = self.conn().await?;
        let reply: Value = redis::cmd("XRANGE")
            .arg(self.dead_key(queue))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(max.max(1))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let Value::Array(entries) = reply else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in &entries {
            let Some((id, fields)) = entry(e) else {
                continue;
            };
            let Some(bytes) = field(&fields, "job") else {
                continue;
            };
            let job = Self::decode_job(&bytes, &id)?;
            let reason = field(&fields, "reason")
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let at_unix_ms = field(&fields, "at")
                .and_then(|b| String::from_utf8_lossy(&b).parse().ok())
                .unwrap_or(0);
            out.push(DeadLetter {
                id,
                job,
                reason,
                at_unix_ms,
            });
        }
        Ok(out)
    }

    async fn requeue_dead(&self, queue: &str, ids: &[String]) -> Result<usize, BackendError> {
        let dead = self.dead_letters(queue, 100_000).await?;
        let chosen: Vec<DeadLetter> = dead
            .into_iter()
            .filter(|d| ids.is_empty() || ids.contains(&d.id))
            .collect();
        if chosen.is_empty() {
            return Ok(0);
        }
        let mut c = self.conn().await?;
        for chunk in chosen.chunks(500) {
            let mut p = redis::pipe();
            p.atomic();
            for d in chunk {
                let mut job = d.job.clone();
                job.deliveries = 0;
                job.deadline_unix_ms = 0;
                let lane = lane_of(&job);
                p.cmd("XADD")
                    .arg(self.lane_key(queue, lane))
                    .arg("*")
                    .arg("job")
                    .arg(job.encode_to_vec())
                    .ignore()
                    .cmd("XDEL")
                    .arg(self.dead_key(queue))
                    .arg(&d.id)
                    .ignore()
                    .cmd("DEL")
                    .arg(self.result_key(&job.request_id))
                    .ignore();
            }
            p.query_async::<()>(&mut c).await.map_err(unavailable)?;
        }
        Ok(chosen.len())
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

fn parse_tag(tag: &str) -> Option<(usize, &str)> {
    let (lane, id) = tag.split_once('|')?;
    let lane: usize = lane.parse().ok()?;
    (lane < LANES.len()).then_some((lane, id))
}

fn value_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

fn value_string(v: &Value) -> Option<String> {
    value_bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `[id, [field, value, ...]]` → (id, fields).
fn entry(v: &Value) -> Option<(String, Vec<Value>)> {
    let Value::Array(parts) = v else { return None };
    let id = value_string(parts.first()?)?;
    match parts.get(1) {
        Some(Value::Array(fields)) => Some((id, fields.clone())),
        _ => None,
    }
}

fn field(fields: &[Value], name: &str) -> Option<Vec<u8>> {
    fields.chunks(2).find_map(|kv| match kv {
        [k, v] if value_string(k).as_deref() == Some(name) => value_bytes(v),
        _ => None,
    })
}

/// An XREADGROUP reply (RESP2 array or RESP3 map) → [(stream key, entries)].
/// Stream entries as read: (entry id, field/value list).
type Entries = Vec<(String, Vec<Value>)>;

fn stream_reply(v: Value) -> Vec<(String, Entries)> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let entries = kv.pop()?;
                    let key = kv.pop()?;
                    Some((key, entries))
                }
                _ => None,
            })
            .collect(),
        Value::Map(m) => m,
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(k, entries)| {
            let key = value_string(&k)?;
            let Value::Array(es) = entries else {
                return None;
            };
            Some((key, es.iter().filter_map(entry).collect()))
        })
        .collect()
}

/// The delivery count in an `XPENDING key group id id 1` reply.
fn pending_count(v: &Value) -> Option<u32> {
    let Value::Array(rows) = v else { return None };
    let Value::Array(row) = rows.first()? else {
        return None;
    };
    match row.get(3)? {
        Value::Int(n) => Some((*n).max(0) as u32),
        _ => None,
    }
}
