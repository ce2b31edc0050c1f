//! Owns the providers' quotas: the limits of a plan (calls per minute, hour, day, month),
//! the weight of one request, and a pacer that spaces requests so that no window of any
//! limit's length — aligned with the provider's clock or not — ever holds more calls than
//! the limit allows. Pure: the caller passes the time, so a simulated day runs in
//! microseconds (`benches/bench_quota.rs`, the quota tests).
//!
//! The pacer is a token bucket of capacity C (the heaviest single request) refilled at
//! rate r. Any window of length W then holds at most C + r·W calls, so choosing
//! r = min over the limits of (N − C) / W keeps every limit N per W.

use std::time::Duration;

use crate::config::{ProviderKind, WeatherConfig};

/// One limit: at most `calls` (weighted) in any window of `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub window: Duration,
    pub calls: f64,
}

pub const MINUTE: Duration = Duration::from_secs(60);
pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(86_400);
/// The longest calendar month, so a limit kept over any 31 days is kept in every month.
pub const MONTH: Duration = Duration::from_secs(31 * 86_400);

/// A provider plan: its limits and how often its current conditions change.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub limits: Vec<Limit>,
    /// Polling faster than this fetches the same data again.
    pub update_interval: Duration,
}

impl Plan {
    /// Weighted calls per second the plan sustains when single requests weigh up to
    /// `burst`; `f64::INFINITY` without limits, 0 when `burst` alone breaks a limit.
    pub fn sustained_rate(&self, burst: f64) -> f64 {
        self.limits
            .iter()
            .map(|l| ((l.calls - burst) / l.window.as_secs_f64()).max(0.0))
            .fold(f64::INFINITY, f64::min)
    }

    /// The shortest interval at which `weight` (the calls of one full cycle over every
    /// place) can be repeated forever, never below the provider's update interval nor
    /// `wanted`.
    pub fn feasible_interval(&self, wanted: Duration, weight: f64, burst: f64) -> Duration {
        let floor = wanted.max(self.update_interval);
        let rate = self.sustained_rate(burst);
        if !rate.is_finite() {
            return floor;
        }
        if rate <= 0.0 {
            return Duration::MAX;
        }
        floor.max(Duration::from_secs_f64((weight / rate).min(1e12)))
    }

    /// How many places (one call each) fit at `interval`.
    pub fn places_at(&self, interval: Duration, weight_per_place: f64, burst: f64) -> usize {
        let rate = self.sustained_rate(burst);
        if !rate.is_finite() {
            return usize::MAX;
        }
        let interval = interval.max(self.update_interval).as_secs_f64();
        (rate * interval / weight_per_place).floor() as usize
    }
}

/// The provider plan the config describes (limits of 0 are none).
pub fn plan(cfg: &WeatherConfig) -> Plan {
    let limit = |calls: u32, window| {
        (calls > 0).then_some(Limit {
            window,
            calls: calls as f64,
        })
    };
    let limits = match cfg.provider {
        ProviderKind::OpenMeteo => vec![
            limit(cfg.open_meteo_calls_per_minute, MINUTE),
            limit(cfg.open_meteo_calls_per_hour, HOUR),
            limit(cfg.open_meteo_calls_per_day, DAY),
        ],
        ProviderKind::OpenWeatherMap => vec![
            limit(cfg.openweathermap_calls_per_minute, MINUTE),
            limit(cfg.openweathermap_calls_per_month, MONTH),
        ],
    };
    Plan {
        limits: limits.into_iter().flatten().collect(),
        update_interval: cfg.provider.update_interval(),
    }
}

/// Spaces requests to keep a plan. Times are seconds on the caller's clock.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: f64,
}

impl Pacer {
    /// A pacer for `plan` whose single requests weigh at most `burst`; it starts full.
    pub fn new(plan: &Plan, burst: f64, now: f64) -> Pacer {
        Pacer {
            rate: plan.sustained_rate(burst),
            capacity: burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: f64) {
        if now > self.at {
            self.tokens = (self.tokens + (now - self.at) * self.rate).min(self.capacity);
            self.at = now;
        }
    }

    /// Seconds to wait before a request of `weight` may go; 0 when it may go now.
    /// `None` when it never may (heavier than the largest burst, or a zero rate).
    pub fn wait(&mut self, now: f64, weight: f64) -> Option<f64> {
        if self.rate.is_infinite() {
            return Some(0.0);
        }
        if weight > self.capacity + 1e-9 || self.rate <= 0.0 {
            return None;
        }
        self.refill(now);
        if self.tokens + 1e-9 >= weight {
            return Some(0.0);
        }
        Some((weight - self.tokens) / self.rate)
    }

    /// Records a request of `weight` made at `now` (after `wait` said 0).
    pub fn spend(&mut self, now: f64, weight: f64) {
        self.refill(now);
        self.tokens -= weight;
    }
}

/// How long to stop calling after a 429: the provider's `Retry-After`, else until the
/// window its reason names has passed ("Minutely/Hourly/Daily API request limit
/// exceeded"; a monthly limit is probed once a day), else a minute.
pub fn rate_limit_pause(reason: &str, retry_after: Option<Duration>, now_unix: i64) -> Duration {
    if let Some(d) = retry_after {
        return d.max(Duration::from_secs(1));
    }
    let reason = reason.to_ascii_lowercase();
    let period: i64 = if reason.contains("minute") {
        60
    } else if reason.contains("hour") {
        3600
    } else if reason.contains("dai") || reason.contains("day") || reason.contains("month") {
        86_400
    } else {
        60
    };
    // Windows are taken as aligned to UTC; one second more so the next call lands after
    // the provider's reset, not on it.
    Duration::from_secs((period - now_unix.rem_euclid(period)) as u64 + 1)
}

/// A day of polling `places` every `interval` (as the poller does: batches of `batch`
/// places through the pacer, a new cycle when the interval has passed and the last one
/// has ended), for the quota tests and `benches/bench_quota.rs`.
pub struct Simulation {
    /// (second of the day, weight) of every request.
    pub calls: Vec<(f64, f64)>,
    /// Cycles that fetched every place.
    pub cycles: usize,
}

impl Simulation {
    pub fn run(
        plan: &Plan,
        places: usize,
        batch: usize,
        weight_per_place: f64,
        interval: Duration,
        length: Duration,
    ) -> Simulation {
        let burst = batch as f64 * weight_per_place;
        let mut pacer = Pacer::new(plan, burst, 0.0);
        let interval = interval.max(plan.update_interval).as_secs_f64();
        let end = length.as_secs_f64();
        let (mut calls, mut cycles, mut start) = (Vec::new(), 0, 0.0);
        'day: while start < end {
            let mut now = start;
            let mut left = places;
            while left > 0 {
                let n = left.min(batch);
                let weight = n as f64 * weight_per_place;
                let Some(wait) = pacer.wait(now, weight) else {
                    break 'day;
                };
                now += wait;
                if now >= end {
                    break 'day;
                }
                pacer.spend(now, weight);
                calls.push((now, weight));
                left -= n;
            }
            cycles += 1;
            start = (start + interval).max(now);
        }
        Simulation { calls, cycles }
    }

    /// The most calls any window of `window` held (sliding, so any alignment).
    pub fn busiest(&self, window: Duration) -> f64 {
        let w = window.as_secs_f64();
        let (mut first, mut sum, mut most) = (0, 0.0, 0.0_f64);
        for &(at, weight) in &self.calls {
            sum += weight;
            while at - self.calls[first].0 >= w {
                sum -= self.calls[first].1;
                first += 1;
            }
            most = most.max(sum);
        }
        most
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_meteo_free() -> Plan {
        Plan {
            limits: vec![
                Limit {
                    window: MINUTE,
                    calls: 600.0,
                },
                Limit {
                    window: HOUR,
                    calls: 5_000.0,
                },
                Limit {
                    window: DAY,
                    calls: 10_000.0,
                },
            ],
            update_interval: Duration::from_secs(900),
        }
    }

    #[test]
    fn the_daily_limit_decides_for_open_meteo() {
        let plan = open_meteo_free();
        // 100 places a request: (10,000 − 100) per day.
        let rate = plan.sustained_rate(100.0);
        assert!((rate * 86_400.0 - 9_900.0).abs() < 1e-6, "{rate}");
        // Every 15 minutes (96 cycles a day), 103 places fit.
        assert_eq!(plan.places_at(Duration::from_secs(900), 1.0, 100.0), 103);
        // 1,000 places: one cycle every ~2.4 hours.
        let every = plan.feasible_interval(Duration::from_secs(600), 1000.0, 100.0);
        assert_eq!(every.as_secs(), 8727);
        // Never faster than the data changes.
        let every = plan.feasible_interval(Duration::from_secs(60), 1.0, 1.0);
        assert_eq!(every, Duration::from_secs(900));
    }

    #[test]
    fn a_request_heavier_than_a_limit_never_goes() {
        let plan = open_meteo_free();
        let mut pacer = Pacer::new(&plan, 700.0, 0.0);
        assert_eq!(pacer.wait(0.0, 700.0), None, "700 > 600 per minute");
        let mut pacer = Pacer::new(&plan, 100.0, 0.0);
        assert_eq!(pacer.wait(0.0, 101.0), None);
    }

    #[test]
    fn a_simulated_day_keeps_every_window() {
        let plan = open_meteo_free();
        for places in [10, 100, 1_000, 10_000] {
            let sim = Simulation::run(&plan, places, 100, 1.0, Duration::from_secs(900), 3 * DAY);
            for limit in &plan.limits {
                assert!(
                    sim.busiest(limit.window) <= limit.calls,
                    "{places} places: {} in {:?}",
                    sim.busiest(limit.window),
                    limit.window
                );
            }
            let per_day: f64 = sim.calls.iter().map(|c| c.1).sum::<f64>() / 3.0;
            if places <= 100 {
                // Every 15 minutes, as asked.
                assert_eq!(sim.cycles, 3 * 96, "{places}");
            } else {
                // As many as the day allows, not needlessly fewer.
                assert!(per_day > 9_800.0, "{places} places: {per_day} a day");
            }
        }
    }

    #[test]
    fn openweathermap_free_plan_over_a_simulated_month() {
        let plan = Plan {
            limits: vec![
                Limit {
                    window: MINUTE,
                    calls: 60.0,
                },
                Limit {
                    window: MONTH,
                    calls: 1_000_000.0,
                },
            ],
            update_interval: Duration::from_secs(600),
        };
        // (1,000,000 − 1) over 31 days: 224 places every 10 minutes, not 250.
        assert_eq!(plan.places_at(Duration::from_secs(600), 1.0, 1.0), 224);
        for places in [10, 100, 1_000] {
            let sim = Simulation::run(&plan, places, 1, 1.0, Duration::from_secs(600), MONTH);
            for limit in &plan.limits {
                assert!(
                    sim.busiest(limit.window) <= limit.calls,
                    "{places}: {limit:?}"
                );
            }
            if places <= 224 {
                assert_eq!(sim.cycles, 31 * 144, "{places} places every 10 minutes");
            }
        }
    }

    #[test]
    fn a_429_waits_for_the_window_its_reason_names() {
        let at = 1_795_359_630; // 2026-11-22T15:00:30Z
        let pause = |reason| rate_limit_pause(reason, None, at).as_secs();
        assert_eq!(
            pause("Minutely API request limit exceeded. Please try again in one minute."),
            31
        );
        assert_eq!(
            pause("Hourly API request limit exceeded. Please try again in the next hour."),
            3571
        );
        assert_eq!(
            pause("Daily API request limit exceeded. Please try again tomorrow."),
            32_371
        );
        assert_eq!(pause("code 429"), 31);
        assert_eq!(
            rate_limit_pause("x", Some(Duration::from_secs(7)), at),
            Duration::from_secs(7)
        );
    }
}
