//! [`InFlightBytes`]: the bytes of request bodies one gateway holds at once.
//! A body is charged as it is read; one that would go over the budget is
//! answered at once with `ServerBusy` rather than held, so a flood of large
//! bodies costs bounded memory and small requests keep flowing beside it.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget, shared by every route of a gateway.
#[derive(Clone)]
pub struct InFlightBytes {
    permits: Arc<Semaphore>,
    total: usize,
}

/// Bytes charged to the budget; given back when dropped.
#[derive(Default)]
pub struct HeldBytes(Option<OwnedSemaphorePermit>);

impl HeldBytes {
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |p| p.num_permits())
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
        match &mut held.0 {
            Some(p) => p.merge(permit),
            None => held.0 = Some(permit),
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
}
