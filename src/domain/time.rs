//! The one clock: Unix seconds ([`system_now`], or [`now`] with the floor below) and
//! Unix milliseconds ([`now_ms`]) for every time stamp meteomesh writes, and RFC 3339
//! for showing them.
//!
//! It also owns wall-clock sanity for boards without a real-time clock (a Raspberry Pi boots at
//! 1970, or at the last shutdown with fake-hwclock, until NTP answers). Time stamps that
//! must survive the jump to the real time — login tokens' `iat`/`exp` — use [`now`],
//! which never goes below the last time this installation saw (kept in the database)
//! nor below this release's date. Work that would file data under a wrong time (the SLA
//! history) waits until [`is_set`].
//!
//! Publishes and consumes nothing on the bus.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// 2026-11-01T00:00:00Z: no correct clock reads earlier while this release runs.
pub const RELEASE_FLOOR: i64 = 1_793_491_200;

static FLOOR: AtomicI64 = AtomicI64::new(RELEASE_FLOOR);

/// The system clock, Unix seconds.
pub fn system_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `system` unless it is below `floor`.
pub fn floored(system: i64, floor: i64) -> i64 {
    system.max(floor)
}

/// Unix seconds for time stamps that must stay valid across a clock correction.
pub fn now() -> i64 {
    floored(system_now(), FLOOR.load(Ordering::Relaxed))
}

/// Whether the system clock reads at least the floor (it has been set).
pub fn is_set() -> bool {
    system_now() >= FLOOR.load(Ordering::Relaxed)
}

/// Raises the floor to a time this installation is known to have seen.
pub fn raise_floor(seen: i64) {
    FLOOR.fetch_max(seen, Ordering::Relaxed);
}

/// RFC 3339 for Unix milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Unix microseconds now (the client library's message latencies).
pub fn now_micros() -> u64 {
    jiff::Timestamp::now().as_microsecond().max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_behind_the_floor_reads_the_floor() {
        assert_eq!(floored(0, RELEASE_FLOOR), RELEASE_FLOOR);
        assert_eq!(floored(RELEASE_FLOOR + 5, RELEASE_FLOOR), RELEASE_FLOOR + 5);
        // This machine's clock is set.
        assert!(is_set());
        assert!(now() >= system_now());
    }
}
