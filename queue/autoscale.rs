//! Autoscaling on backlog: each queue's desired dispatcher count under a
//! [`ScalePolicy`], as PAI-EAS's `queue[avgbacklog]` strategy and
//! Kubernetes' HPA compute it.
//!
//! Every second the queue samples each queue's backlog (jobs waiting plus
//! jobs a dispatcher holds: every job not yet answered) and records the raw
//! recommendation ⌈backlog / avgbacklog⌉ within [min, max]. The desired
//! count moves up to the lowest recommendation of the scale-up window and
//! down to the highest of the scale-down window, so a brief spike does not
//! start dispatchers (when the up window is set) and a brief lull does not
//! stop them. The count is exported as `inferq_queue_desired_dispatchers`
//! and in `Stats`; `inferq autoscale` follows it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::service::QueueService;
use crate::config::autoscale::{ScalePolicy, MAX_WINDOW_SECS};
use crate::metrics;
use crate::proto::QueueStats;

/// How often the backlog is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Most queues scaled by one instance (job queues and asynchronous services
/// come from the settings; this bounds what dispatchers' Hellos could add).
const MAX_QUEUES: usize = 4096;
/// Most samples one queue keeps: the longest window at one a second.
const MAX_SAMPLES: usize = MAX_WINDOW_SECS as usize + 2;

/// One queue's recommendations over the last window, and its count.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    policy: ScalePolicy,
    /// (when, raw recommendation), oldest first.
    samples: VecDeque<(Duration, u32)>,
    desired: u32,
}

impl Autoscaler {
    /// Starts at `min` dispatchers.
    pub fn new(policy: ScalePolicy) -> Self {
        Autoscaler {
            desired: policy.min,
            policy,
            samples: VecDeque::new(),
        }
    }

    /// Records the backlog sampled at `at` (time since any fixed start,
    /// never going back) and returns the desired count.
    pub fn observe(&mut self, at: Duration, backlog: u64) -> u32 {
        let raw = self.policy.recommend(backlog);
        self.samples.push_back((at, raw));
        let keep = self.policy.longest_window();
        while self.samples.len() > MAX_SAMPLES
            || self
                .samples
                .front()
                .is_some_and(|(t, _)| at.saturating_sub(*t) > keep)
        {
            self.samples.pop_front();
        }
        let within = |window: Duration| {
            self.samples
                .iter()
                .filter(move |(t, _)| at.saturating_sub(*t) <= window)
                .map(|(_, r)| *r)
        };
        let up = within(self.policy.scale_up_window).min().unwrap_or(raw);
        let down = within(self.policy.scale_down_window).max().unwrap_or(raw);
        if up > self.desired {
            self.desired = up;
        } else if down < self.desired {
            self.desired = down;
        }
        self.desired
    }

    pub fn desired(&self) -> u32 {
        self.desired
    }
}

/// The autoscalers of one queue-service instance, one per queue it knows.
pub struct QueueAutoscalers {
    policy: ScalePolicy,
    started: Instant,
    queues: Mutex<BTreeMap<String, Autoscaler>>,
}

impl QueueAutoscalers {
    pub fn new(policy: ScalePolicy) -> Arc<Self> {
        Arc::new(QueueAutoscalers {
            policy,
            started: Instant::now(),
            queues: Mutex::new(BTreeMap::new()),
        })
    }

    /// The desired count of `queue`: `min` until a sample has seen it (a
    /// queue no job has reached yet has no backlog).
    pub fn desired(&self, queue: &str) -> u32 {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .get(queue)
            .map_or(self.policy.min, Autoscaler::desired)
    }

    /// Samples every queue of `service` each [`SAMPLE_EVERY`] until `stop`.
    /// A failed sample (the store down) changes nothing.
    pub async fn run(self: Arc<Self>, service: Arc<QueueService>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match service.stats(None).await {
                Ok(stats) => self.record(self.started.elapsed(), &stats),
                Err(e) => tracing::warn!(error = %e, "autoscale: cannot read the backlog"),
            }
        }
    }

    /// Records one sample: each queue's backlog (waiting plus leased).
    fn record(&self, at: Duration, stats: &[QueueStats]) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        for s in stats {
            if !queues.contains_key(&s.queue) && queues.len() >= MAX_QUEUES {
                continue;
            }
            let backlog = s.ready.saturating_add(s.leased);
            let scaler = queues
                .entry(s.queue.clone())
                .or_insert_with(|| Autoscaler::new(self.policy.clone()));
            let before = scaler.desired();
            let desired = scaler.observe(at, backlog);
            if desired != before {
                tracing::info!(queue = %s.queue, backlog, dispatchers = s.dispatchers, from = before, to = desired, "autoscale: desired dispatchers");
            }
            metrics::queue::export_autoscale(&s.queue, backlog, s.dispatchers, desired);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaler(options: &str) -> Autoscaler {
        Autoscaler::new(ScalePolicy::parse(options).unwrap())
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// A Stats row with `backlog` jobs waiting.
    fn row(queue: &str, backlog: u64, dispatchers: u32) -> QueueStats {
        QueueStats {
            queue: queue.into(),
            ready: backlog,
            dispatchers,
            ..QueueStats::default()
        }
    }

    #[test]
    fn scales_up_at_once_and_down_only_after_the_window() {
        let mut a = scaler(
            "-Dmin=0 -Dmax=10 -Dstrategies.queue[avgbacklog]=10 \
             -Dbehavior.scaleDown.stabilizationWindowSeconds=5",
        );
        assert_eq!(a.desired(), 0);
        assert_eq!(a.observe(s(0), 0), 0);
        assert_eq!(a.observe(s(1), 1), 1, "the first job wakes a zero queue");
        assert_eq!(a.observe(s(2), 35), 4);
        assert_eq!(
            a.observe(s(3), 0),
            4,
            "a lull inside the window keeps the count"
        );
        assert_eq!(a.observe(s(6), 0), 4);
        assert_eq!(a.observe(s(7), 0), 4, "35 at 2 s is still within 5 s");
        assert_eq!(
            a.observe(s(8), 0),
            0,
            "gone once the window has no higher wish"
        );
    }

    #[test]
    fn the_down_window_steps_down_through_the_highest_recent_wish() {
        let mut a = scaler(
            "-Dmin=1 -Dmax=10 -Dstrategies.queue[avgbacklog]=10 \
             -Dbehavior.scaleDown.stabilizationWindowSeconds=2",
        );
        assert_eq!(a.observe(s(0), 100), 10);
        assert_eq!(a.observe(s(1), 50), 10);
        assert_eq!(a.observe(s(2), 20), 10);
        assert_eq!(a.observe(s(3), 0), 5, "the highest of 1..=3 s is 50 jobs");
        assert_eq!(a.observe(s(4), 0), 2);
        assert_eq!(a.observe(s(5), 0), 1, "min 1");
    }

    #[test]
    fn an_up_window_needs_the_load_to_last() {
        let mut a = scaler(
            "-Dmin=0 -Dmax=10 -Dstrategies.queue[avgbacklog]=10 \
             -Dbehavior.scaleUp.stabilizationWindowSeconds=3 \
             -Dbehavior.scaleDown.stabilizationWindowSeconds=0",
        );
        assert_eq!(a.observe(s(0), 0), 0);
        assert_eq!(a.observe(s(1), 90), 0, "a spike is not followed");
        assert_eq!(a.observe(s(2), 90), 0);
        assert_eq!(a.observe(s(3), 90), 0, "0 at 0 s is still in the window");
        assert_eq!(a.observe(s(4), 90), 9);
        assert_eq!(a.observe(s(5), 0), 0, "no down window");
    }

    #[test]
    fn history_is_bounded_by_the_window_and_the_sample_count() {
        let mut a = scaler("-Dmin=0 -Dmax=10 -Dstrategies.queue[avgbacklog]=1");
        for i in 0..10_000u64 {
            a.observe(Duration::from_millis(i * 10), i % 7);
        }
        assert!(a.samples.len() <= MAX_SAMPLES);
        let mut b = scaler(
            "-Dmin=0 -Dmax=10 -Dstrategies.queue[avgbacklog]=1 \
             -Dbehavior.scaleDown.stabilizationWindowSeconds=2",
        );
        for i in 0..100 {
            b.observe(s(i), 1);
        }
        assert!(b.samples.len() <= 3, "{}", b.samples.len());
    }

    #[test]
    fn the_instance_keeps_one_scaler_per_queue_up_to_its_bound() {
        let all = QueueAutoscalers::new(
            ScalePolicy::parse("-Dmin=0 -Dmax=3 -Dstrategies.queue[avgbacklog]=2").unwrap(),
        );
        all.record(s(0), &[row("a", 5, 0), row("b", 0, 1)]);
        assert_eq!(all.desired("a"), 3);
        assert_eq!(all.desired("b"), 0);
        assert_eq!(all.desired("never-seen"), 0, "min");
        let many: Vec<QueueStats> = (0..MAX_QUEUES + 10)
            .map(|i| row(&format!("q{i}"), 1, 0))
            .collect();
        all.record(s(1), &many);
        assert_eq!(all.queues.lock().unwrap().len(), MAX_QUEUES);
    }
}
