//! Callers waiting in `Call` for their result, woken by notification.
//!
//! A caller registers its request id *before* the job is enqueued (so a fast
//! result cannot be missed) and holds a [`Waiter`]; the backend calls
//! [`ResultWaiters::deliver`] when the result is stored. Several callers may
//! wait for one request id (a resend that joined the stored job, a repeated
//! idempotency key): one result answers them all. A result is delivered at
//! most once per registration: the entry is removed when delivered, and a
//! second result for the same request (after a redelivery) finds no one and
//! is dropped. Dropping a `Waiter` (timeout, client gone) removes its
//! registration. The map holds one entry per call in flight, so the calls a
//! queue instance serves at once bound it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::proto::JobResult;

#[derive(Default)]
pub struct ResultWaiters {
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<JobResult>>>>,
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

    /// Registers a caller for `request_id`, beside any already waiting for it.
    pub fn register(self: &Arc<Self>, request_id: &str) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .entry(request_id.to_string())
            .or_default()
            .push(tx);
        Waiter {
            request_id: request_id.to_string(),
            rx,
            owner: Arc::clone(self),
        }
    }

    /// Hands `result` to every caller waiting for it; false when nobody waits.
    pub fn deliver(&self, result: JobResult) -> bool {
        let Some(mut senders) = self.waiting.lock().remove(&result.request_id) else {
            return false;
        };
        let last = senders.pop();
        let mut delivered = false;
        for tx in senders {
            delivered |= tx.send(result.clone()).is_ok();
        }
        if let Some(tx) = last {
            delivered |= tx.send(result).is_ok();
        }
        delivered
    }

    /// The request ids of the callers waiting now (to look their results up
    /// after a notification may have been missed).
    pub fn ids(&self) -> Vec<String> {
        self.waiting.lock().keys().cloned().collect()
    }

    /// Request ids waited for now.
    pub fn len(&self) -> usize {
        self.waiting.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Waiter {
    /// Waits for the result; `None` if its registration went away unanswered.
    pub async fn recv(&mut self) -> Option<JobResult> {
        (&mut self.rx).await.ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // Close our receiver first so that our sender (if still registered)
        // reads as closed, then drop every closed sender of this id: ours,
        // and any other whose waiter is gone.
        self.rx.close();
        let mut map = self.owner.waiting.lock();
        if let Some(senders) = map.get_mut(&self.request_id) {
            senders.retain(|tx| !tx.is_closed());
            if senders.is_empty() {
                map.remove(&self.request_id);
            }
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

    #[tokio::test]
    async fn one_result_answers_every_caller_of_an_id() {
        let w = ResultWaiters::new();
        let mut a = w.register("r1");
        let mut b = w.register("r1");
        {
            let _gone = w.register("r1");
        }
        assert!(w.deliver(JobResult::error("r1", 7, "x")));
        assert_eq!(a.recv().await.map(|r| r.request_id), Some("r1".into()));
        assert_eq!(b.recv().await.map(|r| r.request_id), Some("r1".into()));
        assert!(w.is_empty());
    }
}
