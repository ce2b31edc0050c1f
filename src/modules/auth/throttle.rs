//! Owns login throttling: after `max` failures for one key (a username, a client
//! address) within `window`, further attempts are refused until the oldest failure
//! leaves the window. The table is bounded: stale keys are pruned, and when it is full
//! the key closest to expiry is evicted.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_KEYS: usize = 10_000;

pub struct Throttle {
    max: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Throttle {
    pub fn new(max: u32, window: Duration) -> Throttle {
        Throttle {
            max: max as usize,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Some(wait)` when any of `keys` is blocked now.
    pub fn blocked(&self, keys: &[&str], now: Instant) -> Option<Duration> {
        let map = self.lock();
        keys.iter()
            .filter_map(|k| map.get(*k))
            .filter_map(|times| {
                let recent: Vec<&Instant> = times
                    .iter()
                    .filter(|t| now.duration_since(**t) < self.window)
                    .collect();
                (recent.len() >= self.max)
                    .then(|| self.window - now.duration_since(*recent[recent.len() - self.max]))
            })
            .max()
    }

    pub fn record_failure(&self, keys: &[&str], now: Instant) {
        let mut map = self.lock();
        if map.len() >= MAX_KEYS {
            map.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
        }
        for key in keys {
            if map.len() >= MAX_KEYS && !map.contains_key(*key) {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied())
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
            let times = map.entry((*key).to_owned()).or_default();
            times.retain(|t| now.duration_since(*t) < self.window);
            times.push_back(now);
            while times.len() > self.max {
                times.pop_front();
            }
        }
    }

    pub fn clear(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_until_window_passes() {
        let t = Throttle::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(t.blocked(&["user:a"], t0), None, "attempt {i}");
            t.record_failure(&["user:a", "ip:1"], t0 + Duration::from_secs(i));
        }
        let wait = t
            .blocked(&["user:a"], t0 + Duration::from_secs(10))
            .unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        // The address is blocked too, for any username.
        assert!(
            t.blocked(&["user:b", "ip:1"], t0 + Duration::from_secs(10))
                .is_some()
        );
        assert_eq!(
            t.blocked(&["user:b", "ip:2"], t0 + Duration::from_secs(10)),
            None
        );
        // After the first failure leaves the window, one more attempt is allowed.
        assert_eq!(t.blocked(&["user:a"], t0 + Duration::from_secs(61)), None);
        t.clear("user:a");
        assert_eq!(t.blocked(&["user:a"], t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn table_stays_bounded() {
        let t = Throttle::new(1, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..(MAX_KEYS + 50) {
            t.record_failure(&[&format!("ip:{i}")], now);
        }
        assert!(t.lock().len() <= MAX_KEYS);
    }
}
