//! [`Backoff`]: the retry pacing every reconnect and retry loop shares:
//! exponential from `first` to `max`, optionally with ±25 % jitter (so that
//! many nodes losing one server do not come back in step), stopped early by a
//! cancellation token.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    jitter: bool,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
            jitter: false,
        }
    }

    /// Each wait is the nominal delay times a random factor in [0.75, 1.25).
    pub fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The next delay to wait, doubling the one after it up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.max);
        if self.jitter {
            nominal.mul_f64(0.75 + rand::random::<f64>() * 0.5)
        } else {
            nominal
        }
    }

    /// Waits `delay`; false when `stop` came first.
    pub async fn sleep(delay: Duration, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Waits the next delay; false when `stop` came first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.next_delay();
        Self::sleep(delay, stop).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let seen: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seen, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        let mut j = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter();
        let d = j.next_delay().as_millis();
        assert!((75..125).contains(&d), "{d}");
    }
}
