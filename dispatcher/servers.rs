//! [`ModelServers`]: the supervisors of the model servers a dispatcher
//! process's models run in (the `http` processor's `Command`). They start
//! with the process, before its nodes take jobs, and stop after the nodes
//! have drained, so the jobs in hand are answered by a running server.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::model_zoo::ModelSet;

/// The running supervisors.
pub struct ModelServers {
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl ModelServers {
    /// Starts a supervisor for each model that runs in a server of its own.
    pub fn start(models: &ModelSet) -> Self {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for model in models.iter().filter(|m| m.served().is_some()) {
            let model = Arc::clone(model);
            let stop = stop.clone();
            tasks.spawn(async move {
                if let Some(server) = model.served() {
                    server.supervise(stop).await;
                }
            });
        }
        ModelServers { stop, tasks }
    }

    /// Stops the servers (each gets its grace period, then SIGKILL).
    pub async fn stop(mut self) {
        self.stop.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        let grace = crate::model_zoo::http::process::STOP_GRACE + Duration::from_secs(5);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("model servers did not stop in time");
        }
    }
}
