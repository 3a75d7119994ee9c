//! [`RemoteDispatchLink`]: the dispatcher's link to the queue's `Dispatch`
//! stream over gRPC. `standalone` links in process instead
//! (`crate::standalone`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::proto::client::QueueConnector;
use crate::proto::{DispatchLink, DispatcherMessage, Inbound};

/// gRPC link; each `open` connects afresh, trying the endpoints in turn.
pub struct RemoteDispatchLink {
    endpoints: Vec<String>,
    connector: QueueConnector,
    next: AtomicUsize,
}

impl RemoteDispatchLink {
    pub fn new(endpoints: Vec<String>, connector: QueueConnector) -> Self {
        RemoteDispatchLink {
            endpoints,
            connector,
            next: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl DispatchLink for RemoteDispatchLink {
    async fn open(
        &self,
        outbound: tokio::sync::mpsc::Receiver<DispatcherMessage>,
    ) -> Result<Inbound, Status> {
        if self.endpoints.is_empty() {
            return Err(Status::failed_precondition("no queue endpoints configured"));
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        let url = &self.endpoints[i];
        let endpoint = self
            .connector
            .endpoint(url, Duration::from_secs(3))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("connect to {url}: {e}")))?;
        let mut client = self.connector.client(channel);
        let response = client.dispatch(ReceiverStream::new(outbound)).await?;
        Ok(response.into_inner().boxed())
    }

    fn describe(&self) -> String {
        self.endpoints.join(",")
    }
}
