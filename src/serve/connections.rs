//! [`serve_connections`]: the accept loop every listener of inferq runs
//! (REST, public and internal gRPC, metrics), so a client that opens
//! connections and stays silent, trickles headers, or opens thousands of
//! HTTP/2 streams costs a bounded amount:
//!
//! - at most `max_connections` at once; beyond that, new connections wait in
//!   the kernel's backlog (no file descriptor is taken for them);
//! - a connection must start a request within `header_read_timeout` of
//!   opening (HTTP/1 headers must also arrive within it), and one with no
//!   request in flight is closed after `idle_timeout`;
//! - HTTP/2: at most `max_concurrent_streams` per connection, keep-alive
//!   pings every `keep_alive_interval`, a peer that does not answer is dropped.
//!
//! With a TLS acceptor ([`super::tls`]), each connection's handshake runs in
//! its own task and must end within `header_read_timeout`.
//!
//! Requests themselves are bounded by the tower layers of each API (timeout,
//! concurrency, body size); this module bounds connections.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Limits of one listener's connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// From opening (or the end of the last request) to the first request's
    /// headers.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keep-alive ping interval; the peer has as long again to answer.
    pub keep_alive_interval: Duration,
}

/// How long a connection that was asked to close (idle, or never sent a
/// request) may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What every connection of one listener shares.
struct Listener {
    builder: Builder<TokioExecutor>,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
}

/// Serves `app` on `listener` under `limits` (over TLS with `tls`) until
/// `stop` is cancelled, then lets the connections finish the requests they
/// are serving.
pub async fn serve_connections(
    role: &'static str,
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tracker = TaskTracker::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024)
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(64)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(limits.keep_alive_interval)
        .keep_alive_timeout(limits.keep_alive_interval)
        .enable_connect_protocol();
    let shared = Arc::new(Listener {
        builder,
        app,
        limits,
        tls,
        stop: stop.clone(),
    });
    loop {
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: the connection stays in the
                    // backlog; try again shortly rather than spin.
                    tracing::warn!(%role, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        tracker.spawn(serve_one(Arc::clone(&shared), tcp, peer, slot));
    }
    tracker.close();
    tracker.wait().await;
}

/// What the watchdog of one connection knows: requests in flight and when
/// the last one ended (ms since the connection opened); `ended` wakes it.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    served: AtomicBool,
    last_end_ms: AtomicU64,
    ended: Notify,
}

/// Decrements the in-flight count when a request's response is ready (or
/// its future is dropped).
struct InFlight {
    activity: Arc<Activity>,
    opened: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.last_end_ms.store(ms, Ordering::Relaxed);
        self.activity.served.store(true, Ordering::Relaxed);
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.activity.ended.notify_one();
    }
}

impl Activity {
    /// When the connection counts as idle, if no request starts before.
    fn idle_at(&self, opened: Instant, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last_end = Duration::from_millis(self.last_end_ms.load(Ordering::Relaxed));
        let allowance = if self.served.load(Ordering::Relaxed) {
            limits.idle_timeout
        } else {
            limits.header_read_timeout
        };
        Some(opened + last_end + allowance)
    }
}

/// Serves one accepted connection: the TLS handshake first, if any.
async fn serve_one(
    listener: Arc<Listener>,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
) {
    let opened = Instant::now();
    let Some(acceptor) = listener.tls.clone() else {
        return serve_io(
            listener,
            SlotIo {
                io: tcp,
                _slot: slot,
            },
            peer,
            opened,
        )
        .await;
    };
    let handshake = tokio::time::timeout(listener.limits.header_read_timeout, acceptor.accept(tcp));
    let tls = tokio::select! {
        r = handshake => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = listener.stop.cancelled() => return,
    };
    serve_io(
        listener,
        SlotIo {
            io: tls,
            _slot: slot,
        },
        peer,
        opened,
    )
    .await
}

/// Serves HTTP/1 or HTTP/2 on `io` under the listener's limits.
async fn serve_io<I>(listener: Arc<Listener>, io: SlotIo<I>, peer: SocketAddr, opened: Instant)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &listener.limits;
    let stop = &listener.stop;
    let activity = Arc::new(Activity::default());
    let tracked = Arc::clone(&activity);
    let app = listener.app.clone();
    let service = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        tracked.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight {
            activity: Arc::clone(&tracked),
            opened,
        };
        let call = app.clone().oneshot(req.map(axum::body::Body::new));
        async move {
            let response = call.await;
            drop(guard);
            response
        }
    });
    // The slot lives as long as the socket, also after a WebSocket upgrade
    // has taken it over.
    let conn = listener
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    // Set once the connection was asked to close because it sat idle: it is
    // dropped when this passes with no request in flight.
    let mut drop_at: Option<Instant> = None;
    let mut stopping = false;
    loop {
        // The next moment to look: the close grace's end, or when the
        // connection turns idle; none while requests are in flight (the end
        // of one wakes the watchdog).
        let wake = match drop_at {
            Some(at) => (activity.in_flight.load(Ordering::Relaxed) == 0).then_some(at),
            None => activity.idle_at(opened, limits),
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            // Shutting down: the requests in flight are answered, however long.
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = activity.ended.notified(), if !stopping => {}
            _ = sleep_until_some(wake), if !stopping => {
                let now = Instant::now();
                let idle = activity.in_flight.load(Ordering::Relaxed) == 0;
                match drop_at {
                    Some(_) if idle => {
                        tracing::debug!(%peer, "connection dropped after its close grace");
                        return;
                    }
                    Some(_) => {}
                    None => {
                        if activity.idle_at(opened, limits).is_some_and(|at| now >= at) {
                            tracing::debug!(%peer, "closing an idle connection");
                            conn.as_mut().graceful_shutdown();
                            drop_at = Some(now + CLOSE_GRACE);
                        }
                    }
                }
            }
        }
    }
}

/// Sleeps until `at`, or for ever.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A socket (plain or TLS) that holds its listener's connection slot.
struct SlotIo<I> {
    io: I,
    _slot: OwnedSemaphorePermit,
}

impl<I: AsyncRead + Unpin> AsyncRead for SlotIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SlotIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
