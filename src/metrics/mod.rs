//! Metrics: what every component counts, in the Prometheus data model.
//!
//! Built on the `prometheus` crate (the Prometheus text format, typed label
//! vectors, and a process collector that reports RSS, open file descriptors
//! and CPU time from /proc): one registry per process, so `standalone` shows
//! the three components' metrics on one page. Each component's metrics live
//! in its own file ([`gateway`], [`queue`], [`dispatcher`]); labels are
//! low-cardinality only (API path, queue, model, code, reason; never a
//! request id).
//!
//! Values that are read rather than counted (queue lengths, the oldest job's
//! age, credits per dispatcher session) are refreshed when `/metrics` is
//! scraped, by hooks the components register with [`on_scrape`].

use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use prometheus::{Encoder, TextEncoder};

pub mod dispatcher;
pub mod gateway;
pub mod queue;

/// Latency buckets in seconds, 0.5 ms to 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Longest a scrape waits for its hooks (a Redis that does not answer).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// Something that refreshes gauges before a scrape.
pub trait Refresh: Send + Sync + 'static {
    fn refresh(self: Arc<Self>) -> BoxFuture<'static, ()>;
}

static HOOKS: LazyLock<Mutex<Vec<Weak<dyn Refresh>>>> = LazyLock::new(Mutex::default);

/// Runs `hook` before every scrape while it is alive (it is held weakly).
pub fn on_scrape(hook: Weak<dyn Refresh>) {
    let mut hooks = HOOKS.lock();
    hooks.retain(|h| h.strong_count() > 0);
    hooks.push(hook);
}

/// Every metric of this process in the Prometheus text format, after the
/// scrape hooks have run (each given at most two seconds).
pub async fn render() -> String {
    let hooks: Vec<Arc<dyn Refresh>> = HOOKS.lock().iter().filter_map(Weak::upgrade).collect();
    let runs = futures::future::join_all(hooks.into_iter().map(|h| h.refresh()));
    if tokio::time::timeout(REFRESH_TIMEOUT, runs).await.is_err() {
        tracing::warn!("metrics: a refresh took over 2 s; its gauges are from the last scrape");
    }
    gateway::touch();
    queue::touch();
    dispatcher::touch();
    let mut buf = Vec::new();
    let families = prometheus::gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        tracing::warn!(error = %e, "metrics: cannot encode");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// `/metrics` as an axum answer with the text format's content type.
pub async fn handler() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        render().await,
    )
        .into_response()
}

/// Seconds since `t`, for a histogram.
pub fn seconds_since(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Defines a metric registered in the process registry at first use. The
/// definitions are constants: a failure is a bug found by the first test.
macro_rules! metric {
    ($vis:vis $name:ident: $ty:ty = $make:expr) => {
        $vis static $name: std::sync::LazyLock<$ty> = std::sync::LazyLock::new(|| {
            let m: $ty = $make.expect(concat!("metric ", stringify!($name)));
            prometheus::register(Box::new(m.clone())).expect(concat!("register ", stringify!($name)));
            m
        });
    };
}
pub(crate) use metric;

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(std::sync::atomic::AtomicUsize);
    impl Refresh for Counting {
        fn refresh(self: Arc<Self>) -> BoxFuture<'static, ()> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async {})
        }
    }

    #[tokio::test]
    async fn hooks_run_at_scrape_while_alive_and_families_follow_the_naming_rules() {
        let hook = Arc::new(Counting(Default::default()));
        let weak: Weak<dyn Refresh> = Arc::downgrade(&hook) as Weak<dyn Refresh>;
        on_scrape(weak);
        gateway::REFUSALS.with_label_values(&["rate"]).inc();
        let text = render().await;
        assert_eq!(hook.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(
            text.contains("inferq_gateway_refusals_total{reason=\"rate\"} 1"),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        drop(hook);
        render().await;
        assert!(HOOKS
            .lock()
            .iter()
            .all(|h| h.strong_count() == 0 || h.upgrade().is_some()));
        for family in prometheus::gather() {
            let name = family.name();
            assert!(
                name.starts_with("inferq_") || name.starts_with("process_"),
                "{name}"
            );
            let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
            assert_eq!(counter, name.ends_with("_total"), "{name}");
        }
    }
}
