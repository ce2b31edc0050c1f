//! The rules themselves, without I/O: whether one reading violates one constraint, the
//! edge detection that turns a run of readings into raise and clear events, and what
//! an event says.
//!
//! Definitions (docs/weather.md has the code tables): too cold = temperature < min; too
//! hot = temperature > max; rain = rain + showers > 0 or a rain code; snow = snowfall > 0
//! or a snow code; ice = a freezing-drizzle, freezing-rain or sleet code. A precipitation
//! constraint is raised by any known sign of it and cleared only when every sign is known
//! and none shows it: an unknown value (null) neither raises nor clears, and neither does
//! a stale reading (older than `weather.max_observation_age`).

use std::collections::HashMap;

use crate::contract::{AlertEvent, AlertState, SubscriptionStateMsg};
use crate::domain::subscription::{ConstraintState, Kind, Subscription};
use crate::domain::time::rfc3339_ms;
use crate::domain::weather::{Conditions, ICE_CODES, RAIN_CODES, SNOW_CODES, describe};

/// One observation as the rules see it.
pub struct Reading<'a> {
    pub conditions: &'a Conditions,
    /// When the provider observed it (Unix ms), or when it arrived if the provider
    /// did not say.
    pub observed_ms: i64,
    /// Young enough to decide anything.
    pub fresh: bool,
    /// Older than `weather.stale_after`: the place has no fresh data (`no_data`).
    pub no_data: bool,
}

/// The age (ms) past which a place has no fresh data: `weather.stale_after`, or two of
/// the intervals the quota stretches fetches to — a place fetched every 3 hours is not
/// "without data" after one.
pub fn no_data_after(stale_after_ms: i64, stretched_ms: i64) -> i64 {
    stale_after_ms.max(stretched_ms.saturating_mul(2))
}

/// Whether `kind` is violated by `c`, given whether it was violated before (for
/// hysteresis). `None` when the observation does not tell.
pub fn violated(
    sub: &Subscription,
    kind: Kind,
    c: &Conditions,
    was_violated: bool,
    hysteresis: f64,
) -> Option<bool> {
    match kind {
        Kind::TooCold => {
            let (min, t) = (sub.min_temp_c?, c.temperature_c?);
            Some(if was_violated {
                t < min + hysteresis
            } else {
                t < min
            })
        }
        Kind::TooHot => {
            let (max, t) = (sub.max_temp_c?, c.temperature_c?);
            Some(if was_violated {
                t > max - hysteresis
            } else {
                t > max
            })
        }
        Kind::Rain => sub
            .rain
            .then(|| precipitation(&[c.rain_mm, c.showers_mm], c, RAIN_CODES))?,
        Kind::Snow => sub
            .snow
            .then(|| precipitation(&[c.snowfall_cm], c, SNOW_CODES))?,
        Kind::Ice => sub.ice.then(|| precipitation(&[], c, ICE_CODES))?,
        // Decided by the reading's age, in `evaluate`.
        Kind::NoData => None,
    }
}

/// Yes on any known sign (an amount above 0 or a code in `codes`); no only when every
/// amount and the weather code are known and none is a sign; otherwise unknown.
fn precipitation(amounts: &[Option<f64>], c: &Conditions, codes: &[u16]) -> Option<bool> {
    if amounts.iter().any(|a| a.is_some_and(|a| a > 0.0)) || c.code_in(codes).is_some() {
        return Some(true);
    }
    (amounts.iter().all(Option::is_some) && c.weather_code.is_some()).then_some(false)
}

/// The constraints a subscription has.
pub fn kinds(sub: &Subscription) -> Vec<Kind> {
    let mut k = Vec::new();
    if sub.min_temp_c.is_some() {
        k.push(Kind::TooCold);
    }
    if sub.max_temp_c.is_some() {
        k.push(Kind::TooHot);
    }
    if sub.rain {
        k.push(Kind::Rain);
    }
    if sub.snow {
        k.push(Kind::Snow);
    }
    if sub.ice {
        k.push(Kind::Ice);
    }
    k.push(Kind::NoData);
    k
}

/// Advances one constraint's state with one observation. Returns the new state and,
/// when the constraint flipped, whether it was raised or cleared.
pub fn step(
    prev: ConstraintState,
    observed: Option<bool>,
    for_observations: u32,
    now: i64,
) -> (ConstraintState, Option<AlertState>) {
    let Some(observed) = observed else {
        return (prev, None);
    };
    if observed == prev.violated {
        return (ConstraintState { streak: 0, ..prev }, None);
    }
    let streak = prev.streak + 1;
    if streak < for_observations.max(1) {
        return (ConstraintState { streak, ..prev }, None);
    }
    if observed {
        let next = ConstraintState {
            violated: true,
            since: Some(now),
            streak: 0,
            reminded_at: None,
        };
        (next, Some(AlertState::Raised))
    } else {
        let next = ConstraintState {
            violated: false,
            since: prev.since,
            streak: 0,
            reminded_at: None,
        };
        (next, Some(AlertState::Cleared))
    }
}

/// The amount behind an event: the temperature, or the precipitation when it was
/// measured (an alert a weather code raised has no amount to show, never "0.0 mm").
fn value_of(kind: Kind, c: &Conditions) -> Option<f64> {
    match kind {
        Kind::TooCold | Kind::TooHot => c.temperature_c,
        Kind::Rain => Some(c.rain_mm.unwrap_or(0.0) + c.showers_mm.unwrap_or(0.0)),
        Kind::Snow => c.snowfall_cm,
        Kind::Ice | Kind::NoData => None,
    }
    .filter(|v| matches!(kind, Kind::TooCold | Kind::TooHot) || *v > 0.0)
}

/// The observed condition in words, for precipitation constraints: the most
/// significant reported code of the constraint's kind ("freezing rain").
fn condition_of(kind: Kind, c: &Conditions) -> Option<String> {
    let codes = match kind {
        Kind::Rain => RAIN_CODES,
        Kind::Snow => SNOW_CODES,
        Kind::Ice => ICE_CODES,
        Kind::TooCold | Kind::TooHot | Kind::NoData => return None,
    };
    c.code_in(codes).map(|code| describe(code).to_owned())
}

/// What one observation did to one subscription.
pub struct Outcome {
    pub events: Vec<AlertEvent>,
    pub state: SubscriptionStateMsg,
    pub changes: Vec<(i64, Kind, ConstraintState)>,
}

/// Evaluates one subscription against one reading at `now` (Unix milliseconds).
pub fn evaluate(
    sub: &Subscription,
    states: &HashMap<Kind, ConstraintState>,
    reading: &Reading<'_>,
    hysteresis: f64,
    now: i64,
) -> Outcome {
    let c = reading.conditions;
    let mut events = Vec::new();
    let mut changes = Vec::new();
    let mut violated_now = Vec::new();
    for kind in kinds(sub) {
        let prev = states.get(&kind).copied().unwrap_or_default();
        // Old readings decide nothing, except that there is no fresh data.
        let (observed, needed) = match kind {
            Kind::NoData => (Some(reading.no_data), 1),
            _ => (
                violated(sub, kind, c, prev.violated, hysteresis).filter(|_| reading.fresh),
                sub.for_observations,
            ),
        };
        let (mut next, mut flipped) = step(prev, observed, needed, now);
        // Still holding on a fresh reading: remind when the subscription asks for it.
        let remind_ms = i64::from(sub.remind_hours) * 3_600_000;
        if flipped.is_none()
            && next.violated
            && observed == Some(true)
            && kind != Kind::NoData
            && remind_ms > 0
            && next
                .reminded_at
                .or(next.since)
                .is_some_and(|last| now - last >= remind_ms)
        {
            next.reminded_at = Some(now);
            flipped = Some(AlertState::Reminder);
        }
        if next != prev {
            changes.push((sub.id, kind, next));
        }
        if next.violated {
            violated_now.push(kind);
        }
        if let Some(state) = flipped {
            let started_at = next.since.or(prev.since).unwrap_or(now);
            events.push(AlertEvent {
                id: format!("{}-{}-{started_at}", sub.id, kind.as_str()),
                user_id: sub.user_id,
                subscription_id: sub.id,
                label: sub.label.clone(),
                place: sub.place_name.clone(),
                constraint: kind,
                state,
                value: value_of(kind, c),
                threshold_c: match kind {
                    Kind::TooCold => sub.min_temp_c,
                    Kind::TooHot => sub.max_temp_c,
                    _ => None,
                },
                weather_code: c.weather_code,
                condition: condition_of(kind, c),
                temperature_c: c.temperature_c,
                precipitation_mm: c.precipitation_mm,
                observed_at: Some(rfc3339_ms(reading.observed_ms)),
                started_at: rfc3339_ms(started_at),
                at: rfc3339_ms(now),
                notify: state != AlertState::Cleared || sub.notify_on_clear,
            });
        }
    }
    Outcome {
        events,
        state: SubscriptionStateMsg {
            subscription_id: sub.id,
            label: sub.label.clone(),
            place: sub.place_name.clone(),
            violated: violated_now,
            conditions: Some(c.clone()),
            observed_at: Some(rfc3339_ms(reading.observed_ms)),
            stale: !reading.fresh,
            updated_at: rfc3339_ms(now),
        },
        changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub() -> Subscription {
        Subscription {
            id: 1,
            user_id: 7,
            label: "home".into(),
            place_name: "Catania".into(),
            lat: 37.5,
            lon: 15.08,
            timezone: "Europe/Rome".into(),
            min_temp_c: Some(5.0),
            max_temp_c: Some(30.0),
            rain: true,
            snow: true,
            ice: false,
            remind_hours: 0,
            notify_on_clear: true,
            for_observations: 1,
            enabled: true,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn temp(t: Option<f64>) -> Conditions {
        Conditions {
            temperature_c: t,
            ..Conditions::default()
        }
    }

    fn fresh(c: &Conditions) -> Reading<'_> {
        Reading {
            conditions: c,
            observed_ms: 0,
            fresh: true,
            no_data: false,
        }
    }

    /// Runs observations through one subscription; returns the events per observation.
    fn run(s: &Subscription, obs: &[Conditions]) -> Vec<Vec<(Kind, AlertState)>> {
        let mut states: HashMap<Kind, ConstraintState> = HashMap::new();
        obs.iter()
            .enumerate()
            .map(|(i, c)| {
                let o = evaluate(s, &states, &fresh(c), 0.5, 1000 + i as i64);
                for (_, kind, st) in o.changes {
                    states.insert(kind, st);
                }
                o.events.iter().map(|e| (e.constraint, e.state)).collect()
            })
            .collect()
    }

    #[test]
    fn edge_triggered_with_hysteresis() {
        let s = sub();
        let got = run(
            &s,
            &[
                temp(Some(6.0)),
                temp(Some(4.0)), // raise
                temp(Some(4.0)), // still cold: nothing
                temp(Some(5.2)), // above min but inside hysteresis: nothing
                temp(Some(4.8)), // hovering: nothing
                temp(Some(5.6)), // past min + 0.5: clear
                temp(Some(4.9)), // below min again: raise
            ],
        );
        assert_eq!(
            got,
            vec![
                vec![],
                vec![(Kind::TooCold, AlertState::Raised)],
                vec![],
                vec![],
                vec![],
                vec![(Kind::TooCold, AlertState::Cleared)],
                vec![(Kind::TooCold, AlertState::Raised)],
            ]
        );
    }

    #[test]
    fn unknown_values_neither_raise_nor_clear() {
        let s = sub();
        let got = run(
            &s,
            &[
                temp(Some(40.0)),
                temp(None),
                temp(Some(31.0)),
                temp(None),
                temp(Some(20.0)),
            ],
        );
        assert_eq!(
            got,
            vec![
                vec![(Kind::TooHot, AlertState::Raised)],
                vec![],
                vec![],
                vec![],
                vec![(Kind::TooHot, AlertState::Cleared)],
            ]
        );
    }

    #[test]
    fn for_n_observations_and_rain_snow_codes() {
        let mut s = sub();
        s.for_observations = 2;
        s.min_temp_c = None;
        s.max_temp_c = None;
        let rain = Conditions {
            rain_mm: Some(0.0),
            showers_mm: Some(0.0),
            weather_code: Some(61),
            snowfall_cm: Some(0.0),
            ..Conditions::default()
        };
        let dry = Conditions {
            rain_mm: Some(0.0),
            showers_mm: Some(0.0),
            weather_code: Some(1),
            snowfall_cm: Some(0.0),
            ..Conditions::default()
        };
        let snow = Conditions {
            snowfall_cm: Some(0.4),
            weather_code: Some(3),
            ..Conditions::default()
        };
        let got = run(
            &s,
            &[
                rain.clone(),
                dry.clone(),
                rain.clone(),
                rain,
                dry.clone(),
                dry,
                snow.clone(),
                snow,
            ],
        );
        assert_eq!(
            got,
            vec![
                vec![],
                vec![],
                vec![],
                vec![(Kind::Rain, AlertState::Raised)],
                vec![],
                vec![(Kind::Rain, AlertState::Cleared)],
                vec![],
                vec![(Kind::Snow, AlertState::Raised)],
            ]
        );
    }

    #[test]
    fn alert_ids_are_stable_per_episode() {
        let s = sub();
        let mut states = HashMap::new();
        let raise = evaluate(&s, &states, &fresh(&temp(Some(40.0))), 0.5, 500);
        for (_, k, st) in &raise.changes {
            states.insert(*k, *st);
        }
        let clear = evaluate(&s, &states, &fresh(&temp(Some(20.0))), 0.5, 900);
        assert_eq!(raise.events[0].id, "1-too_hot-500");
        assert_eq!(clear.events[0].id, "1-too_hot-500");
        assert_eq!(clear.events[0].state, AlertState::Cleared);
        assert_eq!(raise.state.violated, vec![Kind::TooHot]);
        assert!(clear.state.violated.is_empty());
    }

    fn precipitation_only(rain: bool, snow: bool, ice: bool) -> Subscription {
        Subscription {
            min_temp_c: None,
            max_temp_c: None,
            rain,
            snow,
            ice,
            ..sub()
        }
    }

    fn open_meteo(rain: Option<f64>, showers: Option<f64>, code: Option<u16>) -> Conditions {
        Conditions {
            temperature_c: Some(3.0),
            rain_mm: rain,
            showers_mm: showers,
            snowfall_cm: Some(0.0),
            weather_code: code,
            ..Conditions::default()
        }
    }

    #[test]
    fn a_partly_unknown_reading_does_not_clear_rain() {
        let s = precipitation_only(true, false, false);
        let got = run(
            &s,
            &[
                open_meteo(Some(0.4), Some(0.0), Some(61)),
                // rain null, code null: showers 0.0 alone does not say it stopped.
                open_meteo(None, Some(0.0), None),
                open_meteo(Some(0.0), Some(0.0), None),
                open_meteo(Some(0.0), None, Some(3)),
                // Every sign known, none shows rain: cleared.
                open_meteo(Some(0.0), Some(0.0), Some(3)),
            ],
        );
        let rain = |st| vec![(Kind::Rain, st)];
        assert_eq!(
            got,
            vec![
                rain(AlertState::Raised),
                vec![],
                vec![],
                vec![],
                rain(AlertState::Cleared)
            ]
        );
    }

    #[test]
    fn ice_from_freezing_codes_and_sleet() {
        let s = precipitation_only(false, true, true);
        let code = |c| open_meteo(Some(0.0), Some(0.0), Some(c));
        // 67 freezing rain: ice, not snow; 79 sleet: both; 71 snow: snow only.
        let got = run(&s, &[code(67), code(79), code(71), code(3)]);
        assert_eq!(
            got,
            vec![
                vec![(Kind::Ice, AlertState::Raised)],
                vec![(Kind::Snow, AlertState::Raised)],
                vec![(Kind::Ice, AlertState::Cleared)],
                vec![(Kind::Snow, AlertState::Cleared)],
            ]
        );
        let o = evaluate(&s, &HashMap::new(), &fresh(&code(66)), 0.5, 1);
        assert_eq!(
            o.events[0].condition.as_deref(),
            Some("light freezing rain")
        );
        assert_eq!(o.events[0].value, None, "a code raised it: no amount");
    }

    #[test]
    fn a_stale_reading_neither_raises_nor_clears() {
        let s = sub();
        let hot = temp(Some(40.0));
        let stale = Reading {
            conditions: &hot,
            observed_ms: 0,
            fresh: false,
            no_data: false,
        };
        let o = evaluate(&s, &HashMap::new(), &stale, 0.5, 1);
        assert!(o.events.is_empty() && o.changes.is_empty());
        assert!(o.state.stale);
        let mut states = HashMap::new();
        for (_, k, st) in evaluate(&s, &states, &fresh(&hot), 0.5, 1).changes {
            states.insert(k, st);
        }
        let mild = temp(Some(20.0));
        let stale = Reading {
            conditions: &mild,
            observed_ms: 0,
            fresh: false,
            no_data: false,
        };
        let o = evaluate(&s, &states, &stale, 0.5, 2);
        assert!(o.events.is_empty(), "old mild data does not clear");
        assert_eq!(o.state.violated, vec![Kind::TooHot]);
    }

    #[test]
    fn no_fresh_data_is_told_once_and_its_return_too() {
        let s = sub();
        let mild = temp(Some(20.0));
        let reading = |no_data: bool| Reading {
            conditions: &mild,
            observed_ms: 0,
            fresh: !no_data,
            no_data,
        };
        let mut states = HashMap::new();
        let mut events = Vec::new();
        for (i, no_data) in [false, true, true, true, false].into_iter().enumerate() {
            let o = evaluate(&s, &states, &reading(no_data), 0.5, i as i64);
            for (_, k, st) in o.changes {
                states.insert(k, st);
            }
            events.extend(o.events.iter().map(|e| (i, e.constraint, e.state)));
        }
        assert_eq!(
            events,
            vec![
                (1, Kind::NoData, AlertState::Raised),
                (4, Kind::NoData, AlertState::Cleared)
            ],
            "for_observations does not delay it, and it is told once"
        );
    }

    #[test]
    fn reminders_while_it_holds_and_not_after() {
        let mut s = sub();
        s.remind_hours = 2;
        let hour = 3_600_000;
        let mut states = HashMap::new();
        let mut got = Vec::new();
        for (at, t) in [
            (0, 40.0),
            (hour, 40.0),
            (2 * hour, 40.0),
            (3 * hour, 40.0),
            (4 * hour, 41.0),
            (5 * hour, 20.0),
            (8 * hour, 20.0),
        ] {
            let c = temp(Some(t));
            let o = evaluate(&s, &states, &fresh(&c), 0.5, at);
            for (_, k, st) in o.changes {
                states.insert(k, st);
            }
            got.extend(o.events.iter().map(|e| (at / hour, e.state, e.key())));
        }
        assert_eq!(
            got,
            vec![
                (0, AlertState::Raised, "1-too_hot-0:raised".into()),
                (
                    2,
                    AlertState::Reminder,
                    format!("1-too_hot-0:reminder:{}", rfc3339_ms(2 * hour))
                ),
                (
                    4,
                    AlertState::Reminder,
                    format!("1-too_hot-0:reminder:{}", rfc3339_ms(4 * hour))
                ),
                (5, AlertState::Cleared, "1-too_hot-0:cleared".into()),
            ]
        );
    }

    #[test]
    fn a_quota_stretched_interval_is_not_missing_data() {
        let hour = 3_600_000;
        assert_eq!(no_data_after(hour, 0), hour);
        assert_eq!(no_data_after(hour, 15 * 60_000), hour);
        // Every 3 hours under the quota: no data means none for 6 hours.
        assert_eq!(no_data_after(hour, 3 * hour), 6 * hour);
    }
}
