//! `inferq autoscale N`: scaling without Kubernetes. Runs `inferq dispatcher
//! N` processes, as many as queue N's desired count (`Server.Autoscale`,
//! computed by the queue service and read over gRPC `Stats`), scale to zero
//! included: the first job queued raises the count from 0 at the next poll.
//! Scaling down drains (SIGTERM); SIGTERM to this process drains them all.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::{QueueEndpointArgs, SettingsArgs};
use crate::config::Settings;
use crate::gateway::link::RemoteQueueLink;
use crate::proto::eas::input_queue_name;
use crate::proto::QueueLink;
use crate::serve;
use crate::supervisor::{ChildSpec, DispatcherPool};

#[derive(Debug, Args)]
pub struct AutoscaleArgs {
    /// Queue number N: the dispatchers run `inferq dispatcher N`.
    #[arg(value_name = "N", default_value_t = 0)]
    pub queue_no: u32,
    /// Follow this asynchronous service's input queue instead of queue N's
    /// (its dispatchers still run `dispatcher N`, which serves the service
    /// when it holds the service's model).
    #[arg(long, value_name = "SERVICE")]
    pub service: Option<String>,
    /// Milliseconds between two reads of the desired count.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub poll_ms: u64,
    /// `host:port` for the first dispatcher's metrics; the k-th takes port + k
    /// (default: none served).
    #[arg(long, value_name = "HOST:PORT")]
    pub dispatcher_metrics: Option<String>,
    /// Jobs each dispatcher holds (overrides Server.MaxWorkers).
    #[arg(long)]
    pub max_workers: Option<u32>,
    #[command(flatten)]
    pub queues: QueueEndpointArgs,
}

pub async fn run(
    from: &SettingsArgs,
    settings: Settings,
    args: AutoscaleArgs,
) -> anyhow::Result<()> {
    if settings.server.autoscale().is_none() {
        anyhow::bail!(
            "Server.Autoscale is not set: the queue service computes the desired count from it \
             (e.g. \"-Dmin=0 -Dmax=10 -Dstrategies.queue[avgbacklog]=10\")"
        );
    }
    let queue = match &args.service {
        Some(service) => input_queue_name(service),
        None => settings.server.queue(args.queue_no),
    };
    let endpoints = args.queues.or_settings(&settings);
    let connector = super::queue_connector(&settings, &endpoints)?;
    let link = RemoteQueueLink::new(&endpoints, &connector).context("Server.QueueEndpoints")?;
    let spec = child_spec(from, &settings, &args, &endpoints)?;
    let mut pool = DispatcherPool::new(spec);
    let stop = serve::shutdown_token();
    let mut tick = tokio::time::interval(Duration::from_millis(args.poll_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut desired = 0usize;
    tracing::info!(%queue, queue_service = ?endpoints, "autoscale: following the queue's desired dispatchers");
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match link.stats().await {
            Ok(stats) => match stats.iter().find(|s| s.queue == queue) {
                Some(s) => match s.desired_dispatchers {
                    Some(d) => desired = d as usize,
                    None => {
                        tracing::warn!(%queue, "autoscale: the queue service has no Server.Autoscale; keeping the count")
                    }
                },
                // The queue has never held a job nor had a dispatcher: none wanted.
                None => desired = 0,
            },
            Err(e) => {
                tracing::warn!(error = %e, "autoscale: no desired count from the queue service; keeping the count")
            }
        }
        let before = pool.size();
        pool.follow(desired);
        let after = pool.size();
        if after != before {
            tracing::info!(%queue, desired, running = after.running, draining = after.draining, "autoscale: dispatchers");
        }
    }
    tracing::info!(
        running = pool.size().running,
        "autoscale: draining every dispatcher"
    );
    pool.stop().await;
    Ok(())
}

/// How a child is started: this binary, the same settings, `dispatcher N`.
fn child_spec(
    from: &SettingsArgs,
    settings: &Settings,
    args: &AutoscaleArgs,
    endpoints: &[String],
) -> anyhow::Result<ChildSpec> {
    let program = std::env::current_exe().context("this program's path")?;
    let mut child_args = vec!["--yaml".to_string(), from.yaml.display().to_string()];
    if let Some(service) = &from.eas_service {
        child_args.extend(["--eas-service".to_string(), service.display().to_string()]);
    }
    child_args.extend(["dispatcher".to_string(), args.queue_no.to_string()]);
    for url in endpoints {
        child_args.extend(["--queue-endpoint".to_string(), url.clone()]);
    }
    if let Some(n) = args.max_workers {
        child_args.extend(["--max-workers".to_string(), n.to_string()]);
    }
    let metrics_base = match &args.dispatcher_metrics {
        None => None,
        Some(addr) => {
            let (host, port) = addr
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                .with_context(|| format!("--dispatcher-metrics {addr:?}: host:port"))?;
            Some((host, port))
        }
    };
    Ok(ChildSpec {
        program,
        args: child_args,
        metrics_base,
        node_prefix: format!("{}-as", serve::default_node_id()),
        drain_timeout: settings.server.drain_timeout(),
    })
}
