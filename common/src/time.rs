//! Wall-clock instants as milliseconds since the Unix epoch.
//!
//! The core never reads the clock: every function that depends on time takes a `Millis`
//! argument, so tests and the simulator control time completely.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// This instant moved forward by `duration`, saturating at the end of time.
    pub fn plus(self, duration: Duration) -> Millis {
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Millis(self.0.saturating_add(ms))
    }

    /// This instant moved forward by `ms` milliseconds, saturating at the end of time.
    pub fn plus_ms(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}
