//! Retry backoff: exponential, capped, with "equal jitter" so that a burst of failures does
//! not come back as a burst of retries; and [`Backoff`], the delays between attempts to reach
//! a broker or store that is away.
//!
//! The random part is an argument (`jitter` in `[0, 1)`), which keeps the function pure.

use std::time::Duration;

use crate::workflow::RetryPolicy;

/// Whether another attempt is allowed after `n_failures` failed attempts.
pub fn retries_left(policy: &RetryPolicy, n_failures: u32) -> bool {
    n_failures <= policy.max_retries
}

/// Delay before retry number `retry_number` (1 for the first retry).
///
/// The nominal delay is `backoff * 2^(retry_number - 1)`, capped at `max_backoff`; the actual
/// delay is drawn from the upper half of it: `nominal * (0.5 + jitter / 2)`.
pub fn backoff_delay(policy: &RetryPolicy, retry_number: u32, jitter: f64) -> Duration {
    let exponent = retry_number.saturating_sub(1).min(62);
    let nominal = policy
        .backoff
        .checked_mul(1u32 << exponent.min(31))
        .unwrap_or(policy.max_backoff)
        .min(policy.max_backoff);
    let jitter = jitter.clamp(0.0, 1.0);
    nominal.mul_f64(0.5 + jitter / 2.0)
}

/// Delays between attempts to reconnect: doubling from 100 ms up to 5 s, back to the start
/// once connected. Every loop that reconnects to something uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The first delay.
    pub const FIRST: Duration = Duration::from_millis(100);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Backoff {
        Backoff { next: Backoff::FIRST }
    }

    /// The delay before the next attempt; each is twice the one before, up to [`Backoff::MAX`].
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        delay
    }

    /// Connected: the next delay is the first again.
    pub fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
        }
    }

    #[test]
    fn delays_double_and_cap() {
        let delays: Vec<u128> = (1..=5).map(|n| backoff_delay(&policy(), n, 1.0).as_millis()).collect();
        assert_eq!(delays, vec![1000, 2000, 4000, 5000, 5000]);
        let low: Vec<u128> = (1..=5).map(|n| backoff_delay(&policy(), n, 0.0).as_millis()).collect();
        assert_eq!(low, vec![500, 1000, 2000, 2500, 2500]);
        assert_eq!(backoff_delay(&policy(), 1000, 0.5), Duration::from_millis(3750));
    }

    #[test]
    fn retries_are_counted_after_the_first_attempt() {
        assert!(retries_left(&policy(), 1));
        assert!(retries_left(&policy(), 3));
        assert!(!retries_left(&policy(), 4));
        assert!(!retries_left(&RetryPolicy::with_retries(0), 1));
    }

    #[test]
    fn reconnect_delays_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| backoff.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Backoff::FIRST);
    }
}
