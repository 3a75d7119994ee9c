//! The model server's life, kept by the dispatcher: start the command (when
//! the model has one), wait for its port, say ready, notice when it dies or
//! stops answering, restart it with backoff, stop it on drain. Its output
//! goes to the dispatcher's log, a line at a time.
//!
//! The command runs with `sh -c` in a process group of its own, so stopping
//! it (SIGTERM, then SIGKILL after [`STOP_GRACE`]) reaches whatever it
//! started. A server the dispatcher did not start is only probed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// How long a stopped server may take to exit before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often the port is tried while the server starts.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// Longest line of the server's output put in one log line.
const MAX_LINE: usize = 8 * 1024;

/// A server the dispatcher runs.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The model's name, in log lines.
    pub model: String,
    /// A shell command line.
    pub command: String,
    pub work_dir: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
}

impl ProcessSpec {
    fn spawn(&self) -> std::io::Result<Child> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&self.command)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.work_dir {
            cmd.current_dir(dir);
        }
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the
        // parent's. If the dispatcher dies without stopping the server (kill
        // -9), the server's shell gets SIGTERM (a command that `exec`s its
        // server passes it on to the server itself).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(out, self.model.clone(), "stdout"));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(err, self.model.clone(), "stderr"));
        }
        Ok(child)
    }
}

/// Logs what `from` writes, a line at a time, each cut to [`MAX_LINE`].
async fn forward_lines(mut from: impl AsyncRead + Unpin, model: String, stream: &'static str) {
    let mut buf = vec![0u8; 8 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let emit = |line: &mut Vec<u8>| {
        if !line.is_empty() {
            let text = String::from_utf8_lossy(line);
            tracing::info!(target: "inferq::model_server", model = %model, stream, "{}", text.trim_end());
            line.clear();
        }
    };
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&mut line);
            } else if line.len() < MAX_LINE {
                line.push(b);
            }
        }
    }
    emit(&mut line);
}

/// Signals the process group `child` leads.
fn signal_group(child: &Child, signal: libc::c_int) {
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: kill(2) with a negative pid signals that process group;
        // it reads no memory of ours.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// Stops the server: SIGTERM to its group, SIGKILL after [`STOP_GRACE`].
async fn stop_child(model: &str, mut child: Child) {
    signal_group(&child, libc::SIGTERM);
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => tracing::info!(model, status = ?status.ok(), "model server stopped"),
        Err(_) => {
            tracing::warn!(
                model,
                "model server did not stop within {STOP_GRACE:?}; killing it"
            );
            signal_group(&child, libc::SIGKILL);
            let _ = child.wait().await;
        }
    }
}

/// Whether something accepts connections at `authority`.
async fn port_answers(authority: &str) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(authority)
        )
        .await,
        Ok(Ok(_))
    )
}

/// How waiting for the port ended.
enum Startup {
    Up,
    Exited(String),
    TimedOut,
    Stopped,
}

/// Keeps one model server ready (see the module's doc).
pub struct Supervisor<'a> {
    pub model: &'a str,
    pub authority: String,
    pub process: Option<&'a ProcessSpec>,
    pub start_timeout: Duration,
    pub ready: &'a watch::Sender<bool>,
    pub unreachable: &'a Notify,
}

impl Supervisor<'_> {
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut child: Option<Child> = None;
        let ready_gauge = crate::metrics::dispatcher::SERVER_READY.with_label_values(&[self.model]);
        ready_gauge.set(0);
        loop {
            if stop.is_cancelled() {
                break;
            }
            if let (Some(spec), None) = (self.process, &child) {
                match spec.spawn() {
                    Ok(c) => {
                        tracing::info!(model = self.model, pid = c.id(), command = %spec.command, "model server started");
                        crate::metrics::dispatcher::SERVER_RESTARTS
                            .with_label_values(&[self.model])
                            .inc();
                        child = Some(c);
                    }
                    Err(e) => {
                        tracing::error!(model = self.model, error = %e, command = %spec.command, "cannot start the model server");
                        if !backoff.wait(&stop).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            match self.wait_for_port(child.as_mut(), &stop).await {
                Startup::Stopped => break,
                Startup::Exited(status) => {
                    tracing::warn!(model = self.model, %status, "model server exited before opening its port");
                    child = None;
                }
                Startup::TimedOut => {
                    tracing::warn!(model = self.model, authority = %self.authority, timeout_s = self.start_timeout.as_secs(), "model server did not open its port in time; restarting it");
                    if let Some(c) = child.take() {
                        stop_child(self.model, c).await;
                    }
                }
                Startup::Up => {
                    let up_since = Instant::now();
                    self.ready.send_replace(true);
                    ready_gauge.set(1);
                    tracing::info!(model = self.model, authority = %self.authority, "model server ready");
                    let exited = self.while_up(child.as_mut(), &stop).await;
                    self.ready.send_replace(false);
                    ready_gauge.set(0);
                    if up_since.elapsed() > Duration::from_secs(60) {
                        backoff.reset();
                    }
                    match exited {
                        None if stop.is_cancelled() => break,
                        None => {
                            tracing::warn!(model = self.model, authority = %self.authority, "model server does not answer; taking no jobs until it does");
                            // Still running: wait for its port again, no restart.
                            continue;
                        }
                        Some(status) => {
                            tracing::warn!(model = self.model, %status, "model server exited; taking no jobs until it is back");
                            child = None;
                        }
                    }
                }
            }
            if !backoff.wait(&stop).await {
                break;
            }
        }
        self.ready.send_replace(false);
        if let Some(c) = child {
            stop_child(self.model, c).await;
        }
    }

    /// Waits until the port answers; bounded by the start timeout when the
    /// server is ours, until `stop` when it is not.
    async fn wait_for_port(
        &self,
        mut child: Option<&mut Child>,
        stop: &CancellationToken,
    ) -> Startup {
        let give_up = Instant::now() + self.start_timeout;
        loop {
            if port_answers(&self.authority).await {
                return Startup::Up;
            }
            if let Some(c) = child.as_deref_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Startup::Exited(status.to_string());
                }
                if Instant::now() >= give_up {
                    return Startup::TimedOut;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(PROBE_EVERY) => {}
                _ = stop.cancelled() => return Startup::Stopped,
            }
        }
    }

    /// While the server is up: returns its exit status when it exits, None
    /// when it stops answering (or on `stop`).
    async fn while_up(
        &self,
        mut child: Option<&mut Child>,
        stop: &CancellationToken,
    ) -> Option<String> {
        loop {
            let exited = async {
                match child.as_deref_mut() {
                    Some(c) => c
                        .wait()
                        .await
                        .map(|s| s.to_string())
                        .unwrap_or_else(|e| e.to_string()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = exited => return Some(status),
                _ = self.unreachable.notified() => {
                    if !port_answers(&self.authority).await {
                        return None;
                    }
                }
                _ = stop.cancelled() => return None,
            }
        }
    }
}
