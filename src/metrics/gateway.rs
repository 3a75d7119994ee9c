//! The gateway's metrics: requests by protocol, API, code and sign type; the
//! end-to-end latency; requests in flight; refusals by reason.

use std::sync::Arc;
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

use super::{metric, LATENCY_BUCKETS};

metric!(pub REQUESTS: IntCounterVec = IntCounterVec::new(
    Opts::new(
        "inferq_gateway_requests_total",
        "Requests answered, by protocol (rest, grpc), API (a model's path, eas, openai), \
         code (go-infer's code; the HTTP status or gRPC code outside its envelope) and sign type.",
    ),
    &["protocol", "api", "code", "sign"],
));
metric!(pub REQUEST_DURATION: HistogramVec = HistogramVec::new(
    HistogramOpts::new(
        "inferq_gateway_request_duration_seconds",
        "Time from a request's arrival to its answer.",
    )
    .buckets(LATENCY_BUCKETS.to_vec()),
    &["protocol", "api"],
));
metric!(pub IN_FLIGHT: IntGauge = IntGauge::new(
    "inferq_gateway_requests_in_flight",
    "Requests being answered now.",
));
metric!(pub REFUSALS: IntCounterVec = IntCounterVec::new(
    Opts::new(
        "inferq_gateway_refusals_total",
        "Requests refused for load or abuse, by reason: limit (concurrency or bytes budget), \
         rate (API.RateLimit), replay, body_size, queue_full.",
    ),
    &["reason"],
));

/// Registers the families (so they show before their first sample).
pub(super) fn touch() {
    let _ = (&*REQUESTS, &*REQUEST_DURATION, &*IN_FLIGHT, &*REFUSALS);
}

/// Why a request was refused, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Limit,
    Rate,
    Replay,
    BodySize,
    QueueFull,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::Rate => "rate",
            Refusal::Replay => "replay",
            Refusal::BodySize => "body_size",
            Refusal::QueueFull => "queue_full",
        }
    }

    pub fn count(self) {
        REFUSALS.with_label_values(&[self.label()]).inc();
    }
}

/// go-infer's sign type as a label: one of a fixed set, whatever the client
/// wrote.
pub fn sign_label(sign_type: &str) -> &'static str {
    if sign_type.eq_ignore_ascii_case("sha256") {
        "sha256"
    } else if sign_type.eq_ignore_ascii_case("sm2") {
        "sm2"
    } else if sign_type.eq_ignore_ascii_case("plain") {
        "plain"
    } else if sign_type.is_empty() {
        "none"
    } else {
        "other"
    }
}

/// One request, from arrival to answer: in flight while it lives; counted
/// and timed by [`RequestMetric::finish`], or as `dropped` when the client
/// went away first.
pub struct RequestMetric {
    protocol: &'static str,
    api: Arc<str>,
    started: Instant,
    finished: bool,
}

impl RequestMetric {
    /// `api` is a label from a fixed set (the caller maps a path to one).
    pub fn start(protocol: &'static str, api: Arc<str>) -> Self {
        IN_FLIGHT.inc();
        RequestMetric {
            protocol,
            api,
            started: Instant::now(),
            finished: false,
        }
    }

    /// Sets the API label once it is known (a path the router matched).
    pub fn set_api(&mut self, api: Arc<str>) {
        self.api = api;
    }

    pub fn finish(mut self, code: &str, sign: &str) {
        self.record(code, sign);
    }

    fn record(&mut self, code: &str, sign: &str) {
        if self.finished {
            return;
        }
        self.finished = true;
        REQUESTS
            .with_label_values(&[self.protocol, &self.api, code, sign])
            .inc();
        REQUEST_DURATION
            .with_label_values(&[self.protocol, &self.api])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for RequestMetric {
    fn drop(&mut self) {
        self.record("dropped", "none");
        IN_FLIGHT.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_in_flight_until_it_ends_and_counted_once() {
        let before = IN_FLIGHT.get();
        let m = RequestMetric::start("rest", "/api/test-metric".into());
        assert_eq!(IN_FLIGHT.get(), before + 1);
        m.finish("0", "sha256");
        assert_eq!(IN_FLIGHT.get(), before);
        let n = REQUESTS
            .with_label_values(&["rest", "/api/test-metric", "0", "sha256"])
            .get();
        assert_eq!(n, 1);
        drop(RequestMetric::start("rest", "/api/test-metric".into()));
        let dropped = REQUESTS
            .with_label_values(&["rest", "/api/test-metric", "dropped", "none"])
            .get();
        assert_eq!(dropped, 1);
    }

    #[test]
    fn sign_types_map_to_a_fixed_set() {
        assert_eq!(sign_label("SHA256"), "sha256");
        assert_eq!(sign_label("sm2"), "sm2");
        assert_eq!(sign_label(""), "none");
        assert_eq!(sign_label(&"x".repeat(10_000)), "other");
    }
}
