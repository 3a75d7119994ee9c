//! `inferq gateway` (go-infer's `http`): the REST and gRPC front door of a
//! split deployment, calling the queue instances over gRPC.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::{queue_connector, PortArgs, QueueEndpointArgs};
use crate::config::Settings;
use crate::gateway::server;
use crate::gateway::{Gateway, RemoteQueueLink};
use crate::model_zoo::{self, ModelFactory};
use crate::proto::{EasLink, QueueLink};

#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub ports: PortArgs,
    #[command(flatten)]
    pub queues: QueueEndpointArgs,
}

pub async fn run(
    settings: Settings,
    factory: &ModelFactory,
    args: GatewayArgs,
) -> anyhow::Result<()> {
    let models = model_zoo::build(factory, &settings, false).context("models")?;
    let endpoints = args.queues.or_settings(&settings);
    let connector = queue_connector(&settings, &endpoints)?;
    let remote = Arc::new(
        RemoteQueueLink::new(&endpoints, &connector)?
            .with_patience(settings.server.message_timeout()),
    );
    let link: Arc<dyn QueueLink> = remote.clone();
    let gateway = Arc::new(Gateway::new(&settings, models, link)?);
    let eas = server::eas_api(&settings, &gateway, Some(remote as Arc<dyn EasLink>))?;
    tracing::info!(queues = ?endpoints, models = ?gateway.paths(), "gateway starting");
    let stop = crate::serve::shutdown_token();
    server::serve(gateway, eas, &settings, args.ports.ports(), stop).await
}
