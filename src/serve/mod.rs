//! Process plumbing shared by the subcommands: binding listeners (and telling
//! the world where: one `inferq: <role> listening on <addr>` line on stdout per
//! listener, which scripts and tests read when a port was 0), serving their
//! connections within limits ([`connections`]), the open-file limit,
//! shutdown signals.

use std::io::Write;
use std::time::Duration;

use crate::config::Settings;

pub mod connections;
pub mod grpc;
pub mod tls;

pub use connections::{serve_connections, ConnectionLimits};

/// File descriptors kept for everything but client connections (Redis
/// pools, queue links, model files, logs).
const RESERVED_FILES: u64 = 512;

/// Raises the soft open-file limit to the hard one (once, at start:
/// [`crate::cli::block_on`]).
pub fn raise_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(open_files = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// The soft open-file limit now.
fn file_limit() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

impl ConnectionLimits {
    /// The limits of a public listener (REST, gRPC, metrics) from the `API`
    /// section, with room for `listeners` of them under the open-file limit.
    pub fn public(settings: &Settings, listeners: u64) -> Self {
        let api = &settings.api;
        let share = file_limit().saturating_sub(RESERVED_FILES) / listeners.max(1);
        let max_connections = api.max_connections.min(share.max(16) as usize);
        if max_connections < api.max_connections {
            tracing::warn!(
                configured = api.max_connections,
                max_connections,
                "API.MaxConnections lowered to fit the open-file limit"
            );
        }
        ConnectionLimits {
            max_connections,
            header_read_timeout: api.header_read_timeout(),
            idle_timeout: api.idle_timeout(),
            max_concurrent_streams: api.http2_max_streams,
            keep_alive_interval: api.keep_alive_interval(),
        }
    }

    /// The limits of `inferq queue`'s listener: gateways multiplex their
    /// calls over few connections, dispatchers hold one stream each.
    pub fn internal(settings: &Settings) -> Self {
        ConnectionLimits {
            max_concurrent_streams: settings.server.queue_max_streams,
            keep_alive_interval: Duration::from_secs(5),
            ..ConnectionLimits::public(settings, 1)
        }
    }
}

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binds `addr` and prints where it listens.
pub async fn bind(role: &str, addr: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{role}: cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    announce(role, &local.to_string());
    Ok(listener)
}

pub fn announce(role: &str, addr: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "inferq: {role} listening on {addr}");
    let _ = out.flush();
    tracing::info!(%role, %addr, "listening");
}

/// A token cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        t.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// This machine's name and our pid: a default dispatcher node id.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{}", std::process::id())
}
