//! Process plumbing shared by the subcommands: binding listeners (and telling
//! the world where: one `inferq: <role> listening on <addr>` line on stdout per
//! listener, which scripts and tests read when a port was 0), shutdown signals.

use std::io::Write;

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

/// Accepted connections of `listener` with TCP_NODELAY set: gRPC and HTTP
/// messages are small, and Nagle's algorithm with delayed ACKs would hold them
/// up to 40 ms. (tonic's own `tcp_nodelay` does not reach sockets passed in.)
pub fn nodelay_incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        if let Ok(tcp) = &s {
            let _ = tcp.set_nodelay(true);
        }
        s
    })
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
