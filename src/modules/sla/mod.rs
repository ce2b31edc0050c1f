//! Owns service-level objectives. Every `sla.sample_interval` the sampler reads the
//! series that SLAs reference plus a core set (process RSS, CPU ratio, HTTP p95 latency,
//! outbox depth) from the app's own metrics — or from an external Prometheus when
//! `sla.prometheus_url` is set — stores them as history (embedded mode), evaluates each
//! SLA against its desired range and `for` duration, writes a violation row for every
//! evaluation that finds it violated, and on a transition into (or out of) violation
//! publishes an [`SlaEvent`]. Answers state, violation counts over 1/3/6 h, and
//! forecasts (ARIMA, see [`arima`]).
//!
//! Publishes: `system/sla` ([`SlaEvent`]). Consumes nothing.

pub mod arima;
mod objective;
mod prometheus;
mod sampler;
pub mod selector;

use objective::parse_order;
pub use objective::{evaluate, validate};

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::BusClient;
use crate::config::SlaConfig;
use crate::contract::{SLA_EVENTS, SlaEvent, SlaState};
use crate::domain::validation::FieldError;
use crate::metrics::Metrics;
use crate::modules::ModuleCtx;
use crate::storage::sla::{Evaluation, SlaRow};
use crate::storage::{Db, StorageError};
use arima::{ArimaError, Order};
use selector::Selector;

/// Series sampled whether or not an SLA references them.
pub const CORE_SERIES: &[&str] = &[
    "meteomesh_process_resident_memory_bytes",
    "meteomesh_host_cpu_usage_ratio",
    "meteomesh_http_request_p95_seconds",
    "meteomesh_outbox_pending",
];
/// Simulated paths for the within-horizon probability.
const PATHS: usize = 4000;
/// Most samples a model is fitted on (the latest of the window): enough for the short
/// memory these models have, and it bounds the CPU a forecast costs on a small device.
pub const MAX_FIT_POINTS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum SlaError {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("no such SLA")]
    NotFound,
    #[error("there are already {0} SLAs, the most allowed (sla.max_slas)")]
    TooMany(usize),
    #[error(
        "not enough history to forecast: need at least {need} samples in the last {window}, have {have}; wait for more samples"
    )]
    NotEnoughHistory {
        need: usize,
        have: usize,
        window: String,
    },
    #[error("Prometheus: {0}")]
    Prometheus(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What an operator sends to create or update an SLA.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaInput {
    pub name: String,
    pub selector: String,
    #[serde(default)]
    pub desired_min: Option<f64>,
    #[serde(default)]
    pub desired_max: Option<f64>,
    /// Out of range this long before it counts as violated ("5m"); default 0.
    #[serde(default, rename = "for")]
    pub for_duration: Option<String>,
    /// Fixed ARIMA order; default chosen by AIC.
    #[serde(default)]
    pub order: Option<Order>,
}

/// An SLA with its state and recent violation counts.
#[derive(Debug, Clone)]
pub struct SlaStatus {
    pub row: SlaRow,
    pub violated: bool,
    /// Violations in the last 1, 3 and 6 hours.
    pub counts: [i64; 3],
}

/// One step of a forecast.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub at: i64,
    pub mean: f64,
    pub se: f64,
    pub probability_outside: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ForecastReport {
    pub name: String,
    pub order: Order,
    pub aic: f64,
    pub history_points: usize,
    pub step_seconds: u64,
    pub horizon_seconds: u64,
    pub desired_min: Option<f64>,
    pub desired_max: Option<f64>,
    pub steps: Vec<Step>,
    /// Share of simulated paths that leave the range at any step within the horizon.
    pub probability_within_horizon: f64,
    /// The largest per-step probability (a lower bound of the one above).
    pub max_step_probability: f64,
    pub method: &'static str,
}

#[derive(Clone)]
pub struct SlaService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    metrics: Arc<Metrics>,
    config: SlaConfig,
    prometheus: Option<Arc<prometheus::Prometheus>>,
    publisher: BusClient,
}

impl std::fmt::Debug for SlaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlaService")
    }
}

fn now_s() -> i64 {
    crate::domain::time::system_now()
}

/// Starts the sampler; returns the service for HTTP and its task.
pub fn start(ctx: &ModuleCtx<'_>, config: &SlaConfig) -> (SlaService, JoinHandle<()>) {
    let (bus, db, metrics, shutdown) = (
        ctx.bus,
        ctx.db.clone(),
        ctx.metrics.clone(),
        ctx.shutdown.clone(),
    );
    let (publisher, session) = bus.publisher("sla");
    let prometheus = (!config.prometheus_url.is_empty()).then(|| {
        Arc::new(prometheus::Prometheus::new(
            &config.prometheus_url,
            Duration::from_secs(10),
        ))
    });
    let service = SlaService {
        inner: Arc::new(Inner {
            db,
            metrics,
            config: config.clone(),
            prometheus,
            publisher: publisher.clone(),
        }),
    };
    let sampler = service.clone();
    let task = tokio::spawn(async move {
        sampler.run(shutdown).await;
        publisher.disconnect().await;
        let _ = session.await;
    });
    (service, task)
}

impl SlaService {
    /// Creates or updates an SLA (by name). Returns it and whether it is new.
    pub async fn upsert(&self, input: SlaInput) -> Result<(SlaStatus, bool), SlaError> {
        let row = validate(&input, now_s()).map_err(SlaError::Invalid)?;
        let max = self.inner.config.max_slas;
        let name = row.name.clone();
        let created = self
            .inner
            .db
            .sla()
            .upsert_capped(&row, max)
            .await?
            .ok_or(SlaError::TooMany(max))?;
        Ok((self.status(&name).await?, created))
    }

    pub async fn remove(&self, name: &str) -> Result<(), SlaError> {
        let name = name.to_owned();
        let gone = self.inner.db.sla().delete(&name).await?;
        if gone {
            Ok(())
        } else {
            Err(SlaError::NotFound)
        }
    }

    async fn with_counts(&self, rows: Vec<SlaRow>) -> Result<Vec<SlaStatus>, SlaError> {
        let now = now_s();
        let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
        let counts = self
            .inner
            .db
            .sla()
            .violation_counts_of(&names, &[now - 3600, now - 3 * 3600, now - 6 * 3600])
            .await?;
        Ok(rows
            .into_iter()
            .zip(counts)
            .map(|(row, counts)| SlaStatus {
                violated: row.violated_since.is_some(),
                counts: [counts[0], counts[1], counts[2]],
                row,
            })
            .collect())
    }

    pub async fn list(&self) -> Result<Vec<SlaStatus>, SlaError> {
        let rows = self.inner.db.sla().list().await?;
        self.with_counts(rows).await
    }

    pub async fn status(&self, name: &str) -> Result<SlaStatus, SlaError> {
        let name = name.to_owned();
        let row = self
            .inner
            .db
            .sla()
            .get(&name)
            .await?
            .ok_or(SlaError::NotFound)?;
        self.with_counts(vec![row])
            .await?
            .pop()
            .ok_or(SlaError::NotFound)
    }

    /// Violations from `since` (Unix s) on, newest first: (value, at).
    pub async fn violations(&self, name: &str, since: i64) -> Result<Vec<(f64, i64)>, SlaError> {
        self.status(name).await?;
        let name = name.to_owned();
        Ok(self.inner.db.sla().violations(&name, since, 10_000).await?)
    }

    /// The SLA's series from `since` (Unix s) on: embedded history or Prometheus.
    pub async fn history(&self, row: &SlaRow, since: i64) -> Result<Vec<(i64, f64)>, SlaError> {
        let selector = row.selector.clone();
        match &self.inner.prometheus {
            Some(prom) => {
                let (prom, step) = (prom.clone(), self.inner.config.sample_interval.as_secs());
                let now = now_s();
                tokio::task::spawn_blocking(move || {
                    prom.query_range(&selector, since, now, step.max(1))
                })
                .await
                .map_err(|e| SlaError::Prometheus(e.to_string()))?
                .map_err(SlaError::Prometheus)
            }
            None => Ok(self.inner.db.sla().history(&selector, since).await?),
        }
    }

    /// Forecasts the SLA's metric `horizon` ahead (default `sla.forecast_horizon`).
    pub async fn forecast(
        &self,
        name: &str,
        horizon: Option<Duration>,
    ) -> Result<ForecastReport, SlaError> {
        let status = self.status(name).await?;
        let row = status.row;
        let cfg = &self.inner.config;
        let step = cfg.sample_interval.as_secs().max(1);
        let horizon = horizon.unwrap_or(cfg.forecast_horizon);
        if horizon < cfg.sample_interval || horizon > cfg.sample_interval * 240 {
            return Err(SlaError::Invalid(vec![FieldError::new(
                "horizon",
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(cfg.sample_interval),
                    humantime::format_duration(cfg.sample_interval * 240)
                ),
            )]));
        }
        let steps = horizon.as_secs().div_ceil(step) as usize;
        let since = now_s() - cfg.forecast_window.as_secs() as i64;
        let mut history = self.history(&row, since).await?;
        if history.len() > MAX_FIT_POINTS {
            history.drain(..history.len() - MAX_FIT_POINTS);
        }
        let values: Vec<f64> = history.iter().map(|(_, v)| *v).collect();
        let last_at = history.last().map_or(now_s(), |(t, _)| *t);
        let order = row.arima_order.as_deref().and_then(parse_order);
        let fitted = tokio::task::spawn_blocking(move || match order {
            Some(o) => arima::fit(&values, o),
            None => arima::select(&values),
        })
        .await
        .map_err(|e| SlaError::Prometheus(e.to_string()))?;
        let fit = match fitted {
            Ok(fit) => fit,
            Err(ArimaError::TooShort { need, have }) => {
                return Err(SlaError::NotEnoughHistory {
                    need,
                    have,
                    window: humantime::format_duration(cfg.forecast_window).to_string(),
                });
            }
            Err(e) => {
                return Err(SlaError::Invalid(vec![FieldError::new(
                    "history",
                    e.to_string(),
                )]));
            }
        };
        let fc = fit.forecast(steps);
        let (lo, hi) = (row.desired_min, row.desired_max);
        let out: Vec<Step> = (0..steps)
            .map(|k| Step {
                at: last_at + (k as i64 + 1) * step as i64,
                mean: fc.mean[k],
                se: fc.se[k],
                probability_outside: arima::outside(fc.mean[k], fc.se[k], lo, hi),
            })
            .collect();
        let max_step = out
            .iter()
            .map(|s| s.probability_outside)
            .fold(0.0, f64::max);
        let within = fit.exceedance(steps, lo, hi, PATHS);
        Ok(ForecastReport {
            name: row.name,
            order: fit.order,
            aic: fit.aic,
            history_points: history.len(),
            step_seconds: step,
            horizon_seconds: steps as u64 * step,
            desired_min: lo,
            desired_max: hi,
            steps: out,
            probability_within_horizon: within,
            max_step_probability: max_step,
            method: "ARIMA fitted by exact Kalman-filter likelihood on the forecast window; per step: normal tail mass outside the desired range; within the horizon: share of 4,000 simulated paths that leave it at any step",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(min: Option<f64>, max: Option<f64>, for_seconds: i64) -> SlaRow {
        validate(
            &SlaInput {
                name: "x".into(),
                selector: "m".into(),
                desired_min: min,
                desired_max: max,
                for_duration: None,
                order: None,
            },
            0,
        )
        .map(|r| SlaRow { for_seconds, ..r })
        .unwrap()
    }

    fn apply(r: &mut SlaRow, e: &Evaluation) {
        r.out_since = e.out_since;
        r.violated_since = e.violated_since;
    }

    #[test]
    fn violation_needs_the_for_duration_and_transitions_once() {
        let mut r = row(None, Some(10.0), 30);
        let (e, t) = evaluate(&r, Some(11.0), 100);
        assert!(!e.violated && t.is_none());
        apply(&mut r, &e);
        let (e, t) = evaluate(&r, Some(12.0), 115);
        assert!(!e.violated && t.is_none());
        apply(&mut r, &e);
        let (e, t) = evaluate(&r, Some(12.0), 130);
        assert!(e.violated);
        assert_eq!(t, Some(SlaState::Violated));
        apply(&mut r, &e);
        let (e, t) = evaluate(&r, Some(12.0), 145);
        assert!(e.violated && t.is_none());
        apply(&mut r, &e);
        // Missing data changes nothing.
        let (e, t) = evaluate(&r, None, 160);
        assert!(!e.violated && t.is_none());
        assert_eq!(e.violated_since, Some(130));
        apply(&mut r, &e);
        let (e, t) = evaluate(&r, Some(9.0), 175);
        assert!(!e.violated);
        assert_eq!(t, Some(SlaState::Resolved));
        assert_eq!((e.out_since, e.violated_since), (None, None));
    }

    #[test]
    fn inputs_are_checked() {
        let bad = SlaInput {
            name: "bad name!".into(),
            selector: "1x".into(),
            desired_min: Some(5.0),
            desired_max: Some(1.0),
            for_duration: Some("soon".into()),
            order: Some(Order { p: 3, d: 0, q: 0 }),
        };
        let fields: Vec<String> = validate(&bad, 0)
            .unwrap_err()
            .into_iter()
            .map(|f| f.field)
            .collect();
        assert_eq!(fields, ["name", "selector", "desired_min", "for", "order"]);
        let ok = SlaInput {
            name: "rss".into(),
            selector: r#"up{b="2",a="1"}"#.into(),
            desired_min: None,
            desired_max: Some(1.0),
            for_duration: Some("5m".into()),
            order: Some(Order { p: 1, d: 0, q: 0 }),
        };
        let r = validate(&ok, 7).unwrap();
        assert_eq!(r.selector, r#"up{a="1",b="2"}"#);
        assert_eq!(r.for_seconds, 300);
        assert_eq!(r.arima_order.as_deref(), Some("1,0,0"));
        assert_eq!(parse_order("1,0,0"), Some(Order { p: 1, d: 0, q: 0 }));
    }
}
