//! Owns the mesh endpoints: `POST /api/v1/messages` (send, fire_send, broadcast,
//! fire_broadcast as the signed-in user), `GET /api/v1/users/online`, and
//! `GET /api/v1/mesh` (nodes, links, counters). Any user of the mesh may call them.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use crate::contract::{OnlineUser, SendMode, SendRefusal, SendRequest, SendResult};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, MeshUser};
use crate::modules::mesh::MeshStatus;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    pub mode: SendMode,
    #[serde(default)]
    pub to: Option<String>,
    pub body: serde_json::Value,
    /// The sender's own sequence number (a retry reuses it); the node assigns one if
    /// absent.
    #[serde(default)]
    pub seq: Option<u64>,
}

pub async fn send(
    State(state): State<AppState>,
    MeshUser(me): MeshUser,
    ApiJson(body): ApiJson<MessageBody>,
) -> Result<Json<SendResult>, ApiError> {
    let req = SendRequest {
        req: String::new(),
        mode: body.mode,
        to: body.to.map(|t| t.trim().to_lowercase()),
        seq: body.seq,
        body: body.body,
    };
    let result = state.mesh.send(&me.username, req).await?;
    let message = result.error.clone().unwrap_or_default();
    match result.code {
        None => Ok(Json(result)),
        Some(SendRefusal::Invalid) => Err(ApiError::field("body", message)),
        Some(SendRefusal::QueueFull) => Err(ApiError::TooManyRequests {
            message,
            retry_after: std::time::Duration::from_secs(60),
        }),
        Some(SendRefusal::Unavailable) => Err(ApiError::Unavailable(message)),
    }
}

pub async fn online(
    State(state): State<AppState>,
    MeshUser(_): MeshUser,
) -> Result<Json<Vec<OnlineUser>>, ApiError> {
    Ok(Json(state.mesh.online().await?))
}

pub async fn status(
    State(state): State<AppState>,
    MeshUser(_): MeshUser,
) -> Result<Json<MeshStatus>, ApiError> {
    Ok(Json(state.mesh.status().await?))
}
