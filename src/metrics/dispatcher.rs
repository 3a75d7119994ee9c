//! The dispatcher's metrics: per model, inference latency and batch sizes
//! (items and padded tokens); per node (one per queue served), jobs in hand
//! against MaxWorkers and jobs done; per model server, restarts and
//! readiness.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use super::{metric, LATENCY_BUCKETS};

metric!(pub INFERENCE_DURATION: HistogramVec = HistogramVec::new(
    HistogramOpts::new(
        "inferq_dispatcher_inference_duration_seconds",
        "Time of one model run (a job, or a batch of jobs), by model (its API path).",
    )
    .buckets(LATENCY_BUCKETS.to_vec()),
    &["model"],
));
metric!(pub BATCH_SIZE: HistogramVec = HistogramVec::new(
    HistogramOpts::new("inferq_dispatcher_batch_size", "Items per batch run, by model.")
        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
    &["model"],
));
metric!(pub BATCH_TOKENS: HistogramVec = HistogramVec::new(
    HistogramOpts::new(
        "inferq_dispatcher_batch_tokens",
        "Padded tokens per batch run (items x the longest item), by model.",
    )
    .buckets(vec![16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0]),
    &["model"],
));
metric!(pub JOBS_IN_HAND: IntGaugeVec = IntGaugeVec::new(
    Opts::new("inferq_dispatcher_jobs_in_hand", "Jobs held (received, result not yet sent), by queue served."),
    &["queue"],
));
metric!(pub JOBS_IN_HAND_MAX: IntGaugeVec = IntGaugeVec::new(
    Opts::new("inferq_dispatcher_jobs_in_hand_max", "The most jobs held at once since start, by queue served."),
    &["queue"],
));
metric!(pub MAX_WORKERS: IntGaugeVec = IntGaugeVec::new(
    Opts::new("inferq_dispatcher_max_workers", "The credits the queue granted this node (MaxWorkers), by queue served."),
    &["queue"],
));
metric!(pub JOBS_DONE: IntCounterVec = IntCounterVec::new(
    Opts::new("inferq_dispatcher_jobs_done_total", "Jobs answered, by queue served."),
    &["queue"],
));
metric!(pub SERVER_RESTARTS: IntCounterVec = IntCounterVec::new(
    Opts::new("inferq_model_server_restarts_total", "Times a model server was (re)started, by model."),
    &["model"],
));
metric!(pub SERVER_READY: IntGaugeVec = IntGaugeVec::new(
    Opts::new("inferq_model_server_ready", "1 while a model server answers, by model."),
    &["model"],
));

pub(super) fn touch() {
    let _ = (
        &*INFERENCE_DURATION,
        &*BATCH_SIZE,
        &*JOBS_IN_HAND,
        &*JOBS_DONE,
    );
}

/// One node's gauges, looked up once: jobs in hand (with its high-water
/// mark), credits granted, jobs done.
pub struct NodeGauges {
    in_hand: IntGauge,
    in_hand_max: IntGauge,
    high_water: AtomicI64,
    credits: IntGauge,
    done: IntCounter,
}

impl NodeGauges {
    pub fn new(queue: &str) -> Self {
        NodeGauges {
            in_hand: JOBS_IN_HAND.with_label_values(&[queue]),
            in_hand_max: JOBS_IN_HAND_MAX.with_label_values(&[queue]),
            high_water: AtomicI64::new(0),
            credits: MAX_WORKERS.with_label_values(&[queue]),
            done: JOBS_DONE.with_label_values(&[queue]),
        }
    }

    pub fn job_taken(&self) {
        self.in_hand.inc();
        let now = self.in_hand.get();
        let high = self.high_water.fetch_max(now, Ordering::SeqCst).max(now);
        self.in_hand_max.set(high);
    }

    pub fn job_answered(&self) {
        self.in_hand.dec();
        self.done.inc();
    }

    pub fn credits_granted(&self, credits: u32) {
        self.credits.set(i64::from(credits));
    }
}

/// Records one model run of `items` items whose longest is `longest` tokens.
pub fn model_run(model: &str, started: std::time::Instant, items: usize, longest: usize) {
    INFERENCE_DURATION
        .with_label_values(&[model])
        .observe(started.elapsed().as_secs_f64());
    BATCH_SIZE.with_label_values(&[model]).observe(items as f64);
    if longest > 0 {
        BATCH_TOKENS
            .with_label_values(&[model])
            .observe(longest.saturating_mul(items) as f64);
    }
}
