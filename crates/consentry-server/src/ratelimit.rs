//! Token-bucket rate limits, kept in memory per process: one bucket per API key (every
//! authenticated endpoint) and one per client address on the survivor case endpoints.
//! Over the limit → 429 `rate_limited` with `Retry-After`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate: `per_second` tokens refill continuously, at most `burst` saved up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

/// Buckets kept at most; idle full buckets are dropped past this.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug)]
pub(crate) struct Limiter<K> {
    limit: Option<RateLimit>,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub(crate) fn new(limit: Option<RateLimit>) -> Limiter<K> {
        Limiter { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`; `Err(wait)` when there is none.
    pub(crate) fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(limit) = self.limit else { return Ok(()) };
        let burst = f64::from(limit.burst.max(1));
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_BUCKETS && !map.contains_key(key) {
            map.retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * limit.per_second < burst);
        }
        let (tokens, at) = map.entry(key.clone()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * limit.per_second).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else if limit.per_second > 0.0 {
            Err(Duration::from_secs_f64((1.0 - *tokens) / limit.per_second))
        } else {
            Err(Duration::from_secs(3600))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refuses_then_refills() {
        let l = Limiter::new(Some(RateLimit { per_second: 20.0, burst: 3 }));
        for _ in 0..3 {
            l.check(&1).unwrap();
        }
        let wait = l.check(&1).unwrap_err();
        assert!(wait <= Duration::from_millis(50), "{wait:?}");
        l.check(&2).unwrap(); // another key has its own bucket
        std::thread::sleep(Duration::from_millis(60));
        l.check(&1).unwrap();
        let none: Limiter<i32> = Limiter::new(None);
        for _ in 0..1000 {
            none.check(&1).unwrap();
        }
    }
}
