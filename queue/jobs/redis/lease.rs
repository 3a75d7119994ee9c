//! Leasing on Redis: new entries read for a consumer (XREADGROUP through
//! `read.lua`, or blocking on the consumer's own connection), entries of gone
//! consumers reclaimed (XAUTOCLAIM), and the idle time of held entries renewed
//! so that a live dispatcher's long job is never taken away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use redis::Value;
use tokio_util::sync::CancellationToken;

use super::*;

/// One stream entry as read: which lane, its id, the job.
pub(super) struct Entry {
    pub(super) lane: usize,
    pub(super) id: String,
    pub(super) job: Job,
}

/// An entry read from a lane that is not a job: no `job` field, or bytes
/// that do not decode.
pub(super) struct Poison {
    pub(super) lane: usize,
    pub(super) id: String,
    pub(super) raw: Vec<u8>,
    pub(super) why: String,
}

/// What one read returned, sorted into jobs and entries that are not.
#[derive(Default)]
struct Read {
    jobs: Vec<Entry>,
    poison: Vec<Poison>,
}

impl Read {
    fn sort(&mut self, lane: usize, id: String, job: Option<Vec<u8>>) {
        match job.as_deref().map(Job::decode) {
            Some(Ok(job)) => self.jobs.push(Entry { lane, id, job }),
            Some(Err(e)) => self.poison.push(Poison {
                lane,
                id,
                why: format!("not a protobuf Job: {e}"),
                raw: job.unwrap_or_default(),
            }),
            None => self.poison.push(Poison {
                lane,
                id,
                why: "no job field".into(),
                raw: Vec::new(),
            }),
        }
    }
}

pub(super) fn parse_tag(tag: &str) -> Option<(usize, &str)> {
    let (lane, id) = tag.split_once('|')?;
    let lane: usize = lane.parse().ok()?;
    (lane < LANES.len()).then_some((lane, id))
}

impl RedisJobStore {
    /// New entries, without blocking.
    pub(super) async fn read_new(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Entry>, StoreError> {
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
        let mut read = Read::default();
        for chunk in flat.chunks(3) {
            let [lane, id, job] = chunk else { continue };
            let lane = match lane {
                Value::Int(i) => (*i as usize).min(1),
                _ => 1,
            };
            let id = reply::string(id).unwrap_or_default();
            read.sort(lane, id, reply::bytes(job));
        }
        Ok(self.keep_jobs(queue, read).await)
    }

    /// Waits up to `wait` for one new entry on either lane, on the consumer's
    /// own connection.
    pub(super) async fn read_blocking(
        &self,
        queue: &str,
        consumer: &str,
        wait: Duration,
    ) -> Result<Vec<Entry>, StoreError> {
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
                return Err(StoreError::Unavailable(
                    "redis: blocking read did not return".into(),
                ));
            }
        };
        let mut read = Read::default();
        for (key, entries) in reply::stream_reply(reply) {
            let lane = if key == self.lane_key(queue, 0) { 0 } else { 1 };
            for (id, fields) in entries {
                read.sort(lane, id, reply::field(&fields, "job"));
            }
        }
        Ok(self.keep_jobs(queue, read).await)
    }

    /// A blocking read on both lanes may return one entry from each; beyond
    /// `max`, keep the high lane's and give the others straight back,
    /// uncounted (RETRYCOUNT 0), for the next reclaim.
    pub(super) async fn give_back_extra(
        &self,
        queue: &str,
        mut got: Vec<Entry>,
        max: usize,
    ) -> Result<Vec<Entry>, StoreError> {
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
    pub(super) async fn reclaim(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<(Entry, u32)>, StoreError> {
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
            let next = parts
                .first()
                .and_then(reply::string)
                .unwrap_or("0-0".into());
            if let Some(st) = self.reclaim.lock().get_mut(queue) {
                st.cursors[lane] = next;
            }
            let Some(Value::Array(entries)) = parts.get(1) else {
                continue;
            };
            let mut read = Read::default();
            for e in entries {
                if let Some((id, fields)) = reply::entry(e) {
                    read.sort(lane, id, reply::field(&fields, "job"));
                }
            }
            let claimed = self.keep_jobs(queue, read).await;
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
                let n = reply::pending_count(&count).unwrap_or(1);
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

    pub(super) fn reclaim_interval(&self) -> Duration {
        (self.opts.reclaim_idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Makes the next `lease` on `queue` (in this instance) reclaim at once.
    pub(super) fn reclaim_soon(&self, queue: &str) {
        if let Some(st) = self.reclaim.lock().get_mut(queue) {
            st.due = Instant::now();
            st.cursors = ["0-0".into(), "0-0".into()];
        }
    }

    pub(super) fn hold(&self, queue: &str, consumer: &str, tag: &str) {
        self.held
            .lock()
            .entry((queue.to_string(), consumer.to_string()))
            .or_default()
            .insert(tag.to_string());
    }

    /// Keeps the jobs this instance's consumers hold from being reclaimed:
    /// every `reclaim_idle / 3`, reset their idle time (XCLAIM to the same
    /// consumer, JUSTID: the delivery count is unchanged).
    pub(super) async fn renew_leases(self: Arc<Self>, stop: CancellationToken) {
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

    /// The jobs of a read; entries that are not jobs are dead-lettered as
    /// they are, so they neither stop the others nor come back.
    async fn keep_jobs(&self, queue: &str, read: Read) -> Vec<Entry> {
        for p in &read.poison {
            tracing::error!(queue, entry = %p.id, why = %p.why, "stream entry is not a job; dead-lettered");
            if let Err(e) = self.bury(queue, p).await {
                tracing::warn!(queue, entry = %p.id, error = %e, "could not dead-letter the entry; it is tried again when reclaimed");
            }
        }
        read.jobs
    }

    pub(super) async fn lease_jobs(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Lease>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.ensure_groups(queue).await?;
        let deadline = Instant::now() + wait;
        // A round either waits (ending at the deadline) or dead-letters at
        // least one job (at most 64 such rounds: the cap bounds one call's
        // work).
        let mut burying_rounds = 0;
        while burying_rounds < 64 {
            let mut entries: Vec<(Entry, u32)> = self.reclaim(queue, consumer, max).await?;
            if entries.len() < max {
                let fresh = self.read_new(queue, consumer, max - entries.len()).await?;
                entries.extend(fresh.into_iter().map(|e| (e, 1)));
            }
            if entries.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Vec::new());
                }
                // Wake up in time for the next reclaim: jobs of a gone
                // consumer must not wait for a quiet queue's long poll.
                let got = self
                    .read_blocking(queue, consumer, left.min(self.reclaim_interval()))
                    .await?;
                let got = self.give_back_extra(queue, got, max).await?;
                entries.extend(got.into_iter().map(|e| (e, 1)));
            }
            if entries.is_empty() {
                continue;
            }
            let mut out = Vec::with_capacity(entries.len());
            for (mut e, deliveries) in entries {
                if deliveries > self.jobs.max_deliveries {
                    let reason = format!(
                        "given up after {} deliveries without a result",
                        self.jobs.max_deliveries
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
            burying_rounds += 1;
        }
        Ok(Vec::new())
    }
}
