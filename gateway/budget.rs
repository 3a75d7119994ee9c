//! [`InFlightBytes`]: the bytes of request bodies one gateway holds at once.
//! A body is charged as it is read; one that would go over the budget is
//! answered at once with `ServerBusy` rather than held, so a flood of large
//! bodies costs bounded memory and small requests keep flowing beside it.
//!
//! [`LargeRequests`]: requests whose body is over a size are let on (to
//! the signature check and the model queue) a few at a time. A flood of
//! large requests then waits here, holding only its bytes, instead of ahead
//! of small requests in the model queue and on the CPU.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget, shared by every route of a gateway.
#[derive(Clone)]
pub struct InFlightBytes {
    permits: Arc<Semaphore>,
    total: usize,
}

/// Bytes charged to the budget, and a large request's place; given back
/// when dropped.
#[derive(Default)]
pub struct HeldBytes {
    bytes: Option<OwnedSemaphorePermit>,
    large_place: Option<OwnedSemaphorePermit>,
}

impl HeldBytes {
    pub fn bytes(&self) -> usize {
        self.bytes.as_ref().map_or(0, |p| p.num_permits())
    }
}

/// The places of large requests, shared by every route of a gateway.
#[derive(Clone)]
pub struct LargeRequests {
    threshold: usize,
    places: Arc<Semaphore>,
}

impl LargeRequests {
    /// `at_once` requests over `threshold` bytes at a time.
    pub fn new(threshold: usize, at_once: usize) -> Self {
        LargeRequests {
            threshold,
            places: Arc::new(Semaphore::new(at_once.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }

    /// Waits for a place when `held`'s body is large (the caller's request
    /// timeout bounds the wait); the place is held with the bytes.
    pub async fn admit(&self, held: &mut HeldBytes, body_len: usize) {
        if body_len <= self.threshold || held.large_place.is_some() {
            return;
        }
        if let Ok(place) = Arc::clone(&self.places).acquire_owned().await {
            held.large_place = Some(place);
        }
    }
}

/// The budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the gateway holds its limit of request bytes ({0})")]
pub struct OverBudget(pub usize);

impl InFlightBytes {
    pub fn new(total: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        InFlightBytes {
            permits: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Charges `n` more bytes to `held`, or refuses at once.
    pub fn charge(&self, held: &mut HeldBytes, n: usize) -> Result<(), OverBudget> {
        if n == 0 {
            return Ok(());
        }
        let n = u32::try_from(n).map_err(|_| OverBudget(self.total))?;
        let permit = Arc::clone(&self.permits)
            .try_acquire_many_owned(n)
            .map_err(|_| OverBudget(self.total))?;
        match &mut held.bytes {
            Some(p) => p.merge(permit),
            None => held.bytes = Some(permit),
        }
        Ok(())
    }

    /// Bytes held now, by all requests.
    pub fn in_use(&self) -> usize {
        self.total - self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_up_to_the_total_and_gives_back_on_drop() {
        let budget = InFlightBytes::new(100);
        let mut a = HeldBytes::default();
        budget.charge(&mut a, 60).expect("fits");
        budget.charge(&mut a, 30).expect("fits");
        assert_eq!(a.bytes(), 90);
        let mut b = HeldBytes::default();
        assert_eq!(budget.charge(&mut b, 11), Err(OverBudget(100)));
        budget.charge(&mut b, 10).expect("the rest fits");
        drop(a);
        assert_eq!(budget.in_use(), 10);
        assert!(budget
            .charge(&mut HeldBytes::default(), usize::MAX)
            .is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn large_requests_wait_for_a_place_small_ones_never() {
        let large = LargeRequests::new(100, 1);
        let mut first = HeldBytes::default();
        large.admit(&mut first, 101).await;
        let mut small = HeldBytes::default();
        large.admit(&mut small, 100).await;
        assert!(
            small.large_place.is_none(),
            "at the threshold a request is small"
        );
        let waiting = {
            let large = large.clone();
            tokio::spawn(async move {
                let mut second = HeldBytes::default();
                large.admit(&mut second, 5000).await;
                second
            })
        };
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "the one place is taken");
        drop(first);
        let second = waiting.await.unwrap();
        assert!(
            second.large_place.is_some(),
            "let on once the place came back"
        );
    }
}
