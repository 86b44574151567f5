//! Per-token rate limits: a token bucket per token id (rate r/s, burst 2r), in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::tokens::TokenId;

/// Buckets of every token that made a request.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    buckets: Mutex<HashMap<TokenId, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// Takes one request from `id`'s bucket at `rate` per second; `Err(seconds)` to wait when
    /// it is empty.
    pub(crate) fn take(&self, id: &TokenId, rate: u32, now: Instant) -> Result<(), u64> {
        let rate = f64::from(rate.max(1));
        let burst = rate * 2.0;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let b = buckets.entry(id.clone()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let l = RateLimiter::default();
        let id: TokenId = "AAAAAAAAAAAA".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..20 {
            assert!(l.take(&id, 10, t0).is_ok());
        }
        assert_eq!(l.take(&id, 10, t0), Err(1));
        assert!(l.take(&id, 10, t0 + Duration::from_millis(110)).is_ok());
        assert!(l.take(&id, 10, t0 + Duration::from_millis(110)).is_err());
        let other: TokenId = "BBBBBBBBBBBB".parse().unwrap();
        assert!(l.take(&other, 10, t0).is_ok(), "buckets are per token");
    }
}
