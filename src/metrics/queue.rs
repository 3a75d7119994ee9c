//! The queue service's metrics: per job queue (length, leased, the oldest
//! job's age, dispatchers, credits per session, queue wait, expired,
//! redelivered, dead-lettered), per PAI-EAS queue (length, held, puts, gets,
//! watchers, evictions, refusals), and the Redis commands it runs.

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use super::{metric, LATENCY_BUCKETS};

fn counter(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    IntGaugeVec::new(Opts::new(name, help), labels)
}

metric!(pub ENQUEUED: IntCounterVec = counter(
    "inferq_queue_jobs_enqueued_total", "Jobs stored in a queue.", &["queue"]));
metric!(pub JOINED: IntCounterVec = counter(
    "inferq_queue_jobs_joined_total",
    "Calls whose request id was stored already: they waited for that job's result.",
    &["queue"]));
metric!(pub COMPLETED: IntCounterVec = counter(
    "inferq_queue_jobs_completed_total", "Jobs completed with a dispatcher's result.", &["queue"]));
metric!(pub EXPIRED: IntCounterVec = counter(
    "inferq_queue_jobs_expired_total",
    "Jobs dropped unrun because their caller's deadline had passed.", &["queue"]));
metric!(pub REDELIVERED: IntCounterVec = counter(
    "inferq_queue_jobs_redelivered_total",
    "Jobs returned to their queue for another dispatcher (their dispatcher went away, or \
     their queue instance stopped renewing its holds).", &["queue"]));
metric!(pub DEAD_LETTERED: IntCounterVec = counter(
    "inferq_queue_jobs_dead_lettered_total",
    "Jobs given up after too many deliveries.", &["queue"]));
metric!(pub LENGTH: IntGaugeVec = gauge(
    "inferq_queue_length", "Jobs waiting to be delivered.", &["queue"]));
metric!(pub LEASED: IntGaugeVec = gauge(
    "inferq_queue_leased", "Jobs delivered to a dispatcher, result not yet stored.", &["queue"]));
metric!(pub OLDEST_AGE: IntGaugeVec = gauge(
    "inferq_queue_oldest_job_age_seconds",
    "Age of the oldest job stored (waiting or leased); 0 when the queue is empty.", &["queue"]));
metric!(pub DISPATCHERS: IntGaugeVec = gauge(
    "inferq_queue_dispatchers", "Dispatch streams connected to this instance, per queue.", &["queue"]));
metric!(pub CREDITS_GRANTED: IntGaugeVec = gauge(
    "inferq_queue_credits_granted",
    "Credits a dispatcher session was granted (its window).", &["queue", "session"]));
metric!(pub CREDITS_IN_USE: IntGaugeVec = gauge(
    "inferq_queue_credits_in_use",
    "Credits of a dispatcher session taken by jobs it holds.", &["queue", "session"]));
metric!(pub WAIT: HistogramVec = HistogramVec::new(
    HistogramOpts::new(
        "inferq_queue_wait_duration_seconds",
        "Time from a job's storing to its first delivery.",
    )
    .buckets(super::LATENCY_BUCKETS.to_vec()),
    &["queue"],
));
metric!(pub BACKLOG: IntGaugeVec = gauge(
    "inferq_queue_backlog",
    "Jobs not yet answered (waiting plus leased), as the autoscaler samples them \
     (Server.Autoscale).", &["queue"]));
metric!(pub BACKLOG_PER_DISPATCHER: GaugeVec = GaugeVec::new(
    Opts::new(
        "inferq_queue_backlog_per_dispatcher",
        "The backlog over the dispatchers connected to this instance (the backlog itself \
         with none): PAI-EAS's avgbacklog metric.",
    ),
    &["queue"],
));
metric!(pub DESIRED_DISPATCHERS: IntGaugeVec = gauge(
    "inferq_queue_desired_dispatchers",
    "Dispatchers the queue wants under Server.Autoscale, after stabilisation.", &["queue"]));
metric!(pub WAITING_FOR_STORE: IntGauge = IntGauge::new(
    "inferq_queue_calls_waiting_for_store",
    "Calls waiting for the job store to answer again (Server.WaitForStore)."));
metric!(pub REDIS_DURATION: HistogramVec = HistogramVec::new(
    HistogramOpts::new(
        "inferq_redis_command_duration_seconds",
        "Time of a job-store operation on Redis (one script or pipeline), by operation.",
    )
    .buckets(LATENCY_BUCKETS.to_vec()),
    &["op"],
));
metric!(pub REDIS_ERRORS: IntCounterVec = counter(
    "inferq_redis_command_errors_total",
    "Job-store operations on Redis that failed, by operation.", &["op"]));

metric!(pub EAS_LENGTH: IntGaugeVec = gauge(
    "inferq_eas_queue_length", "Items in a PAI-EAS queue.", &["service", "queue"]));
metric!(pub EAS_HELD: IntGaugeVec = gauge(
    "inferq_eas_queue_held", "Items held by a consumer, not yet committed.", &["service", "queue"]));
metric!(pub EAS_PUTS: IntCounterVec = counter(
    "inferq_eas_puts_total", "Items put.", &["service", "queue"]));
metric!(pub EAS_GETS: IntCounterVec = counter(
    "inferq_eas_gets_total", "Get requests answered.", &["service", "queue"]));
metric!(pub EAS_WATCHERS: IntGaugeVec = gauge(
    "inferq_eas_watchers", "Watches open.", &["service", "queue"]));
metric!(pub EAS_EVICTIONS: IntCounterVec = counter(
    "inferq_eas_evictions_total",
    "Items dropped to make room (auto_evict), memory store.", &["service", "queue"]));
metric!(pub EAS_REFUSALS: IntCounterVec = counter(
    "inferq_eas_refusals_total",
    "Puts refused, by reason (full, too_large).", &["service", "queue", "reason"]));

/// Registers the families (so they show before their first sample).
pub(super) fn touch() {
    let _ = (
        &*ENQUEUED,
        &*COMPLETED,
        &*EXPIRED,
        &*REDELIVERED,
        &*DEAD_LETTERED,
    );
    let _ = (&*LENGTH, &*LEASED, &*OLDEST_AGE, &*DISPATCHERS, &*WAIT);
}

/// One autoscaler sample of `queue`.
pub fn export_autoscale(queue: &str, backlog: u64, dispatchers: u32, desired: u32) {
    let per_dispatcher = backlog as f64 / f64::from(dispatchers.max(1));
    BACKLOG
        .with_label_values(&[queue])
        .set(i64::try_from(backlog).unwrap_or(i64::MAX));
    BACKLOG_PER_DISPATCHER
        .with_label_values(&[queue])
        .set(per_dispatcher);
    DESIRED_DISPATCHERS
        .with_label_values(&[queue])
        .set(i64::from(desired));
}

/// `input` or `sink`, the `queue` label of a PAI-EAS queue.
pub fn eas_queue_label(sink: bool) -> &'static str {
    if sink {
        "sink"
    } else {
        "input"
    }
}

/// One queue's counters, looked up once per dispatcher session.
#[derive(Clone)]
pub struct QueueCounters {
    pub completed: prometheus::IntCounter,
    pub expired: prometheus::IntCounter,
    pub redelivered: prometheus::IntCounter,
    pub wait: prometheus::Histogram,
}

impl QueueCounters {
    pub fn new(queue: &str) -> Self {
        QueueCounters {
            completed: COMPLETED.with_label_values(&[queue]),
            expired: EXPIRED.with_label_values(&[queue]),
            redelivered: REDELIVERED.with_label_values(&[queue]),
            wait: WAIT.with_label_values(&[queue]),
        }
    }

    /// A job delivered for the first time: how long it waited since it was
    /// stored (`enqueued_unix_ms`, 0 when the storing queue did not say).
    pub fn delivered(&self, deliveries: u32, enqueued_unix_ms: i64, now_unix_ms: i64) {
        if deliveries <= 1 && enqueued_unix_ms > 0 {
            let ms = now_unix_ms.saturating_sub(enqueued_unix_ms).max(0);
            self.wait.observe(ms as f64 / 1000.0);
        }
    }
}
