//! Waking callers: each queue instance subscribes to its own `done:` channel,
//! where completions publish results; after (re)subscribing it looks up the
//! stored results of every caller still waiting, so a notification lost while
//! the subscription was down costs nothing.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio_util::sync::CancellationToken;

use super::*;

impl RedisJobStore {
    /// Receives results for callers waiting in this instance.
    pub(super) async fn subscribe_results(self: Arc<Self>, stop: CancellationToken) {
        let channel = self.done_channel(&self.jobs.instance_id);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
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

    pub(super) async fn sweep_waiters(&self) {
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
