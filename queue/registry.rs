//! [`SessionRegistry`]: the dispatchers connected to this queue instance, for
//! `Stats` and the metrics.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::session::InHand;
use crate::metrics::queue as m;

/// A connected dispatcher, as the queue sees it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub node_id: String,
    pub queue: String,
    pub window: u32,
    /// The jobs the session holds: its credits in use.
    pub in_hand: InHand,
}

/// The open Dispatch sessions, by session id.
#[derive(Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<String, SessionInfo>>,
}

impl SessionRegistry {
    pub fn register(&self, id: &str, info: SessionInfo) {
        self.sessions.lock().insert(id.to_string(), info);
    }

    pub fn unregister(&self, id: &str) {
        self.sessions.lock().remove(id);
    }

    /// How many sessions serve `queue`.
    pub fn serving(&self, queue: &str) -> usize {
        self.sessions
            .lock()
            .values()
            .filter(|s| s.queue == queue)
            .count()
    }

    /// The queues that have a session now.
    pub fn queues(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .sessions
            .lock()
            .values()
            .map(|s| s.queue.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Sets the per-queue dispatcher count and the per-session credit
    /// gauges to the sessions open now (gone sessions lose their series).
    pub fn export(&self, queues: &[String]) {
        m::DISPATCHERS.reset();
        m::CREDITS_GRANTED.reset();
        m::CREDITS_IN_USE.reset();
        for q in queues {
            m::DISPATCHERS.with_label_values(&[q.as_str()]).set(0);
        }
        for (id, s) in self.sessions.lock().iter() {
            m::DISPATCHERS.with_label_values(&[s.queue.as_str()]).inc();
            let in_use: usize = s.in_hand.lock().values().map(Vec::len).sum();
            let labels = [s.queue.as_str(), id.as_str()];
            m::CREDITS_GRANTED
                .with_label_values(&labels)
                .set(i64::from(s.window));
            m::CREDITS_IN_USE
                .with_label_values(&labels)
                .set(in_use as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(queue: &str) -> SessionInfo {
        SessionInfo {
            node_id: "n".into(),
            queue: queue.into(),
            window: 4,
            in_hand: std::sync::Arc::default(),
        }
    }

    #[test]
    fn sessions_are_counted_per_queue_and_once() {
        let r = SessionRegistry::default();
        r.register("a", info("q0"));
        r.register("b", info("q0"));
        r.register("c", info("q1"));
        assert_eq!(r.serving("q0"), 2);
        assert_eq!(r.serving("q1"), 1);
        r.unregister("a");
        r.unregister("a");
        assert_eq!(r.serving("q0"), 1);
        assert_eq!(r.serving("q1"), 1);
    }
}
