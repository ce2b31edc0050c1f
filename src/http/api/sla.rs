//! Owns the SLA endpoints of the JSON API (administrators only): definitions
//! (`/api/v1/sla`), current state with 1/3/6 h violation counts, violation lists and
//! forecasts.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiAdmin, ApiJson, ApiPath, ApiQuery};
use crate::modules::sla::arima::Order;
use crate::modules::sla::{ForecastReport, SlaInput, SlaStatus, Step};

fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[derive(Serialize)]
pub struct StateView {
    value: Option<f64>,
    desired_min: Option<f64>,
    desired_max: Option<f64>,
    violated: bool,
    sampled_at: Option<String>,
    /// In violation since.
    violated_since: Option<String>,
}

#[derive(Serialize)]
pub struct CountsView {
    last_1h: i64,
    last_3h: i64,
    last_6h: i64,
}

#[derive(Serialize)]
pub struct SlaView {
    name: String,
    selector: String,
    desired_min: Option<f64>,
    desired_max: Option<f64>,
    for_seconds: i64,
    /// Fixed ARIMA order, or null for the AIC choice.
    order: Option<String>,
    state: StateView,
    violations: CountsView,
    created_at: String,
    updated_at: String,
}

impl From<SlaStatus> for SlaView {
    fn from(s: SlaStatus) -> Self {
        let r = s.row;
        SlaView {
            state: StateView {
                value: r.last_value,
                desired_min: r.desired_min,
                desired_max: r.desired_max,
                violated: s.violated,
                sampled_at: r.last_sampled_at.map(rfc3339),
                violated_since: r.violated_since.map(rfc3339),
            },
            violations: CountsView {
                last_1h: s.counts[0],
                last_3h: s.counts[1],
                last_6h: s.counts[2],
            },
            name: r.name,
            selector: r.selector,
            desired_min: r.desired_min,
            desired_max: r.desired_max,
            for_seconds: r.for_seconds,
            order: r.arima_order,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    _admin: ApiAdmin,
) -> Result<Json<Vec<SlaView>>, ApiError> {
    Ok(Json(
        state
            .sla
            .list()
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Creates an SLA, or updates the one with the same name (201 or 200).
pub async fn upsert(
    State(state): State<AppState>,
    _admin: ApiAdmin,
    ApiJson(input): ApiJson<SlaInput>,
) -> Result<(StatusCode, Json<SlaView>), ApiError> {
    let (sla, created) = state.sla.upsert(input).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(sla.into())))
}

pub async fn get_one(
    State(state): State<AppState>,
    _admin: ApiAdmin,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<SlaView>, ApiError> {
    Ok(Json(state.sla.status(&name).await?.into()))
}

pub async fn remove(
    State(state): State<AppState>,
    _admin: ApiAdmin,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.sla.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct SinceQuery {
    /// RFC 3339 time or Unix seconds; default 6 hours ago.
    #[serde(default)]
    since: Option<String>,
}

/// Parses RFC 3339 or Unix seconds.
fn parse_time(s: &str) -> Option<i64> {
    s.parse::<i64>()
        .ok()
        .or_else(|| s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second()))
}

#[derive(Serialize)]
pub struct ViolationView {
    value: f64,
    at: String,
}

#[derive(Serialize)]
pub struct ViolationsView {
    name: String,
    since: String,
    counts: CountsView,
    violations: Vec<ViolationView>,
}

pub async fn violations(
    State(state): State<AppState>,
    _admin: ApiAdmin,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<SinceQuery>,
) -> Result<Json<ViolationsView>, ApiError> {
    let since = match q.since.as_deref() {
        None => crate::domain::time::system_now() - 6 * 3600,
        Some(s) => parse_time(s)
            .ok_or_else(|| ApiError::field("since", "use an RFC 3339 time or Unix seconds"))?,
    };
    let status = state.sla.status(&name).await?;
    let list = state.sla.violations(&name, since).await?;
    Ok(Json(ViolationsView {
        name,
        since: rfc3339(since),
        counts: CountsView {
            last_1h: status.counts[0],
            last_3h: status.counts[1],
            last_6h: status.counts[2],
        },
        violations: list
            .into_iter()
            .map(|(value, at)| ViolationView {
                value,
                at: rfc3339(at),
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
pub struct ForecastQuery {
    /// e.g. "10m"; default `sla.forecast_horizon`.
    #[serde(default)]
    horizon: Option<String>,
}

#[derive(Serialize)]
pub struct StepView {
    at: String,
    mean: f64,
    se: f64,
    probability_outside: f64,
}

#[derive(Serialize)]
pub struct ForecastView {
    name: String,
    order: Order,
    aic: f64,
    history_points: usize,
    step_seconds: u64,
    horizon_seconds: u64,
    desired_min: Option<f64>,
    desired_max: Option<f64>,
    probability_within_horizon: f64,
    max_step_probability: f64,
    method: &'static str,
    steps: Vec<StepView>,
}

impl From<ForecastReport> for ForecastView {
    fn from(f: ForecastReport) -> Self {
        ForecastView {
            steps: f
                .steps
                .into_iter()
                .map(
                    |Step {
                         at,
                         mean,
                         se,
                         probability_outside,
                     }| StepView {
                        at: rfc3339(at),
                        mean,
                        se,
                        probability_outside,
                    },
                )
                .collect(),
            name: f.name,
            order: f.order,
            aic: f.aic,
            history_points: f.history_points,
            step_seconds: f.step_seconds,
            horizon_seconds: f.horizon_seconds,
            desired_min: f.desired_min,
            desired_max: f.desired_max,
            probability_within_horizon: f.probability_within_horizon,
            max_step_probability: f.max_step_probability,
            method: f.method,
        }
    }
}

pub async fn forecast(
    State(state): State<AppState>,
    _admin: ApiAdmin,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ForecastQuery>,
) -> Result<Json<ForecastView>, ApiError> {
    let horizon: Option<Duration> = match q.horizon.as_deref() {
        None => None,
        Some(h) => Some(
            humantime::parse_duration(h)
                .map_err(|_| ApiError::field("horizon", "use a duration such as \"10m\""))?,
        ),
    };
    Ok(Json(state.sla.forecast(&name, horizon).await?.into()))
}
