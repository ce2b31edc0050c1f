//! Owns the whiteboard page `/board/{name}` and its script: the page carries the board
//! name, the user, their login token (the script signs in to the broker with it) and the
//! WebSocket port of this node's broker; `/static/board.js` does the rest (see the
//! whiteboard topics in docs/mqtt-topics.md).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;

use super::AppState;
use super::html::{Nav, alert, escape, page};
use super::pages::{Page, csrf, current_user, session_token};
use crate::bus::topics::valid_board;

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
    let (Some(auth), Some(token)) = (
        current_user(&state, &headers).await,
        session_token(&headers),
    ) else {
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
        r#"<section class="board" data-board="{board}" data-user="{user}" data-token="{token}" data-ws-port="{ws_port}">
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
        token = escape(token),
    );
    Page::html(StatusCode::OK, page(&format!("Board {name}"), &nav, &body))
        .with_websockets()
        .maybe_cookie(set)
}
