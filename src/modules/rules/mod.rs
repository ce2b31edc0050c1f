//! Owns alert rules: evaluates every enabled subscription of a place against each
//! observation, keeps per-constraint state in SQLite, and turns changes into events.
//! What counts as a violation, and when, is in [`evaluate`]; alerts are edge-triggered:
//! raised when a constraint becomes violated for `for_observations` consecutive
//! observations and cleared when it stops (temperatures must move `hysteresis` °C back
//! past the threshold).
//!
//! Consumes: `weather/observed`, `subscriptions/changed`.
//! Publishes: `users/{id}/alerts` ([`AlertEvent`]) and the retained
//! `users/{id}/subscriptions/{sid}/state` ([`SubscriptionStateMsg`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusClient, BusError, Inbox};
use crate::config::WeatherConfig;
use crate::contract::{
    self, AlertState, Change, Qos, SubscriptionStateMsg, SubscriptionsChanged, WeatherObserved,
};
use crate::domain::subscription::{ConstraintState, Kind, cell};
use crate::domain::time::{now_ms, rfc3339_ms};
use crate::domain::weather::Conditions;
use crate::metrics::Metrics;
use crate::modules::ModuleCtx;
use crate::storage::notify::JournalEntry;
use crate::storage::{Db, StorageError};

mod evaluate;

use evaluate::{Reading, evaluate, no_data_after};

/// Starts the rules loop on its own bus session.
pub async fn start(ctx: &ModuleCtx<'_>, cfg: &WeatherConfig) -> Result<JoinHandle<()>, BusError> {
    let (bus, db, metrics, shutdown) = (
        ctx.bus,
        ctx.db.clone(),
        ctx.metrics.clone(),
        ctx.shutdown.clone(),
    );
    let hysteresis = cfg.hysteresis;
    let max_age_ms = cfg.max_observation_age().as_millis() as i64;
    let stale_after = cfg.stale_after;
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
        max_age_ms,
        stale_after_ms: stale_after.as_millis().min(i64::MAX as u128) as i64,
        stretched_ms: std::sync::atomic::AtomicI64::new(0),
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
    /// Readings older than this decide nothing.
    max_age_ms: i64,
    /// Readings older than this mean the place has no fresh data ...
    stale_after_ms: i64,
    /// ... unless the quota stretches fetches further (the poller says so with each
    /// observation): then two such intervals.
    stretched_ms: std::sync::atomic::AtomicI64,
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
        // Without new readings (the provider down) nothing else would notice that a
        // place's data has grown old.
        let every = (Duration::from_millis(self.stale_after_ms as u64) / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(300));
        let mut stale_check = tokio::time::interval(every);
        stale_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stale_check.tick() => {
                    if let Err(e) = self.on_stale_check().await {
                        tracing::error!(error = %e, "checking for places without fresh data failed");
                    }
                }
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

    /// How old the last reading of a place may be before it has "no fresh data".
    fn no_data_after(&self) -> i64 {
        no_data_after(
            self.stale_after_ms,
            self.stretched_ms.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Re-evaluates the places whose last reading arrived longer than `stale_after` ago
    /// and whose users have not been told: their `no_data` is raised.
    async fn on_stale_check(&self) -> Result<(), RulesError> {
        let before = (now_ms() - self.no_data_after()).div_euclid(1000);
        let stale = self.db.subscriptions().stale_observations(before).await?;
        for (cell, json, received_at) in stale {
            if let Ok(conditions) = serde_json::from_str::<Conditions>(&json) {
                self.evaluate_cell(cell, &conditions, received_at, None)
                    .await?;
            }
        }
        Ok(())
    }

    async fn on_observation(&self, obs: WeatherObserved) -> Result<(), RulesError> {
        self.stretched_ms.store(
            i64::try_from(obs.stretched_interval.saturating_mul(1000)).unwrap_or(i64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        let cell = (obs.cell_lat, obs.cell_lon);
        let json = serde_json::to_string(&obs.conditions).unwrap_or_default();
        let at = obs.received_at;
        self.db
            .subscriptions()
            .save_observation(cell, &json, at)
            .await?;
        self.evaluate_cell(cell, &obs.conditions, at, None).await
    }

    /// Evaluates the enabled subscriptions of `cell` (or just `only`) against
    /// `conditions` (received at `received_at`, Unix seconds), stores the new states,
    /// then publishes events and retained states.
    async fn evaluate_cell(
        &self,
        (cell_lat, cell_lon): (i64, i64),
        conditions: &Conditions,
        received_at: i64,
        only: Option<i64>,
    ) -> Result<(), RulesError> {
        let mut in_cell = self.db.subscriptions().in_cell(cell_lat, cell_lon).await?;
        if let Some(id) = only {
            in_cell.retain(|(s, _)| s.id == id);
        }
        let now = now_ms();
        // The provider's own time stamp: a stored or re-served old reading is old even
        // when it arrived just now.
        let observed_ms = conditions
            .observed_at_ms()
            .unwrap_or(received_at.saturating_mul(1000))
            .min(now);
        let reading = Reading {
            conditions,
            observed_ms,
            fresh: now - observed_ms <= self.max_age_ms,
            no_data: now - observed_ms > self.no_data_after(),
        };
        // Timed: the evaluation itself, not the database or the bus around it.
        let started = Instant::now();
        let mut all_changes = Vec::new();
        let mut outcomes = Vec::with_capacity(in_cell.len());
        for (sub, states) in &in_cell {
            let states: HashMap<Kind, ConstraintState> = states.iter().copied().collect();
            let outcome = evaluate(sub, &states, &reading, self.hysteresis, now);
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
                match event.state {
                    AlertState::Raised => self.metrics.alerts.raised.inc(),
                    AlertState::Cleared => self.metrics.alerts.cleared.inc(),
                    AlertState::Reminder => {}
                }
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
            .and_then(|(json, at)| Some((serde_json::from_str::<Conditions>(&json).ok()?, at)));
        if sub.enabled
            && let Some((conditions, received_at)) = latest
        {
            return self
                .evaluate_cell(cell, &conditions, received_at, Some(sub.id))
                .await;
        }
        let state = SubscriptionStateMsg {
            subscription_id: sub.id,
            label: sub.label.clone(),
            place: sub.place_name.clone(),
            violated: Vec::new(),
            conditions: None,
            observed_at: None,
            stale: false,
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
