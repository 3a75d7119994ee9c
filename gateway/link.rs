//! [`RemoteQueueLink`]: the gateway's link to the queue service over gRPC (a
//! split deployment), for synchronous calls ([`QueueLink`]) and the PAI-EAS
//! queues ([`EasLink`]). `standalone` links in process instead
//! (`crate::standalone`).

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use std::future::Future;

use async_trait::async_trait;
use futures::StreamExt;
use thiserror::Error;
use tonic::Status;

use crate::backoff::Backoff;
use crate::proto::client::{ConnectError, QueueClient, QueueConnector};
use crate::proto::{
    unix_ms_now, AsyncAttributesReply, AsyncAttributesRequest, AsyncCommitReply,
    AsyncCommitRequest, AsyncGetReply, AsyncGetRequest, AsyncPutReply, AsyncPutRequest,
    AsyncSearchReply, AsyncSearchRequest, AsyncWatchRequest, CallError, CallRequest, EasLink,
    ItemStream, Job, JobResult, MarkSeenRequest, PingRequest, QueueLink, QueueStats, StatsRequest,
};

/// Why the queue endpoints cannot be used.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum EndpointError {
    #[error("no queue endpoints")]
    None,
    #[error(transparent)]
    Invalid(#[from] ConnectError),
}

/// gRPC client of one or more queue services. Calls go round-robin; when one
/// fails without a definite answer (unreachable, or the connection broke while
/// waiting: its instance died) the call is sent to the next instance under
/// the same request id. Storing is idempotent by request id, so the resend
/// joins the job already stored (or gets its kept result) and never runs it
/// a second time. When no instance answers, the call waits with backoff and
/// tries again until its deadline; only then is it refused (9702). An
/// instance that failed is tried last for a second.
pub struct RemoteQueueLink {
    instances: Vec<QueueInstance>,
    next: AtomicUsize,
    /// How long a `mark_seen` waits for an unreachable queue service.
    patience: Duration,
}

struct QueueInstance {
    url: String,
    client: QueueClient,
    down_until_ms: AtomicI64,
}

const SKIP_FAILED_MS: i64 = 1000;

/// Waits between rounds over the instances when none answered.
fn retry_pacing() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(1))
}

impl RemoteQueueLink {
    /// Connects lazily: the gateway starts even while the queue service is down
    /// (calls then get 9702 until it is up).
    pub fn new(endpoints: &[String], connector: &QueueConnector) -> Result<Self, EndpointError> {
        let mut instances = Vec::new();
        for url in endpoints {
            let ep = connector.endpoint(url, Duration::from_secs(2))?;
            instances.push(QueueInstance {
                url: url.clone(),
                client: connector
                    .client(ep.connect_lazy())
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
                down_until_ms: AtomicI64::new(0),
            });
        }
        if instances.is_empty() {
            return Err(EndpointError::None);
        }
        Ok(RemoteQueueLink {
            instances,
            next: AtomicUsize::new(0),
            patience: Duration::ZERO,
        })
    }

    /// Lets a `mark_seen` wait up to `patience` for the queue service to be
    /// reachable (the gateway's `MessageTimeout`); calls wait until their
    /// own deadline.
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// The instances' clients in the order to try them for one call.
    fn clients_in_order(&self) -> Vec<QueueClient> {
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
        let mut backoff = retry_pacing();
        loop {
            let last = match self.call_round(&job).await {
                Err(e) if e.is_retryable() => e,
                answered => return answered,
            };
            let delay = backoff.next_delay();
            let wait_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            if job.deadline_unix_ms <= 0
                || unix_ms_now().saturating_add(wait_ms) >= job.deadline_unix_ms
            {
                return Err(last);
            }
            tracing::debug!(error = %last, retry_in_ms = wait_ms, "no queue instance answered; waiting");
            tokio::time::sleep(delay).await;
        }
    }

    async fn mark_seen(&self, key: [u8; 32], ttl: Duration) -> Result<bool, CallError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let give_up = tokio::time::Instant::now() + self.patience;
        let mut backoff = retry_pacing();
        loop {
            let r = self
                .on_any(|mut c| async move {
                    c.mark_seen(MarkSeenRequest {
                        key: key.to_vec(),
                        ttl_ms,
                    })
                    .await
                })
                .await;
            match r {
                Ok(reply) => return Ok(reply.first),
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    let delay = backoff.next_delay();
                    if tokio::time::Instant::now() + delay >= give_up {
                        return Err(s.into());
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(s) => return Err(s.into()),
            }
        }
    }

    async fn ping(&self) -> Result<(), CallError> {
        self.on_any(|mut c| async move {
            let mut r = tonic::Request::new(PingRequest {});
            r.set_timeout(Duration::from_secs(1));
            c.ping(r).await
        })
        .await?;
        Ok(())
    }

    async fn stats(&self) -> Result<Vec<QueueStats>, CallError> {
        // Each instance knows only its own dispatchers: ask them all (a
        // second each) and add up; depths are the shared store's.
        let asks = self.instances.iter().map(|i| {
            let mut c = i.client.clone();
            async move {
                let mut r = tonic::Request::new(StatsRequest::default());
                r.set_timeout(Duration::from_secs(1));
                c.stats(r).await.map(|r| r.into_inner().queues)
            }
        });
        let mut merged: std::collections::BTreeMap<String, QueueStats> = Default::default();
        let mut last = None;
        for answer in futures::future::join_all(asks).await {
            match answer {
                Ok(queues) => {
                    for q in queues {
                        let m = merged.entry(q.queue.clone()).or_insert_with(|| QueueStats {
                            dispatchers: 0,
                            ..q.clone()
                        });
                        m.dispatchers = m.dispatchers.saturating_add(q.dispatchers);
                        // Every instance samples the same store: the most any wants.
                        m.desired_dispatchers = m.desired_dispatchers.max(q.desired_dispatchers);
                    }
                }
                Err(s) => last = Some(s),
            }
        }
        match (merged.is_empty(), last) {
            (true, Some(s)) => Err(s.into()),
            _ => Ok(merged.into_values().collect()),
        }
    }
}

impl RemoteQueueLink {
    /// One round of `call` over the instances, in order, until one answers
    /// definitely; the last failure when none did.
    async fn call_round(&self, job: &Job) -> Result<JobResult, CallError> {
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
            crate::proto::trace::TraceMetadata::of(job).write(request.metadata_mut());
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
            if !err.is_retryable() {
                return Err(err);
            }
            instance
                .down_until_ms
                .store(unix_ms_now() + SKIP_FAILED_MS, Ordering::Relaxed);
            tracing::warn!(queue_service = %instance.url, error = %err, "queue call failed; sending it to the next instance");
            last = err;
        }
        Err(last)
    }

    /// Runs `op` on the queue instances in turn until one answers with
    /// something other than UNAVAILABLE (the request did not reach it).
    async fn on_any<T, F, Fut>(&self, op: F) -> Result<T, Status>
    where
        F: Fn(QueueClient) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut last = Status::unavailable("no queue endpoints");
        for client in self.clients_in_order() {
            match op(client).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if s.code() == tonic::Code::Unavailable => last = s,
                Err(s) => return Err(s),
            }
        }
        Err(last)
    }
}

#[async_trait]
impl EasLink for RemoteQueueLink {
    async fn put(&self, r: AsyncPutRequest) -> Result<AsyncPutReply, Status> {
        self.on_any(|mut c| {
            let r = r.clone();
            async move { c.async_put(r).await }
        })
        .await
    }
    async fn get(&self, r: AsyncGetRequest) -> Result<AsyncGetReply, Status> {
        self.on_any(|mut c| {
            let r = r.clone();
            async move { c.async_get(r).await }
        })
        .await
    }
    async fn commit(&self, r: AsyncCommitRequest) -> Result<AsyncCommitReply, Status> {
        self.on_any(|mut c| {
            let r = r.clone();
            async move { c.async_commit(r).await }
        })
        .await
    }
    async fn attributes(&self, r: AsyncAttributesRequest) -> Result<AsyncAttributesReply, Status> {
        self.on_any(|mut c| {
            let r = r.clone();
            async move { c.async_attributes(r).await }
        })
        .await
    }
    async fn search(&self, r: AsyncSearchRequest) -> Result<AsyncSearchReply, Status> {
        self.on_any(|mut c| {
            let r = r.clone();
            async move { c.async_search(r).await }
        })
        .await
    }
    async fn watch(&self, r: AsyncWatchRequest) -> Result<ItemStream, Status> {
        let stream = self
            .on_any(|mut c| {
                let r = r.clone();
                async move { c.async_watch(r).await }
            })
            .await?;
        Ok(stream.boxed())
    }
}
