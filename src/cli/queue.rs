//! `inferq queue`: one queue instance of a split deployment, serving
//! `inferq.v1.QueueService` to gateways and dispatchers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::config::{Settings, StoreKind};
use crate::proto::client::InternalToken;
use crate::queue::build;
use crate::serve;

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// host:port to listen on (overrides Server.QueueListen).
    #[arg(long)]
    pub listen: Option<String>,
    /// Where to serve /metrics, /healthz and /readyz (overrides
    /// Server.QueueMetricsListen).
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

pub async fn run(settings: Settings, args: QueueArgs) -> anyhow::Result<()> {
    let store = settings.server.backend.store(false);
    if store == StoreKind::Memory {
        tracing::warn!("Server.Backend is memory: jobs do not survive a restart of this process, and only this one queue instance can serve them");
    }
    let instance_id = format!("queue-{}", uuid::Uuid::now_v7().simple());
    let stop = serve::shutdown_token();
    let service = build::queue_service(&settings, instance_id, store, &stop)?;
    if let Some(policy) = settings.server.autoscale() {
        tracing::info!(
            ?policy,
            "autoscaling: each queue's desired dispatchers follow its backlog"
        );
        service.start_autoscaling(policy, stop.clone());
    }
    let addr = args
        .listen
        .unwrap_or_else(|| settings.server.queue_listen.clone());
    let tls = serve::tls::ListenerTls::load(&settings.tls)?.internal();
    let token = InternalToken::new(&settings.server.internal_token)?;
    let loopback = super::is_loopback_listen(&addr);
    if !token.is_set() && !loopback {
        tracing::warn!(%addr, "no Server.InternalToken: any client that reaches this address can take and answer jobs");
    }
    if tls.is_none() && !loopback {
        tracing::warn!(%addr, "the queue serves plain text on a non-loopback address: set TLS.CertFile");
    }
    let metrics_addr = args
        .metrics_listen
        .unwrap_or_else(|| settings.server.queue_metrics_listen.clone());
    if !metrics_addr.is_empty() {
        let listener = serve::bind("queue-metrics", &metrics_addr).await?;
        tokio::spawn(serve::serve_connections(
            "queue-metrics",
            listener,
            crate::queue::grpc::admin_router(Arc::clone(&service)),
            serve::ConnectionLimits::public(&settings, 1),
            serve::tls::ListenerTls::load(&settings.tls)?.public(),
            stop.clone(),
        ));
    }
    let listener = serve::bind("queue-grpc", &addr).await?;
    let server = tokio::spawn(crate::queue::grpc::serve(
        service,
        listener,
        serve::ConnectionLimits::internal(&settings),
        crate::queue::grpc::Access { tls, token },
        stop.clone(),
    ));
    stop.cancelled().await;
    // Dispatch streams stay open until their dispatchers go; do not wait forever.
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(r) => r.context("queue server")?,
        Err(_) => tracing::warn!("streams still open after 5s; exiting"),
    }
    Ok(())
}
