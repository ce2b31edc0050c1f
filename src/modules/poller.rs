//! Owns weather polling: the set of distinct places (0.01° grid cells) with at least one
//! enabled subscription, fetched once per interval in batches, so the provider calls per
//! cycle are `ceil(places / batch)` however many users subscribe. New places are fetched
//! a moment after they appear. 429 and 5xx answers back off exponentially with jitter;
//! a failing provider never stops the loop and shows in metrics and `/readyz`.
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
use crate::contract::{SubscriptionsChanged, WEATHER_OBSERVED, WeatherObserved};
use crate::domain::time::system_now;
use crate::domain::weather::Coord;
use crate::metrics::Metrics;
use crate::modules::ModuleCtx;
use crate::storage::Db;
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
}

/// The provider's health as `/readyz` reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProviderHealth {
    pub provider: String,
    pub ok: bool,
    /// Unix seconds of the last successful call.
    pub last_success: Option<i64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
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
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

type Cell = (i64, i64);

fn coord((lat, lon): Cell) -> Coord {
    Coord {
        lat: lat as f64 / 100.0,
        lon: lon as f64 / 100.0,
    }
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
    let poller = Poller {
        client,
        db,
        provider,
        interval: cfg.poll_interval,
        max_backoff: cfg.max_backoff,
        metrics,
        health: health.clone(),
        observed: BTreeSet::new(),
    };
    let task = tokio::spawn(poller.run(changes, command_rx, session, shutdown));
    Ok((PollerHandle { commands, health }, task))
}

struct Poller {
    client: BusClient,
    db: Db,
    provider: Arc<dyn Provider>,
    interval: Duration,
    max_backoff: Duration,
    metrics: Arc<Metrics>,
    health: Arc<Mutex<ProviderHealth>>,
    /// Cells fetched at least once since start.
    observed: BTreeSet<Cell>,
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
                    let _ = self.cycle(false, &shutdown).await;
                }
                Some(reply) = commands.recv() => {
                    let report = self.cycle(false, &shutdown).await;
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
                    let _ = self.cycle(true, &shutdown).await;
                }
                _ = shutdown.cancelled() => break,
            }
        }
        self.client.disconnect().await;
        let _ = session.await;
    }

    /// Fetches every active cell (or only those never fetched, with `only_new`).
    async fn cycle(&mut self, only_new: bool, shutdown: &CancellationToken) -> CycleReport {
        let cells = match self.db.subscriptions().active_cells().await {
            Ok(cells) => cells,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the places to poll");
                return CycleReport::default();
            }
        };
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
            match self
                .fetch_with_retries(&coords, &mut report, shutdown)
                .await
            {
                Some(conditions) => {
                    let received_at = system_now();
                    for (cell, conditions) in batch.iter().zip(conditions) {
                        self.observed.insert(*cell);
                        let msg = WeatherObserved {
                            cell_lat: cell.0,
                            cell_lon: cell.1,
                            provider: self.provider.name().to_owned(),
                            received_at,
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
                None => report.failed_places += batch.len(),
            }
        }
        if report.places > 0 {
            tracing::debug!(?report, "weather cycle done");
        }
        report
    }

    async fn fetch_with_retries(
        &self,
        coords: &[Coord],
        report: &mut CycleReport,
        shutdown: &CancellationToken,
    ) -> Option<Vec<crate::domain::weather::Conditions>> {
        let name = self.provider.name();
        for attempt in 0..ATTEMPTS {
            let provider = self.provider.clone();
            let batch = coords.to_vec();
            let started = Instant::now();
            report.provider_calls += 1;
            let call = tokio::task::spawn_blocking(move || provider.fetch(&batch));
            // At shutdown the call is left to its blocking thread (which the runtime
            // abandons): a provider that hangs must not hold the stop for its timeout.
            let result = tokio::select! {
                r = call => r.unwrap_or_else(|e| Err(ProviderError::Unavailable(e.to_string()))),
                _ = shutdown.cancelled() => return None,
            };
            self.metrics
                .weather
                .provider_duration
                .with_label_values(&[name])
                .observe(started.elapsed().as_secs_f64());
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.label(),
            };
            self.metrics
                .weather
                .provider_calls
                .with_label_values(&[name, outcome])
                .inc();
            match result {
                Ok(conditions) => {
                    let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
                    h.ok = true;
                    h.last_success = Some(system_now());
                    h.consecutive_failures = 0;
                    return Some(conditions);
                }
                Err(e) => {
                    {
                        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
                        h.ok = false;
                        h.last_error = Some(e.to_string());
                        h.consecutive_failures += 1;
                    }
                    if !e.is_transient() || attempt + 1 == ATTEMPTS {
                        tracing::warn!(provider = name, error = %e, places = coords.len(), "weather fetch failed");
                        return None;
                    }
                    let wait = match &e {
                        ProviderError::RateLimited {
                            retry_after: Some(d),
                        } => (*d).min(self.max_backoff),
                        _ => backoff(attempt, self.max_backoff),
                    };
                    tracing::info!(provider = name, error = %e, retry_in = ?wait, "weather fetch failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => return None,
                    }
                }
            }
        }
        None
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
