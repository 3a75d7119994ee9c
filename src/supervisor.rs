//! [`DispatcherPool`]: the dispatcher processes `inferq autoscale` runs for
//! one queue, started and drained to follow a desired count.
//!
//! Scaling up starts `inferq dispatcher N` children; scaling down sends the
//! newest one SIGTERM, so it stops taking jobs and finishes those it holds
//! (`Server.DrainTimeout`) before it exits; the queue hands a drained
//! dispatcher's jobs to another only if it dies holding them. A child that
//! outlives its drain by [`KILL_MARGIN`] is killed. A child that exits on
//! its own is replaced, no sooner than a backoff allows (so a dispatcher
//! that cannot start does not spin).

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::backoff::Backoff;

/// How long past `DrainTimeout` a draining child may take before SIGKILL.
pub const KILL_MARGIN: Duration = Duration::from_secs(5);

/// How to start one dispatcher.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The program (this binary).
    pub program: PathBuf,
    /// Arguments before the per-child ones (settings and `dispatcher N`).
    pub args: Vec<String>,
    /// `host:port` of the first child's metrics; child k listens on port + k.
    pub metrics_base: Option<(String, u16)>,
    /// Node names are this plus `-k`.
    pub node_prefix: String,
    /// The children's `Server.DrainTimeout`.
    pub drain_timeout: Duration,
}

struct Running {
    slot: u16,
    child: Child,
    started: Instant,
}

/// A child that ran this long before it exited counts as a fresh failure
/// (the restart backoff starts again from its first delay).
const HEALTHY_RUN: Duration = Duration::from_secs(30);

struct Draining {
    slot: u16,
    child: Child,
    kill_at: Instant,
}

/// The children of one queue.
pub struct DispatcherPool {
    spec: ChildSpec,
    running: Vec<Running>,
    draining: Vec<Draining>,
    restart: Backoff,
    not_before: Instant,
}

/// How many children are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    pub running: usize,
    pub draining: usize,
}

impl DispatcherPool {
    pub fn new(spec: ChildSpec) -> Self {
        DispatcherPool {
            spec,
            running: Vec::new(),
            draining: Vec::new(),
            restart: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            not_before: Instant::now(),
        }
    }

    pub fn size(&self) -> PoolSize {
        PoolSize {
            running: self.running.len(),
            draining: self.draining.len(),
        }
    }

    /// Reaps exited children, kills those past their drain, then starts or
    /// drains children until `desired` run.
    pub fn follow(&mut self, desired: usize) {
        self.reap();
        while self.running.len() < desired && Instant::now() >= self.not_before {
            if let Err(e) = self.start_one() {
                tracing::error!(error = %e, "autoscale: cannot start a dispatcher");
                self.not_before = Instant::now() + self.restart.next_delay();
                break;
            }
        }
        while self.running.len() > desired {
            if let Some(newest) = self.running.pop() {
                self.drain(newest);
            }
        }
    }

    /// Drains every child and waits for them (each at most its drain plus
    /// [`KILL_MARGIN`]).
    pub async fn stop(mut self) {
        while let Some(r) = self.running.pop() {
            self.drain(r);
        }
        for mut d in self.draining.drain(..) {
            let left = d.kill_at.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, d.child.wait()).await.is_err() {
                tracing::warn!(
                    slot = d.slot,
                    "autoscale: dispatcher still draining; killed"
                );
                let _ = d.child.kill().await;
            }
        }
    }

    fn start_one(&mut self) -> std::io::Result<()> {
        let slot = (0u16..)
            .find(|s| {
                !self.running.iter().any(|r| r.slot == *s)
                    && !self.draining.iter().any(|d| d.slot == *s)
            })
            .unwrap_or(u16::MAX);
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args)
            .arg("--node-id")
            .arg(format!("{}-{slot}", self.spec.node_prefix))
            .arg("--metrics-listen");
        match &self.spec.metrics_base {
            Some((host, port)) => cmd.arg(format!("{host}:{}", port.saturating_add(slot))),
            None => cmd.arg(""),
        };
        // A supervisor that dies leaves no dispatchers behind it.
        cmd.kill_on_drop(true);
        let child = cmd.spawn()?;
        tracing::info!(slot, pid = child.id(), "autoscale: dispatcher started");
        self.running.push(Running {
            slot,
            child,
            started: Instant::now(),
        });
        Ok(())
    }

    fn drain(&mut self, mut r: Running) {
        match r.child.id() {
            Some(pid) => {
                tracing::info!(slot = r.slot, pid, "autoscale: draining a dispatcher");
                terminate(pid);
            }
            None => {
                let _ = r.child.start_kill();
            }
        }
        self.draining.push(Draining {
            slot: r.slot,
            child: r.child,
            kill_at: Instant::now() + self.spec.drain_timeout + KILL_MARGIN,
        });
    }

    fn reap(&mut self) {
        let now = Instant::now();
        self.draining.retain_mut(|d| match d.child.try_wait() {
            Ok(Some(status)) => {
                tracing::info!(slot = d.slot, %status, "autoscale: dispatcher drained");
                false
            }
            Ok(None) if now >= d.kill_at => {
                tracing::warn!(
                    slot = d.slot,
                    "autoscale: dispatcher past its drain; killed"
                );
                let _ = d.child.start_kill();
                true
            }
            Ok(None) => true,
            Err(_) => false,
        });
        let mut lost = Vec::new();
        self.running.retain_mut(|r| match r.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                tracing::warn!(slot = r.slot, %status, "autoscale: dispatcher exited; it will be replaced");
                lost.push(r.started.elapsed());
                false
            }
            Err(_) => {
                lost.push(Duration::ZERO);
                false
            }
        });
        for ran in lost {
            if ran >= HEALTHY_RUN {
                self.restart.reset();
            }
            self.not_before = now + self.restart.next_delay();
        }
    }
}

/// SIGTERM to `pid`: a dispatcher's cue to drain.
fn terminate(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes any pid and signal number; it touches no memory.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}
