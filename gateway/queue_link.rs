//! How the gateway reaches the queue service: [`RemoteQueueLink`] over gRPC
//! (split deployment), [`LocalQueueLink`] in process (standalone).

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

/// gRPC client of one or more queue services (requests are spread over them;
/// an unreachable one is skipped by the balancer).
pub struct RemoteQueueLink {
    client: QueueServiceClient<Channel>,
}

impl RemoteQueueLink {
    /// Connects lazily: the gateway starts even while the queue service is down
    /// (calls then get 9702 until it is up).
    pub fn new(endpoints: &[String]) -> Result<Self, String> {
        let mut eps = Vec::new();
        for url in endpoints {
            let ep = Endpoint::from_shared(url.clone())
                .map_err(|e| format!("queue endpoint {url}: {e}"))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true);
            eps.push(ep);
        }
        let channel = match eps.len() {
            0 => return Err("no queue endpoints".into()),
            1 => eps.remove(0).connect_lazy(),
            _ => Channel::balance_list(eps.into_iter()),
        };
        Ok(RemoteQueueLink {
            client: QueueServiceClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        })
    }
}

#[async_trait]
impl QueueLink for RemoteQueueLink {
    async fn call(&self, job: Job) -> Result<JobResult, CallError> {
        let left = (job.deadline_unix_ms - unix_ms_now()).max(0) as u64;
        let mut request = tonic::Request::new(CallRequest { job: Some(job) });
        // A little past the job's own deadline, so the queue's answer wins.
        request.set_timeout(Duration::from_millis(left + 1000));
        let reply = self.client.clone().call(request).await?;
        reply
            .into_inner()
            .result
            .ok_or_else(|| CallError::ResultLost("empty reply from the queue".into()))
    }
}
