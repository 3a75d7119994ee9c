//! `inferq dispatcher N` (go-infer's `server N`): a node holding the models,
//! serving job queue N (and the PAI-EAS services whose model it holds) over
//! gRPC Dispatch streams, with `/metrics`, `/healthz` and `/readyz` on the
//! side.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::QueueEndpointArgs;
use crate::config::Settings;
use crate::dispatcher::nodes::eas_nodes;
use crate::dispatcher::{DispatcherNode, NodeOptions, RemoteDispatchLink};
use crate::model_zoo::{self, ModelFactory};
use crate::proto::DispatchLink;
use crate::serve;

#[derive(Debug, Args)]
pub struct DispatcherArgs {
    /// Queue number N (serves `QueueName` + N), as go-infer's `server N`.
    #[arg(value_name = "N")]
    pub queue_no: Option<u32>,
    /// Queue number N (same as the positional N).
    #[arg(long = "queue", value_name = "N")]
    pub queue: Option<u32>,
    /// Jobs held at once (overrides Server.MaxWorkers).
    #[arg(long)]
    pub max_workers: Option<u32>,
    /// Where to serve /metrics, /healthz and /readyz (overrides Server.DispatcherMetricsListen).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Node name reported to the queue (default: hostname-pid).
    #[arg(long)]
    pub node_id: Option<String>,
    #[command(flatten)]
    pub queues: QueueEndpointArgs,
}

pub async fn run(
    settings: Settings,
    factory: &ModelFactory,
    args: DispatcherArgs,
) -> anyhow::Result<()> {
    let queue_no = args.queue.or(args.queue_no).unwrap_or(0);
    let max_workers = args.max_workers.unwrap_or(settings.server.max_workers);
    if max_workers == 0 {
        anyhow::bail!("--max-workers must be at least 1");
    }
    let models = Arc::new(model_zoo::build(factory, &settings, true).context("models")?);
    let model_servers = crate::dispatcher::ModelServers::start(&models);
    let endpoints = args.queues.or_settings(&settings);
    let connector = super::queue_connector(&settings, &endpoints)?;
    let tls = serve::tls::ListenerTls::load(&settings.tls)?;
    let metrics_addr = args
        .metrics_listen
        .clone()
        .unwrap_or_else(|| settings.server.dispatcher_metrics_listen.clone());
    let stop = serve::shutdown_token();
    let node_id = args.node_id.unwrap_or_else(serve::default_node_id);
    let opts = NodeOptions::from_settings(&settings, queue_no, node_id.clone(), max_workers);
    tracing::info!(queue = %opts.queue, max_workers, queue_service = ?endpoints, "dispatcher starting");
    let link = || -> Arc<dyn DispatchLink> {
        Arc::new(RemoteDispatchLink::new(
            endpoints.clone(),
            connector.clone(),
        ))
    };
    let mut nodes = vec![Arc::new(DispatcherNode::new(
        Arc::clone(&models),
        opts,
        link(),
    ))];
    nodes.extend(eas_nodes(&settings, &models, &node_id, link));
    if !metrics_addr.is_empty() {
        let listener = serve::bind("dispatcher-metrics", &metrics_addr).await?;
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(crate::metrics::handler))
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            .route(
                "/readyz",
                axum::routing::get(readiness).with_state(nodes.clone()),
            );
        tokio::spawn(serve::serve_connections(
            "dispatcher-metrics",
            listener,
            app,
            serve::ConnectionLimits::public(&settings, 1),
            tls.public(),
            stop.clone(),
        ));
    }
    let runs: Vec<_> = nodes
        .into_iter()
        .map(|n| tokio::spawn(n.run(stop.clone())))
        .collect();
    for r in runs {
        let _ = r.await;
    }
    model_servers.stop().await;
    Ok(())
}

/// `/readyz`: 200 while every node has a stream to the queue (which it
/// opens only while its model servers answer); else 503 naming the queues
/// it has none for. Models are initialised before this listens; `/healthz`
/// says only that the process answers.
async fn readiness(
    axum::extract::State(nodes): axum::extract::State<Vec<Arc<DispatcherNode>>>,
) -> (axum::http::StatusCode, String) {
    let down: Vec<&str> = nodes
        .iter()
        .filter(|n| !n.is_connected())
        .map(|n| n.queue())
        .collect();
    if down.is_empty() {
        (axum::http::StatusCode::OK, "ok".into())
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("no stream to the queue for: {}", down.join(", ")),
        )
    }
}
