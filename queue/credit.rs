//! [`CreditWindow`]: how many more jobs a dispatcher may be sent.
//!
//! The window opens with the dispatcher's MaxWorkers credits. Sending a job
//! takes one credit, its result gives it back. Credits are only given back for
//! results of jobs in hand, so `credits available + jobs in hand` never exceeds
//! the window: a dispatcher never holds more than MaxWorkers jobs.

use tokio::sync::Semaphore;

#[derive(Debug)]
pub struct CreditWindow {
    size: u32,
    available: Semaphore,
}

impl CreditWindow {
    pub fn new(size: u32) -> Self {
        CreditWindow {
            size,
            available: Semaphore::new(size as usize),
        }
    }

    /// The window: the most jobs the dispatcher may hold.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Waits for at least one credit, then takes every credit available.
    pub async fn take_all(&self) -> usize {
        match self.available.acquire().await {
            Ok(first) => first.forget(),
            // The semaphore is never closed; treat it as an empty window.
            Err(_) => return 0,
        }
        let more = self.available.available_permits();
        if more > 0 {
            if let Ok(p) = self.available.try_acquire_many(more as u32) {
                p.forget();
                return 1 + more;
            }
        }
        1
    }

    /// Gives back `n` credits (unused ones, or one per result).
    pub fn give_back(&self, n: usize) {
        if n > 0 {
            self.available.add_permits(n);
        }
    }

    /// Credits not in use.
    pub fn available(&self) -> usize {
        self.available.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takes_all_and_waits_when_empty() {
        let w = CreditWindow::new(3);
        assert_eq!(w.take_all().await, 3);
        assert_eq!(w.available(), 0);
        let blocked =
            tokio::time::timeout(std::time::Duration::from_millis(20), w.take_all()).await;
        assert!(blocked.is_err(), "no credit: must wait");
        w.give_back(1);
        assert_eq!(w.take_all().await, 1);
    }
}
