//! Owns the operations endpoints: `/healthz` (the process answers), `/readyz` (database
//! and bus usable, with details), `/metrics` (Prometheus text).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

use crate::http::AppState;

pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    node: String,
    checks: Checks,
    /// Details that do not decide readiness: a failing weather provider delays alerts
    /// but the node still serves.
    weather: crate::modules::poller::ProviderHealth,
}

#[derive(Serialize)]
struct Checks {
    database: Check,
    bus: Check,
}

#[derive(Serialize)]
struct Check {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database = match state.db.ping().await {
        Ok(()) => Check {
            ok: true,
            error: None,
        },
        Err(e) => Check {
            ok: false,
            error: Some(e.to_string()),
        },
    };
    let bus = if state.system.bus_connected() {
        Check {
            ok: true,
            error: None,
        }
    } else {
        Check {
            ok: false,
            error: Some("not connected to the broker".into()),
        }
    };
    let ready = database.ok && bus.ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready,
        node: state.system.node_id().to_owned(),
        checks: Checks { database, bus },
        weather: state.poller.health(),
    };
    (status, Json(body))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
