//! Owns login throttling, after OWASP's device-cookie pattern with progressive delays:
//! - Every key (an account, a trusted device of an account, a client address, a name
//!   that is no account) counts failures. From the `max`-th failure on, the next attempt
//!   must wait a delay that doubles with each further failure (`first_delay`, by default
//!   1 s, then 2 s, 4 s … at most `window`); failures are forgotten once `window` has
//!   passed since that delay ended, so waiting out the longest delay buys one attempt,
//!   not a fresh allowance.
//! - A device that logged in to an account before (see [`Throttle::trust`]) is throttled
//!   by its own failures only, so guesses from elsewhere never lock the household out.
//! - Attempts still being checked count too, so a burst of concurrent guesses cannot slip
//!   past the limit while the first ones are hashed.
//! - Keys of accounts and trusted devices are never evicted (there are as many as there
//!   are accounts); client addresses and unknown names share a bounded table that, when
//!   full, drops the keys with the fewest failures, so a flood of cheap failures cannot
//!   push a locked key out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Client addresses and unknown names kept at most.
const MAX_CLIENT_KEYS: usize = 10_000;
/// Trusted devices kept per account (the least recently used goes first).
const MAX_DEVICES_PER_ACCOUNT: usize = 16;
/// How long a device stays trusted after its last successful login.
pub const DEVICE_TRUST: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// The default wait after the `max`-th failure (`auth.login_first_delay`).
#[cfg(test)]
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// What a client blocked only by attempts still in flight is told to wait.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);

/// What an attempt is counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// An existing account (never evicted).
    Account(String),
    /// A trusted device of an account, `{account}/{device}` (never evicted).
    Device(String),
    /// A client address or a name that is no account (bounded, evictable).
    Client(String),
}

impl Key {
    fn protected(&self) -> bool {
        !matches!(self, Key::Client(_))
    }
    fn name(&self) -> &str {
        match self {
            Key::Account(k) | Key::Device(k) | Key::Client(k) => k,
        }
    }
}

#[derive(Default)]
struct Entry {
    failures: u32,
    last_failure: Option<Instant>,
    in_flight: usize,
}

#[derive(Default)]
struct Tables {
    protected: HashMap<String, Entry>,
    clients: HashMap<String, Entry>,
    /// Account → its trusted devices and when each last logged in.
    devices: HashMap<String, Vec<(String, Instant)>>,
}

impl Tables {
    fn map(&mut self, key: &Key) -> &mut HashMap<String, Entry> {
        if key.protected() {
            &mut self.protected
        } else {
            &mut self.clients
        }
    }
}

struct Table {
    max: u32,
    window: Duration,
    first_delay: Duration,
    tables: Mutex<Tables>,
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
    keys: Vec<Key>,
    reported: bool,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The wait after `failures` failures: none below `max`, then 1 s doubling with each
    /// further failure, at most `window`.
    fn delay(&self, failures: u32) -> Duration {
        if failures < self.max {
            return Duration::ZERO;
        }
        let doublings = (failures - self.max).min(30);
        self.first_delay
            .saturating_mul(1 << doublings)
            .min(self.window)
    }

    /// Whether failures last counted at `last` still count at `now`.
    fn still_counted(&self, failures: u32, last: Instant, now: Instant) -> bool {
        now.saturating_duration_since(last) < self.delay(failures) + self.window
    }

    /// Failures that still count at `now`.
    fn current(&self, e: &Entry, now: Instant) -> u32 {
        match e.last_failure {
            Some(last) if self.still_counted(e.failures, last, now) => e.failures,
            _ => 0,
        }
    }

    /// How long `e` must wait at `now`, if at all.
    fn wait(&self, e: &Entry, now: Instant) -> Option<Duration> {
        let failures = self.current(e, now);
        if failures >= self.max {
            let last = e.last_failure.expect("counted failures have a time");
            let left = self
                .delay(failures)
                .saturating_sub(now.saturating_duration_since(last));
            if !left.is_zero() {
                return Some(left);
            }
            // The delay has passed: one attempt at a time.
            if e.in_flight > 0 {
                return Some(IN_FLIGHT_WAIT);
            }
        } else if failures as usize + e.in_flight >= self.max as usize {
            return Some(IN_FLIGHT_WAIT);
        }
        None
    }

    fn end(&self, keys: &[Key], failed_at: Option<Instant>) {
        let mut t = self.lock();
        for key in keys {
            let Some(e) = t.map(key).get_mut(key.name()) else {
                continue;
            };
            e.in_flight = e.in_flight.saturating_sub(1);
            if let Some(now) = failed_at {
                let counted = e
                    .last_failure
                    .is_some_and(|last| self.still_counted(e.failures, last, now));
                e.failures = if counted { e.failures + 1 } else { 1 };
                e.last_failure = Some(now);
            }
        }
    }

    /// Makes room in the client table: forgets stale keys, then those with the fewest
    /// failures (the oldest first among equals). Keys with attempts in flight stay.
    fn make_room(&self, t: &mut Tables, now: Instant) {
        t.clients
            .retain(|_, e| e.in_flight > 0 || self.current(e, now) > 0);
        while t.clients.len() >= MAX_CLIENT_KEYS {
            let weakest = t
                .clients
                .iter()
                .filter(|(_, e)| e.in_flight == 0)
                .min_by_key(|(_, e)| (e.failures, e.last_failure))
                .map(|(k, _)| k.clone());
            match weakest {
                Some(k) => t.clients.remove(&k),
                None => break,
            };
        }
    }
}

impl Throttle {
    pub fn new(max: u32, window: Duration, first_delay: Duration) -> Throttle {
        Throttle {
            table: Arc::new(Table {
                max: max.max(1),
                window,
                first_delay,
                tables: Mutex::new(Tables::default()),
            }),
        }
    }

    /// Admits an attempt counted against `keys`, or says how long to wait when any key
    /// is blocked.
    pub fn begin(&self, keys: Vec<Key>, now: Instant) -> Result<Attempt, Duration> {
        let table = &self.table;
        let mut t = table.lock();
        let mut wait = None;
        for key in &keys {
            if let Some(e) = t.map(key).get(key.name()) {
                wait = wait.max(table.wait(e, now));
            }
        }
        if let Some(w) = wait {
            return Err(w);
        }
        let new_clients = keys
            .iter()
            .filter(|k| !k.protected() && !t.clients.contains_key(k.name()))
            .count();
        if t.clients.len() + new_clients > MAX_CLIENT_KEYS {
            table.make_room(&mut t, now);
        }
        if t.protected.len() > 2 * MAX_CLIENT_KEYS {
            // Accounts come and go; their idle entries need not stay.
            t.protected
                .retain(|_, e| e.in_flight > 0 || table.current(e, now) > 0);
        }
        for key in &keys {
            t.map(key)
                .entry(key.name().to_owned())
                .or_default()
                .in_flight += 1;
        }
        Ok(Attempt {
            table: table.clone(),
            keys,
            reported: false,
        })
    }

    /// Whether `device` logged in to `account` within [`DEVICE_TRUST`].
    pub fn is_trusted(&self, account: &str, device: &str, now: Instant) -> bool {
        self.table.lock().devices.get(account).is_some_and(|list| {
            list.iter()
                .any(|(d, at)| d == device && now.saturating_duration_since(*at) < DEVICE_TRUST)
        })
    }

    /// Remembers that `device` logged in to `account` (a correct password).
    pub fn trust(&self, account: &str, device: &str, now: Instant) {
        let mut t = self.table.lock();
        let list = t.devices.entry(account.to_owned()).or_default();
        list.retain(|(d, at)| d != device && now.saturating_duration_since(*at) < DEVICE_TRUST);
        if list.len() >= MAX_DEVICES_PER_ACCOUNT {
            list.remove(0);
        }
        list.push((device.to_owned(), now));
    }

    /// Forgets every device of `account` (its password changed or it was deleted).
    pub fn forget_devices(&self, account: &str) {
        self.table.lock().devices.remove(account);
    }
}

impl Attempt {
    /// A failed attempt counts against every key.
    pub fn failed(mut self, now: Instant) {
        self.reported = true;
        self.table.end(&self.keys, Some(now));
    }

    /// A success forgets the first key's (the account's or device's) failures.
    pub fn succeeded(mut self) {
        self.reported = true;
        self.table.end(&self.keys, None);
        if let Some(first) = self.keys.first() {
            let mut t = self.table.lock();
            if let Some(e) = t.map(first).get_mut(first.name()) {
                e.failures = 0;
                e.last_failure = None;
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

    fn account(name: &str) -> Key {
        Key::Account(name.to_owned())
    }
    fn client(name: &str) -> Key {
        Key::Client(name.to_owned())
    }

    #[test]
    fn delays_grow_with_each_failure_past_the_limit() {
        let t = Throttle::new(3, Duration::from_secs(60), FIRST_DELAY);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        for i in 0..3 {
            t.begin(vec![account("a"), client("ip:1")], at(i))
                .expect("admitted")
                .failed(at(i));
        }
        // Third failure at 2 s: 1 s to wait, for the account and for the address.
        assert_eq!(t.begin(vec![account("a")], at(2)).err(), Some(FIRST_DELAY));
        assert!(t.begin(vec![account("b"), client("ip:1")], at(2)).is_err());
        assert!(t.begin(vec![account("b"), client("ip:2")], at(2)).is_ok());
        // Then 2 s, 4 s, … never more than the window.
        t.begin(vec![account("a")], at(3)).unwrap().failed(at(3));
        assert_eq!(
            t.begin(vec![account("a")], at(3)).err(),
            Some(Duration::from_secs(2))
        );
        let mut now = 5;
        for _ in 0..10 {
            t.begin(vec![account("a")], at(now))
                .unwrap()
                .failed(at(now));
            now += t
                .begin(vec![account("a")], at(now))
                .err()
                .unwrap()
                .as_secs();
        }
        assert_eq!(
            t.begin(vec![account("a")], at(now - 1)).err(),
            Some(Duration::from_secs(1))
        );
        t.begin(vec![account("a")], at(now))
            .unwrap()
            .failed(at(now));
        assert_eq!(
            t.begin(vec![account("a")], at(now)).err(),
            Some(Duration::from_secs(60)),
            "capped at the window"
        );
        // Waiting out the longest delay buys one attempt, not a fresh allowance.
        t.begin(vec![account("a")], at(now + 60))
            .unwrap()
            .failed(at(now + 60));
        assert!(t.begin(vec![account("a")], at(now + 61)).is_err());
        // A window after the last delay ended, all is forgotten.
        assert!(t.begin(vec![account("a")], at(now + 60 + 60 + 60)).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_against_the_limit() {
        let t = Throttle::new(2, Duration::from_secs(60), FIRST_DELAY);
        let now = Instant::now();
        let a = t.begin(vec![account("a")], now).unwrap();
        let b = t.begin(vec![account("a")], now).unwrap();
        assert_eq!(t.begin(vec![account("a")], now).err(), Some(IN_FLIGHT_WAIT));
        // A dropped (abandoned) attempt frees its slot without counting as a failure.
        drop(a);
        let c = t.begin(vec![account("a")], now).unwrap();
        b.succeeded();
        c.failed(now);
        assert!(t.begin(vec![account("a")], now).is_ok());
    }

    #[test]
    fn success_forgets_the_accounts_failures_not_the_address() {
        let t = Throttle::new(2, Duration::from_secs(60), FIRST_DELAY);
        let now = Instant::now();
        t.begin(vec![account("a"), client("ip:1")], now)
            .unwrap()
            .failed(now);
        t.begin(vec![account("a"), client("ip:1")], now)
            .unwrap()
            .succeeded();
        assert!(t.begin(vec![account("a"), client("ip:2")], now).is_ok());
        t.begin(vec![account("z"), client("ip:1")], now)
            .unwrap()
            .failed(now);
        assert!(
            t.begin(vec![account("q"), client("ip:1")], now).is_err(),
            "two failures from ip:1"
        );
    }

    #[test]
    fn a_trusted_device_is_not_locked_out_by_others() {
        let t = Throttle::new(2, Duration::from_secs(600), FIRST_DELAY);
        let now = Instant::now();
        t.trust("alice", "phone", now);
        for i in 0..5 {
            let _ = t
                .begin(vec![account("alice"), client(&format!("ip:{i}"))], now)
                .map(|a| a.failed(now));
        }
        assert!(t.begin(vec![account("alice")], now).is_err());
        assert!(t.is_trusted("alice", "phone", now));
        assert!(!t.is_trusted("alice", "laptop", now));
        assert!(!t.is_trusted("bob", "phone", now));
        assert!(
            t.begin(vec![Key::Device("alice/phone".into())], now)
                .is_ok()
        );
        assert!(!t.is_trusted("alice", "phone", now + DEVICE_TRUST));
        t.forget_devices("alice");
        assert!(!t.is_trusted("alice", "phone", now));
    }

    #[test]
    fn a_flood_of_cheap_failures_cannot_evict_a_locked_key() {
        let t = Throttle::new(1, Duration::from_secs(60), FIRST_DELAY);
        let now = Instant::now();
        t.begin(vec![account("alice"), client("ip:attacker")], now)
            .unwrap()
            .failed(now);
        t.begin(vec![client("ip:bad")], now).unwrap().failed(now);
        t.begin(vec![client("ip:bad")], now + Duration::from_secs(1))
            .unwrap()
            .failed(now);
        for i in 0..(MAX_CLIENT_KEYS + 50) {
            let key = client(&format!("ip:{i}"));
            let _ = t.begin(vec![key], now).map(|a| a.failed(now));
        }
        let tables = t.table.lock();
        assert!(tables.clients.len() <= MAX_CLIENT_KEYS);
        assert!(
            tables.clients.contains_key("ip:bad"),
            "two failures outrank one"
        );
        drop(tables);
        assert!(t.begin(vec![account("alice")], now).is_err());
    }
}
