//! Owns when a message may go out: at once, at the end of the user's digest window, or
//! when their quiet hours end (in their time zone). Pure functions over Unix ms.
//!
//! Digest windows are aligned to multiples of N minutes on the UTC clock (N = 15 sends
//! at :00, :15, :30, :45). A message held by a digest or by quiet hours is "batched":
//! everything batched that is due for one user goes out as one digest message.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::storage::notify::{NotifyMode, Prefs, QuietHours};

/// Whether the message is held for a digest, and when it may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub batched: bool,
    pub not_before: i64,
}

/// Plans a message created at `now` for a user with `prefs` in time zone `tz`.
pub fn plan(now: i64, prefs: &Prefs, tz: &str) -> Plan {
    let zone = TimeZone::get(tz).unwrap_or(TimeZone::UTC);
    let (batched, at) = match prefs.mode {
        NotifyMode::Immediate => (false, now),
        NotifyMode::Digest => (true, next_boundary(now, prefs.digest_minutes)),
    };
    match prefs.quiet.and_then(|q| quiet_end(at, q, &zone)) {
        Some(end) => Plan {
            batched: true,
            not_before: end,
        },
        None => Plan {
            batched,
            not_before: at,
        },
    }
}

/// The first multiple of `minutes` after `now`.
pub fn next_boundary(now: i64, minutes: u32) -> i64 {
    let period = i64::from(minutes.max(1)) * 60_000;
    (now.div_euclid(period) + 1) * period
}

/// When quiet hours `q` end, if `at` falls inside them; `None` otherwise.
pub fn quiet_end(at: i64, q: QuietHours, zone: &TimeZone) -> Option<i64> {
    if q.start == q.end {
        return None;
    }
    let local = Timestamp::from_millisecond(at).ok()?.to_zoned(zone.clone());
    let minute = u16::try_from(local.hour()).ok()? * 60 + u16::try_from(local.minute()).ok()?;
    let inside = if q.start < q.end {
        (q.start..q.end).contains(&minute)
    } else {
        minute >= q.start || minute < q.end
    };
    if !inside {
        return None;
    }
    let (h, m) = (
        i8::try_from(q.end / 60).ok()?,
        i8::try_from(q.end % 60).ok()?,
    );
    let today = local.date().at(h, m, 0, 0).to_zoned(zone.clone()).ok()?;
    let end = if today.timestamp() > local.timestamp() {
        today
    } else {
        local
            .date()
            .tomorrow()
            .ok()?
            .at(h, m, 0, 0)
            .to_zoned(zone.clone())
            .ok()?
    };
    Some(end.timestamp().as_millisecond())
}

/// Parses "HH:MM" into minutes after midnight.
pub fn parse_clock(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// Formats minutes after midnight as "HH:MM".
pub fn format_clock(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn quiet(start: &str, end: &str) -> Prefs {
        Prefs {
            quiet: Some(QuietHours {
                start: parse_clock(start).unwrap(),
                end: parse_clock(end).unwrap(),
            }),
            ..Prefs::default()
        }
    }

    #[test]
    fn immediate_outside_quiet_hours() {
        let now = ms("2026-11-22T12:00:00Z");
        let p = plan(now, &quiet("22:00", "07:00"), "Europe/Rome");
        assert_eq!(
            p,
            Plan {
                batched: false,
                not_before: now
            }
        );
    }

    #[test]
    fn overnight_quiet_hours_hold_until_local_morning() {
        // 23:30 in Rome (UTC+1) → held until 07:00 Rome = 06:00 UTC next day.
        let p = plan(
            ms("2026-11-22T22:30:00Z"),
            &quiet("22:00", "07:00"),
            "Europe/Rome",
        );
        assert_eq!(
            p,
            Plan {
                batched: true,
                not_before: ms("2026-11-23T06:00:00Z")
            }
        );
        // 01:00 Rome, after midnight: same morning.
        let p = plan(
            ms("2026-11-23T00:00:00Z"),
            &quiet("22:00", "07:00"),
            "Europe/Rome",
        );
        assert_eq!(p.not_before, ms("2026-11-23T06:00:00Z"));
    }

    #[test]
    fn daytime_quiet_hours_and_dst() {
        // 29 March 2026: Rome jumps from 02:00 to 03:00. Quiet 01:00–02:30 ends at the
        // first valid instant after the gap.
        let p = plan(
            ms("2026-03-29T00:30:00Z"),
            &quiet("01:00", "02:30"),
            "Europe/Rome",
        );
        assert!(p.batched);
        assert_eq!(p.not_before, ms("2026-03-29T01:30:00Z"));
    }

    #[test]
    fn digest_boundaries_and_quiet_hours_together() {
        let prefs = Prefs {
            mode: NotifyMode::Digest,
            digest_minutes: 15,
            quiet: None,
        };
        let p = plan(ms("2026-11-22T12:07:10Z"), &prefs, "UTC");
        assert_eq!(
            p,
            Plan {
                batched: true,
                not_before: ms("2026-11-22T12:15:00Z")
            }
        );
        assert_eq!(
            next_boundary(ms("2026-11-22T12:15:00Z"), 15),
            ms("2026-11-22T12:30:00Z")
        );
        // The boundary falls into quiet hours: held until they end.
        let prefs = Prefs {
            quiet: quiet("12:10", "13:00").quiet,
            ..prefs
        };
        assert_eq!(
            plan(ms("2026-11-22T12:07:10Z"), &prefs, "UTC").not_before,
            ms("2026-11-22T13:00:00Z")
        );
    }

    #[test]
    fn clocks() {
        assert_eq!(parse_clock("07:05"), Some(425));
        assert_eq!(parse_clock("24:00"), None);
        assert_eq!(parse_clock("7:05"), None);
        assert_eq!(parse_clock("07:60"), None);
        assert_eq!(format_clock(1320), "22:00");
    }
}
