//! Owns the seen-id cache that drops duplicate envelopes: an id seen within the window
//! is a duplicate. Bounded in count as well as time, so a flood cannot grow it without
//! limit (the oldest ids go first).

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

pub struct SeenCache {
    window: Duration,
    cap: usize,
    ids: HashSet<String>,
    order: VecDeque<(Instant, String)>,
}

impl SeenCache {
    pub fn new(window: Duration, cap: usize) -> SeenCache {
        SeenCache {
            window,
            cap: cap.max(1),
            ids: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `id`; true when it is new, false for a duplicate.
    pub fn first_time(&mut self, id: &str, now: Instant) -> bool {
        self.expire(now);
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some((_, old)) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.ids.insert(id.to_owned());
        self.order.push_back((now, id.to_owned()));
        true
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_within_window_and_cap() {
        let t0 = Instant::now();
        let mut c = SeenCache::new(Duration::from_secs(10), 3);
        assert!(c.first_time("a", t0));
        assert!(!c.first_time("a", t0 + Duration::from_secs(1)));
        assert!(c.first_time("b", t0));
        assert!(c.first_time("c", t0));
        // Over the cap the oldest is forgotten.
        assert!(c.first_time("d", t0));
        assert_eq!(c.len(), 3);
        assert!(c.first_time("a", t0 + Duration::from_secs(2)));
        // After the window everything is new again.
        assert!(c.first_time("c", t0 + Duration::from_secs(11)));
    }
}
