//! Owns login throttling: after `max` failures for one key (a username, a client
//! address) within `window`, further attempts are refused until the oldest failure
//! leaves the window. Attempts still being checked count against the limit too, so a
//! burst of concurrent guesses cannot slip past it while the first ones are hashed.
//! The table is bounded: stale keys are pruned, and when it is full the key closest to
//! expiry is evicted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAX_KEYS: usize = 10_000;
/// What a client blocked only by attempts still in flight is told to wait.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Entry {
    failures: VecDeque<Instant>,
    in_flight: usize,
}

struct Table {
    max: usize,
    window: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Clone)]
pub struct Throttle {
    table: Arc<Table>,
}

/// One admitted attempt. Report its outcome with [`Attempt::succeeded`] or
/// [`Attempt::failed`]; dropped unreported (e.g. the client went away), it counts as
/// neither.
pub struct Attempt {
    table: Arc<Table>,
    keys: Vec<String>,
    reported: bool,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recent(&self, e: &Entry, now: Instant) -> usize {
        e.failures
            .iter()
            .filter(|t| now.duration_since(**t) < self.window)
            .count()
    }

    fn end(&self, keys: &[String], failed_at: Option<Instant>) {
        let mut map = self.lock();
        for key in keys {
            if let Some(e) = map.get_mut(key) {
                e.in_flight = e.in_flight.saturating_sub(1);
                if let Some(now) = failed_at {
                    e.failures.retain(|t| now.duration_since(*t) < self.window);
                    e.failures.push_back(now);
                    while e.failures.len() > self.max {
                        e.failures.pop_front();
                    }
                }
            }
        }
    }
}

impl Throttle {
    pub fn new(max: u32, window: Duration) -> Throttle {
        Throttle {
            table: Arc::new(Table {
                max: max.max(1) as usize,
                window,
                entries: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Admits an attempt for `keys`, or says how long to wait when any key is blocked.
    pub fn begin(&self, keys: &[&str], now: Instant) -> Result<Attempt, Duration> {
        let t = &self.table;
        let mut map = t.lock();
        let mut wait = None;
        for key in keys {
            if let Some(e) = map.get(*key) {
                let recent = t.recent(e, now);
                if recent >= t.max {
                    let oldest_counted = e.failures[e.failures.len() - t.max];
                    let w = t.window.saturating_sub(now.duration_since(oldest_counted));
                    wait = wait.max(Some(w.max(IN_FLIGHT_WAIT)));
                } else if recent + e.in_flight >= t.max {
                    wait = wait.max(Some(IN_FLIGHT_WAIT));
                }
            }
        }
        if let Some(w) = wait {
            return Err(w);
        }
        if map.len() + keys.len() > MAX_KEYS {
            map.retain(|_, e| e.in_flight > 0 || t.recent(e, now) > 0);
        }
        for key in keys {
            if map.len() >= MAX_KEYS && !map.contains_key(*key) {
                let oldest = map
                    .iter()
                    .filter(|(_, e)| e.in_flight == 0)
                    .min_by_key(|(_, e)| e.failures.back().copied())
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
            map.entry((*key).to_owned()).or_default().in_flight += 1;
        }
        Ok(Attempt {
            table: t.clone(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            reported: false,
        })
    }
}

impl Attempt {
    /// A failed attempt counts against every key.
    pub fn failed(mut self, now: Instant) {
        self.reported = true;
        self.table.end(&self.keys, Some(now));
    }

    /// A success forgets the first key's (the username's) failures.
    pub fn succeeded(mut self) {
        self.reported = true;
        self.table.end(&self.keys, None);
        if let Some(first) = self.keys.first() {
            let mut map = self.table.lock();
            if map.get(first).is_some_and(|e| e.in_flight == 0) {
                map.remove(first);
            } else if let Some(e) = map.get_mut(first) {
                e.failures.clear();
            }
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.reported {
            self.table.end(&self.keys, None);
        }
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
            let a = t.begin(&["user:a", "ip:1"], t0).expect("admitted");
            a.failed(t0 + Duration::from_secs(i));
        }
        let wait = t
            .begin(&["user:a"], t0 + Duration::from_secs(10))
            .err()
            .unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        // The address is blocked too, for any username.
        assert!(
            t.begin(&["user:b", "ip:1"], t0 + Duration::from_secs(10))
                .is_err()
        );
        assert!(
            t.begin(&["user:b", "ip:2"], t0 + Duration::from_secs(10))
                .is_ok()
        );
        // After the first failure leaves the window, one more attempt is allowed.
        assert!(t.begin(&["user:a"], t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_against_the_limit() {
        let t = Throttle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        let a = t.begin(&["user:a"], now).unwrap();
        let b = t.begin(&["user:a"], now).unwrap();
        assert_eq!(t.begin(&["user:a"], now).err(), Some(IN_FLIGHT_WAIT));
        // A dropped (abandoned) attempt frees its slot without counting as a failure.
        drop(a);
        let c = t.begin(&["user:a"], now).unwrap();
        b.succeeded();
        c.failed(now);
        assert!(t.begin(&["user:a"], now).is_ok());
    }

    #[test]
    fn success_forgets_the_username_failures_not_the_address() {
        let t = Throttle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        t.begin(&["user:a", "ip:1"], now).unwrap().failed(now);
        t.begin(&["user:a", "ip:1"], now).unwrap().succeeded();
        assert!(t.begin(&["user:a", "ip:2"], now).is_ok());
        t.begin(&["user:z", "ip:1"], now).unwrap().failed(now);
        assert!(
            t.begin(&["user:q", "ip:1"], now).is_err(),
            "two failures from ip:1"
        );
    }

    #[test]
    fn table_stays_bounded() {
        let t = Throttle::new(1, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..(MAX_KEYS + 50) {
            t.begin(&[&format!("ip:{i}")], now).unwrap().failed(now);
        }
        assert!(t.table.lock().len() <= MAX_KEYS);
    }
}
