//! Watches: a consumer's stream of a queue's items (the WebSocket `_watch_`
//! of the PAI-EAS API), with at most `window` items held and not committed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::service::{EasError, EasQueues, WatchSpec};
use super::store::{wait_for_change, Item, QueueRef, TakeOptions};
use crate::config::QueueLimits;
use crate::proto::eas::MAX_WATCH_WINDOW;

/// Items a watch has taken and not yet handed to its client.
const WATCH_CHANNEL: usize = 64;

impl EasQueues {
    /// Starts a watch: items come on the returned channel. At most
    /// `spec.window` (at most [`MAX_WATCH_WINDOW`]) items are held and not committed (with auto commit,
    /// items are removed as they are sent). When the receiver is dropped
    /// the consumer's uncommitted items are ready again, to be sent on its
    /// next watch.
    pub async fn watch(
        self: &Arc<Self>,
        q: &QueueRef,
        spec: WatchSpec,
    ) -> Result<mpsc::Receiver<Result<Item, EasError>>, EasError> {
        self.open(q)?;
        if spec.window == 0 {
            return Err(EasError::Invalid("_window_ must be at least 1".into()));
        }
        // The client's window, within the server's; the channel is shorter
        // still: items beyond it wait in the store, not in memory.
        let mut spec = spec;
        spec.window = spec.window.min(MAX_WATCH_WINDOW);
        if !self.store.claim_watch(q, &spec.consumer).await? {
            return Err(EasError::AlreadyWatching(spec.consumer));
        }
        let (tx, rx) = mpsc::channel((spec.window as usize).min(WATCH_CHANNEL));
        let this = Arc::clone(self);
        let q = q.clone();
        let span = tracing::info_span!("watch", queue = %q.name(), consumer = %spec.consumer);
        let watchers = crate::metrics::queue::EAS_WATCHERS.with_label_values(&[
            q.service.as_str(),
            crate::metrics::queue::eas_queue_label(q.sink),
        ]);
        watchers.inc();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                tracing::info!(
                    window = spec.window,
                    auto_commit = spec.auto_commit,
                    "watch started"
                );
                let why = this.run_watch(&q, &spec, &tx).await;
                if let Err(e) = this.store.release(&q, &spec.consumer).await {
                    tracing::warn!(error = %e, "could not release the watcher's items; they are ready again after the hold time");
                }
                let _ = this.store.end_watch(&q, &spec.consumer).await;
                watchers.dec();
                tracing::info!(ended = %why, "watch ended");
            },
            span,
        ));
        Ok(rx)
    }

    async fn run_watch(
        &self,
        q: &QueueRef,
        spec: &WatchSpec,
        tx: &mpsc::Sender<Result<Item, EasError>>,
    ) -> String {
        let signal = self.store.signal(q);
        let none = QueueLimits {
            enabled: false,
            max_length: 0,
            max_payload_bytes: 0,
            auto_evict: true,
        };
        let mut failures = 0u32;
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let free = if spec.auto_commit {
                tx.capacity()
            } else {
                match self.store.held_by(q, &spec.consumer).await {
                    Ok(held) => (spec.window as u64).saturating_sub(held) as usize,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "watch: store unavailable; retrying");
                        0
                    }
                }
            };
            let mut sent = 0;
            if free > 0 {
                let opts = TakeOptions {
                    from: spec.from,
                    max: free,
                    tags: spec.tags.clone(),
                    auto_commit: spec.auto_commit,
                    sink_room: false,
                };
                match self.store.take(q, &spec.consumer, &opts, &none).await {
                    Ok(items) => {
                        failures = 0;
                        for item in items {
                            sent += 1;
                            if tx.send(Ok(item)).await.is_err() {
                                return "watcher gone".into();
                            }
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "watch: store unavailable; retrying");
                    }
                }
            }
            if failures > 0 {
                let pause = Duration::from_millis(100 * u64::from(failures.min(20)));
                tokio::select! {
                    _ = tx.closed() => return "watcher gone".into(),
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
            if sent > 0 && sent == free {
                // There may be more ready: look again at once.
                continue;
            }
            tokio::select! {
                _ = tx.closed() => return "watcher gone".into(),
                _ = wait_for_change(notified, self.store.poll_interval(), Duration::from_secs(1)) => {}
            }
        }
    }
}
