//! Leasing on Redis: new entries read for a consumer (`read.lua`, the back
//! lane first, or blocking on the consumer's own connection), the holds of a
//! dead queue instance taken over (`return.lua`, moving them to the back
//! lane), and the idle time of held entries renewed so that a live
//! dispatcher's long job is never taken away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use redis::Value;
use tokio_util::sync::CancellationToken;

use super::*;

/// One stream entry as read: which lane, its id, the job with its delivery
/// count (this one included).
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
    /// `before`: the deliveries the entry had before this read (`d`).
    fn sort(&mut self, lane: usize, id: String, before: u32, job: Option<Vec<u8>>) {
        match job.as_deref().map(Job::decode) {
            Some(Ok(mut job)) => {
                job.deliveries = before.saturating_add(1);
                self.jobs.push(Entry { lane, id, job })
            }
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
    /// New entries, without blocking: the back lane first.
    pub(super) async fn read_new(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut c = self.conn().await?;
        let r = self
            .read_script
            // back, hi, lo: the lanes in read order.
            .key(&self.lane_keys(queue)[..])
            .arg(GROUP)
            .arg(consumer)
            .arg(max)
            .arg(self.key("result:"))
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
        for chunk in flat.chunks(5) {
            let [lane, id, before, has_job, job] = chunk else {
                continue;
            };
            let lane = usize::try_from(reply::count(lane))
                .unwrap_or(usize::MAX)
                .min(LANES.len() - 1);
            let id = reply::string(id).unwrap_or_default();
            let before = u32::try_from(reply::count(before)).unwrap_or(u32::MAX);
            let job = (reply::count(has_job) == 1).then(|| reply::bytes_or_empty(job));
            read.sort(lane, id, before, job);
        }
        Ok(self.keep_jobs(queue, read).await)
    }

    /// Waits up to `wait` for one new entry on any lane, on the consumer's
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
            .arg(&self.lane_keys(queue)[..])
            .arg(">")
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
        let keys = self.lane_keys(queue);
        let mut read = Read::default();
        let mut answered_back = Vec::new();
        for (key, entries) in reply::stream_reply(reply) {
            let lane = keys
                .iter()
                .position(|k| *k == key)
                .unwrap_or(LANES.len() - 1);
            for (id, fields) in entries {
                let before = reply::field(&fields, "d")
                    .and_then(|b| String::from_utf8_lossy(&b).parse().ok())
                    .unwrap_or(0);
                if lane == BACK {
                    if let Some(rid) = reply::field(&fields, "rid") {
                        answered_back
                            .push((id.clone(), String::from_utf8_lossy(&rid).into_owned()));
                    }
                }
                read.sort(lane, id, before, reply::field(&fields, "job"));
            }
        }
        if !answered_back.is_empty() {
            self.drop_answered(queue, &mut read, &answered_back).await?;
        }
        Ok(self.keep_jobs(queue, read).await)
    }

    /// Jobs of the back lane whose result is stored already (their
    /// dispatcher answered through another stream) are acknowledged and
    /// deleted instead of run again: `read.lua` does this for reads that do
    /// not block, this for the blocking read.
    async fn drop_answered(
        &self,
        queue: &str,
        read: &mut Read,
        back: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut p = redis::pipe();
        for (_, rid) in back {
            p.cmd("EXISTS").arg(self.result_key(rid));
        }
        let mut c = self.conn().await?;
        let exists: Vec<i64> = p.query_async(&mut c).await.map_err(unavailable)?;
        let answered: Vec<&str> = back
            .iter()
            .zip(exists)
            .filter(|(_, n)| *n == 1)
            .map(|((id, _), _)| id.as_str())
            .collect();
        if answered.is_empty() {
            return Ok(());
        }
        let mut p = redis::pipe();
        p.atomic();
        for id in &answered {
            self.remove_entry_cmds(&mut p, queue, BACK, id);
        }
        p.query_async::<()>(&mut c).await.map_err(unavailable)?;
        read.jobs
            .retain(|e| !(e.lane == BACK && answered.contains(&e.id.as_str())));
        Ok(())
    }

    /// A blocking read on the lanes may return one entry from each; beyond
    /// `max`, keep the first lanes' and hand the others back, uncounted, to
    /// the back lane.
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
        let mut p = redis::pipe();
        p.atomic();
        for e in extra {
            let before = e.job.deliveries.saturating_sub(1);
            let mut job = e.job;
            job.deliveries = 0;
            p.cmd("XADD")
                .arg(self.lane_key(queue, BACK))
                .arg("*")
                .arg("job")
                .arg(job.encode_to_vec())
                .arg("rid")
                .arg(&job.request_id)
                .arg("d")
                .arg(before)
                .ignore();
            self.remove_entry_cmds(&mut p, queue, e.lane, &e.id);
        }
        let mut c = self.conn().await?;
        p.query_async::<()>(&mut c).await.map_err(unavailable)?;
        Ok(got)
    }

    /// Moves held entries to the back lane (`return.lua`): those of
    /// `consumer`, or with `consumer` empty, those of anyone idle at least
    /// `idle` (a dead queue instance's). (moved, dropped as answered).
    pub(super) async fn hand_back(
        &self,
        queue: &str,
        consumer: &str,
        idle: u64,
    ) -> Result<(usize, usize), StoreError> {
        let mut c = self.conn().await?;
        let r = self
            .return_script
            // back, hi, lo: the lanes in read order.
            .key(&self.lane_keys(queue)[..])
            .arg(GROUP)
            .arg(consumer)
            .arg(idle)
            .arg(TAKEOVER_BATCH)
            .arg(self.key("result:"))
            .invoke_async::<Vec<i64>>(&mut c)
            .await;
        match r {
            Ok(v) => Ok((
                v.first().copied().unwrap_or(0).max(0) as usize,
                v.get(1).copied().unwrap_or(0).max(0) as usize,
            )),
            Err(e) if is_nogroup(&e) => {
                self.forget_groups(queue, &e);
                Ok((0, 0))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Takes over, in full, the holds of queue instances that stopped
    /// renewing them (idle past `reclaim_idle`): moved to the back lane,
    /// where the next free credit of any instance takes them. At most once
    /// per reclaim interval per queue in this instance, unless the last
    /// takeover was a full batch (more may wait).
    pub(super) async fn take_over(&self, queue: &str) -> Result<(), StoreError> {
        {
            let mut due = self.takeover_due.lock();
            let at = due.entry(queue.to_string()).or_insert_with(Instant::now);
            if Instant::now() < *at {
                return Ok(());
            }
            *at = Instant::now() + self.reclaim_interval();
        }
        let idle = self.opts.reclaim_idle.as_millis() as u64;
        let (moved, dropped) = self.hand_back(queue, "", idle).await?;
        if moved + dropped >= TAKEOVER_BATCH {
            self.takeover_due
                .lock()
                .insert(queue.to_string(), Instant::now());
        }
        if moved + dropped > 0 {
            metrics::queue::REDELIVERED
                .with_label_values(&[queue])
                .inc_by((moved + dropped) as u64);
            tracing::warn!(
                queue,
                moved,
                answered = dropped,
                "took over the jobs of a queue instance that stopped renewing them"
            );
        }
        Ok(())
    }

    pub(super) fn reclaim_interval(&self) -> Duration {
        (self.opts.reclaim_idle / 4).clamp(Duration::from_millis(50), Duration::from_millis(500))
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
            self.take_over(queue).await?;
            let mut entries = self.read_new(queue, consumer, max).await?;
            if entries.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Vec::new());
                }
                // Wake up in time for the next takeover: a dead instance's
                // jobs must not wait for a quiet queue's long poll.
                let got = self
                    .read_blocking(queue, consumer, left.min(self.reclaim_interval()))
                    .await?;
                entries = self.give_back_extra(queue, got, max).await?;
            }
            if entries.is_empty() {
                continue;
            }
            let mut out = Vec::with_capacity(entries.len());
            for e in entries {
                if e.job.deliveries > self.jobs.max_deliveries {
                    let reason = format!(
                        "given up after {} deliveries without a result",
                        self.jobs.max_deliveries
                    );
                    self.dead_letter(queue, &e, &reason).await?;
                    continue;
                }
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
