//! Callers waiting in `Call` for their result, woken by notification.
//!
//! A caller registers its request id *before* the job is enqueued (so a fast
//! result cannot be missed) and holds a [`Waiter`]; the backend calls
//! [`ResultWaiters::deliver`] when the result is stored. A result is delivered
//! at most once: the entry is removed when delivered, and a second result for
//! the same request (after a redelivery) finds no one and is dropped. Dropping
//! a `Waiter` (timeout, client gone) removes its entry.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::proto::JobResult;

#[derive(Default)]
pub struct ResultWaiters {
    waiting: Mutex<HashMap<String, oneshot::Sender<JobResult>>>,
}

/// One registered caller; receives its result once.
pub struct Waiter {
    request_id: String,
    rx: oneshot::Receiver<JobResult>,
    owner: Arc<ResultWaiters>,
}

impl ResultWaiters {
    pub fn new() -> Arc<Self> {
        Arc::new(ResultWaiters::default())
    }

    /// Registers a caller for `request_id`. A second registration of the same
    /// id replaces the first (whose `Waiter` then sees a closed channel).
    pub fn register(self: &Arc<Self>, request_id: &str) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(request_id.to_string(), tx);
        Waiter {
            request_id: request_id.to_string(),
            rx,
            owner: Arc::clone(self),
        }
    }

    /// Hands `result` to its caller; false when nobody waits for it.
    pub fn deliver(&self, result: JobResult) -> bool {
        let tx = self.waiting.lock().remove(&result.request_id);
        match tx {
            Some(tx) => tx.send(result).is_ok(),
            None => false,
        }
    }

    /// The request ids of the callers waiting now (to look their results up
    /// after a notification may have been missed).
    pub fn ids(&self) -> Vec<String> {
        self.waiting.lock().keys().cloned().collect()
    }

    /// Callers waiting now.
    pub fn len(&self) -> usize {
        self.waiting.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Waiter {
    /// Waits for the result; `None` if the registration was replaced.
    pub async fn recv(&mut self) -> Option<JobResult> {
        (&mut self.rx).await.ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // Close our receiver first so that our sender (if still registered)
        // reads as closed, unlike a newer registration's.
        self.rx.close();
        let mut map = self.owner.waiting.lock();
        // Remove only our own entry: a closed sender means it is ours or gone.
        if map
            .get(&self.request_id)
            .map(|tx| tx.is_closed())
            .unwrap_or(false)
        {
            map.remove(&self.request_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_once_and_cleans_up() {
        let w = ResultWaiters::new();
        let mut a = w.register("r1");
        assert!(w.deliver(JobResult::error("r1", 1, "x")));
        assert!(
            !w.deliver(JobResult::error("r1", 2, "y")),
            "second answer dropped"
        );
        assert_eq!(a.recv().await.unwrap().request_id, "r1");
        {
            let _b = w.register("r2");
            assert_eq!(w.len(), 1);
        }
        assert_eq!(w.len(), 0, "dropped waiter removed");
    }
}
