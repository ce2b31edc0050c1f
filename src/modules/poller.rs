//! Owns weather polling: the set of distinct places (0.01° grid cells) with at least one
//! enabled subscription, fetched once per interval in batches, so the provider calls per
//! cycle are `ceil(places / batch)` however many users subscribe. New places are fetched
//! a moment after they appear.
//!
//! Every request goes through the provider's quota (`weather::quota`): requests are
//! spaced so no limit is ever exceeded, places are never fetched more often than the
//! provider's data changes, and when the quota cannot carry every place at
//! `weather.poll_interval` the cycle simply takes longer — the interval that can be met
//! is logged, shown in `/readyz` and in `/metrics`. A 429 stops calls until the window its
//! reason names has passed; 5xx and timeouts are retried with exponential backoff, then
//! the provider rests for a growing pause (up to `weather.max_backoff`). A failing
//! provider never stops the loop.
//!
//! Consumes: `subscriptions/changed`. Publishes: `weather/observed`, one per place.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusClient, BusError, Inbox};
use crate::config::WeatherConfig;
use crate::contract::{
    SubscriptionsChanged, WEATHER_NOTICES, WEATHER_OBSERVED, WeatherNotice, WeatherObserved,
};
use crate::domain::time::system_now;
use crate::domain::weather::{Conditions, Coord};
use crate::metrics::Metrics;
use crate::modules::ModuleCtx;
use crate::storage::Db;
use crate::weather::quota::{self, Pacer, Plan};
use crate::weather::{Provider, ProviderError};

/// Attempts per batch within one cycle (the first plus retries).
const ATTEMPTS: u32 = 4;
/// First retry delay; doubles each time, up to `weather.max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Wait after a subscription change before fetching new places (changes come in bursts).
const NEW_PLACE_DELAY: Duration = Duration::from_secs(2);

/// What one polling cycle did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CycleReport {
    pub places: usize,
    pub provider_calls: usize,
    pub observations: usize,
    pub failed_places: usize,
    /// Not fetched this cycle: the provider asked to wait (429) or is resting after
    /// failures.
    pub deferred_places: usize,
}

/// The provider's health as `/readyz` reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProviderHealth {
    pub provider: String,
    pub ok: bool,
    /// Unix seconds of the last successful call, and its age when asked.
    pub last_success: Option<i64>,
    pub last_success_age_seconds: Option<i64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// Unix seconds until which no call is made (after a 429, or resting after failures).
    pub paused_until: Option<i64>,
    /// Seconds between two fetches of each place: the configured interval, or longer
    /// when the quota cannot carry every place at it.
    pub interval_seconds: u64,
    /// Places the quota carries at the configured interval.
    pub places_max: usize,
    /// Set while the configured interval cannot be met: what can be.
    pub quota_warning: Option<String>,
}

#[derive(Clone)]
pub struct PollerHandle {
    commands: mpsc::Sender<oneshot::Sender<CycleReport>>,
    health: Arc<Mutex<ProviderHealth>>,
}

impl PollerHandle {
    /// Runs a full cycle now and returns its report (admin "poll now").
    pub async fn poll_now(&self) -> Option<CycleReport> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(tx).await.ok()?;
        rx.await.ok()
    }

    pub fn health(&self) -> ProviderHealth {
        let mut health = self
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        health.last_success_age_seconds = health.last_success.map(|t| system_now() - t);
        health
    }
}

type Cell = (i64, i64);

fn coord((lat, lon): Cell) -> Coord {
    Coord {
        lat: lat as f64 / 100.0,
        lon: lon as f64 / 100.0,
    }
}

/// "1h 12m" for a log line or a warning.
fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Exponential backoff with ±25 % jitter.
fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = FIRST_BACKOFF.saturating_mul(1 << attempt.min(16)).min(max);
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    base.mul_f64(jitter).min(max)
}

pub async fn start(
    ctx: &ModuleCtx<'_>,
    cfg: &WeatherConfig,
    provider: Arc<dyn Provider>,
) -> Result<(PollerHandle, JoinHandle<()>), BusError> {
    let (bus, db, metrics, shutdown) = (
        ctx.bus,
        ctx.db.clone(),
        ctx.metrics.clone(),
        ctx.shutdown.clone(),
    );
    let (client, session) = bus.client("poller", None);
    let changes = client.subscribe_to::<SubscriptionsChanged>().await?;
    let (commands, command_rx) = mpsc::channel(8);
    let health = Arc::new(Mutex::new(ProviderHealth {
        provider: provider.name().to_owned(),
        ok: true,
        ..ProviderHealth::default()
    }));
    let plan = quota::plan(cfg);
    let burst = provider.max_batch().max(1) as f64 * provider.weight_per_place();
    let poller = Poller {
        client,
        db,
        pacer: Pacer::new(&plan, burst, 0.0),
        epoch: Instant::now(),
        provider,
        plan,
        burst,
        interval: cfg.poll_interval.max(cfg.provider.update_interval()),
        max_backoff: cfg.max_backoff,
        metrics,
        health: health.clone(),
        observed: BTreeSet::new(),
        paused_until: None,
        resting_until: None,
        resting: 0,
        stretched_interval: Duration::ZERO,
    };
    let task = tokio::spawn(poller.run(changes, command_rx, session, shutdown));
    Ok((PollerHandle { commands, health }, task))
}

struct Poller {
    client: BusClient,
    db: Db,
    provider: Arc<dyn Provider>,
    plan: Plan,
    /// The heaviest single request (a full batch).
    burst: f64,
    pacer: Pacer,
    /// The pacer's clock starts here.
    epoch: Instant,
    /// The configured interval, raised to the provider's update interval.
    interval: Duration,
    max_backoff: Duration,
    metrics: Arc<Metrics>,
    health: Arc<Mutex<ProviderHealth>>,
    /// Cells fetched at least once since start.
    observed: BTreeSet<Cell>,
    /// No call before this: the provider's 429 named a window.
    paused_until: Option<Instant>,
    /// No scheduled call before this: a rest after failures (an administrator's "poll
    /// now" may still try).
    resting_until: Option<Instant>,
    /// Cycles in a row whose requests failed after every retry (the rest grows with it).
    resting: u32,
    /// The interval the quota stretches fetches to, when it is longer than the
    /// configured one (zero otherwise).
    stretched_interval: Duration,
}

/// Why a cycle runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cycle {
    /// The interval has passed.
    Scheduled,
    /// An administrator's "poll now".
    Asked,
    /// Places that appeared since the last cycle, fetched a moment after.
    NewPlaces,
}

/// What became of one batch.
enum Fetched {
    Conditions(Vec<Conditions>),
    Failed,
    /// Not asked: the provider is paused.
    Deferred,
}

impl Poller {
    async fn run(
        mut self,
        mut changes: Inbox<SubscriptionsChanged>,
        mut commands: mpsc::Receiver<oneshot::Sender<CycleReport>>,
        session: JoinHandle<()>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let new_places = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(new_places);
        let mut new_places_pending = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let _ = self.cycle(Cycle::Scheduled, &shutdown).await;
                }
                Some(reply) = commands.recv() => {
                    let report = self.cycle(Cycle::Asked, &shutdown).await;
                    let _ = reply.send(report);
                }
                Some(_) = changes.recv() => {
                    if !new_places_pending {
                        new_places_pending = true;
                        new_places.as_mut().reset(tokio::time::Instant::now() + NEW_PLACE_DELAY);
                    }
                }
                _ = &mut new_places, if new_places_pending => {
                    new_places_pending = false;
                    let _ = self.cycle(Cycle::NewPlaces, &shutdown).await;
                }
                _ = shutdown.cancelled() => break,
            }
        }
        self.client.disconnect().await;
        let _ = session.await;
    }

    /// Fetches every active cell (or only those never fetched yet).
    async fn cycle(&mut self, kind: Cycle, shutdown: &CancellationToken) -> CycleReport {
        let only_new = kind == Cycle::NewPlaces;
        let cells = match self.db.subscriptions().active_cells().await {
            Ok(cells) => cells,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the places to poll");
                return CycleReport::default();
            }
        };
        if let Some(notice) = self.check_quota(cells.len())
            && let Err(e) = self.client.publish(WEATHER_NOTICES, &notice).await
        {
            tracing::warn!(error = %e, "cannot publish the quota notice");
        }
        if !only_new {
            self.metrics.weather.places_polled.set(cells.len() as i64);
        }
        let cells: Vec<Cell> = cells
            .into_iter()
            .filter(|c| !only_new || !self.observed.contains(c))
            .collect();
        let mut report = CycleReport {
            places: cells.len(),
            ..CycleReport::default()
        };
        for batch in cells.chunks(self.provider.max_batch().max(1)) {
            if shutdown.is_cancelled() {
                break;
            }
            let coords: Vec<Coord> = batch.iter().copied().map(coord).collect();
            match self.fetch(&coords, kind, &mut report, shutdown).await {
                Fetched::Conditions(conditions) => {
                    self.publish(batch, conditions, &mut report).await;
                }
                Fetched::Failed => report.failed_places += batch.len(),
                Fetched::Deferred => report.deferred_places += batch.len(),
            }
        }
        if report.places > 0 {
            tracing::debug!(?report, "weather cycle done");
        }
        // Recovered: a whole cycle without a failure clears the last error.
        if report.observations > 0 && report.failed_places + report.deferred_places == 0 {
            self.health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last_error = None;
        }
        report
    }

    async fn publish(
        &mut self,
        batch: &[Cell],
        conditions: Vec<Conditions>,
        report: &mut CycleReport,
    ) {
        let received_at = system_now();
        for (cell, conditions) in batch.iter().zip(conditions) {
            self.observed.insert(*cell);
            let msg = WeatherObserved {
                cell_lat: cell.0,
                cell_lon: cell.1,
                provider: self.provider.name().to_owned(),
                received_at,
                stretched_interval: self.stretched_interval.as_secs(),
                conditions,
            };
            match self.client.publish(WEATHER_OBSERVED, &msg).await {
                Ok(()) => {
                    report.observations += 1;
                    self.metrics.weather.observations.inc();
                }
                Err(e) => tracing::warn!(error = %e, "cannot publish an observation"),
            }
        }
    }

    /// Works out whether the quota carries `places` at the configured interval, and
    /// says so (log, `/readyz`, metrics) when it does not; returns a notice for the
    /// administrators when that starts or ends.
    fn check_quota(&mut self, places: usize) -> Option<WeatherNotice> {
        let per_place = self.provider.weight_per_place();
        let interval =
            self.plan
                .feasible_interval(self.interval, places as f64 * per_place, self.burst);
        let places_max = self.plan.places_at(self.interval, per_place, self.burst);
        let warning = (interval > self.interval).then(|| {
            format!(
                "{places} places cannot be fetched every {} within the {} quota: each is \
                 fetched every {} instead (at most {places_max} places fit every {})",
                human(self.interval),
                self.provider.name(),
                human(interval),
                human(self.interval),
            )
        });
        self.metrics
            .weather
            .poll_interval
            .set(interval.as_secs().min(i64::MAX as u64) as i64);
        self.metrics
            .weather
            .places_max
            .set(places_max.min(i64::MAX as usize) as i64);
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let turned = warning.is_some() != h.quota_warning.is_some();
        if warning != h.quota_warning {
            match &warning {
                Some(w) => tracing::warn!("{w}"),
                None => tracing::info!(
                    places,
                    "the quota carries every place at the configured interval again"
                ),
            }
        }
        h.interval_seconds = interval.as_secs();
        h.places_max = places_max;
        self.stretched_interval = if interval > self.interval {
            interval
        } else {
            Duration::ZERO
        };
        h.quota_warning = warning.clone();
        turned.then(|| WeatherNotice {
            provider: self.provider.name().to_owned(),
            warning,
            places,
            interval_seconds: interval.as_secs(),
            at: system_now(),
        })
    }

    /// Seconds on the pacer's clock.
    fn clock(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// Stops calls (after a 429) or scheduled calls (a rest) for `pause`, and says
    /// until when.
    fn pause(&mut self, pause: Duration, rest: bool) {
        let until = Some(Instant::now() + pause);
        if rest {
            self.resting_until = until;
        } else {
            self.paused_until = until;
        }
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.paused_until = Some(system_now() + pause.as_secs() as i64);
    }

    /// One batch: paced within the quota, retried on transient failures.
    async fn fetch(
        &mut self,
        coords: &[Coord],
        kind: Cycle,
        report: &mut CycleReport,
        shutdown: &CancellationToken,
    ) -> Fetched {
        let name = self.provider.name();
        let weight = coords.len() as f64 * self.provider.weight_per_place();
        for attempt in 0..ATTEMPTS {
            let now = Instant::now();
            let resting = kind != Cycle::Asked && self.resting_until.is_some_and(|t| now < t);
            if resting || self.paused_until.is_some_and(|t| now < t) {
                return Fetched::Deferred;
            }
            let Some(wait) = self.pacer.wait(self.clock(), weight) else {
                // Refused by the config check; here only if the provider's batch changed.
                tracing::error!(
                    provider = name,
                    weight,
                    "a request heavier than the quota allows"
                );
                return Fetched::Failed;
            };
            if wait > 0.0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs_f64(wait)) => {}
                    _ = shutdown.cancelled() => return Fetched::Deferred,
                }
            }
            self.pacer.spend(self.clock(), weight);
            let provider = self.provider.clone();
            let batch = coords.to_vec();
            let started = Instant::now();
            report.provider_calls += 1;
            let call = tokio::task::spawn_blocking(move || provider.fetch(&batch));
            // At shutdown the call is left to its blocking thread (which the runtime
            // abandons): a provider that hangs must not hold the stop for its timeout.
            let result = tokio::select! {
                r = call => r.unwrap_or_else(|e| Err(ProviderError::Unavailable(e.to_string()))),
                _ = shutdown.cancelled() => return Fetched::Deferred,
            };
            self.record(name, started, &result);
            let e = match result {
                Ok(conditions) => {
                    self.resting = 0;
                    return Fetched::Conditions(conditions);
                }
                Err(e) => e,
            };
            if let ProviderError::RateLimited {
                retry_after,
                reason,
            } = &e
            {
                let pause = quota::rate_limit_pause(reason, *retry_after, system_now());
                tracing::warn!(provider = name, reason = %reason, resume_in = %human(pause), "rate limited; no calls until the provider's window has passed");
                self.pause(pause, false);
                return Fetched::Deferred;
            }
            if !e.is_transient() {
                tracing::warn!(provider = name, error = %e, places = coords.len(), "weather fetch refused");
                return Fetched::Failed;
            }
            if attempt + 1 == ATTEMPTS {
                // Rest before the next try, longer each cycle that fails through.
                let rest = backoff(ATTEMPTS + self.resting, self.max_backoff);
                self.resting += 1;
                tracing::warn!(provider = name, error = %e, places = coords.len(), rest = %human(rest), "weather fetch failed");
                self.pause(rest, true);
                return Fetched::Failed;
            }
            let wait = backoff(attempt, self.max_backoff);
            tracing::info!(provider = name, error = %e, retry_in = ?wait, "weather fetch failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return Fetched::Deferred,
            }
        }
        Fetched::Failed
    }

    /// Metrics and `/readyz` health for one call.
    fn record(
        &self,
        name: &'static str,
        started: Instant,
        result: &Result<Vec<Conditions>, ProviderError>,
    ) {
        self.metrics
            .weather
            .provider_duration
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        self.metrics
            .weather
            .provider_calls
            .with_label_values(&[name, outcome])
            .inc();
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => {
                let now = system_now();
                h.ok = true;
                h.last_success = Some(now);
                self.metrics
                    .weather
                    .last_success
                    .with_label_values(&[name])
                    .set(now);
                h.consecutive_failures = 0;
                h.paused_until = None;
            }
            Err(e) => {
                h.ok = false;
                h.last_error = Some(e.to_string());
                h.consecutive_failures += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_cap() {
        let max = Duration::from_secs(60);
        for attempt in 0..10 {
            let d = backoff(attempt, max);
            let base = FIRST_BACKOFF.saturating_mul(1 << attempt).min(max);
            assert!(
                d >= base.mul_f64(0.75).min(max) && d <= max,
                "{attempt}: {d:?}"
            );
        }
        assert_eq!(
            coord((3749, 1508)),
            Coord {
                lat: 37.49,
                lon: 15.08
            }
        );
    }
}
