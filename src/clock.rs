//! Wall-clock time for everything that judges a token's `exp`/`nbf` or remembers a result for a
//! while, behind one trait so tests can move time instead of waiting for it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn unix_millis(&self) -> i64;

    /// Whole seconds since the Unix epoch (what JWT NumericDates are compared with).
    fn unix_seconds(&self) -> i64 {
        self.unix_millis().div_euclid(1000)
    }
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_millis(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

/// A clock that stands still until told to move: for tests of expiry, grace windows and renewal.
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    pub fn at(unix_seconds: i64) -> Arc<Self> {
        Arc::new(ManualClock { millis: AtomicI64::new(unix_seconds * 1000) })
    }

    pub fn advance_millis(&self, millis: i64) {
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }

    pub fn advance(&self, seconds: i64) {
        self.advance_millis(seconds * 1000);
    }
}

impl Clock for ManualClock {
    fn unix_millis(&self) -> i64 {
        self.millis.load(Ordering::SeqCst)
    }
}

pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}
