//! `inferq gateway` (go-infer's `http`): the REST and gRPC front door of a
//! split deployment, calling the queue instances over gRPC.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::config::Settings;
use crate::gateway::server::{self, Ports};
use crate::gateway::{Gateway, RemoteQueueLink};
use crate::model_zoo::{self, ModelFactory};
use crate::proto::{EasLink, QueueLink};

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// REST port (overrides API.Port; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Public gRPC port (overrides API.GrpcPort; 0 picks a free one).
    #[arg(long)]
    pub grpc_port: Option<u16>,
    /// Queue service URL (repeatable; overrides Server.QueueEndpoints).
    #[arg(long = "queue-endpoint")]
    pub queue_endpoints: Vec<String>,
}

pub async fn run(
    settings: Settings,
    factory: &ModelFactory,
    args: GatewayArgs,
) -> anyhow::Result<()> {
    let models = model_zoo::build(factory, &settings, false).context("models")?;
    let endpoints = super::endpoints(&settings, &args.queue_endpoints);
    let remote = Arc::new(RemoteQueueLink::new(&endpoints)?);
    let link: Arc<dyn QueueLink> = remote.clone();
    let gateway = Arc::new(Gateway::new(&settings, models, link)?);
    let eas = server::eas_api(&settings, &gateway, Some(remote as Arc<dyn EasLink>))?;
    tracing::info!(queues = ?endpoints, models = ?gateway.paths(), "gateway starting");
    let stop = crate::serve::shutdown_token();
    let ports = Ports {
        http: args.port,
        grpc: args.grpc_port,
    };
    server::serve(gateway, eas, &settings, ports, stop).await
}
