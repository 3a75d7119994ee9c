//! Process-wide counters and gauges, rendered in the Prometheus text format.
//!
//! Each component counts what an operator (or a test) needs to see: requests
//! and errors at the gateway, jobs enqueued / completed / expired / redelivered
//! at the queue, jobs in hand at the dispatcher, with its high-water mark, so
//! that "never more than MaxWorkers" can be checked from outside. Gateways
//! serve them at `/metrics`, dispatchers at `Server.DispatcherMetricsListen`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

pub struct Counter {
    name: &'static str,
    help: &'static str,
    value: AtomicU64,
}

impl Counter {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Counter {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }
    pub fn inc(&self) {
        self.add(1)
    }
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A gauge that also remembers the highest value it has had.
pub struct Gauge {
    name: &'static str,
    help: &'static str,
    value: AtomicI64,
    high_water: AtomicI64,
}

impl Gauge {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Gauge {
            name,
            help,
            value: AtomicI64::new(0),
            high_water: AtomicI64::new(0),
        }
    }
    pub fn add(&self, n: i64) {
        let now = self.value.fetch_add(n, Ordering::SeqCst) + n;
        self.high_water.fetch_max(now, Ordering::SeqCst);
    }
    pub fn set(&self, v: i64) {
        self.value.store(v, Ordering::SeqCst);
        self.high_water.fetch_max(v, Ordering::SeqCst);
    }
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::SeqCst)
    }
    pub fn high_water(&self) -> i64 {
        self.high_water.load(Ordering::SeqCst)
    }
}

pub static GATEWAY_REQUESTS: Counter = Counter::new(
    "inferq_gateway_requests_total",
    "Requests answered by the gateway (REST and gRPC).",
);
pub static GATEWAY_ERRORS: Counter = Counter::new(
    "inferq_gateway_errors_total",
    "Requests answered with a non-zero code.",
);
pub static QUEUE_ENQUEUED: Counter =
    Counter::new("inferq_queue_enqueued_total", "Jobs accepted into a queue.");
pub static QUEUE_COMPLETED: Counter = Counter::new(
    "inferq_queue_completed_total",
    "Jobs completed with a result from a dispatcher.",
);
pub static QUEUE_EXPIRED: Counter = Counter::new(
    "inferq_queue_expired_total",
    "Jobs dropped unrun because their caller's deadline had passed.",
);
pub static QUEUE_RELEASED: Counter = Counter::new(
    "inferq_queue_released_total",
    "Jobs returned to their queue because their dispatcher went away.",
);
pub static QUEUE_JOINED: Counter = Counter::new(
    "inferq_queue_joined_total",
    "Calls whose request id was stored already: they waited for that job's result (a resend, a repeated idempotency key).",
);
pub static QUEUE_TAKEN_OVER: Counter = Counter::new(
    "inferq_queue_taken_over_total",
    "Jobs taken over from a queue instance that stopped renewing its holds.",
);
pub static QUEUE_WAITING_FOR_STORE: Gauge = Gauge::new(
    "inferq_queue_calls_waiting_for_store",
    "Calls waiting for the job store to answer again (Server.WaitForStore).",
);
pub static QUEUE_DEAD_LETTERED: Counter = Counter::new(
    "inferq_queue_dead_lettered_total",
    "Jobs given up after too many deliveries.",
);
pub static QUEUE_DISPATCHERS: Gauge = Gauge::new(
    "inferq_queue_dispatchers",
    "Dispatch streams connected to this queue service.",
);
pub static DISPATCHER_JOBS_IN_HAND: Gauge = Gauge::new(
    "inferq_dispatcher_jobs_in_hand",
    "Jobs this dispatcher holds (received, result not yet sent).",
);
pub static DISPATCHER_JOBS_DONE: Counter = Counter::new(
    "inferq_dispatcher_jobs_done_total",
    "Jobs this dispatcher has answered.",
);
pub static DISPATCHER_CREDITS: Gauge = Gauge::new(
    "inferq_dispatcher_credit_window",
    "The credit window (MaxWorkers) of this dispatcher.",
);

const COUNTERS: [&Counter; 10] = [
    &GATEWAY_REQUESTS,
    &GATEWAY_ERRORS,
    &QUEUE_ENQUEUED,
    &QUEUE_COMPLETED,
    &QUEUE_EXPIRED,
    &QUEUE_RELEASED,
    &QUEUE_DEAD_LETTERED,
    &QUEUE_JOINED,
    &QUEUE_TAKEN_OVER,
    &DISPATCHER_JOBS_DONE,
];
const GAUGES: [&Gauge; 4] = [
    &QUEUE_DISPATCHERS,
    &QUEUE_WAITING_FOR_STORE,
    &DISPATCHER_JOBS_IN_HAND,
    &DISPATCHER_CREDITS,
];

/// Every metric of this process, Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    for c in COUNTERS {
        let _ = writeln!(out, "# HELP {} {}", c.name, c.help);
        let _ = writeln!(out, "# TYPE {} counter", c.name);
        let _ = writeln!(out, "{} {}", c.name, c.get());
    }
    for g in GAUGES {
        let _ = writeln!(out, "# HELP {} {}", g.name, g.help);
        let _ = writeln!(out, "# TYPE {} gauge", g.name);
        let _ = writeln!(out, "{} {}", g.name, g.get());
        let _ = writeln!(out, "# HELP {}_max Highest value since start.", g.name);
        let _ = writeln!(out, "# TYPE {}_max gauge", g.name);
        let _ = writeln!(out, "{}_max {}", g.name, g.high_water());
    }
    out
}
