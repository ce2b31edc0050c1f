//! Owns alert rules: evaluates every enabled subscription of a place against each
//! observation, keeps per-constraint state in SQLite, and turns changes into events.
//!
//! Definitions: too cold = temperature < min; too hot = temperature > max; rain = rain +
//! showers > 0 or a rain/drizzle/thunderstorm weather code; snow = snowfall > 0 or a snow
//! weather code. Alerts are edge-triggered: an alert is raised when a constraint becomes
//! violated for `for_observations` consecutive observations and cleared when it stops
//! (temperatures must move `hysteresis` °C back past the threshold). An unknown value
//! (null) neither raises nor clears.
//!
//! Consumes: `weather/observed`, `subscriptions/changed`.
//! Publishes: `users/{id}/alerts` ([`AlertEvent`]) and the retained
//! `users/{id}/subscriptions/{sid}/state` ([`SubscriptionStateMsg`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusClient, BusError, Inbox};
use crate::config::WeatherConfig;
use crate::contract::{
    self, AlertEvent, AlertState, Change, Qos, SubscriptionStateMsg, SubscriptionsChanged,
    WeatherObserved,
};
use crate::domain::subscription::{ConstraintState, Kind, Subscription, cell};
use crate::domain::time::{now_ms, rfc3339_ms};
use crate::domain::weather::Conditions;
use crate::metrics::Metrics;
use crate::modules::ModuleCtx;
use crate::storage::notify::JournalEntry;
use crate::storage::{Db, StorageError};

/// WMO codes that mean rain: drizzle, freezing drizzle, rain, freezing rain, rain
/// showers, thunderstorm (with or without hail).
pub const RAIN_CODES: &[u16] = &[
    51, 53, 55, 56, 57, 61, 63, 65, 66, 67, 80, 81, 82, 95, 96, 99,
];
/// WMO codes that mean snow: snow fall, snow grains, snow showers.
pub const SNOW_CODES: &[u16] = &[71, 73, 75, 77, 85, 86];

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
        Kind::Rain => {
            if !sub.rain {
                return None;
            }
            let amount = match (c.rain_mm, c.showers_mm) {
                (None, None) => None,
                (r, s) => Some(r.unwrap_or(0.0) + s.unwrap_or(0.0)),
            };
            let by_code = c.weather_code.map(|w| RAIN_CODES.contains(&w));
            match (amount, by_code) {
                (None, None) => None,
                (a, b) => Some(a.is_some_and(|a| a > 0.0) || b.unwrap_or(false)),
            }
        }
        Kind::Snow => {
            if !sub.snow {
                return None;
            }
            let by_code = c.weather_code.map(|w| SNOW_CODES.contains(&w));
            match (c.snowfall_cm, by_code) {
                (None, None) => None,
                (a, b) => Some(a.is_some_and(|a| a > 0.0) || b.unwrap_or(false)),
            }
        }
    }
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
        };
        (next, Some(AlertState::Raised))
    } else {
        let next = ConstraintState {
            violated: false,
            since: prev.since,
            streak: 0,
        };
        (next, Some(AlertState::Cleared))
    }
}

fn value_of(kind: Kind, c: &Conditions) -> Option<f64> {
    match kind {
        Kind::TooCold | Kind::TooHot => c.temperature_c,
        Kind::Rain => match (c.rain_mm, c.showers_mm) {
            (None, None) => None,
            (r, s) => Some(r.unwrap_or(0.0) + s.unwrap_or(0.0)),
        },
        Kind::Snow => c.snowfall_cm,
    }
}

/// What one observation did to one subscription.
pub struct Outcome {
    pub events: Vec<AlertEvent>,
    pub state: SubscriptionStateMsg,
    pub changes: Vec<(i64, Kind, ConstraintState)>,
}

/// Evaluates one subscription against one observation at `now` (Unix milliseconds).
pub fn evaluate(
    sub: &Subscription,
    states: &HashMap<Kind, ConstraintState>,
    c: &Conditions,
    hysteresis: f64,
    now: i64,
) -> Outcome {
    let mut events = Vec::new();
    let mut changes = Vec::new();
    let mut violated_now = Vec::new();
    for kind in kinds(sub) {
        let prev = states.get(&kind).copied().unwrap_or_default();
        let observed = violated(sub, kind, c, prev.violated, hysteresis);
        let (next, flipped) = step(prev, observed, sub.for_observations, now);
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
                started_at: rfc3339_ms(started_at),
                at: rfc3339_ms(now),
                notify: state == AlertState::Raised || sub.notify_on_clear,
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
            updated_at: rfc3339_ms(now),
        },
        changes,
    }
}

/// Starts the rules loop on its own bus session.
pub async fn start(ctx: &ModuleCtx<'_>, cfg: &WeatherConfig) -> Result<JoinHandle<()>, BusError> {
    let (bus, db, metrics, shutdown) = (
        ctx.bus,
        ctx.db.clone(),
        ctx.metrics.clone(),
        ctx.shutdown.clone(),
    );
    let hysteresis = cfg.hysteresis;
    let (client, session) = bus.client("rules", None);
    let observations = client.subscribe_to::<WeatherObserved>().await?;
    let changes = client.subscribe_to::<SubscriptionsChanged>().await?;
    // The poller starts next and publishes at once; be listening by then.
    if !client
        .wait_subscribed(std::time::Duration::from_secs(5))
        .await
    {
        tracing::warn!("the rules' bus subscriptions are not confirmed yet; continuing");
    }
    let rules = Rules {
        client,
        db,
        hysteresis,
        metrics,
    };
    Ok(tokio::spawn(rules.run(
        observations,
        changes,
        session,
        shutdown,
    )))
}

struct Rules {
    client: BusClient,
    db: Db,
    hysteresis: f64,
    metrics: Arc<Metrics>,
}

impl Rules {
    async fn run(
        self,
        mut observations: Inbox<WeatherObserved>,
        mut changes: Inbox<SubscriptionsChanged>,
        session: JoinHandle<()>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                Some(obs) = observations.recv() => match obs {
                    Ok(obs) => {
                        if let Err(e) = self.on_observation(obs).await {
                            tracing::error!(error = %e, "evaluating an observation failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring malformed observation"),
                },
                Some(change) = changes.recv() => match change {
                    Ok(change) => {
                        if let Err(e) = self.on_change(change).await {
                            tracing::error!(error = %e, "publishing subscription state failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring malformed subscription change"),
                },
                _ = shutdown.cancelled() => break,
            }
        }
        self.client.disconnect().await;
        let _ = session.await;
    }

    async fn on_observation(&self, obs: WeatherObserved) -> Result<(), RulesError> {
        let cell = (obs.cell_lat, obs.cell_lon);
        let json = serde_json::to_string(&obs.conditions).unwrap_or_default();
        let at = obs.received_at;
        self.db
            .subscriptions()
            .save_observation(cell, &json, at)
            .await?;
        self.evaluate_cell(cell, &obs.conditions, None).await
    }

    /// Evaluates the enabled subscriptions of `cell` (or just `only`) against
    /// `conditions`, stores the new states, then publishes events and retained states.
    async fn evaluate_cell(
        &self,
        (cell_lat, cell_lon): (i64, i64),
        conditions: &Conditions,
        only: Option<i64>,
    ) -> Result<(), RulesError> {
        let mut in_cell = self.db.subscriptions().in_cell(cell_lat, cell_lon).await?;
        if let Some(id) = only {
            in_cell.retain(|(s, _)| s.id == id);
        }
        let now = now_ms();
        // Timed: the evaluation itself, not the database or the bus around it.
        let started = Instant::now();
        let mut all_changes = Vec::new();
        let mut outcomes = Vec::with_capacity(in_cell.len());
        for (sub, states) in &in_cell {
            let states: HashMap<Kind, ConstraintState> = states.iter().copied().collect();
            let outcome = evaluate(sub, &states, conditions, self.hysteresis, now);
            all_changes.extend(outcome.changes.iter().copied());
            outcomes.push((sub.user_id, outcome));
        }
        self.metrics
            .alerts
            .evaluation
            .observe(started.elapsed().as_secs_f64());
        // State and journal first: a crash after this loses no event (the notifier
        // takes unhandled journal entries at start); a crash before it re-raises on the
        // next observation rather than losing the alert.
        let journal: Vec<JournalEntry> = outcomes
            .iter()
            .flat_map(|(_, o)| &o.events)
            .map(|e| JournalEntry {
                key: e.key(),
                user_id: e.user_id,
                event: serde_json::to_string(e).unwrap_or_default(),
                created_at: now,
            })
            .collect();
        if !all_changes.is_empty() || !journal.is_empty() {
            self.db
                .subscriptions()
                .save_states(&all_changes, &journal)
                .await?;
        }
        for (user_id, outcome) in outcomes {
            for event in &outcome.events {
                let counter = match event.state {
                    AlertState::Raised => &self.metrics.alerts.raised,
                    AlertState::Cleared => &self.metrics.alerts.cleared,
                };
                counter.inc();
                self.client
                    .publish(&contract::user_alerts(user_id), event)
                    .await?;
            }
            self.client
                .publish(
                    &contract::subscription_state(user_id, outcome.state.subscription_id),
                    &outcome.state,
                )
                .await?;
        }
        Ok(())
    }

    /// Keeps the retained state in step with the subscription itself. A created or
    /// updated subscription is evaluated at once against the latest stored observation
    /// of its place (with its stored state, so nothing is raised twice), whichever of
    /// the change and the observation arrived first.
    async fn on_change(&self, change: SubscriptionsChanged) -> Result<(), RulesError> {
        let topic = contract::subscription_state(change.user_id, change.subscription_id);
        if change.change == Change::Deleted {
            // An empty retained message removes the retained state.
            self.client
                .publish_raw(&topic, Vec::new(), Qos::AtLeastOnce, true)
                .await?;
            return Ok(());
        }
        let id = change.subscription_id;
        let Some(sub) = self.db.subscriptions().by_id(id).await? else {
            return Ok(());
        };
        let cell = (cell(sub.lat), cell(sub.lon));
        let latest = self
            .db
            .subscriptions()
            .latest_observation(cell)
            .await?
            .and_then(|(json, _)| serde_json::from_str::<Conditions>(&json).ok());
        if sub.enabled
            && let Some(conditions) = latest
        {
            return self.evaluate_cell(cell, &conditions, Some(sub.id)).await;
        }
        let state = SubscriptionStateMsg {
            subscription_id: sub.id,
            label: sub.label.clone(),
            place: sub.place_name.clone(),
            violated: Vec::new(),
            conditions: None,
            updated_at: rfc3339_ms(now_ms()),
        };
        self.client.publish(&topic, &state).await?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum RulesError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Bus(#[from] BusError),
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

    /// Runs observations through one subscription; returns the events per observation.
    fn run(s: &Subscription, obs: &[Conditions]) -> Vec<Vec<(Kind, AlertState)>> {
        let mut states: HashMap<Kind, ConstraintState> = HashMap::new();
        obs.iter()
            .enumerate()
            .map(|(i, c)| {
                let o = evaluate(s, &states, c, 0.5, 1000 + i as i64);
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
        let raise = evaluate(&s, &states, &temp(Some(40.0)), 0.5, 500);
        for (_, k, st) in &raise.changes {
            states.insert(*k, *st);
        }
        let clear = evaluate(&s, &states, &temp(Some(20.0)), 0.5, 900);
        assert_eq!(raise.events[0].id, "1-too_hot-500");
        assert_eq!(clear.events[0].id, "1-too_hot-500");
        assert_eq!(clear.events[0].state, AlertState::Cleared);
        assert_eq!(raise.state.violated, vec![Kind::TooHot]);
        assert!(clear.state.violated.is_empty());
    }
}
