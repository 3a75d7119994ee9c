//! [`EasInput`]: a PAI-EAS service's input queue as a `Dispatch` session's
//! [`JobSource`]. Completing an item removes it from the input and writes its
//! result to the sink in one store operation; while the sink is full (and
//! does not evict) no input item is handed out (backpressure).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::service::{EasError, EasQueues};
use super::store::{wait_for_change, Completion, Item, NewItem, QueueRef, TakeOptions};
use crate::config::ServiceSpec;
use crate::proto::eas::{input_queue_name, sink_payload, REQUEST_ID_TAG};
use crate::proto::{job_result, Job, JobResult};
use crate::queue::error::StoreError;
use crate::queue::source::{JobSource, Lease};

impl EasQueues {
    /// The job source of a `Dispatch` session for `service`'s input.
    pub fn input_source(self: &Arc<Self>, service: &str) -> Result<EasInput, EasError> {
        let spec = self.service(service)?.clone();
        Ok(EasInput {
            queues: Arc::clone(self),
            spec,
            queue: input_queue_name(service),
        })
    }
}

/// The input queue of one service, as a `Dispatch` session's job source.
pub struct EasInput {
    pub(super) queues: Arc<EasQueues>,
    pub(super) spec: ServiceSpec,
    /// The Hello's queue name (`async:<service>`).
    pub(super) queue: String,
}

impl EasInput {
    fn input(&self) -> QueueRef {
        QueueRef::input(&self.spec.name)
    }

    fn job(&self, item: Item) -> Job {
        Job {
            request_id: item.request_id,
            queue: self.queue.clone(),
            api_path: self.spec.model.clone(),
            params_json: item.data,
            deadline_unix_ms: 0,
            deliveries: item.deliveries,
            priority: item.priority,
            reply_to: String::new(),
            from_payload: true,
            join_only: false,
            ..Job::default()
        }
    }

    fn completion(&self, lease: &Lease, result: &JobResult) -> Completion {
        let index = lease.tag.parse().unwrap_or(0);
        let rid = lease.job.request_id.clone();
        let mut tags = BTreeMap::new();
        tags.insert(REQUEST_ID_TAG.to_string(), rid.clone());
        let data = match &result.outcome {
            // The sink is turned off (memory_ratio 0): results are dropped.
            _ if !self.spec.sink.enabled => None,
            Some(job_result::Outcome::OutputJson(out)) => sink_payload(out),
            // A model server's response, as it is; empty: nothing to write.
            Some(job_result::Outcome::OutputBytes(out)) if out.is_empty() => None,
            Some(job_result::Outcome::OutputBytes(out)) => Some(out.clone()),
            Some(job_result::Outcome::Error(e)) => {
                tags.insert("code".into(), e.code.to_string());
                serde_json::to_vec(&serde_json::json!({"code": e.code, "msg": e.message})).ok()
            }
            None => None,
        };
        Completion {
            index,
            result: data.map(|data| NewItem {
                request_id: rid,
                tags,
                data,
                priority: 0,
            }),
        }
    }
}

#[async_trait]
impl JobSource for EasInput {
    async fn lease(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Lease>, StoreError> {
        let store = &self.queues.store;
        let q = self.input();
        let opts = TakeOptions {
            from: 0,
            max,
            tags: BTreeMap::new(),
            auto_commit: false,
            sink_room: true,
        };
        let until = Instant::now() + wait;
        let signal = store.signal(&q);
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let items = store.take(&q, consumer, &opts, &self.spec.sink).await?;
            if !items.is_empty() {
                let mut leases = Vec::with_capacity(items.len());
                let mut dead = Vec::new();
                for item in items {
                    let tag = item.index.to_string();
                    let over = item.deliveries > self.queues.codes.max_deliveries;
                    let lease = Lease {
                        job: self.job(item),
                        tag,
                    };
                    if over {
                        tracing::error!(request_id = %lease.job.request_id, deliveries = lease.job.deliveries, "asynchronous item delivered too often without an answer; its error goes to the sink");
                        let r = JobResult::error(
                            &lease.job.request_id,
                            self.queues.codes.dead_letter,
                            format!(
                                "given up after {} deliveries without an answer",
                                lease.job.deliveries - 1
                            ),
                        );
                        dead.push((lease, r));
                    } else {
                        leases.push(lease);
                    }
                }
                if !dead.is_empty() {
                    self.complete_batch(&dead).await?;
                }
                if !leases.is_empty() {
                    return Ok(leases);
                }
                continue;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            wait_for_change(notified, store.poll_interval(), left).await;
        }
    }

    async fn complete_batch(&self, done: &[(Lease, JobResult)]) -> Result<(), StoreError> {
        let completions: Vec<Completion> =
            done.iter().map(|(l, r)| self.completion(l, r)).collect();
        self.queues
            .store
            .complete(&self.spec.name, &completions)
            .await
    }

    async fn release(&self, consumer: &str) -> Result<usize, StoreError> {
        Ok(self.queues.store.release(&self.input(), consumer).await? as usize)
    }
}
