//! How the gateway reaches the queue service: [`RemoteQueueLink`] over gRPC
//! (split deployment), [`LocalQueueLink`] in process (standalone).

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::{Channel, Endpoint};

use crate::proto::queue_service_client::QueueServiceClient;
use crate::proto::{unix_ms_now, CallRequest, Job, JobResult};
use crate::queue::{CallError, QueueService};

#[async_trait]
pub trait QueueLink: Send + Sync + 'static {
    /// Enqueues `job` and waits for its result until `job.deadline_unix_ms`.
    async fn call(&self, job: Job) -> Result<JobResult, CallError>;
}

pub struct LocalQueueLink(pub Arc<QueueService>);

#[async_trait]
impl QueueLink for LocalQueueLink {
    async fn call(&self, job: Job) -> Result<JobResult, CallError> {
        self.0.call(job).await
    }
}

/// gRPC client of one or more queue services. Calls go round-robin; when one
/// fails without a definite answer (unreachable, or the connection broke while
/// waiting) the call is tried on the next instance, which stores the job again
/// under the same request id: at-least-once, and still one answer to the
/// client. An instance that failed is skipped for a second.
pub struct RemoteQueueLink {
    instances: Vec<QueueInstance>,
    next: AtomicUsize,
}

struct QueueInstance {
    url: String,
    client: QueueServiceClient<Channel>,
    down_until_ms: AtomicI64,
}

const SKIP_FAILED_MS: i64 = 1000;

impl RemoteQueueLink {
    /// Connects lazily: the gateway starts even while the queue service is down
    /// (calls then get 9702 until it is up).
    pub fn new(endpoints: &[String]) -> Result<Self, String> {
        let mut instances = Vec::new();
        for url in endpoints {
            let ep = Endpoint::from_shared(url.clone())
                .map_err(|e| format!("queue endpoint {url}: {e}"))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true);
            instances.push(QueueInstance {
                url: url.clone(),
                client: QueueServiceClient::new(ep.connect_lazy())
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
                down_until_ms: AtomicI64::new(0),
            });
        }
        if instances.is_empty() {
            return Err("no queue endpoints".into());
        }
        Ok(RemoteQueueLink {
            instances,
            next: AtomicUsize::new(0),
        })
    }

    /// The instances' clients in the order to try them for one call.
    pub(crate) fn clients_in_order(&self) -> Vec<QueueServiceClient<Channel>> {
        self.order()
            .into_iter()
            .map(|i| self.instances[i].client.clone())
            .collect()
    }

    /// The order to try instances in for one call: round-robin start, those
    /// that failed recently last.
    fn order(&self) -> Vec<usize> {
        let n = self.instances.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = unix_ms_now();
        let (mut up, down): (Vec<usize>, Vec<usize>) = (0..n)
            .map(|i| (start + i) % n)
            .partition(|&i| self.instances[i].down_until_ms.load(Ordering::Relaxed) <= now);
        up.extend(down);
        up
    }
}

#[async_trait]
impl QueueLink for RemoteQueueLink {
    async fn call(&self, job: Job) -> Result<JobResult, CallError> {
        let mut last = CallError::Unavailable("no queue endpoints".into());
        for i in self.order() {
            let instance = &self.instances[i];
            let left = job.deadline_unix_ms - unix_ms_now();
            if job.deadline_unix_ms > 0 && left <= 0 {
                return Err(CallError::DeadlineExceeded);
            }
            let mut request = tonic::Request::new(CallRequest {
                job: Some(job.clone()),
            });
            // A little past the job's own deadline, so the queue's answer wins.
            request.set_timeout(Duration::from_millis(left.max(0) as u64 + 1000));
            let err = match instance.client.clone().call(request).await {
                Ok(reply) => {
                    return reply
                        .into_inner()
                        .result
                        .ok_or_else(|| CallError::ResultLost("empty reply from the queue".into()))
                }
                Err(status) => CallError::from(status),
            };
            match err {
                CallError::Unavailable(_) | CallError::ResultLost(_) => {
                    instance
                        .down_until_ms
                        .store(unix_ms_now() + SKIP_FAILED_MS, Ordering::Relaxed);
                    tracing::warn!(queue_service = %instance.url, error = %err, "queue call failed; trying the next instance");
                    last = err;
                }
                definite => return Err(definite),
            }
        }
        Err(last)
    }
}
