//! Owns `POST /api/v1/system/bus-check`: the bus round trip, which operators use to see
//! that the broker (embedded or external) routes messages, and how fast.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;

const MAX_TIMEOUT_MS: u64 = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusCheckRequest {
    /// How long to wait for the answer; 1..=10000 ms, default 2000.
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    2000
}

#[derive(Serialize)]
pub struct BusCheckResponse {
    node: String,
    mode: crate::config::BusMode,
    roundtrip_seconds: f64,
}

pub async fn bus_check(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<BusCheckRequest>,
) -> Result<Json<BusCheckResponse>, ApiError> {
    if req.timeout_ms == 0 || req.timeout_ms > MAX_TIMEOUT_MS {
        return Err(ApiError::field(
            "timeout_ms",
            format!("must be between 1 and {MAX_TIMEOUT_MS}"),
        ));
    }
    let rtt = state
        .system
        .roundtrip(Duration::from_millis(req.timeout_ms))
        .await?;
    state.metrics.bus.roundtrip.observe(rtt.as_secs_f64());
    Ok(Json(BusCheckResponse {
        node: state.system.node_id().to_owned(),
        mode: state.bus_mode,
        roundtrip_seconds: rtt.as_secs_f64(),
    }))
}
