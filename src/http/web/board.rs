//! Owns the whiteboard page `/board/{name}` and its script: the page carries the board
//! name, the user and the WebSocket port of this node's broker; `/static/board.js` asks
//! `/board-credential` for a short-lived broker credential limited to the board topics
//! (the session's login token stays in its HttpOnly cookie) and does the rest (see the
//! whiteboard topics in docs/mqtt-topics.md).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;

use super::html::{Nav, alert, escape, page};
use super::kit::{Page, csrf, current_user};
use crate::contract::valid_board;
use crate::http::AppState;

pub async fn script() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        include_str!("static/board.js"),
    )
}

pub async fn board_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let Some(auth) = current_user(&state, &headers).await else {
        return Page::redirect("/login");
    };
    let (csrf_token, set) = csrf(&state, &headers);
    let nav = Nav::signed_in(&auth.user, &csrf_token);
    if !valid_board(&name) {
        let body = alert("error", "A board name is 1 to 32 of a-z, 0-9, _ and -.");
        return Page::html(StatusCode::NOT_FOUND, page("Board", &nav, &body)).maybe_cookie(set);
    }
    let Some(ws_port) = state.ws_port else {
        let body = alert(
            "error",
            "The whiteboard needs the broker's WebSocket listener (bus.ws_enabled).",
        );
        return Page::html(StatusCode::SERVICE_UNAVAILABLE, page("Board", &nav, &body))
            .maybe_cookie(set);
    };
    let body = format!(
        r#"<section class="board" data-board="{board}" data-user="{user}" data-ws-port="{ws_port}">
<h1>Board {board}</h1>
<div class="board-bar">
<p id="state" role="status" aria-live="polite">Connecting…</p>
<label>Your colour <input type="color" id="color"></label>
<button type="button" id="clear">Clear the board</button>
</div>
<canvas id="canvas" aria-label="Drawing area: draw with the mouse, a pen or a finger"></canvas>
<h2>On this board</h2>
<ul id="users" class="users"></ul>
</section>
<script src="/static/board.js" defer></script>"#,
        board = escape(&name),
        user = escape(&auth.user.username),
    );
    Page::html(StatusCode::OK, page(&format!("Board {name}"), &nav, &body))
        .with_websockets()
        .maybe_cookie(set)
}

/// `GET /board-credential`: a fresh broker credential for the signed-in user's whiteboard
/// page (session cookie; the cookie is `SameSite=Strict` and the answer is not readable
/// cross-origin). 401 without a session.
pub async fn credential(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    let Some(auth) = current_user(&state, &headers).await else {
        return (
            StatusCode::UNAUTHORIZED,
            no_store,
            Json(
                serde_json::json!({"error": {"code": "unauthorized", "message": "sign in first"}}),
            ),
        );
    };
    let issued = state.auth.issue_board_credential(&auth);
    (
        StatusCode::OK,
        no_store,
        Json(serde_json::json!({
            "username": issued.user.username,
            "token": issued.token,
            "expires_at": issued.claims.exp,
        })),
    )
}
