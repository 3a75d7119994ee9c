//! `inferq dead-letters list | requeue`: the jobs given up on (Redis backend).

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{BackendChoice, Settings};
use crate::queue::build;
use crate::queue::jobs::JobStore;

#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    #[command(subcommand)]
    pub action: DeadLetterAction,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterAction {
    /// Print dead letters, oldest first: id, request id, API path, when, why.
    List {
        /// Queue number N (`QueueName` + N).
        #[arg(long, default_value_t = 0)]
        queue: u32,
        /// Most to print.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Put dead letters back in their queue (deadline and delivery count
    /// cleared; the result is kept for lookup by request id).
    Requeue {
        /// Queue number N (`QueueName` + N).
        #[arg(long, default_value_t = 0)]
        queue: u32,
        /// Every dead letter of the queue.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Dead-letter ids, as `list` prints them.
        ids: Vec<String>,
    },
}

pub async fn run(settings: Settings, args: DeadLettersArgs) -> anyhow::Result<()> {
    if settings.server.backend == BackendChoice::Memory {
        anyhow::bail!("Server.Backend is memory: dead letters live in the queue process and end with it; this command reads them from Redis");
    }
    let stop = CancellationToken::new();
    let instance_id = format!("cli-{}", uuid::Uuid::now_v7().simple());
    let backend = build::redis_job_store(&settings, &instance_id, stop.clone())?;
    let r = match args.action {
        DeadLetterAction::List { queue, max } => {
            let queue = settings.server.queue(queue);
            let dead = backend.dead_letters(&queue, max).await?;
            println!("# {} dead letters in {queue}", dead.len());
            println!("# id\trequest_id\tapi_path\tat_unix_ms\treason");
            for d in dead {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    d.id, d.job.request_id, d.job.api_path, d.at_unix_ms, d.reason
                );
            }
            Ok(())
        }
        DeadLetterAction::Requeue { queue, all, ids } => {
            if !all && ids.is_empty() {
                anyhow::bail!("name the dead letters to re-queue, or pass --all");
            }
            let queue = settings.server.queue(queue);
            let n = backend.requeue_dead(&queue, &ids).await?;
            println!("re-queued {n} jobs in {queue}");
            Ok(())
        }
    };
    stop.cancel();
    r
}
