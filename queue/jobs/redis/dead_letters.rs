//! Dead letters on Redis: a job given up on goes to `dead:<queue>`, then is
//! completed with InferFail, which answers its callers; operators list and
//! re-queue them (`inferq dead-letters`).

use prost::Message;
use redis::Value;

use super::lease::Poison;
use super::*;

/// How a dead letter that was not a job is marked.
const NOT_A_JOB: &str = "not a job";

impl RedisJobStore {
    /// Dead-letters an entry that is not a job, as it is, and removes it
    /// from its lane (nobody waits for it: there is no request id to answer).
    pub(super) async fn bury(&self, queue: &str, p: &Poison) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.dead_letter_cmd(&mut pipe, queue, &p.raw, &format!("{NOT_A_JOB}: {}", p.why));
        self.remove_entry_cmds(&mut pipe, queue, p.lane, &p.id);
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c).await.map_err(unavailable)?;
        metrics::queue::DEAD_LETTERED
            .with_label_values(&[queue])
            .inc();
        Ok(())
    }

    /// Gives up on a job: dead letter, answer InferFail, acknowledge.
    pub(super) async fn dead_letter(
        &self,
        queue: &str,
        e: &Entry,
        reason: &str,
    ) -> Result<(), StoreError> {
        let result = JobResult::error(&e.job.request_id, self.jobs.dead_letter_code, reason);
        // The dead letter first: if completing then fails, the entry stays
        // held and is given up on again (a second dead letter, never none).
        let mut p = redis::pipe();
        self.dead_letter_cmd(&mut p, queue, &e.job.encode_to_vec(), reason);
        {
            let mut c = self.conn().await?;
            p.query_async::<()>(&mut c).await.map_err(unavailable)?;
        }
        self.finish(&[Finished {
            queue,
            lane: e.lane,
            entry: &e.id,
            request_id: &e.job.request_id,
            result: &result,
        }])
        .await?;
        metrics::queue::DEAD_LETTERED
            .with_label_values(&[queue])
            .inc();
        tracing::warn!(request_id = %e.job.request_id, queue, %reason, "job dead-lettered");
        Ok(())
    }

    /// Adds an entry to the queue's dead letters (the newest kept).
    fn dead_letter_cmd(&self, p: &mut redis::Pipeline, queue: &str, job: &[u8], reason: &str) {
        p.cmd("XADD")
            .arg(self.dead_key(queue))
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_LETTER_MAXLEN)
            .arg("*")
            .arg("job")
            .arg(job)
            .arg("reason")
            .arg(reason)
            .arg("at")
            .arg(unix_ms_now())
            .ignore();
    }

    pub(super) async fn list_dead(
        &self,
        queue: &str,
        max: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
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
            let Some((id, fields)) = reply::entry(e) else {
                continue;
            };
            let mut reason = reply::field(&fields, "reason")
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            // An entry that was not a job is listed with an empty job.
            let bytes = reply::field(&fields, "job").unwrap_or_default();
            let job = match Job::decode(bytes.as_slice()) {
                Ok(job) => job,
                Err(_) => {
                    if !reason.starts_with(NOT_A_JOB) {
                        reason = format!("{NOT_A_JOB} ({} bytes): {reason}", bytes.len());
                    }
                    Job::default()
                }
            };
            let at_unix_ms = reply::field(&fields, "at")
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

    pub(super) async fn requeue(&self, queue: &str, ids: &[String]) -> Result<usize, StoreError> {
        let dead = self.dead_letters(queue, 100_000).await?;
        // An entry that was not a job has nothing to run again.
        let chosen: Vec<DeadLetter> = dead
            .into_iter()
            .filter(|d| ids.is_empty() || ids.contains(&d.id))
            .filter(|d| !d.job.request_id.is_empty())
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
                    .arg("rid")
                    .arg(&job.request_id)
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
