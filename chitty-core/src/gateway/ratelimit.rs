//! Per-tenant token-bucket rate limiting, decided from a `now` the caller passes.

use std::time::Duration;

use crate::time::Timestamp;

/// A token bucket in milli-tokens, refilled continuously at `per_minute` tokens a minute.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_minute: u64,
    capacity_milli: u64,
    level_milli: u64,
    last: Option<Timestamp>,
}

impl TokenBucket {
    /// A full bucket admitting `per_minute` requests a minute with bursts of `burst`.
    pub fn new(per_minute: u32, burst: u32) -> TokenBucket {
        let capacity_milli = u64::from(burst.max(1)) * 1_000;
        TokenBucket {
            per_minute: u64::from(per_minute.max(1)),
            capacity_milli,
            level_milli: capacity_milli,
            last: None,
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_acquire(&mut self, now: Timestamp) -> Result<(), Duration> {
        if let Some(last) = self.last {
            let elapsed_ms = now.0.saturating_sub(last.0);
            // per_minute tokens per 60,000 ms = per_minute milli-tokens per 60 ms.
            let refill = elapsed_ms.saturating_mul(self.per_minute) / 60;
            self.level_milli = self.level_milli.saturating_add(refill).min(self.capacity_milli);
        }
        self.last = Some(now);
        if self.level_milli >= 1_000 {
            self.level_milli -= 1_000;
            Ok(())
        } else {
            let missing = 1_000 - self.level_milli;
            Err(Duration::from_millis((missing * 60).div_ceil(self.per_minute)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_rate() {
        let mut b = TokenBucket::new(60, 3); // one a second, bursts of three
        let t0 = Timestamp(1_000_000);
        for _ in 0..3 {
            assert!(b.try_acquire(t0).is_ok());
        }
        let wait = b.try_acquire(t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(b.try_acquire(t0.plus(Duration::from_millis(999))).is_err());
        assert!(b.try_acquire(t0.plus(Duration::from_millis(1_000))).is_ok());
        // A long idle period refills only up to the burst.
        let later = t0.plus(Duration::from_secs(3_600));
        for _ in 0..3 {
            assert!(b.try_acquire(later).is_ok());
        }
        assert!(b.try_acquire(later).is_err());
    }
}
