//! `inferq standalone`: gateway, queue and dispatchers in one process.
//!
//! This is the one place that wires the three components together: the
//! gateway's [`QueueLink`] and [`EasLink`] and the dispatchers'
//! [`DispatchLink`] are in-process adapters to the same [`QueueService`],
//! carrying the same protobuf messages as the gRPC links, so the semantics
//! (credits, redelivery, expiry) are those of the split deployment, without
//! sockets or serialisation.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use clap::Args;
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::cli::PortArgs;
use crate::config::Settings;
use crate::dispatcher::nodes::eas_nodes;
use crate::dispatcher::{DispatcherNode, NodeOptions};
use crate::gateway::server;
use crate::gateway::Gateway;
use crate::model_zoo::{self, ModelFactory};
use crate::proto::{
    AsyncAttributesReply, AsyncAttributesRequest, AsyncCommitReply, AsyncCommitRequest,
    AsyncGetReply, AsyncGetRequest, AsyncPutReply, AsyncPutRequest, AsyncSearchReply,
    AsyncSearchRequest, AsyncWatchRequest, CallError, DispatchLink, DispatcherMessage, EasLink,
    Inbound, ItemStream, Job, JobResult, QueueLink, QueueStats,
};
use crate::queue::eas::{api, EasQueues};
use crate::queue::{build, QueueService};
use crate::serve;

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    #[command(flatten)]
    pub ports: PortArgs,
    /// Jobs the dispatcher holds at once (overrides Server.MaxWorkers).
    #[arg(long)]
    pub max_workers: Option<u32>,
}

/// The gateway's calls, in process.
pub struct LocalQueueLink(pub Arc<QueueService>);

#[async_trait]
impl QueueLink for LocalQueueLink {
    async fn call(&self, job: Job) -> Result<JobResult, CallError> {
        self.0.call(job).await
    }

    async fn mark_seen(&self, key: [u8; 32], ttl: Duration) -> Result<bool, CallError> {
        self.0.mark_seen(&key, ttl).await
    }

    async fn ping(&self) -> Result<(), CallError> {
        Ok(self.0.ping().await?)
    }

    async fn stats(&self) -> Result<Vec<QueueStats>, CallError> {
        Ok(self.0.stats(None).await?)
    }
}

/// The gateway's PAI-EAS operations, in process.
pub struct LocalEasLink(pub Arc<EasQueues>);

#[async_trait]
impl EasLink for LocalEasLink {
    async fn put(&self, r: AsyncPutRequest) -> Result<AsyncPutReply, Status> {
        api::put(&self.0, r).await
    }
    async fn get(&self, r: AsyncGetRequest) -> Result<AsyncGetReply, Status> {
        api::get(&self.0, r).await
    }
    async fn commit(&self, r: AsyncCommitRequest) -> Result<AsyncCommitReply, Status> {
        api::commit(&self.0, r).await
    }
    async fn attributes(&self, r: AsyncAttributesRequest) -> Result<AsyncAttributesReply, Status> {
        api::attributes(&self.0, r).await
    }
    async fn search(&self, r: AsyncSearchRequest) -> Result<AsyncSearchReply, Status> {
        api::search(&self.0, r).await
    }
    async fn watch(&self, r: AsyncWatchRequest) -> Result<ItemStream, Status> {
        api::watch(&self.0, r).await
    }
}

/// A dispatcher's Dispatch stream, in process: same messages, no sockets.
pub struct LocalDispatchLink(pub Arc<QueueService>);

#[async_trait]
impl DispatchLink for LocalDispatchLink {
    async fn open(
        &self,
        outbound: tokio::sync::mpsc::Receiver<DispatcherMessage>,
    ) -> Result<Inbound, Status> {
        let inbound = ReceiverStream::new(outbound).map(Ok).boxed();
        Ok(ReceiverStream::new(self.0.dispatch(inbound)).boxed())
    }

    fn describe(&self) -> String {
        "in-process queue".into()
    }
}

pub async fn run(
    settings: Settings,
    factory: &ModelFactory,
    args: StandaloneArgs,
) -> anyhow::Result<()> {
    let store = settings.server.backend.store(true);
    let backend_stop = CancellationToken::new();
    let instance_id = format!("standalone-{}", uuid::Uuid::now_v7().simple());
    let service = build::queue_service(&settings, instance_id, store, &backend_stop)?;
    let gateway_models = model_zoo::build(factory, &settings, false).context("models")?;
    let node_models = Arc::new(model_zoo::build(factory, &settings, true).context("models")?);
    let model_servers = crate::dispatcher::ModelServers::start(&node_models);
    let link: Arc<dyn QueueLink> = Arc::new(LocalQueueLink(Arc::clone(&service)));
    let gateway = Arc::new(Gateway::new(&settings, gateway_models, link)?);
    let eas_link = service
        .eas()
        .map(|eas| Arc::new(LocalEasLink(Arc::clone(eas))) as Arc<dyn EasLink>);
    let eas = server::eas_api(&settings, &gateway, eas_link)?;
    let max_workers = args
        .max_workers
        .unwrap_or(settings.server.max_workers)
        .max(1);
    let stop = serve::shutdown_token();
    let nodes_stop = CancellationToken::new();
    let mut nodes = Vec::new();
    for n in 0..settings.server.request_queue_amount {
        let opts = NodeOptions::from_settings(
            &settings,
            n,
            format!("{}-q{n}", serve::default_node_id()),
            max_workers,
        );
        let node = Arc::new(DispatcherNode::new(
            Arc::clone(&node_models),
            opts,
            Arc::new(LocalDispatchLink(Arc::clone(&service))),
        ));
        nodes.push(tokio::spawn(node.run(nodes_stop.clone())));
    }
    for n in eas_nodes(&settings, &node_models, &serve::default_node_id(), || {
        Arc::new(LocalDispatchLink(Arc::clone(&service)))
    }) {
        nodes.push(tokio::spawn(n.run(nodes_stop.clone())));
    }
    tracing::info!(models = ?gateway.paths(), max_workers, "standalone starting");
    // Requests in flight are answered before the dispatchers drain.
    server::serve(gateway, eas, &settings, args.ports.ports(), stop).await?;
    nodes_stop.cancel();
    for n in nodes {
        let _ = n.await;
    }
    model_servers.stop().await;
    backend_stop.cancel();
    Ok(())
}
