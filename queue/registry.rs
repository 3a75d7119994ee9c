//! [`SessionRegistry`]: the dispatchers connected to this queue instance, for
//! `Stats` and the metrics.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::metrics;

/// A connected dispatcher, as the queue sees it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub node_id: String,
    pub queue: String,
    pub window: u32,
}

/// The open Dispatch sessions, by session id.
#[derive(Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<String, SessionInfo>>,
}

impl SessionRegistry {
    pub fn register(&self, id: &str, info: SessionInfo) {
        if self.sessions.lock().insert(id.to_string(), info).is_none() {
            metrics::QUEUE_DISPATCHERS.add(1);
        }
    }

    pub fn unregister(&self, id: &str) {
        if self.sessions.lock().remove(id).is_some() {
            metrics::QUEUE_DISPATCHERS.add(-1);
        }
    }

    /// How many sessions serve `queue`.
    pub fn serving(&self, queue: &str) -> usize {
        self.sessions
            .lock()
            .values()
            .filter(|s| s.queue == queue)
            .count()
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
